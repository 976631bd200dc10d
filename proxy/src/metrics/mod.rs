//! What the proxy reports: the Prometheus series (`prometheus.rs`) and the
//! `/metrics` JSON snapshot built once a second (`snapshot.rs`). Both read
//! the same live state; neither writes it.

mod prometheus;
mod route_latency;
mod snapshot;

pub use self::prometheus::{CacheCollector, Metrics};
pub use route_latency::RouteLatency;
pub use snapshot::{Snapshot, Snapshotter};
