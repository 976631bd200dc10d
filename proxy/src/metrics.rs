//! What the proxy reports: Prometheus series (in the `prometheus` crate's
//! default registry, next to Pingora's own) and the JSON snapshot served at
//! `/metrics`, built once a second.
//!
//! Per-origin figures are read from the origins' live state when a scrape
//! or a snapshot happens, never copied on the request path: the policy,
//! `/metrics`, `/prometheus` and the dashboard see the same numbers.

use crate::config::Config;
use crate::origins::{now_ms, Registry, State};
use arc_swap::ArcSwap;
use async_trait::async_trait;
use cdn_types::own_process;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use prometheus::{
    register_gauge_vec, register_histogram_vec, register_int_counter, register_int_counter_vec,
    register_int_gauge_vec, Encoder, GaugeVec, Histogram, HistogramVec, IntCounter, IntCounterVec,
    IntGaugeVec, TextEncoder,
};
use serde::Serialize;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// How many recent response times `/metrics` computes its average and p95 over.
const WINDOW: usize = 2048;
/// Samples older than this are left out of the average and p95.
const WINDOW_AGE_MS: u64 = 60_000;

/// The status classes of `cdn_requests_total`'s `code` label.
const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// `code` label of a status: its class (anything outside 1xx–4xx counts as 5xx).
pub fn status_class(status: u16) -> &'static str {
    STATUS_CLASSES[class_index(status)]
}

fn class_index(status: u16) -> usize {
    match status {
        100..=199 => 0,
        200..=299 => 1,
        300..=399 => 2,
        400..=499 => 3,
        _ => 4,
    }
}

/// One origin's request-path series, resolved once per origin:
/// `with_label_values` hashes the labels and takes a lock on every call.
pub struct OriginSeries {
    /// `cdn_ttfb_seconds{origin}`.
    pub ttfb: Histogram,
    /// `cdn_response_bytes_total{origin}`.
    pub bytes: IntCounter,
    /// `cdn_requests_total{origin,code}`, by class, created on first use so
    /// that only classes that happened are exported.
    requests: [OnceLock<IntCounter>; 5],
    label: String,
    vec: IntCounterVec,
}

impl OriginSeries {
    /// `cdn_requests_total{origin,code}` for this status.
    pub fn requests(&self, status: u16) -> &IntCounter {
        let i = class_index(status);
        self.requests[i].get_or_init(|| {
            self.vec
                .with_label_values(&[self.label.as_str(), STATUS_CLASSES[i]])
        })
    }
}

/// Every series and counter the proxy keeps.
pub struct Metrics {
    /// `cdn_requests_total{origin,code}` (code as a class: 2xx, 4xx, ...).
    pub requests: IntCounterVec,
    /// `cdn_ttfb_seconds{origin}`: origin time to first byte.
    pub ttfb: HistogramVec,
    /// `cdn_response_bytes_total{origin}`.
    pub response_bytes: IntCounterVec,
    /// `cdn_retries_total`.
    pub retries: IntCounter,
    /// `cdn_ejections_total{origin}`.
    pub ejections: IntCounterVec,
    /// `cdn_no_origin_total`: requests answered 503 because no origin was usable.
    pub no_origin: IntCounter,
    active_streams: IntGaugeVec,
    up: IntGaugeVec,
    score: GaugeVec,
    tier: IntGaugeVec,
    cpu: GaugeVec,
    memory: GaugeVec,
    /// Requests answered by the proxy (all of them, local endpoints included).
    pub total_requests: AtomicU64,
    /// Response body bytes sent to clients.
    pub total_bytes: AtomicU64,
    /// Recent response times: (ms since start << 24) | micros, newest overwriting oldest.
    recent: Box<[AtomicU64]>,
    recent_next: AtomicUsize,
    /// One scrape at a time: a scrape resets and refills the per-origin gauges.
    scrape: std::sync::Mutex<()>,
}

impl Metrics {
    /// Registers every series in the default registry.
    pub fn new() -> prometheus::Result<Self> {
        Ok(Metrics {
            requests: register_int_counter_vec!(
                "cdn_requests_total",
                "Requests proxied, by origin and status class.",
                &["origin", "code"]
            )?,
            ttfb: register_histogram_vec!(
                "cdn_ttfb_seconds",
                "Time from sending a request to an origin to its response header.",
                &["origin"],
                vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0
                ]
            )?,
            response_bytes: register_int_counter_vec!(
                "cdn_response_bytes_total",
                "Response body bytes received from each origin and sent on.",
                &["origin"]
            )?,
            retries: register_int_counter!(
                "cdn_retries_total",
                "Requests retried on another origin."
            )?,
            ejections: register_int_counter_vec!(
                "cdn_ejections_total",
                "Passive ejections after consecutive failures.",
                &["origin"]
            )?,
            no_origin: register_int_counter!(
                "cdn_no_origin_total",
                "Requests answered 503 because no origin could take them."
            )?,
            active_streams: register_int_gauge_vec!(
                "cdn_active_streams",
                "Requests in flight to each origin.",
                &["origin"]
            )?,
            up: register_int_gauge_vec!(
                "cdn_origin_up",
                "1 if the origin takes traffic, else 0.",
                &["origin", "state"]
            )?,
            score: register_gauge_vec!("cdn_origin_score", "Load score, 0-100.", &["origin"])?,
            tier: register_int_gauge_vec!(
                "cdn_origin_tier",
                "Load tier, 0 (lightest) to 3.",
                &["origin"]
            )?,
            cpu: register_gauge_vec!(
                "cdn_origin_cpu_ratio",
                "CPU utilization the origin reports.",
                &["origin"]
            )?,
            memory: register_gauge_vec!(
                "cdn_origin_memory_ratio",
                "Memory utilization the origin reports.",
                &["origin"]
            )?,
            total_requests: AtomicU64::new(0),
            total_bytes: AtomicU64::new(0),
            recent: (0..WINDOW).map(|_| AtomicU64::new(0)).collect(),
            recent_next: AtomicUsize::new(0),
            scrape: std::sync::Mutex::new(()),
        })
    }

    /// The request-path series of the origin labelled `label`.
    pub fn origin_series(&self, label: &str) -> OriginSeries {
        OriginSeries {
            ttfb: self.ttfb.with_label_values(&[label]),
            bytes: self.response_bytes.with_label_values(&[label]),
            requests: Default::default(),
            label: label.to_string(),
            vec: self.requests.clone(),
        }
    }

    /// Records one response time (time to first byte from an origin).
    pub fn record_response_time(&self, d: Duration) {
        let micros = (d.as_micros() as u64).min((1 << 24) - 1);
        let slot = self.recent_next.fetch_add(1, Relaxed) % WINDOW;
        self.recent[slot].store((now_ms() << 24) | micros, Relaxed);
    }

    /// Average and p95 of the recent response times, in milliseconds.
    fn response_times(&self) -> (f64, f64) {
        let cutoff = now_ms().saturating_sub(WINDOW_AGE_MS);
        let mut v: Vec<f64> = self
            .recent
            .iter()
            .map(|a| a.load(Relaxed))
            .filter(|&x| x != 0 && (x >> 24) >= cutoff)
            .map(|x| (x & ((1 << 24) - 1)) as f64 / 1000.0)
            .collect();
        if v.is_empty() {
            return (0.0, 0.0);
        }
        v.sort_by(f64::total_cmp);
        let avg = v.iter().sum::<f64>() / v.len() as f64;
        (avg, v[((v.len() - 1) as f64 * 0.95).round() as usize])
    }

    /// Prometheus text: refreshes the per-origin gauges from live state, then encodes everything.
    pub fn prometheus_text(&self, registry: &Registry) -> Vec<u8> {
        let _one = self.scrape.lock().unwrap_or_else(|p| p.into_inner());
        for g in [&self.active_streams, &self.tier] {
            g.reset();
        }
        self.up.reset();
        for g in [&self.score, &self.cpu, &self.memory] {
            g.reset();
        }
        for o in registry.all() {
            let l = o.label.as_str();
            let (score, tier) = o.score_and_tier();
            self.active_streams
                .with_label_values(&[l])
                .set(o.inflight());
            let state = o.state();
            self.up
                .with_label_values(&[l, state_name(state)])
                .set((state == State::Up) as i64);
            self.score.with_label_values(&[l]).set(score);
            self.tier.with_label_values(&[l]).set(tier as i64);
            self.cpu.with_label_values(&[l]).set(o.cpu());
            self.memory.with_label_values(&[l]).set(o.mem());
            // Present at 0 before the first ejection, so rates and alerts have a series.
            self.ejections.with_label_values(&[l]);
        }
        let mut out = Vec::with_capacity(16 * 1024);
        let _ = TextEncoder::new().encode(&prometheus::gather(), &mut out);
        out
    }
}

fn state_name(s: State) -> &'static str {
    match s {
        State::Up => "up",
        State::Down => "down",
        State::Ejected => "ejected",
        State::Draining => "draining",
    }
}

/// The `/metrics` JSON document (schema in conf/README.md).
#[derive(Debug, Clone, Serialize, Default)]
pub struct Snapshot {
    /// Unix time of the snapshot, milliseconds.
    pub timestamp_ms: u64,
    /// Whole-proxy figures.
    pub global: Global,
    /// One entry per known origin, sorted by address.
    pub origins: Vec<OriginSnapshot>,
    /// The tier bounds in force (for drawing).
    pub tier_bounds: [f64; 3],
}

/// Whole-proxy figures of a snapshot.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Global {
    /// Requests per minute over the last interval.
    pub requests_per_minute: f64,
    /// Requests answered since start.
    pub requests_total: u64,
    /// Requests in flight to origins now.
    pub concurrent_streams: i64,
    /// Bandwidth to clients over the last interval, megabits per second.
    pub bandwidth_mbps: f64,
    /// Average origin time to first byte over recent requests, ms.
    pub response_time_avg_ms: f64,
    /// 95th percentile of the same, ms.
    pub response_time_p95_ms: f64,
    /// This process's CPU use, percent of one core.
    pub cpu_percent: f64,
    /// This process's resident memory, bytes.
    pub memory_bytes: u64,
    /// Retries since start.
    pub retries_total: u64,
    /// Origins taking traffic / known.
    pub origins_up: usize,
    /// Origins known.
    pub origins_total: usize,
}

/// One origin in a snapshot.
#[derive(Debug, Clone, Serialize)]
pub struct OriginSnapshot {
    /// `ip:port`.
    pub address: String,
    /// `static` or the DNS name it came from.
    pub source: String,
    /// up, down, ejected or draining.
    pub state: State,
    /// Tier 0–3.
    pub tier: u8,
    /// Score 0–100.
    pub score: f64,
    /// The score's inputs.
    pub inputs: Inputs,
    /// Capacity weight.
    pub capacity: f64,
    /// Bytes from this origin over the last interval, megabits per second.
    pub throughput_mbps: f64,
    /// Requests sent since start.
    pub requests_total: u64,
    /// Requests per second over the last interval.
    pub requests_per_sec: f64,
    /// This origin's share of the requests of the last interval, 0–1.
    pub request_share: f64,
    /// Requests in flight now.
    pub in_flight: i64,
    /// Failed requests since start.
    pub errors_total: u64,
    /// Passive ejections since start.
    pub ejections: u32,
    /// The last active health check.
    pub last_health_check: HealthCheck,
}

/// The inputs of an origin's score.
#[derive(Debug, Clone, Serialize)]
pub struct Inputs {
    /// Reported CPU utilization, 0–1.
    pub cpu: f64,
    /// Reported memory utilization, 0–1.
    pub memory: f64,
    /// Proxy-measured requests per second.
    pub requests_per_sec: f64,
    /// Proxy-measured requests in flight.
    pub streams: i64,
    /// Proxy-measured EWMA of time to first byte, ms.
    pub response_time_ms: f64,
    /// Age of the last load report, ms (absent before the first).
    pub load_report_age_ms: Option<u64>,
}

/// The result of the last active check.
#[derive(Debug, Clone, Serialize)]
pub struct HealthCheck {
    /// Unix time, ms (0 before the first check).
    pub unix_ms: u64,
    /// Whether it answered (200 or 503).
    pub ok: bool,
}

/// Builds a snapshot every second; `/metrics` and the dashboard read the latest.
pub struct Snapshotter {
    /// Counters and series.
    pub metrics: Arc<Metrics>,
    /// Every origin.
    pub registry: Arc<Registry>,
    /// The live config.
    pub config: Arc<ArcSwap<Config>>,
    /// The latest snapshot.
    pub latest: Arc<ArcSwap<Snapshot>>,
}

struct Previous {
    at: Instant,
    cpu_ns: u64,
    requests: u64,
    bytes: u64,
    per_origin: HashMap<SocketAddr, (u64, u64)>,
}

impl Snapshotter {
    fn build(&self, prev: &mut Previous) -> Snapshot {
        let cfg = self.config.load();
        let now = Instant::now();
        let dt = now.duration_since(prev.at).as_secs_f64().max(1e-3);
        let cpu_ns = own_process::cpu_ns();
        let requests = self.metrics.total_requests.load(Relaxed);
        let bytes = self.metrics.total_bytes.load(Relaxed);
        let origins = self.registry.all();
        let deltas: Vec<(u64, u64)> = origins
            .iter()
            .map(|o| {
                let (r0, b0) = prev
                    .per_origin
                    .get(&o.addr)
                    .copied()
                    .unwrap_or((o.requests(), o.bytes()));
                (
                    o.requests().saturating_sub(r0),
                    o.bytes().saturating_sub(b0),
                )
            })
            .collect();
        let all_requests: u64 = deltas.iter().map(|d| d.0).sum();
        let (avg, p95) = self.metrics.response_times();
        let snapshot = Snapshot {
            timestamp_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            tier_bounds: cfg.selection.tier_bounds,
            global: Global {
                requests_per_minute: requests.saturating_sub(prev.requests) as f64 / dt * 60.0,
                requests_total: requests,
                concurrent_streams: origins.iter().map(|o| o.inflight()).sum(),
                bandwidth_mbps: bytes.saturating_sub(prev.bytes) as f64 * 8.0 / dt / 1e6,
                response_time_avg_ms: avg,
                response_time_p95_ms: p95,
                cpu_percent: cpu_ns.saturating_sub(prev.cpu_ns) as f64 / 1e9 / dt * 100.0,
                memory_bytes: own_process::rss_bytes().unwrap_or(0),
                retries_total: self.metrics.retries.get(),
                origins_up: origins.iter().filter(|o| o.state() == State::Up).count(),
                origins_total: origins.len(),
            },
            origins: origins
                .iter()
                .zip(&deltas)
                .map(|(o, &(dr, db))| {
                    let (score, tier) = o.score_and_tier();
                    let (unix_ms, ok) = o.last_check();
                    OriginSnapshot {
                        address: o.label.clone(),
                        source: o.source.clone(),
                        state: o.state(),
                        tier,
                        score,
                        inputs: Inputs {
                            cpu: o.cpu(),
                            memory: o.mem(),
                            requests_per_sec: o.rate(),
                            streams: o.inflight(),
                            response_time_ms: o.ttfb_ewma() * 1000.0,
                            load_report_age_ms: o.load_age_ms(),
                        },
                        capacity: o.capacity(),
                        throughput_mbps: db as f64 * 8.0 / dt / 1e6,
                        requests_total: o.requests(),
                        requests_per_sec: dr as f64 / dt,
                        request_share: if all_requests > 0 {
                            dr as f64 / all_requests as f64
                        } else {
                            0.0
                        },
                        in_flight: o.inflight(),
                        errors_total: o.errors(),
                        ejections: o.ejections(),
                        last_health_check: HealthCheck { unix_ms, ok },
                    }
                })
                .collect(),
        };
        *prev = Previous {
            at: now,
            cpu_ns,
            requests,
            bytes,
            per_origin: origins
                .iter()
                .map(|o| (o.addr, (o.requests(), o.bytes())))
                .collect(),
        };
        snapshot
    }
}

#[async_trait]
impl BackgroundService for Snapshotter {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut prev = Previous {
            at: Instant::now(),
            cpu_ns: own_process::cpu_ns(),
            requests: 0,
            bytes: 0,
            per_origin: HashMap::new(),
        };
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = tick.tick() => self.latest.store(Arc::new(self.build(&mut prev))),
                _ = shutdown.changed() => return,
            }
        }
    }
}
