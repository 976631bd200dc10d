//! `cdn_client_ttfb_seconds{route}`: how long clients wait for their
//! response header, by route (`routes[].prefix`): from the request's arrival
//! to its header, whether the answer came from an origin or the cache. A
//! video's whole duration is the viewer's, not the edge's, so the header is
//! where latency shows. The per-route histograms are looked up once per
//! config, not per request.

use crate::config::Config;
use crate::origins::TTFB_BUCKETS;
use arc_swap::ArcSwap;
use prometheus::{Histogram, HistogramVec};
use std::sync::{Arc, Weak};
use std::time::Duration;

/// The histograms of the routes of one config.
struct ForConfig {
    /// The config they were made for: compared by address (the weak
    /// reference keeps that address from being reused while held).
    config: Weak<Config>,
    by_route: Vec<Histogram>,
}

/// The per-route response-header histograms.
pub struct RouteLatency {
    family: HistogramVec,
    current: ArcSwap<ForConfig>,
}

impl RouteLatency {
    /// Registers `cdn_client_ttfb_seconds` in the default registry.
    pub fn register() -> prometheus::Result<Self> {
        let family = prometheus::register_histogram_vec!(
            "cdn_client_ttfb_seconds",
            "Time from a request's arrival to its response header, by route prefix (from an origin or the cache).",
            &["route"],
            TTFB_BUCKETS.to_vec()
        )?;
        Ok(RouteLatency {
            family,
            current: ArcSwap::from_pointee(ForConfig {
                config: Weak::new(),
                by_route: Vec::new(),
            }),
        })
    }

    /// Records that a request on route `index` of `cfg` got its header after `waited`.
    pub fn observe(&self, cfg: &Arc<Config>, index: usize, waited: Duration) {
        let seconds = waited.as_secs_f64();
        let current = self.current.load();
        if std::ptr::eq(current.config.as_ptr(), Arc::as_ptr(cfg)) {
            if let Some(h) = current.by_route.get(index) {
                h.observe(seconds);
            }
            return;
        }
        // A new config (start or reload): its routes' histograms, once.
        let fresh = ForConfig {
            config: Arc::downgrade(cfg),
            by_route: (cfg.routes.iter())
                .map(|r| self.family.with_label_values(&[r.prefix.as_str()]))
                .collect(),
        };
        if let Some(h) = fresh.by_route.get(index) {
            h.observe(seconds);
        }
        self.current.store(Arc::new(fresh));
    }
}
