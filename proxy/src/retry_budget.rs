//! A retry budget, as Linkerd's: retries may add at most `budget_ratio` of
//! the request volume, plus `budget_min_per_sec`, so a failing fleet is not
//! hit by a retry storm.

use crate::config::Retry;
use crate::origins::now_ms;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

/// One retry, in milli-tokens (integers, so ten deposits of 0.2 make exactly two).
const TOKEN: i64 = 1000;
/// Most retries saved up.
const MAX_TOKENS: i64 = 1000 * TOKEN;

/// Tokens: each request deposits `budget_ratio`, time adds `budget_min_per_sec`,
/// a retry withdraws one.
#[derive(Default)]
pub struct RetryBudget {
    milli: AtomicI64,
    /// When the time-based floor was last added (ms since start).
    floor_at: AtomicU64,
}

impl RetryBudget {
    /// A request arrived.
    pub fn deposit(&self, cfg: &Retry) {
        self.add((cfg.budget_ratio * TOKEN as f64).round() as i64);
    }

    /// Takes one retry token if there is one (adding the floor accrued since last time first).
    pub fn try_withdraw(&self, cfg: &Retry) -> bool {
        self.accrue(now_ms(), cfg);
        self.milli
            .fetch_update(Relaxed, Relaxed, |t| (t >= TOKEN).then_some(t - TOKEN))
            .is_ok()
    }

    fn accrue(&self, now: u64, cfg: &Retry) {
        // Stored +1 so that 0 means "never": a fresh budget starts with one
        // second of the floor, so retries work right after a (re)start.
        let last = self.floor_at.swap(now + 1, Relaxed);
        let elapsed_ms = if last == 0 {
            1000
        } else {
            (now + 1).saturating_sub(last)
        };
        self.add((cfg.budget_min_per_sec * elapsed_ms as f64).round() as i64);
    }

    fn add(&self, n: i64) {
        let _ = self
            .milli
            .fetch_update(Relaxed, Relaxed, |t| Some((t + n).min(MAX_TOKENS)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_budget_allows_the_floor_at_once() {
        let cfg = Retry {
            attempts: 3,
            budget_ratio: 0.0,
            budget_min_per_sec: 3.0,
        };
        let b = RetryBudget::default();
        assert!(
            (0..3).all(|_| b.try_withdraw(&cfg)),
            "one second of the floor right away"
        );
        b.floor_at.store(u64::MAX, Relaxed);
        assert!(!b.try_withdraw(&cfg));
    }

    #[test]
    fn retries_are_bounded_by_the_ratio_plus_the_floor() {
        let cfg = Retry {
            attempts: 3,
            budget_ratio: 0.2,
            budget_min_per_sec: 0.0,
        };
        let b = RetryBudget::default();
        for _ in 0..10 {
            b.deposit(&cfg);
        }
        assert!(b.try_withdraw(&cfg));
        assert!(b.try_withdraw(&cfg));
        assert!(!b.try_withdraw(&cfg), "10 requests at 20% allow 2 retries");
        // The floor accrues with time: 5 per second.
        let cfg = Retry {
            budget_min_per_sec: 5.0,
            ..cfg
        };
        let t0 = b.floor_at.load(Relaxed) - 1;
        b.accrue(t0 + 1000, &cfg);
        b.floor_at.store(u64::MAX, Relaxed); // no more accrual during the assertions
        assert!((0..5).all(|_| b.try_withdraw(&cfg)));
        assert!(!b.try_withdraw(&cfg));
    }
}
