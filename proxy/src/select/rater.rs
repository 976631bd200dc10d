//! The one writer of every [`Rating`](super::Rating): a background service
//! that rates every origin every [`RATE_EVERY`], whatever the policy (the
//! dashboard shows scores and tiers for all of them). Picks never compute a
//! score: they read the tier, so a pick stays a few atomic loads.

use super::{Ratings, SettingsSource};
use crate::clock::now_ms;
use crate::origins::Registry;
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::sync::Arc;
use std::time::Duration;

/// How often ratings are refreshed. Load reports arrive every 500 ms and
/// the in-tier pick reads in-flight counts live, so tiers ten times a
/// second follow every input without touching the request path.
pub const RATE_EVERY: Duration = Duration::from_millis(100);

/// Rates every known origin on a timer.
pub struct Rater {
    /// Every origin.
    pub registry: Arc<Registry>,
    /// Where the ratings go.
    pub ratings: Arc<Ratings>,
    /// The weights, ceilings and bounds in force.
    pub settings: SettingsSource,
}

impl Rater {
    /// One round: rates every origin and forgets the ratings of origins gone.
    pub fn rate_all(&self) {
        let settings = (self.settings)();
        let origins = self.registry.all();
        let now = now_ms();
        for o in &origins {
            self.ratings.of(o.addr).update(o, &settings, now);
        }
        self.ratings.retain(&origins);
    }
}

#[async_trait]
impl BackgroundService for Rater {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tick = tokio::time::interval(RATE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => self.rate_all(),
                _ = shutdown.changed() => return,
            }
        }
    }
}
