//! The one writer of every [`Rating`](super::Rating): a background service
//! that, every [`RATE_EVERY`] and whatever the policy (the dashboard shows
//! scores and tiers for all of them), measures every origin, takes the
//! fleet's references from the origins taking traffic, scores each origin
//! against them, and rebuilds the current selector's tier index. Picks
//! never compute a score: they read the index, so a pick stays a few
//! atomic loads whatever the fleet's size.

use super::rating::rate_round;
use super::{Balancer, Ratings, SettingsSource};
use crate::clock::now_ms;
use crate::origins::Registry;
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

/// How often ratings are refreshed. Load reports arrive every 500 ms and
/// the in-tier pick reads in-flight counts live, so tiers ten times a
/// second follow every input without touching the request path.
pub const RATE_EVERY: Duration = Duration::from_millis(100);

/// Whatever the traffic, an avoided origin is probed at least this often
/// (seconds), so that it returns within a minute of recovering.
pub const PROBE_MAX_EVERY_S: f64 = 10.0;

/// At most this share of the requests are probes: an avoided origin is
/// slow, and probes sent more often than the tail being measured would
/// become the tail (at 300 requests a second, one probe every 500 ms is
/// 0.7% of them, close to the slowest 1%).
pub const PROBE_SHARE: f64 = 0.002;

/// Rates every known origin on a timer.
pub struct Rater {
    /// Every origin.
    pub registry: Arc<Registry>,
    /// Where the ratings go.
    pub ratings: Arc<Ratings>,
    /// The weights, scales and bounds in force.
    pub settings: SettingsSource,
    /// Whose tier index to rebuild.
    pub balancer: Arc<Balancer>,
    /// When (ms) the next probe may be sent.
    next_probe_ms: AtomicU64,
    /// Turns through the origins due probes.
    probe_turn: AtomicUsize,
}

impl Rater {
    /// A rater with no round done yet.
    pub fn new(
        registry: Arc<Registry>,
        ratings: Arc<Ratings>,
        settings: SettingsSource,
        balancer: Arc<Balancer>,
    ) -> Self {
        Rater {
            registry,
            ratings,
            settings,
            balancer,
            next_probe_ms: AtomicU64::new(0),
            probe_turn: AtomicUsize::new(0),
        }
    }

    /// One round: rates every origin, forgets the ratings of origins gone,
    /// and rebuilds the tier index.
    pub fn rate_all(&self) {
        let settings = (self.settings)();
        let origins = self.registry.all();
        let now = now_ms();
        let ratings: Vec<_> = origins.iter().map(|o| self.ratings.of(o.addr)).collect();
        rate_round(&origins, &ratings, &settings, now);
        let rate: f64 = ratings.iter().map(|r| r.requests_per_sec()).sum();
        self.ratings.retain(&origins);
        self.balancer.selector().publish_tiers(|view| {
            if now < self.next_probe_ms.load(Relaxed) {
                return None;
            }
            let due: Vec<usize> = view.above_lowest().collect();
            if due.is_empty() {
                return None;
            }
            let every = settings
                .probe_every
                .as_secs_f64()
                .max(1.0 / (PROBE_SHARE * rate.max(1e-3)))
                .min(PROBE_MAX_EVERY_S);
            self.next_probe_ms
                .store(now + (every * 1000.0) as u64, Relaxed);
            Some(due[self.probe_turn.fetch_add(1, Relaxed) % due.len()])
        });
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
