//! One origin's live state: what the proxy counts itself (requests in
//! flight, requests, errors, bytes, responses by status class), what the
//! origin reports (CPU, memory), its capacity weight, and its [`Ttfb`] and
//! [`Health`]. Everything is atomics; each figure has one writer.

use super::{Ejection, Health, State, Ttfb};
use crate::atomic_f64::AtomicF64;
use crate::clock::now_ms;
use arc_swap::ArcSwapOption;
use cdn_types::status::status_class_index;
use cdn_types::LoadReport;
use http::HeaderValue;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

/// One origin's live state.
pub struct Origin {
    /// Where it listens.
    pub addr: SocketAddr,
    /// `addr` as text, the label in metrics and the admin API.
    pub label: String,
    /// `label` as a header value, for `X-Served-By` (made once, not per response).
    pub label_header: HeaderValue,
    /// How it was found: `static`, or the DNS name.
    pub source: String,
    /// Time to first byte of its responses.
    pub ttfb: Ttfb,
    /// Checks, ejection and drains.
    pub health: Health,

    inflight: AtomicI64,
    requests: AtomicU64,
    errors: AtomicU64,
    bytes: AtomicU64,
    /// Media-path slice fetches this origin served (resumes included).
    slices: AtomicU64,
    /// Requests answered to clients through this origin, by status class.
    responses: [AtomicU64; 5],

    cpu: AtomicF64,
    mem: AtomicF64,
    load_at: AtomicU64,
    /// The last in-band load report as received. Origins resample every
    /// 500 ms and answer thousands of requests in between with the same
    /// text, which is then not parsed again.
    load_text: ArcSwapOption<Vec<u8>>,

    capacity: AtomicF64,
    capacity_override: AtomicF64,
    /// The pools it is in, one bit each (`pools.rs`), set by discovery.
    pools: AtomicU64,
}

impl Origin {
    /// A new origin: down until its first health check passes.
    pub fn new(addr: SocketAddr, source: &str, capacity: f64) -> Self {
        let label = addr.to_string();
        Origin {
            addr,
            label_header: HeaderValue::from_str(&label).expect("an address is a header value"),
            label,
            source: source.to_string(),
            ttfb: Ttfb::default(),
            health: Health::default(),
            inflight: AtomicI64::new(0),
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            slices: AtomicU64::new(0),
            responses: Default::default(),
            cpu: AtomicF64::default(),
            mem: AtomicF64::default(),
            load_at: AtomicU64::new(0),
            load_text: ArcSwapOption::empty(),
            capacity: AtomicF64::new(capacity),
            capacity_override: AtomicF64::default(),
            // Until discovery says otherwise: the default pool.
            pools: AtomicU64::new(super::pools::bit(super::pools::DEFAULT_POOL).unwrap_or(1)),
        }
    }

    // ----- the proxy's own measurements, updated per request -----

    /// A request starts towards this origin.
    pub fn start_request(&self) {
        self.inflight.fetch_add(1, Relaxed);
        self.requests.fetch_add(1, Relaxed);
    }

    /// A request to this origin ended (whatever the outcome).
    pub fn end_request(&self) {
        self.inflight.fetch_sub(1, Relaxed);
    }

    /// A response's header arrived `ttfb` after its request was sent, at
    /// `now_ms` (on [`now_ms`]'s clock); `decay` is the EWMA time constant.
    pub fn observe_ttfb(&self, ttfb: Duration, now_ms: u64, decay: Duration) {
        self.ttfb.observe(ttfb, now_ms, decay);
    }

    /// A media-path slice (or the rest of one) is being served by this origin.
    pub fn count_slice(&self) {
        self.slices.fetch_add(1, Relaxed);
    }

    /// Body bytes received from this origin.
    pub fn add_bytes(&self, n: u64) {
        self.bytes.fetch_add(n, Relaxed);
    }

    /// The outcome of an attempt, for the error count and passive ejection.
    /// Returns true when it ejected the origin.
    pub fn record_outcome(&self, ok: bool, cfg: &Ejection) -> bool {
        if !ok {
            self.errors.fetch_add(1, Relaxed);
        }
        self.health.record_outcome(ok, cfg)
    }

    /// A request served through this origin was answered `status` (0: no answer).
    pub fn count_response(&self, status: u16) {
        self.responses[status_class_index(status)].fetch_add(1, Relaxed);
    }

    // ----- what the origin reports -----

    /// Stores a load report (health-check response).
    pub fn set_load(&self, r: &LoadReport) {
        self.set_load_at(r, now_ms());
    }

    fn set_load_at(&self, r: &LoadReport, at_ms: u64) {
        self.cpu.set(r.cpu_utilization);
        self.mem.set(r.mem_utilization);
        self.load_at.store(at_ms, Relaxed);
    }

    /// Stores an in-band load report (the `endpoint-load-metrics` header's
    /// ORCA text) received at `at_ms` (on [`now_ms`]'s clock), parsing it
    /// only if it differs from the last one; an unchanged report still
    /// counts as fresh. A malformed report is ignored.
    pub fn set_load_text(&self, text: &[u8], at_ms: u64) {
        if self.load_text.load().as_deref().map(Vec::as_slice) == Some(text) {
            self.load_at.store(at_ms, Relaxed);
            return;
        }
        let parsed = std::str::from_utf8(text)
            .ok()
            .and_then(|t| LoadReport::parse_orca_text(t).ok());
        if let Some(report) = parsed {
            self.set_load_at(&report, at_ms);
            self.load_text.store(Some(Arc::new(text.to_vec())));
        }
    }

    // ----- from discovery and the operator -----

    /// Sets the capacity from the config (discovery does, every round).
    pub fn set_configured_capacity(&self, c: f64) {
        self.capacity.set(c);
    }

    /// Sets an operator's capacity, which wins over the config; `None` clears it.
    pub fn set_capacity_override(&self, c: Option<f64>) {
        self.capacity_override.set(c.unwrap_or(0.0));
    }

    // ----- reads -----

    /// Whether it is in any of the pools of `mask`.
    pub fn in_pools(&self, mask: u64) -> bool {
        self.pools.load(Relaxed) & mask != 0
    }

    /// The pools it is in, as a mask.
    pub fn pools(&self) -> u64 {
        self.pools.load(Relaxed)
    }

    /// Sets the pools it is in (discovery, on every round).
    pub fn set_pools(&self, mask: u64) {
        self.pools.store(mask, Relaxed);
    }

    /// May this origin take a new request now?
    pub fn eligible(&self) -> bool {
        self.health.state() == State::Up
    }

    /// The operator-visible state.
    pub fn state(&self) -> State {
        self.health.state()
    }

    /// Requests in flight now.
    pub fn inflight(&self) -> i64 {
        self.inflight.load(Relaxed).max(0)
    }
    /// Requests sent so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Relaxed)
    }
    /// Failed attempts so far.
    pub fn errors(&self) -> u64 {
        self.errors.load(Relaxed)
    }
    /// Body bytes received so far.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Relaxed)
    }
    /// Media-path slices served so far.
    pub fn slices(&self) -> u64 {
        self.slices.load(Relaxed)
    }
    /// Requests answered through it so far, by status class (1xx..5xx).
    pub fn responses(&self) -> [u64; 5] {
        std::array::from_fn(|i| self.responses[i].load(Relaxed))
    }
    /// Reported CPU utilization.
    pub fn cpu(&self) -> f64 {
        self.cpu.get()
    }
    /// Reported memory utilization.
    pub fn mem(&self) -> f64 {
        self.mem.get()
    }
    /// Milliseconds since the last load report.
    pub fn load_age_ms(&self) -> Option<u64> {
        let at = self.load_at.load(Relaxed);
        (at > 0).then(|| now_ms().saturating_sub(at))
    }
    /// Capacity weight: the operator's if set, else the config's.
    pub fn capacity(&self) -> f64 {
        let o = self.capacity_override.get();
        if o > 0.0 {
            o
        } else {
            self.capacity.get()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin() -> Origin {
        Origin::new("127.0.0.1:1".parse().unwrap(), "static", 1.0)
    }

    #[test]
    fn in_band_reports_are_parsed_when_they_change_and_malformed_ones_ignored() {
        let o = origin();
        o.set_load_text(b"TEXT cpu_utilization=0.25, mem_utilization=0.5", now_ms());
        assert_eq!((o.cpu(), o.mem()), (0.25, 0.5));
        o.load_at.store(u64::MAX, Relaxed);
        o.set_load_text(b"TEXT cpu_utilization=0.25, mem_utilization=0.5", now_ms());
        assert_ne!(
            o.load_at.load(Relaxed),
            u64::MAX,
            "an unchanged report is fresh again"
        );
        o.set_load_text(
            b"TEXT cpu_utilization=0.75, mem_utilization=0.125",
            now_ms(),
        );
        assert_eq!(
            (o.cpu(), o.mem()),
            (0.75, 0.125),
            "a changed report is parsed"
        );
        o.set_load_text(b"TEXT cpu_utilization=oops", now_ms());
        o.set_load_text(b"\xff\xfe", now_ms());
        assert_eq!(
            (o.cpu(), o.mem()),
            (0.75, 0.125),
            "malformed reports change nothing"
        );
        o.set_load_text(b"TEXT cpu_utilization=0.25, mem_utilization=0.5", now_ms());
        assert_eq!(
            (o.cpu(), o.mem()),
            (0.25, 0.5),
            "the first report again, after others, is parsed"
        );
    }

    #[test]
    fn responses_are_counted_by_class_and_failures_by_outcome() {
        let o = origin();
        for s in [200, 206, 404, 503, 0] {
            o.count_response(s);
        }
        assert_eq!(o.responses(), [0, 2, 0, 1, 2]);
        let cfg = Ejection::default();
        o.record_outcome(true, &cfg);
        o.record_outcome(false, &cfg);
        assert_eq!(o.errors(), 1);
    }
}
