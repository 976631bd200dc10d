//! The media path: a GET of a media file is answered by the proxy itself,
//! from aligned slices of the object fetched with Range requests, each from
//! the origin the balancer picks. A stream thereby outlives the origin
//! serving it: when an origin fails mid-slice, the rest of that slice comes
//! from another, checked to be the same object (never two versions spliced).
//! Memory per stream is one small origin read buffer, written to the client
//! as it is (`origin_response.rs`).
//!
//! `slicing.rs` is the arithmetic, `object.rs` what the first slice fixes,
//! `fetch.rs` one fetch from one origin, `stream.rs` the client's response,
//! `client_body.rs` where its body goes (through Pingora, or `sendfile`);
//! with a cache, `cached.rs` answers from it and `fill.rs` fills it.
//! Anything that is not a media GET, or that the origins do not answer with
//! ranges, goes the plain Pingora proxy path unchanged.

mod cached;
mod client_body;
mod fetch;
mod fill;
mod object;
mod origin_response;
mod pace;
mod slicing;
mod stream;

pub use fetch::Fetcher;
pub use stream::{Failed, Report, Served};

use crate::metrics::Metrics;
use crate::monitor::Warmup;
use std::sync::Arc;

/// Hop-by-hop headers (RFC 9110 §7.6.1): about one connection, never
/// passed from a client to an origin or from an origin to a client.
const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// What a request's route says about serving it.
#[derive(Debug, Clone, Copy)]
pub struct RouteUse {
    /// The route lets the cache answer (when there is one).
    pub cache: bool,
    /// The bit of the route's pool (`routes[].pool`).
    pub pool: u64,
}

/// The media path: what it needs to fetch slices and count them.
pub struct MediaPath {
    /// Fetches slices from origins.
    pub fetcher: Arc<Fetcher>,
    /// The slice cache, when `cache.dir` is set.
    pub cache: Option<Arc<crate::cache::Cache>>,
    /// The first health-check round (streams arriving before it wait for it).
    pub warmup: Arc<Warmup>,
    /// Whole-proxy counters, the media ones included.
    pub metrics: Arc<Metrics>,
}
