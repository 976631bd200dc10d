//! Per-origin live state: what the proxy measures itself (in flight, rate,
//! time to first byte), what the origin reports (CPU, memory), health,
//! ejection and drain. Everything is atomics: the selection policies read it
//! on every pick, `/metrics`, `/prometheus` and the admin API read the same
//! numbers, and the proxy and the monitor write them.

use crate::config::{Ejection, Selection};
use crate::metrics::OriginSeries;
use arc_swap::{ArcSwap, ArcSwapOption};
use cdn_types::LoadReport;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Milliseconds since the process started (a monotonic clock cheap to store in an atomic).
pub fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// An `f64` in an atomic.
#[derive(Default, Debug)]
pub struct AtomicF64(AtomicU64);

impl AtomicF64 {
    /// A new value.
    pub fn new(v: f64) -> Self {
        AtomicF64(AtomicU64::new(v.to_bits()))
    }
    /// Reads it.
    pub fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Relaxed))
    }
    /// Writes it.
    pub fn set(&self, v: f64) {
        self.0.store(v.to_bits(), Relaxed)
    }
    /// Applies `f` atomically (compare-and-swap loop).
    pub fn update(&self, mut f: impl FnMut(f64) -> f64) {
        let _ = self
            .0
            .fetch_update(Relaxed, Relaxed, |b| Some(f(f64::from_bits(b)).to_bits()));
    }
}

/// Health as the active checks see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Health {
    /// Not yet checked, or failing: no traffic.
    Down = 0,
    /// Passing checks.
    Up = 1,
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

/// One origin's live state.
pub struct Origin {
    /// Where it listens.
    pub addr: SocketAddr,
    /// `addr` as text, the label in metrics and the admin API.
    pub label: String,
    /// How it was found: `static`, or the DNS name.
    pub source: String,

    inflight: AtomicI64,
    requests: AtomicU64,
    errors: AtomicU64,
    bytes: AtomicU64,
    rate: pingora_limits::rate::Rate,
    ttfb_ewma: AtomicF64,
    ttfb_at: AtomicU64,
    peak_ewma: AtomicF64,
    peak_at: AtomicU64,
    /// The EWMA time constant in ms, from the config of the last sample.
    decay_ms: AtomicU64,

    cpu: AtomicF64,
    mem: AtomicF64,
    load_at: AtomicU64,
    /// The last in-band load report as received. Origins resample every
    /// 500 ms and answer thousands of requests in between with the same
    /// text, which is then not parsed again.
    load_text: ArcSwapOption<Vec<u8>>,

    health: AtomicU8,
    passes: AtomicU32,
    fails: AtomicU32,
    checked_once: AtomicBool,
    reports_draining: AtomicBool,
    operator_drain: AtomicBool,
    gone: AtomicBool,
    last_check_unix_ms: AtomicU64,
    last_check_ok: AtomicBool,

    ejected: AtomicBool,
    ejected_until: AtomicU64,
    ejections: AtomicU32,
    consecutive_failures: AtomicU32,

    capacity: AtomicF64,
    capacity_override: AtomicF64,
    tier: AtomicU8,
    score: AtomicF64,

    /// Its Prometheus series, looked up once (a label lookup hashes and locks).
    pub series: OnceLock<OriginSeries>,
}

impl Origin {
    /// A new origin: down until its first health check passes.
    pub fn new(addr: SocketAddr, source: &str, capacity: f64) -> Self {
        Origin {
            addr,
            label: addr.to_string(),
            source: source.to_string(),
            inflight: AtomicI64::new(0),
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            rate: pingora_limits::rate::Rate::new(Duration::from_secs(1)),
            ttfb_ewma: AtomicF64::default(),
            ttfb_at: AtomicU64::new(0),
            peak_ewma: AtomicF64::default(),
            peak_at: AtomicU64::new(0),
            decay_ms: AtomicU64::new(10_000),
            cpu: AtomicF64::default(),
            mem: AtomicF64::default(),
            load_at: AtomicU64::new(0),
            load_text: ArcSwapOption::empty(),
            health: AtomicU8::new(Health::Down as u8),
            passes: AtomicU32::new(0),
            fails: AtomicU32::new(0),
            checked_once: AtomicBool::new(false),
            reports_draining: AtomicBool::new(false),
            operator_drain: AtomicBool::new(false),
            gone: AtomicBool::new(false),
            last_check_unix_ms: AtomicU64::new(0),
            last_check_ok: AtomicBool::new(false),
            ejected: AtomicBool::new(false),
            ejected_until: AtomicU64::new(0),
            ejections: AtomicU32::new(0),
            consecutive_failures: AtomicU32::new(0),
            capacity: AtomicF64::new(capacity),
            capacity_override: AtomicF64::default(),
            tier: AtomicU8::new(0),
            score: AtomicF64::default(),
            series: OnceLock::new(),
        }
    }

    // ----- the proxy's own measurements, updated per request -----

    /// A request starts towards this origin.
    pub fn start_request(&self) {
        self.inflight.fetch_add(1, Relaxed);
        self.requests.fetch_add(1, Relaxed);
        self.rate.observe(&(), 1);
    }

    /// A request to this origin ended (whatever the outcome).
    pub fn end_request(&self) {
        self.inflight.fetch_sub(1, Relaxed);
    }

    /// Time to first byte of a response, feeding both EWMAs.
    pub fn observe_ttfb(&self, ttfb: Duration, decay: Duration) {
        let now = now_ms();
        self.decay_ms
            .store(decay.as_millis().max(1) as u64, Relaxed);
        let sample = ttfb.as_secs_f64();
        let tau = decay.as_secs_f64().max(1e-3);
        let dt =
            |at: &AtomicU64| (now.saturating_sub(at.swap(now, Relaxed)) as f64 / 1000.0).max(0.0);
        let w = (-dt(&self.ttfb_at) / tau).exp();
        self.ttfb_ewma.update(|e| {
            if e == 0.0 {
                sample
            } else {
                e * w + sample * (1.0 - w)
            }
        });
        // Peak EWMA (Finagle/Linkerd): jumps up to a slower sample at once, decays slowly.
        let w = (-dt(&self.peak_at) / tau).exp();
        self.peak_ewma.update(|e| {
            if sample > e {
                sample
            } else {
                e * w + sample * (1.0 - w)
            }
        });
    }

    /// Body bytes received from this origin.
    pub fn add_bytes(&self, n: u64) {
        self.bytes.fetch_add(n, Relaxed);
    }

    /// The outcome of a request, for passive ejection. Returns true when it ejected the origin.
    pub fn record_outcome(&self, ok: bool, cfg: &Ejection) -> bool {
        if ok {
            self.consecutive_failures.store(0, Relaxed);
            return false;
        }
        self.errors.fetch_add(1, Relaxed);
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

    // ----- what the origin reports -----

    /// Stores a load report (in-band header or health-check response).
    pub fn set_load(&self, r: &LoadReport) {
        self.cpu.set(r.cpu_utilization);
        self.mem.set(r.mem_utilization);
        self.load_at.store(now_ms(), Relaxed);
    }

    /// Stores an in-band load report (the `endpoint-load-metrics` header's
    /// ORCA text), parsing it only if it differs from the last one; an
    /// unchanged report still counts as fresh. A malformed report is ignored.
    pub fn set_load_text(&self, text: &[u8]) {
        if self.load_text.load().as_deref().map(Vec::as_slice) == Some(text) {
            self.load_at.store(now_ms(), Relaxed);
            return;
        }
        let parsed = std::str::from_utf8(text)
            .ok()
            .and_then(|t| LoadReport::parse_orca_text(t).ok());
        if let Some(report) = parsed {
            self.set_load(&report);
            self.load_text.store(Some(Arc::new(text.to_vec())));
        }
    }

    // ----- health, from the monitor -----

    /// Records one active check: `Some(true)` healthy, `Some(false)` draining
    /// (answered 503), `None` failed. New origins come up on their first pass;
    /// after that `rise`/`fall` consecutive results change the state.
    pub fn record_check(&self, result: Option<bool>, rise: u32, fall: u32) {
        self.last_check_unix_ms.store(unix_ms(), Relaxed);
        self.last_check_ok.store(result.is_some(), Relaxed);
        let first = !self.checked_once.swap(true, Relaxed);
        match result {
            Some(ready) => {
                self.reports_draining.store(!ready, Relaxed);
                self.fails.store(0, Relaxed);
                let passes = self.passes.fetch_add(1, Relaxed) + 1;
                if first || passes >= rise {
                    self.health.store(Health::Up as u8, Relaxed);
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
                    self.health.store(Health::Down as u8, Relaxed);
                }
            }
        }
    }

    /// Operator drain on or off.
    pub fn set_operator_drain(&self, on: bool) {
        self.operator_drain.store(on, Relaxed);
    }

    /// Marks the origin as no longer listed by discovery (it drains), or listed again.
    pub fn set_gone(&self, gone: bool) {
        self.gone.store(gone, Relaxed);
    }

    /// Sets the capacity from the config (discovery does, every round).
    pub fn set_configured_capacity(&self, c: f64) {
        self.capacity.set(c);
    }

    /// Sets an operator's capacity, which wins over the config; `None` clears it.
    pub fn set_capacity_override(&self, c: Option<f64>) {
        self.capacity_override.set(c.unwrap_or(0.0));
    }

    // ----- reads -----

    /// May this origin take a new request now?
    pub fn eligible(&self) -> bool {
        self.state() == State::Up
    }

    /// The operator-visible state.
    pub fn state(&self) -> State {
        if self.health.load(Relaxed) != Health::Up as u8 {
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

    /// Requests in flight now.
    pub fn inflight(&self) -> i64 {
        self.inflight.load(Relaxed).max(0)
    }
    /// Requests sent so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Relaxed)
    }
    /// Failed requests so far.
    pub fn errors(&self) -> u64 {
        self.errors.load(Relaxed)
    }
    /// Body bytes received so far.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Relaxed)
    }
    /// Requests per second over the last full second.
    pub fn rate(&self) -> f64 {
        self.rate.rate(&())
    }
    /// EWMA of time to first byte, seconds, decayed by the time since the
    /// last sample (as Linkerd's peak EWMA decays on read): an origin that
    /// stops being picked looks cheaper over time and gets probed again,
    /// instead of being starved by one old slow sample.
    pub fn ttfb_ewma(&self) -> f64 {
        self.decayed(&self.ttfb_ewma, &self.ttfb_at)
    }
    /// Peak EWMA of time to first byte, seconds, decayed the same way.
    pub fn peak_ewma(&self) -> f64 {
        self.decayed(&self.peak_ewma, &self.peak_at)
    }
    fn decayed(&self, value: &AtomicF64, at: &AtomicU64) -> f64 {
        let age = now_ms().saturating_sub(at.load(Relaxed)) as f64;
        value.get() * (-age / self.decay_ms.load(Relaxed) as f64).exp()
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

    /// Whether an operator has drained this origin.
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
    /// The last computed score and tier.
    pub fn score_and_tier(&self) -> (f64, u8) {
        (self.score.get(), self.tier.load(Relaxed))
    }

    /// The 0–100 load score of the original system, on fresh inputs:
    /// `w.cpu·cpu + w.memory·mem + w.requests·rate + w.streams·in_flight + w.response_time·ttfb`,
    /// each input normalised to 0–1 by its ceiling (rate and streams ceilings scale with capacity).
    pub fn score(&self, s: &Selection) -> f64 {
        let (w, c) = (s.weights, s.ceilings);
        let cap = self.capacity().max(1e-9);
        let req = self.rate() / (c.requests_per_sec * cap);
        let streams = self.inflight() as f64 / (c.streams * cap);
        let resp = self.ttfb_ewma() / c.response_time.as_secs_f64();
        let clamp = |x: f64| x.clamp(0.0, 1.0);
        100.0
            * (w.cpu * clamp(self.cpu())
                + w.memory * clamp(self.mem())
                + w.requests * clamp(req)
                + w.streams * clamp(streams)
                + w.response_time * clamp(resp))
    }

    /// Scores the origin and places it in a tier with hysteresis: it leaves
    /// its current tier only once the score is `hysteresis` points past the
    /// tier's bounds, so an origin near a bound does not flap.
    pub fn rate_tier(&self, s: &Selection) -> u8 {
        let score = self.score(s);
        self.score.set(score);
        let b = s.tier_bounds;
        let raw = b.iter().position(|bound| score < *bound).unwrap_or(3) as u8;
        let prev = self.tier.load(Relaxed);
        if raw == prev {
            return prev;
        }
        let lower = if prev == 0 {
            f64::NEG_INFINITY
        } else {
            b[prev as usize - 1]
        };
        let upper = if prev >= 3 {
            f64::INFINITY
        } else {
            b[prev as usize]
        };
        if score >= lower - s.hysteresis && score < upper + s.hysteresis {
            return prev;
        }
        self.tier.store(raw, Relaxed);
        raw
    }
}

/// Every origin the proxy knows, by address. Reads (every request) are a
/// lock-free snapshot load; writes (discovery, rare) copy the map under a mutex.
#[derive(Default)]
pub struct Registry {
    map: ArcSwap<HashMap<SocketAddr, Arc<Origin>>>,
    write: Mutex<()>,
}

impl Registry {
    /// The origin at `addr`, created with `source` and `capacity` if new.
    pub fn get_or_insert(&self, addr: SocketAddr, source: &str, capacity: f64) -> Arc<Origin> {
        if let Some(o) = self.get(&addr) {
            return o;
        }
        let _w = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let mut map = HashMap::clone(&self.map.load());
        let o = map
            .entry(addr)
            .or_insert_with(|| Arc::new(Origin::new(addr, source, capacity)))
            .clone();
        self.map.store(Arc::new(map));
        o
    }

    /// The origin at `addr`, if known.
    pub fn get(&self, addr: &SocketAddr) -> Option<Arc<Origin>> {
        self.map.load().get(addr).cloned()
    }

    /// Every origin, sorted by address.
    pub fn all(&self) -> Vec<Arc<Origin>> {
        let mut v: Vec<_> = self.map.load().values().cloned().collect();
        v.sort_by_key(|o| o.addr);
        v
    }

    /// Forgets origins that are gone and have nothing in flight.
    pub fn prune(&self) {
        let _w = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let mut map = HashMap::clone(&self.map.load());
        map.retain(|_, o| !(o.gone.load(Relaxed) && o.inflight() == 0));
        self.map.store(Arc::new(map));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin() -> Origin {
        Origin::new("127.0.0.1:1".parse().unwrap(), "static", 1.0)
    }

    #[test]
    fn new_origins_come_up_on_first_pass_then_follow_rise_and_fall() {
        let o = origin();
        assert_eq!(o.state(), State::Down);
        o.record_check(Some(true), 2, 2);
        assert_eq!(o.state(), State::Up);
        o.record_check(None, 2, 2);
        assert_eq!(o.state(), State::Up, "one failure is below fall=2");
        o.record_check(None, 2, 2);
        assert_eq!(o.state(), State::Down);
        o.record_check(Some(true), 2, 2);
        assert_eq!(o.state(), State::Down, "one pass is below rise=2");
        o.record_check(Some(true), 2, 2);
        assert_eq!(o.state(), State::Up);
        o.record_check(Some(false), 2, 2);
        assert_eq!(o.state(), State::Draining, "503 on /healthz drains");
    }

    #[test]
    fn in_band_reports_are_parsed_when_they_change_and_malformed_ones_ignored() {
        let o = origin();
        o.set_load_text(b"TEXT cpu_utilization=0.25, mem_utilization=0.5");
        assert_eq!((o.cpu(), o.mem()), (0.25, 0.5));
        o.load_at.store(u64::MAX, Relaxed);
        o.set_load_text(b"TEXT cpu_utilization=0.25, mem_utilization=0.5");
        assert_ne!(
            o.load_at.load(Relaxed),
            u64::MAX,
            "an unchanged report is fresh again"
        );
        o.set_load_text(b"TEXT cpu_utilization=0.75, mem_utilization=0.125");
        assert_eq!(
            (o.cpu(), o.mem()),
            (0.75, 0.125),
            "a changed report is parsed"
        );
        o.set_load_text(b"TEXT cpu_utilization=oops");
        o.set_load_text(b"\xff\xfe");
        assert_eq!(
            (o.cpu(), o.mem()),
            (0.75, 0.125),
            "malformed reports change nothing"
        );
        o.set_load_text(b"TEXT cpu_utilization=0.25, mem_utilization=0.5");
        assert_eq!(
            (o.cpu(), o.mem()),
            (0.25, 0.5),
            "the first report again, after others, is parsed"
        );
    }

    #[test]
    fn consecutive_failures_eject_with_growing_backoff() {
        let o = origin();
        o.record_check(Some(true), 1, 1);
        let cfg = Ejection {
            consecutive_failures: 3,
            base: Duration::from_secs(10),
            max: Duration::from_secs(25),
        };
        assert!(!o.record_outcome(false, &cfg));
        assert!(!o.record_outcome(true, &cfg), "a success resets the count");
        assert!(!o.record_outcome(false, &cfg));
        assert!(!o.record_outcome(false, &cfg));
        assert!(o.record_outcome(false, &cfg));
        assert_eq!(o.state(), State::Ejected);
        let first = o.ejected_until.load(Relaxed) - now_ms();
        assert!((9_000..=10_000).contains(&first), "{first}");
        // A passing check before the backoff ends does not bring it back.
        o.record_check(Some(true), 1, 1);
        assert_eq!(o.state(), State::Ejected);
        // Once over, a passing check does; the next ejection lasts twice as long (capped).
        o.ejected_until.store(now_ms(), Relaxed);
        o.record_check(Some(true), 1, 1);
        assert_eq!(o.state(), State::Up);
        for _ in 0..3 {
            o.record_outcome(false, &cfg);
        }
        let second = o.ejected_until.load(Relaxed) - now_ms();
        assert!((19_000..=20_000).contains(&second), "{second}");
        o.ejected_until.store(now_ms(), Relaxed);
        o.record_check(Some(true), 1, 1);
        for _ in 0..3 {
            o.record_outcome(false, &cfg);
        }
        let third = o.ejected_until.load(Relaxed) - now_ms();
        assert!(third <= 25_000, "capped at max: {third}");
    }

    #[test]
    fn score_follows_the_original_formula() {
        let o = origin();
        let s = Selection::default();
        o.set_load(&LoadReport {
            cpu_utilization: 0.5,
            mem_utilization: 1.0,
            ..Default::default()
        });
        // 100 * (0.30*0.5 + 0.25*1.0) = 40
        assert!((o.score(&s) - 40.0).abs() < 1e-9);
        for _ in 0..50 {
            o.start_request();
        }
        // + 100 * 0.15 * 50/100 = 7.5
        assert!((o.score(&s) - 47.5).abs() < 1e-9);
    }

    #[test]
    fn tiers_have_hysteresis() {
        let o = origin();
        let s = Selection::default(); // bounds 25/50/75, hysteresis 5
        let at = |cpu: f64| {
            o.set_load(&LoadReport {
                cpu_utilization: cpu,
                ..Default::default()
            });
            o.rate_tier(&s)
        };
        assert_eq!(at(0.0), 0);
        assert_eq!(at(0.9), 0, "score 27: inside 25+5, stays in tier 0");
        assert_eq!(at(1.0), 1, "score 30: past the band, moves up");
        assert_eq!(at(0.8), 1, "score 24: inside 25-5, stays in tier 1");
        assert_eq!(at(0.6), 0, "score 18: moves down");
    }
}
