//! The selection settings (`selection:` in `cdn.yaml`): which policy picks
//! origins and the tier model's weights, bounds and ceilings. Defined here,
//! with the policies they steer; `config/` reads them from the file and
//! checks them.

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
    /// The values that count as 100% for the inputs the proxy measures.
    pub ceilings: Ceilings,
    /// Time constant of the response-time EWMA (and the decay of p2c_ewma's peak).
    #[serde(with = "humantime_serde")]
    pub ewma_decay: Duration,
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
    /// Ketama consistent hashing on the request path.
    Consistent,
}

/// Weights of the score's inputs.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Weights {
    /// Origin CPU utilization (from its load report).
    pub cpu: f64,
    /// Origin memory utilization (from its load report).
    pub memory: f64,
    /// Request rate to the origin, measured by the proxy.
    pub requests: f64,
    /// Requests in flight to the origin, measured by the proxy.
    pub streams: f64,
    /// EWMA of time to first byte, measured by the proxy.
    pub response_time: f64,
}

/// Normalisation ceilings for the proxy-measured inputs.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Ceilings {
    /// Requests per second that count as a full `requests` input.
    pub requests_per_sec: f64,
    /// Requests in flight that count as a full `streams` input.
    pub streams: f64,
    /// Time to first byte that counts as a full `response_time` input.
    #[serde(with = "humantime_serde")]
    pub response_time: Duration,
}

impl Default for Selection {
    fn default() -> Self {
        Selection {
            policy: Policy::Tier,
            weights: Weights::default(),
            tier_bounds: [25.0, 50.0, 75.0],
            hysteresis: 5.0,
            ceilings: Ceilings::default(),
            ewma_decay: Duration::from_secs(10),
        }
    }
}

impl Default for Weights {
    fn default() -> Self {
        Weights {
            cpu: 0.30,
            memory: 0.25,
            requests: 0.20,
            streams: 0.15,
            response_time: 0.10,
        }
    }
}

impl Default for Ceilings {
    fn default() -> Self {
        Ceilings {
            requests_per_sec: 500.0,
            streams: 100.0,
            response_time: Duration::from_millis(500),
        }
    }
}
