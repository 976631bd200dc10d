//! The selection settings (`selection:` in `cdn.yaml`): which policy picks
//! origins and the tier model's weights, bounds and input scales. Defined
//! here, with the policies they steer; `config/` reads them from the file
//! and checks them.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The selection policy and the tier model's parameters.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Selection {
    /// Which policy picks origins.
    pub policy: Policy,
    /// Weights of the load score's inputs; must sum to 1.
    pub weights: Weights,
    /// Upper bounds of tiers 0, 1 and 2 on the 0–100 score (tier 3 is the rest); increasing.
    pub tier_bounds: [f64; 3],
    /// Score points an origin must cross past a bound before it changes tier.
    pub hysteresis: f64,
    /// How far above the fleet each input must be to count in full.
    pub scales: Scales,
    /// How often, at most, an origin in a higher tier than the one taking
    /// traffic gets one request (in turn with the others there), so that its
    /// score follows it when it recovers. Probes are also kept under 0.2% of
    /// the requests, and sent at least every 10 s.
    #[serde(with = "humantime_serde")]
    pub probe_every: Duration,
    /// Time constant of p2c_ewma's peak-EWMA decay.
    #[serde(with = "humantime_serde")]
    pub ewma_decay: Duration,
    /// Bounded-load factor of `consistent`: an origin with more than this
    /// times its capacity share of the requests in flight passes its keys
    /// on (Mirrokni, Thorup, Zadimoghaddam); at least 1.
    pub consistent_load_factor: f64,
}

/// Selection policies.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    /// Weighted four-tier score, power of two choices inside the best tier.
    #[default]
    Tier,
    /// Each origin in turn.
    RoundRobin,
    /// At random, each origin with a probability proportional to its capacity.
    Random,
    /// Fewest requests in flight per unit of capacity.
    LeastConn,
    /// Power of two choices on peak-EWMA latency × in-flight (Finagle/Linkerd).
    P2cEwma,
    /// Consistent hashing with bounded loads on the request path.
    Consistent,
}

/// Weights of the score's inputs. Each input is 0–1, measured against the
/// rest of the fleet (see [`Scales`]), so the score says how much worse
/// than its peers an origin is doing.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Weights {
    /// Response time (time to first byte) over the fleet's, measured by the proxy.
    pub latency: f64,
    /// Requests in flight per unit of capacity over the fleet's, measured by the proxy.
    pub queue: f64,
    /// Share of attempts that failed (5xx, connect or read errors), measured by the proxy.
    pub errors: f64,
    /// CPU utilization over the fleet's, from the origin's load report.
    pub cpu: f64,
    /// Memory utilization over the fleet's, from the origin's load report.
    pub memory: f64,
}

/// What counts as a full (1.0) input.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Scales {
    /// Response time this many times the fleet's median counts in full
    /// (1× counts zero).
    pub latency_ratio: f64,
    /// The fleet's median response time is taken as at least this, so
    /// that sub-millisecond differences between healthy origins are noise.
    #[serde(with = "humantime_serde")]
    pub latency_floor: Duration,
    /// In-flight per unit of capacity this many times (the fleet's mean + 1)
    /// above the fleet's mean counts in full.
    pub queue_excess: f64,
    /// This share of failed attempts counts in full.
    pub error_ratio: f64,
    /// CPU utilization this far above the fleet's median counts in full.
    pub cpu_excess: f64,
    /// Memory utilization this far above the fleet's median counts in full.
    pub memory_excess: f64,
}

impl Default for Selection {
    fn default() -> Self {
        Selection {
            policy: Policy::Tier,
            weights: Weights::default(),
            tier_bounds: [25.0, 50.0, 75.0],
            hysteresis: 5.0,
            scales: Scales::default(),
            probe_every: Duration::from_secs(1),
            ewma_decay: Duration::from_secs(10),
            consistent_load_factor: 1.25,
        }
    }
}

impl Weights {
    /// The weights in the order of [`INPUTS`](super::INPUTS).
    pub fn as_array(&self) -> [f64; 5] {
        [self.latency, self.queue, self.errors, self.cpu, self.memory]
    }
}

impl Default for Weights {
    fn default() -> Self {
        Weights {
            latency: 0.30,
            queue: 0.20,
            errors: 0.10,
            cpu: 0.30,
            memory: 0.10,
        }
    }
}

impl Default for Scales {
    fn default() -> Self {
        Scales {
            latency_ratio: 3.0,
            latency_floor: Duration::from_millis(1),
            queue_excess: 2.0,
            error_ratio: 0.10,
            cpu_excess: 0.5,
            memory_excess: 0.5,
        }
    }
}
