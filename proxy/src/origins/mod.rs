//! What the proxy knows about each origin, live: one [`Origin`] per address,
//! kept in the [`Registry`]. Only discovery creates origins; the request
//! path, the monitor and the admin API write their own figures in it (all
//! atomics); the policies, metrics and the dashboard only read.
//!
//! - `state.rs`: the origin and its traffic counters, load report and capacity;
//! - `ttfb.rs`: its time to first byte (EWMAs and a histogram);
//! - `health.rs`: rise/fall of active checks, passive ejection, drains;
//! - `registry.rs`: every origin, by address;
//! - `pools.rs`: pool names and their bits.

mod health;
pub mod pools;
mod registry;
mod state;
mod ttfb;

pub use health::{Ejection, Health, State};
pub use registry::Registry;
pub use state::Origin;
pub use ttfb::{Ttfb, TTFB_BUCKETS};
