//! The `/metrics` JSON document (schema in conf/README.md) and the service
//! that builds it once a second. `/metrics` and the dashboard read the
//! latest snapshot; nothing is computed per request.
//!
//! Every figure is read from the one place it is kept: origins' live state,
//! the tier policy's ratings, the whole-proxy counters. The response-time
//! average and p95 come from the origins' TTFB histograms (the buckets
//! `/prometheus` exports), over the last [`WINDOW`] ticks.

use super::Metrics;
use crate::config::Config;
use crate::origins::{Origin, Registry, State, TTFB_BUCKETS};
use crate::select::Ratings;
use arc_swap::ArcSwap;
use async_trait::async_trait;
use cdn_types::own_process;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use serde::Serialize;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Ticks (seconds) the response-time average and p95 cover: short enough
/// that the dashboard follows a change within seconds.
const WINDOW: usize = 10;

/// Samples per TTFB bucket, not cumulative (the last is the overflow).
type Buckets = [u64; TTFB_BUCKETS.len() + 1];

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
    /// The media path's streams and slices.
    pub media: MediaFigures,
    /// Configuration reloads applied since start.
    pub config_reloads_applied: u64,
    /// Configuration reloads refused (invalid file, old config kept) since start.
    pub config_reloads_refused: u64,
    /// The slice cache (`null` without one).
    pub cache: Option<CacheFigures>,
    /// Share of the client bytes of the last interval that no origin sent
    /// (served from the cache), 0–1; `null` when nothing was sent.
    pub origin_offload: Option<f64>,
    /// Origins taking traffic / known.
    pub origins_up: usize,
    /// Origins known.
    pub origins_total: usize,
}

/// The media path's figures (counters since start).
#[derive(Debug, Clone, Serialize, Default)]
pub struct MediaFigures {
    /// Media responses being written now.
    pub streams: i64,
    /// Bytes of origin read buffers the streams hold now.
    pub buffered_bytes: i64,
    /// Slice fetches whose body went to a client.
    pub slices_total: u64,
    /// Slices finished by another origin after one failed mid-slice.
    pub resumes_total: u64,
    /// Streams cut because the next slice was another version of the object.
    pub resume_aborts_total: u64,
    /// Streams cut because no origin could serve their next bytes.
    pub broken_total: u64,
}

/// The cache's figures.
#[derive(Debug, Clone, Serialize, Default)]
pub struct CacheFigures {
    /// Share of the media requests of the last interval answered from the
    /// cache (HIT, REVALIDATED, STALE), 0–1; `null` when there were none.
    pub hit_ratio: Option<f64>,
    /// Media requests since start, by X-Cache value.
    pub requests_total: std::collections::BTreeMap<&'static str, u64>,
    /// Bytes of slice files stored.
    pub size_bytes: u64,
    /// Objects with a slice stored.
    pub objects: u64,
    /// Slices evicted since start.
    pub evictions_total: u64,
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
    /// What the score was built on.
    pub inputs: Inputs,
    /// The score's points by input (they sum to `score`).
    pub score_points: ScorePoints,
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
    /// Media-path slices it served since start.
    pub slices_total: u64,
    /// Passive ejections since start.
    pub ejections: u32,
    /// The last active health check.
    pub last_health_check: HealthCheck,
}

/// What an origin's score was built on.
#[derive(Debug, Clone, Serialize)]
pub struct Inputs {
    /// Reported CPU utilization, 0–1.
    pub cpu: f64,
    /// Reported memory utilization, 0–1.
    pub memory: f64,
    /// Proxy-measured requests per second (smoothed over about a second).
    pub requests_per_sec: f64,
    /// Proxy-measured requests in flight.
    pub streams: i64,
    /// Proxy-measured median time to first byte over the last second or so, ms.
    pub response_time_ms: f64,
    /// That response time over the fleet's median (at least 1).
    pub latency_ratio: f64,
    /// Share of recent attempts that failed, 0–1.
    pub error_ratio: f64,
    /// Age of the last load report, ms (absent before the first).
    pub load_report_age_ms: Option<u64>,
}

/// An origin's score points by input: weight × normalised input × 100.
#[derive(Debug, Clone, Serialize, Default)]
pub struct ScorePoints {
    /// From response time over the fleet's.
    pub latency: f64,
    /// From in-flight per unit of capacity over the fleet's.
    pub queue: f64,
    /// From the share of failed attempts.
    pub errors: f64,
    /// From reported CPU over the fleet's.
    pub cpu: f64,
    /// From reported memory over the fleet's.
    pub memory: f64,
}

impl From<[f64; 5]> for ScorePoints {
    fn from(p: [f64; 5]) -> Self {
        // The order of select::INPUTS.
        let [latency, queue, errors, cpu, memory] = p;
        ScorePoints {
            latency,
            queue,
            errors,
            cpu,
            memory,
        }
    }
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
    /// Whole-proxy counters.
    pub metrics: Arc<Metrics>,
    /// Every origin.
    pub registry: Arc<Registry>,
    /// The tier policy's scores and tiers.
    pub ratings: Arc<Ratings>,
    /// The live config.
    pub config: Arc<ArcSwap<Config>>,
    /// The latest snapshot.
    pub latest: Arc<ArcSwap<Snapshot>>,
    /// The slice cache, if there is one.
    pub cache: Option<Arc<crate::cache::Cache>>,
}

/// What one origin's counters read at the last tick.
#[derive(Clone, Copy)]
struct Counts {
    requests: u64,
    bytes: u64,
    ttfb: Buckets,
    ttfb_sum: f64,
}

impl Counts {
    fn of(o: &Origin) -> Self {
        Counts {
            requests: o.requests(),
            bytes: o.bytes(),
            ttfb: o.ttfb.bucket_counts(),
            ttfb_sum: o.ttfb.sum_seconds(),
        }
    }
}

/// What the last tick read, to turn counters into rates and windows.
struct Previous {
    at: Instant,
    cpu_ns: u64,
    requests: u64,
    bytes: u64,
    per_origin: HashMap<SocketAddr, Counts>,
    /// Cache answers by status, as `Metrics::cache_requests`.
    cache_requests: [u64; 6],
    /// TTFB samples per tick (bucket counts and sum), newest last.
    ttfb_ticks: VecDeque<(Buckets, f64)>,
}

impl Previous {
    fn new() -> Self {
        Previous {
            at: Instant::now(),
            cpu_ns: own_process::cpu_ns(),
            requests: 0,
            bytes: 0,
            per_origin: HashMap::new(),
            cache_requests: [0; 6],
            ttfb_ticks: VecDeque::with_capacity(WINDOW),
        }
    }
}

/// Average and p95 in ms of the samples in `buckets` (summing to `sum`
/// seconds): the p95 interpolated inside its bucket, as Prometheus's
/// `histogram_quantile` does. `(0, 0)` without samples.
fn average_and_p95(buckets: &Buckets, sum: f64) -> (f64, f64) {
    let count: u64 = buckets.iter().sum();
    if count == 0 {
        return (0.0, 0.0);
    }
    let rank = 0.95 * count as f64;
    let mut below = 0u64;
    let mut p95 = TTFB_BUCKETS[TTFB_BUCKETS.len() - 1];
    for (i, &n) in buckets.iter().enumerate() {
        if n > 0 && (below + n) as f64 >= rank {
            let lower = if i == 0 { 0.0 } else { TTFB_BUCKETS[i - 1] };
            // The overflow bucket has no upper bound: report its lower one.
            let upper = TTFB_BUCKETS.get(i).copied().unwrap_or(lower);
            p95 = lower + (upper - lower) * (rank - below as f64) / n as f64;
            break;
        }
        below += n;
    }
    (sum / count as f64 * 1000.0, p95 * 1000.0)
}

impl Snapshotter {
    fn build(&self, prev: &mut Previous) -> Snapshot {
        let cfg = self.config.load();
        let now = Instant::now();
        let dt = now.duration_since(prev.at).as_secs_f64().max(1e-3);
        let cpu_ns = own_process::cpu_ns();
        let requests = self.metrics.total_requests.load(Relaxed);
        let bytes = self.metrics.total_bytes.get();
        let origins = self.registry.all();
        let counts: Vec<Counts> = origins.iter().map(|o| Counts::of(o)).collect();
        // Per origin, what happened since the last tick (a new origin starts now).
        let deltas: Vec<Counts> = origins
            .iter()
            .zip(&counts)
            .map(|(o, c)| {
                let p = prev.per_origin.get(&o.addr).copied().unwrap_or(*c);
                Counts {
                    requests: c.requests.saturating_sub(p.requests),
                    bytes: c.bytes.saturating_sub(p.bytes),
                    ttfb: std::array::from_fn(|i| c.ttfb[i].saturating_sub(p.ttfb[i])),
                    ttfb_sum: (c.ttfb_sum - p.ttfb_sum).max(0.0),
                }
            })
            .collect();
        let mut tick: (Buckets, f64) = ([0; TTFB_BUCKETS.len() + 1], 0.0);
        for d in &deltas {
            tick.0.iter_mut().zip(d.ttfb).for_each(|(t, n)| *t += n);
            tick.1 += d.ttfb_sum;
        }
        if prev.ttfb_ticks.len() == WINDOW {
            prev.ttfb_ticks.pop_front();
        }
        prev.ttfb_ticks.push_back(tick);
        let mut window: Buckets = [0; TTFB_BUCKETS.len() + 1];
        let mut window_sum = 0.0;
        for (b, sum) in &prev.ttfb_ticks {
            window.iter_mut().zip(b).for_each(|(w, n)| *w += n);
            window_sum += sum;
        }
        let (avg, p95) = average_and_p95(&window, window_sum);
        let all_requests: u64 = deltas.iter().map(|d| d.requests).sum();
        let client_bytes = bytes.saturating_sub(prev.bytes);
        let origin_bytes: u64 = deltas.iter().map(|d| d.bytes).sum();
        let origin_offload =
            (client_bytes > 0).then(|| 1.0 - (origin_bytes as f64 / client_bytes as f64).min(1.0));
        let cache_requests = self.metrics.cache_requests.each_ref().map(|c| c.get());
        let cache = self.cache.as_ref().map(|c| {
            use crate::cache::CacheStatus;
            let delta = |s: CacheStatus| {
                cache_requests[s.index()].saturating_sub(prev.cache_requests[s.index()])
            };
            let hits: u64 = [
                CacheStatus::Hit,
                CacheStatus::Revalidated,
                CacheStatus::Stale,
            ]
            .map(delta)
            .iter()
            .sum();
            let all: u64 = CacheStatus::ALL.map(delta).iter().sum();
            let usage = c.usage();
            CacheFigures {
                hit_ratio: (all > 0).then(|| hits as f64 / all as f64),
                requests_total: CacheStatus::ALL
                    .iter()
                    .map(|s| (s.as_str(), cache_requests[s.index()]))
                    .collect(),
                size_bytes: usage.bytes,
                objects: usage.objects,
                evictions_total: usage.evictions,
            }
        });
        let snapshot = Snapshot {
            timestamp_ms: cdn_types::clock::unix_ms(),
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
                media: MediaFigures {
                    streams: self.metrics.media_streams.get(),
                    buffered_bytes: self.metrics.media_buffered.get(),
                    slices_total: self.metrics.media_slices.get(),
                    resumes_total: self.metrics.media_resumes.get(),
                    resume_aborts_total: self.metrics.media_aborts.get(),
                    broken_total: self.metrics.media_broken.get(),
                },
                cache,
                origin_offload,
                config_reloads_applied: self.metrics.reloads_applied.get(),
                config_reloads_refused: self.metrics.reloads_refused.get(),
                origins_up: origins.iter().filter(|o| o.state() == State::Up).count(),
                origins_total: origins.len(),
            },
            origins: origins
                .iter()
                .zip(&deltas)
                .map(|(o, d)| {
                    let rating = self.ratings.get(&o.addr).unwrap_or_default();
                    let (unix_ms, ok) = o.health.last_check();
                    OriginSnapshot {
                        address: o.label.clone(),
                        source: o.source.clone(),
                        state: o.state(),
                        tier: rating.tier(),
                        score: rating.score(),
                        inputs: Inputs {
                            cpu: o.cpu(),
                            memory: o.mem(),
                            requests_per_sec: rating.requests_per_sec(),
                            streams: o.inflight(),
                            response_time_ms: rating.latency() * 1000.0,
                            latency_ratio: rating.latency_ratio().max(1.0),
                            error_ratio: rating.error_ratio(),
                            load_report_age_ms: o.load_age_ms(),
                        },
                        score_points: rating.points().into(),
                        capacity: o.capacity(),
                        throughput_mbps: d.bytes as f64 * 8.0 / dt / 1e6,
                        requests_total: o.requests(),
                        requests_per_sec: d.requests as f64 / dt,
                        request_share: if all_requests > 0 {
                            d.requests as f64 / all_requests as f64
                        } else {
                            0.0
                        },
                        in_flight: o.inflight(),
                        errors_total: o.errors(),
                        slices_total: o.slices(),
                        ejections: o.health.ejections(),
                        last_health_check: HealthCheck { unix_ms, ok },
                    }
                })
                .collect(),
        };
        prev.at = now;
        prev.cpu_ns = cpu_ns;
        prev.requests = requests;
        prev.bytes = bytes;
        prev.cache_requests = cache_requests;
        prev.per_origin = origins.iter().map(|o| o.addr).zip(counts).collect();
        snapshot
    }
}

#[async_trait]
impl BackgroundService for Snapshotter {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut prev = Previous::new();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = tick.tick() => self.latest.store(Arc::new(self.build(&mut prev))),
                _ = shutdown.changed() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn p95_is_interpolated_in_its_bucket() {
        let mut b: Buckets = [0; TTFB_BUCKETS.len() + 1];
        assert_eq!(average_and_p95(&b, 0.0), (0.0, 0.0));
        // 100 samples between 1 and 2 ms (bucket 3): the 95th is 95% of the way.
        b[3] = 100;
        let (avg, p95) = average_and_p95(&b, 0.15);
        assert!((avg - 1.5).abs() < 1e-9, "{avg}");
        assert!((p95 - 1.95).abs() < 1e-9, "{p95}");
        // 90 fast and 10 slow (25–50 ms): the 95th falls half-way into the slow bucket.
        b[3] = 90;
        b[10] = 10;
        let (_, p95) = average_and_p95(&b, 0.5);
        assert!((p95 - 37.5).abs() < 1e-9, "{p95}");
        // Past every bound: the largest bound.
        let mut b: Buckets = [0; TTFB_BUCKETS.len() + 1];
        b[TTFB_BUCKETS.len()] = 3;
        assert_eq!(average_and_p95(&b, 90.0).1, 10_000.0);
    }
}
