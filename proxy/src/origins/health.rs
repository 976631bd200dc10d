//! One origin's health: the rise/fall machine of active checks, passive
//! ejection with a growing backoff (as Envoy's outlier detection), and the
//! three ways it drains (its `/healthz` answers 503, an operator drains
//! it, discovery no longer lists it). [`Health::state`] folds them into the
//! one state an operator sees and the policies obey.

use crate::clock::now_ms;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Passive ejection, as Envoy's outlier detection.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Ejection {
    /// Consecutive connect errors, timeouts or 5xx that eject an origin (0: never).
    pub consecutive_failures: u32,
    /// First ejection time; doubles with each repeated ejection.
    #[serde(with = "humantime_serde")]
    pub base: Duration,
    /// Longest ejection.
    #[serde(with = "humantime_serde")]
    pub max: Duration,
}

impl Default for Ejection {
    fn default() -> Self {
        Ejection {
            consecutive_failures: 5,
            base: Duration::from_secs(5),
            max: Duration::from_secs(60),
        }
    }
}

/// The state an operator sees, in order of precedence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Failing active checks (or not checked yet).
    Down,
    /// Passively ejected after consecutive failures.
    Ejected,
    /// Draining: its `/healthz` says 503, an operator drained it, or DNS no longer lists it.
    Draining,
    /// Taking traffic.
    Up,
}

impl State {
    /// Every state, for `cdn_origin_state`.
    pub const ALL: [State; 4] = [State::Up, State::Down, State::Ejected, State::Draining];

    /// The name used in labels and JSON.
    pub fn name(self) -> &'static str {
        match self {
            State::Up => "up",
            State::Down => "down",
            State::Ejected => "ejected",
            State::Draining => "draining",
        }
    }
}

/// Health of one origin. Written by the monitor (checks), the request path
/// (outcomes), the admin API (drain) and discovery (gone).
#[derive(Default)]
pub struct Health {
    up: AtomicBool,
    passes: AtomicU32,
    fails: AtomicU32,
    checked_once: AtomicBool,
    last_check_unix_ms: AtomicU64,
    last_check_ok: AtomicBool,

    reports_draining: AtomicBool,
    operator_drain: AtomicBool,
    gone: AtomicBool,

    ejected: AtomicBool,
    ejected_until: AtomicU64,
    ejections: AtomicU32,
    consecutive_failures: AtomicU32,
}

impl Health {
    /// Records one active check: `Some(true)` healthy, `Some(false)` draining
    /// (answered 503), `None` failed. New origins come up on their first pass;
    /// after that `rise`/`fall` consecutive results change the state.
    pub fn record_check(&self, result: Option<bool>, rise: u32, fall: u32) {
        self.last_check_unix_ms
            .store(cdn_types::clock::unix_ms(), Relaxed);
        self.last_check_ok.store(result.is_some(), Relaxed);
        let first = !self.checked_once.swap(true, Relaxed);
        match result {
            Some(ready) => {
                self.reports_draining.store(!ready, Relaxed);
                self.fails.store(0, Relaxed);
                let passes = self.passes.fetch_add(1, Relaxed) + 1;
                if first || passes >= rise {
                    self.up.store(true, Relaxed);
                }
                // An ejected origin returns once its backoff is over and a check passes.
                if self.ejected.load(Relaxed) && now_ms() >= self.ejected_until.load(Relaxed) {
                    self.ejected.store(false, Relaxed);
                }
            }
            None => {
                self.passes.store(0, Relaxed);
                let fails = self.fails.fetch_add(1, Relaxed) + 1;
                if first || fails >= fall {
                    self.up.store(false, Relaxed);
                }
            }
        }
    }

    /// The outcome of a request, for passive ejection. Returns true when it
    /// ejected the origin: `consecutive_failures` in a row eject it for
    /// `base`, doubling with each ejection up to `max`.
    pub fn record_outcome(&self, ok: bool, cfg: &Ejection) -> bool {
        if ok {
            // Most requests succeed: skip the store when there is nothing to reset.
            if self.consecutive_failures.load(Relaxed) != 0 {
                self.consecutive_failures.store(0, Relaxed);
            }
            return false;
        }
        let n = self.consecutive_failures.fetch_add(1, Relaxed) + 1;
        if cfg.consecutive_failures == 0
            || n < cfg.consecutive_failures
            || self.ejected.load(Relaxed)
        {
            return false;
        }
        let times = self.ejections.fetch_add(1, Relaxed) + 1;
        let backoff = cfg
            .base
            .saturating_mul(1u32 << (times - 1).min(16))
            .min(cfg.max);
        self.ejected_until
            .store(now_ms() + backoff.as_millis() as u64, Relaxed);
        self.ejected.store(true, Relaxed);
        self.consecutive_failures.store(0, Relaxed);
        true
    }

    /// Operator drain on or off.
    pub fn set_operator_drain(&self, on: bool) {
        self.operator_drain.store(on, Relaxed);
    }

    /// Marks the origin as no longer listed by discovery (it drains), or listed again.
    pub fn set_gone(&self, gone: bool) {
        self.gone.store(gone, Relaxed);
    }

    /// Whether discovery no longer lists it.
    pub fn gone(&self) -> bool {
        self.gone.load(Relaxed)
    }

    /// The operator-visible state.
    pub fn state(&self) -> State {
        if !self.up.load(Relaxed) {
            State::Down
        } else if self.ejected.load(Relaxed) {
            State::Ejected
        } else if self.reports_draining.load(Relaxed)
            || self.operator_drain.load(Relaxed)
            || self.gone.load(Relaxed)
        {
            State::Draining
        } else {
            State::Up
        }
    }

    /// Whether an operator has drained it.
    pub fn operator_drained(&self) -> bool {
        self.operator_drain.load(Relaxed)
    }

    /// Unix time (ms) of the last active check and whether it passed.
    pub fn last_check(&self) -> (u64, bool) {
        (
            self.last_check_unix_ms.load(Relaxed),
            self.last_check_ok.load(Relaxed),
        )
    }

    /// Ejections so far.
    pub fn ejections(&self) -> u32 {
        self.ejections.load(Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_origins_come_up_on_first_pass_then_follow_rise_and_fall() {
        let h = Health::default();
        assert_eq!(h.state(), State::Down);
        h.record_check(Some(true), 2, 2);
        assert_eq!(h.state(), State::Up);
        h.record_check(None, 2, 2);
        assert_eq!(h.state(), State::Up, "one failure is below fall=2");
        h.record_check(None, 2, 2);
        assert_eq!(h.state(), State::Down);
        h.record_check(Some(true), 2, 2);
        assert_eq!(h.state(), State::Down, "one pass is below rise=2");
        h.record_check(Some(true), 2, 2);
        assert_eq!(h.state(), State::Up);
        h.record_check(Some(false), 2, 2);
        assert_eq!(h.state(), State::Draining, "503 on /healthz drains");
    }

    #[test]
    fn consecutive_failures_eject_with_growing_backoff() {
        let h = Health::default();
        h.record_check(Some(true), 1, 1);
        let cfg = Ejection {
            consecutive_failures: 3,
            base: Duration::from_secs(10),
            max: Duration::from_secs(25),
        };
        assert!(!h.record_outcome(false, &cfg));
        assert!(!h.record_outcome(true, &cfg), "a success resets the count");
        assert!(!h.record_outcome(false, &cfg));
        assert!(!h.record_outcome(false, &cfg));
        assert!(h.record_outcome(false, &cfg));
        assert_eq!(h.state(), State::Ejected);
        let first = h.ejected_until.load(Relaxed) - now_ms();
        assert!((9_000..=10_000).contains(&first), "{first}");
        // A passing check before the backoff ends does not bring it back.
        h.record_check(Some(true), 1, 1);
        assert_eq!(h.state(), State::Ejected);
        // Once over, a passing check does; the next ejection lasts twice as long (capped).
        h.ejected_until.store(now_ms(), Relaxed);
        h.record_check(Some(true), 1, 1);
        assert_eq!(h.state(), State::Up);
        for _ in 0..3 {
            h.record_outcome(false, &cfg);
        }
        let second = h.ejected_until.load(Relaxed) - now_ms();
        assert!((19_000..=20_000).contains(&second), "{second}");
        h.ejected_until.store(now_ms(), Relaxed);
        h.record_check(Some(true), 1, 1);
        for _ in 0..3 {
            h.record_outcome(false, &cfg);
        }
        let third = h.ejected_until.load(Relaxed) - now_ms();
        assert!(third <= 25_000, "capped at max: {third}");
    }
}
