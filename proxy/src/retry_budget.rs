//! A retry budget, as Linkerd's: retries may add at most `budget_ratio` of
//! the recent request volume, plus `budget_min_per_sec`, so a failing fleet
//! is not hit by a retry storm. It is tower's [`TpsBudget`]: deposits and
//! withdrawals expire after [`TTL`], so a quiet period does not bank
//! retries for a later storm.

use crate::config::Retry;
use arc_swap::ArcSwap;
use std::sync::Arc;
use std::time::Duration;
use tower::retry::budget::{Budget, TpsBudget};

/// How long a deposit (one request's share of a retry) counts.
pub const TTL: Duration = Duration::from_secs(10);

/// The budget of the retry settings in force; rebuilt (empty) when a
/// reload changes them.
pub struct RetryBudget {
    current: ArcSwap<(Retry, TpsBudget)>,
    /// `cdn_retry_budget_exhausted_total` (registered by `main.rs`).
    pub refused: prometheus::IntCounter,
}

fn budget(cfg: &Retry) -> TpsBudget {
    // tower counts whole retries per second; a fractional floor rounds up.
    let min_per_sec = cfg.budget_min_per_sec.ceil().min(f64::from(u32::MAX / 2)) as u32;
    TpsBudget::new(TTL, min_per_sec, cfg.budget_ratio as f32)
}

impl RetryBudget {
    /// A budget for `cfg`.
    pub fn new(cfg: &Retry) -> Self {
        RetryBudget {
            current: ArcSwap::from_pointee((cfg.clone(), budget(cfg))),
            refused: prometheus::IntCounter::new(
                "cdn_retry_budget_exhausted_total",
                "Retries the budget refused (the request got the failed attempt's answer).",
            )
            .expect("a valid metric name"),
        }
    }

    /// Runs `f` on the budget for `cfg`, replacing the current one first if
    /// the settings changed.
    fn with<T>(&self, cfg: &Retry, f: impl FnOnce(&TpsBudget) -> T) -> T {
        let current = self.current.load();
        if current.0 == *cfg {
            return f(&current.1);
        }
        let fresh = Arc::new((cfg.clone(), budget(cfg)));
        self.current.store(fresh.clone());
        f(&fresh.1)
    }

    /// A request arrived.
    pub fn deposit(&self, cfg: &Retry) {
        self.with(cfg, TpsBudget::deposit);
    }

    /// Takes one retry if the budget allows it; a refusal is counted.
    pub fn try_withdraw(&self, cfg: &Retry) -> bool {
        let allowed = self.with(cfg, TpsBudget::withdraw);
        if !allowed {
            self.refused.inc();
        }
        allowed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn retry(ratio: f64, floor: f64) -> Retry {
        Retry {
            attempts: 3,
            budget_ratio: ratio,
            budget_min_per_sec: floor,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_fresh_budget_allows_the_floor_at_once() {
        let cfg = retry(0.0, 3.0);
        let b = RetryBudget::new(&cfg);
        // The floor is a reserve of `min_per_sec × TTL`.
        assert!((0..30).all(|_| b.try_withdraw(&cfg)), "the reserve at once");
        assert!(!b.try_withdraw(&cfg));
    }

    #[tokio::test(start_paused = true)]
    async fn retries_are_bounded_by_the_ratio() {
        let cfg = retry(0.2, 0.0);
        let b = RetryBudget::new(&cfg);
        for _ in 0..10 {
            b.deposit(&cfg);
        }
        assert!(b.try_withdraw(&cfg));
        assert!(b.try_withdraw(&cfg));
        assert!(!b.try_withdraw(&cfg), "10 requests at 20% allow 2 retries");
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_minute_does_not_bank_a_storm() {
        let cfg = retry(0.2, 0.0);
        let b = RetryBudget::new(&cfg);
        // A busy period, then a minute with no traffic.
        for _ in 0..10_000 {
            b.deposit(&cfg);
        }
        tokio::time::advance(Duration::from_secs(60)).await;
        // Then a failing burst of 100 requests: only 20% of them may retry.
        let mut retried = 0;
        for _ in 0..100 {
            b.deposit(&cfg);
            if b.try_withdraw(&cfg) {
                retried += 1;
            }
        }
        assert!(retried <= 20, "{retried} retries for 100 requests");
        assert!(retried >= 15, "the ratio still allows retries: {retried}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_reload_with_new_settings_takes_effect() {
        let b = RetryBudget::new(&retry(0.0, 0.0));
        assert!(!b.try_withdraw(&retry(0.0, 0.0)));
        assert!(b.try_withdraw(&retry(0.0, 1.0)));
    }
}
