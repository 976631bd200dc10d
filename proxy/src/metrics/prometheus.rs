//! `/prometheus`: the proxy's series in the `prometheus` crate's default
//! registry, next to Pingora's own and the process collector.
//!
//! Per-origin series are not kept in Prometheus objects on the request path:
//! [`OriginCollector`] reads them from the origins' live state (and the
//! tier policy's ratings) at scrape time, so the policy, `/metrics`, the
//! dashboard and Prometheus see one source per figure, and an origin that
//! discovery forgets leaves no series behind.

use crate::origins::{Origin, Registry, State, TTFB_BUCKETS};
use crate::select::{Ratings, INPUTS};
use cdn_types::status::STATUS_CLASSES;
use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, LabelPair, Metric, MetricFamily, MetricType};
use prometheus::{
    register_int_counter, register_int_counter_vec, register_int_gauge, Encoder, IntCounter,
    IntGauge, TextEncoder,
};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

/// The whole-proxy counters written on the request path.
pub struct Metrics {
    /// `cdn_retries_total`.
    pub retries: IntCounter,
    /// `cdn_no_origin_total`: requests answered 503 because no origin was usable.
    pub no_origin: IntCounter,
    /// `cdn_client_closed_total`: requests whose client left before a
    /// response header was written (nginx logs these as 499).
    pub client_closed: IntCounter,
    /// `cdn_access_log_dropped_total`: lines dropped because the writer fell behind.
    pub access_log_dropped: IntCounter,
    /// `cdn_config_last_reload_success_timestamp_seconds`: when the running
    /// config was loaded (at start, then each applied reload).
    pub reload_success_time: prometheus::Gauge,
    /// `cdn_local_responses_total{endpoint,code}`: answers of the proxy's own
    /// (endpoints, 404 outside every route, redirects, preflights).
    pub local_responses: prometheus::IntCounterVec,
    /// `cdn_config_reloads_total{result="applied"}`.
    pub reloads_applied: IntCounter,
    /// `cdn_config_reloads_total{result="refused"}`: invalid files, the old config kept.
    pub reloads_refused: IntCounter,
    /// `cdn_media_streams`: media-path responses being written now.
    pub media_streams: IntGauge,
    /// `cdn_media_buffered_bytes`: origin read buffers held by media streams now.
    pub media_buffered: IntGauge,
    /// `cdn_media_slices_total`: slice fetches whose body went to a client.
    pub media_slices: IntCounter,
    /// `cdn_media_resumes_total`: slices finished by another origin after one failed mid-slice.
    pub media_resumes: IntCounter,
    /// `cdn_media_resume_aborts_total`: streams cut because the next slice was another version of the object.
    pub media_aborts: IntCounter,
    /// `cdn_media_broken_total`: streams cut because no origin could serve their next bytes.
    pub media_broken: IntCounter,
    /// `cdn_cache_requests_total{status}`: media requests by what the cache
    /// did, in the order of `CacheStatus::ALL`.
    pub cache_requests: [IntCounter; 6],
    /// `cdn_cache_client_bytes_total`: body bytes the cache path sent to clients.
    pub cache_client_bytes: IntCounter,
    /// `cdn_cache_sendfile_bytes_total`: the part of them the kernel sent
    /// from the files (`sendfile`), never copied through the proxy.
    pub cache_sendfile_bytes: IntCounter,
    /// `cdn_cache_cold_reads_total`: reads of cached bytes that were not
    /// in the page cache, brought in on the blocking pool first.
    pub cache_cold_reads: IntCounter,
    /// `cdn_cache_fill_bytes_total`: body bytes fetched from origins into the cache.
    pub cache_fill_bytes: IntCounter,
    /// `cdn_cache_errors_total`: disk errors (the request was served without storing).
    pub cache_errors: IntCounter,
    /// Requests answered by the proxy (all of them, local endpoints included).
    pub total_requests: AtomicU64,
    /// `cdn_client_bytes_total`: response body bytes sent to clients for
    /// origin requests (from origins or from the cache).
    pub total_bytes: IntCounter,
    /// Requests that reached no origin, by status class
    /// (`cdn_requests_total{origin="none"}`).
    unrouted: Arc<[AtomicU64; 5]>,
}

impl Metrics {
    /// Registers the counters and the per-origin collector in the default registry.
    pub fn new(registry: Arc<Registry>, ratings: Arc<Ratings>) -> prometheus::Result<Self> {
        // process_cpu_seconds_total to the nanosecond, not in whole seconds.
        cdn_types::process_metrics::ProcessMetrics::replace_default()?;
        let unrouted = Arc::new(<[AtomicU64; 5]>::default());
        let collector = OriginCollector::new(registry, ratings, unrouted.clone());
        prometheus::register(Box::new(collector))?;
        let reloads = register_int_counter_vec!(
            "cdn_config_reloads_total",
            "Configuration reloads (SIGHUP), applied or refused.",
            &["result"]
        )?;
        let build = prometheus::register_int_gauge_vec!(
            "cdn_build_info",
            "1, with the build's version.",
            &["version"]
        )?;
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        let reload_success_time = prometheus::register_gauge!(
            "cdn_config_last_reload_success_timestamp_seconds",
            "When the running configuration was loaded: at start, then at each applied reload."
        )?;
        reload_success_time.set(unix_now());
        let cache_requests = register_int_counter_vec!(
            "cdn_cache_requests_total",
            "Media requests by what the cache did (the X-Cache value), while a cache is configured.",
            &["status"]
        )?;
        let cache_requests =
            crate::cache::CacheStatus::ALL.map(|s| cache_requests.with_label_values(&[s.as_str()]));
        Ok(Metrics {
            cache_requests,
            cache_client_bytes: register_int_counter!(
                "cdn_cache_client_bytes_total",
                "Body bytes sent to clients from the cache's files (hits, and followers of fills)."
            )?,
            cache_sendfile_bytes: register_int_counter!(
                "cdn_cache_sendfile_bytes_total",
                "The part of cdn_cache_client_bytes_total sent by the kernel from the files (sendfile, plain HTTP/1)."
            )?,
            cache_cold_reads: register_int_counter!(
                "cdn_cache_cold_reads_total",
                "Reads of cached bytes that were not in the page cache (read from disk on the blocking pool, off the request threads)."
            )?,
            cache_fill_bytes: register_int_counter!(
                "cdn_cache_fill_bytes_total",
                "Body bytes fetched from origins into the cache."
            )?,
            cache_errors: register_int_counter!(
                "cdn_cache_errors_total",
                "Cache disk errors; the requests were served without storing."
            )?,
            reload_success_time,
            local_responses: prometheus::register_int_counter_vec!(
                "cdn_local_responses_total",
                "Answers the proxy gave itself, by endpoint and status class (not in cdn_requests_total).",
                &["endpoint", "code"]
            )?,
            reloads_applied: reloads.with_label_values(&["applied"]),
            reloads_refused: reloads.with_label_values(&["refused"]),
            retries: register_int_counter!(
                "cdn_retries_total",
                "Requests retried on another origin."
            )?,
            no_origin: register_int_counter!(
                "cdn_no_origin_total",
                "Requests answered 503 because no origin could take them."
            )?,
            client_closed: register_int_counter!(
                "cdn_client_closed_total",
                "Requests whose client went away before a response header was written (not in cdn_requests_total)."
            )?,
            access_log_dropped: register_int_counter!(
                "cdn_access_log_dropped_total",
                "Access log lines dropped because the disk or the reader of stdout fell behind (requests never wait for the log)."
            )?,
            media_streams: register_int_gauge!(
                "cdn_media_streams",
                "Media-path responses being written to clients now."
            )?,
            media_buffered: register_int_gauge!(
                "cdn_media_buffered_bytes",
                "Bytes of origin read buffers held by media-path streams now (sized to each client's pace)."
            )?,
            media_slices: register_int_counter!(
                "cdn_media_slices_total",
                "Media-path slice fetches whose body went to a client (per origin: cdn_origin_slices_total)."
            )?,
            media_resumes: register_int_counter!(
                "cdn_media_resumes_total",
                "Slices finished from another origin after one failed mid-slice."
            )?,
            media_aborts: register_int_counter!(
                "cdn_media_resume_aborts_total",
                "Streams cut because the next slice was another version of the object."
            )?,
            media_broken: register_int_counter!(
                "cdn_media_broken_total",
                "Streams cut because no origin could serve their next bytes."
            )?,
            total_requests: AtomicU64::new(0),
            total_bytes: register_int_counter!(
                "cdn_client_bytes_total",
                "Response body bytes sent to clients for origin routes, from origins or the cache (origin offload: 1 - sum(cdn_response_bytes_total) / this)."
            )?,
            unrouted,
        })
    }

    /// A reload was applied now.
    pub fn reload_applied(&self) {
        self.reloads_applied.inc();
        self.reload_success_time.set(unix_now());
    }

    /// The proxy answered a request for `endpoint` itself with `status`.
    pub fn count_local(&self, endpoint: &str, status: u16) {
        let class = cdn_types::status::status_class(status);
        self.local_responses
            .with_label_values(&[endpoint, class])
            .inc();
    }

    /// A request that reached no origin was answered `status`.
    pub fn count_unrouted(&self, status: u16) {
        self.unrouted[cdn_types::status::status_class_index(status)].fetch_add(1, Relaxed);
    }

    /// The Prometheus text of every registered series.
    pub fn prometheus_text(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 * 1024);
        let _ = TextEncoder::new().encode(&prometheus::gather(), &mut out);
        out
    }
}

/// The cache's size, read at scrape time.
pub struct CacheCollector {
    cache: Arc<crate::cache::Cache>,
    descs: Vec<Desc>,
}

/// The cache's gauges and counters read from it: name, help, type.
const CACHE_SERIES: [(&str, &str, MetricType); 5] = [
    (
        "cdn_cache_size_bytes",
        "Bytes of slice files in the cache.",
        MetricType::GAUGE,
    ),
    (
        "cdn_cache_objects",
        "Objects with at least one slice in the cache.",
        MetricType::GAUGE,
    ),
    (
        "cdn_cache_slices",
        "Slices in the cache.",
        MetricType::GAUGE,
    ),
    (
        "cdn_cache_evictions_total",
        "Slices evicted to keep the cache within cache.max_size.",
        MetricType::COUNTER,
    ),
    (
        "cdn_cache_fills",
        "Slice fills from origins in flight.",
        MetricType::GAUGE,
    ),
];

impl CacheCollector {
    /// Registers the cache's series in the default registry.
    pub fn register(cache: Arc<crate::cache::Cache>) -> prometheus::Result<()> {
        let descs = CACHE_SERIES
            .iter()
            .map(|(name, help, _)| {
                Desc::new(name.to_string(), help.to_string(), vec![], HashMap::new())
            })
            .collect::<prometheus::Result<_>>()?;
        prometheus::register(Box::new(CacheCollector { cache, descs }))
    }
}

impl Collector for CacheCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let u = self.cache.usage();
        let values = [u.bytes, u.objects, u.slices, u.evictions, u.fills];
        CACHE_SERIES
            .iter()
            .zip(values)
            .map(|((name, help, kind), v)| {
                let mut f = MetricFamily::default();
                f.set_name(name.to_string());
                f.set_help(help.to_string());
                f.set_field_type(*kind);
                let m = if *kind == MetricType::COUNTER {
                    counter(&[], v as f64)
                } else {
                    gauge(&[], v as f64)
                };
                f.set_metric(vec![m]);
                f
            })
            .collect()
    }
}

/// The names, help texts, types and label names of the per-origin families.
const FAMILIES: [(&str, &str, MetricType, &[&str]); 13] = [
    (
        "cdn_requests_total",
        "Requests proxied, by origin and status class.",
        MetricType::COUNTER,
        &["code", "origin"],
    ),
    (
        "cdn_ttfb_seconds",
        "Time from sending a request to an origin to its response header.",
        MetricType::HISTOGRAM,
        &["origin"],
    ),
    (
        "cdn_response_bytes_total",
        "Response body bytes received from each origin and sent on.",
        MetricType::COUNTER,
        &["origin"],
    ),
    (
        "cdn_origin_slices_total",
        "Media-path slice fetches each origin served, resumes included.",
        MetricType::COUNTER,
        &["origin"],
    ),
    (
        "cdn_ejections_total",
        "Passive ejections after consecutive failures.",
        MetricType::COUNTER,
        &["origin"],
    ),
    (
        "cdn_active_streams",
        "Requests in flight to each origin.",
        MetricType::GAUGE,
        &["origin"],
    ),
    (
        "cdn_origin_up",
        "1 if the origin takes traffic, else 0.",
        MetricType::GAUGE,
        &["origin"],
    ),
    (
        "cdn_origin_state",
        "1 for the state the origin is in (up, down, ejected, draining), 0 for the others.",
        MetricType::GAUGE,
        &["origin", "state"],
    ),
    (
        "cdn_origin_score",
        "Load score, 0-100.",
        MetricType::GAUGE,
        &["origin"],
    ),
    (
        "cdn_origin_score_points",
        "Load score points by input (latency, queue, errors, cpu, memory); they sum to cdn_origin_score.",
        MetricType::GAUGE,
        &["input", "origin"],
    ),
    (
        "cdn_origin_tier",
        "Load tier, 0 (lightest) to 3.",
        MetricType::GAUGE,
        &["origin"],
    ),
    (
        "cdn_origin_cpu_ratio",
        "CPU utilization the origin reports.",
        MetricType::GAUGE,
        &["origin"],
    ),
    (
        "cdn_origin_memory_ratio",
        "Memory utilization the origin reports.",
        MetricType::GAUGE,
        &["origin"],
    ),
];

/// Builds the per-origin families from live state at each scrape.
pub struct OriginCollector {
    registry: Arc<Registry>,
    ratings: Arc<Ratings>,
    unrouted: Arc<[AtomicU64; 5]>,
    descs: Vec<Desc>,
}

impl OriginCollector {
    /// A collector over `registry`'s origins, their `ratings`, and the
    /// requests that reached none.
    pub fn new(
        registry: Arc<Registry>,
        ratings: Arc<Ratings>,
        unrouted: Arc<[AtomicU64; 5]>,
    ) -> Self {
        let descs = FAMILIES
            .iter()
            .filter_map(|(name, help, _, labels)| {
                let labels = labels.iter().map(|l| l.to_string()).collect();
                Desc::new(name.to_string(), help.to_string(), labels, HashMap::new()).ok()
            })
            .collect();
        OriginCollector {
            registry,
            ratings,
            unrouted,
            descs,
        }
    }

    /// The metrics of one family for one origin.
    fn metrics_of(&self, family: &str, o: &Origin) -> Vec<Metric> {
        let l = o.label.as_str();
        let rating = || self.ratings.get(&o.addr);
        match family {
            "cdn_requests_total" => STATUS_CLASSES
                .iter()
                .zip(o.responses())
                // Only classes that happened are exported.
                .filter(|(_, n)| *n > 0)
                .map(|(class, n)| counter(&[("code", class), ("origin", l)], n as f64))
                .collect(),
            "cdn_ttfb_seconds" => vec![histogram(l, o)],
            "cdn_response_bytes_total" => vec![counter(&[("origin", l)], o.bytes() as f64)],
            "cdn_origin_slices_total" => vec![counter(&[("origin", l)], o.slices() as f64)],
            // Present at 0 before the first ejection, so rates and alerts have a series.
            "cdn_ejections_total" => {
                vec![counter(&[("origin", l)], o.health.ejections() as f64)]
            }
            "cdn_active_streams" => vec![gauge(&[("origin", l)], o.inflight() as f64)],
            "cdn_origin_up" => {
                let up = f64::from(u8::from(o.state() == State::Up));
                vec![gauge(&[("origin", l)], up)]
            }
            // Every state has its series, so a state change moves a 1
            // rather than starting a new series (an enum, as kube-state-metrics does).
            "cdn_origin_state" => {
                let now = o.state();
                State::ALL
                    .iter()
                    .map(|s| {
                        gauge(
                            &[("origin", l), ("state", s.name())],
                            f64::from(u8::from(*s == now)),
                        )
                    })
                    .collect()
            }
            "cdn_origin_score" => {
                vec![gauge(&[("origin", l)], rating().map_or(0.0, |r| r.score()))]
            }
            "cdn_origin_score_points" => {
                let points = rating().map_or([0.0; 5], |r| r.points());
                INPUTS
                    .iter()
                    .zip(points)
                    .map(|(input, p)| gauge(&[("input", input), ("origin", l)], p))
                    .collect()
            }
            "cdn_origin_tier" => vec![gauge(
                &[("origin", l)],
                rating().map_or(0.0, |r| f64::from(r.tier())),
            )],
            "cdn_origin_cpu_ratio" => vec![gauge(&[("origin", l)], o.cpu())],
            "cdn_origin_memory_ratio" => vec![gauge(&[("origin", l)], o.mem())],
            _ => Vec::new(),
        }
    }
}

impl Collector for OriginCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let origins = self.registry.all();
        FAMILIES
            .iter()
            .map(|(name, help, kind, _)| {
                let mut f = MetricFamily::default();
                f.set_name(name.to_string());
                f.set_help(help.to_string());
                f.set_field_type(*kind);
                let mut metrics: Vec<Metric> = origins
                    .iter()
                    .flat_map(|o| self.metrics_of(name, o))
                    .collect();
                if *name == "cdn_requests_total" {
                    for (class, n) in STATUS_CLASSES.iter().zip(self.unrouted.iter()) {
                        let n = n.load(Relaxed);
                        if n > 0 {
                            metrics.push(counter(&[("code", class), ("origin", "none")], n as f64));
                        }
                    }
                }
                f.set_metric(metrics);
                f
            })
            .collect()
    }
}

fn labels(pairs: &[(&str, &str)]) -> Vec<LabelPair> {
    pairs
        .iter()
        .map(|(k, v)| {
            let mut p = LabelPair::default();
            p.set_name(k.to_string());
            p.set_value(v.to_string());
            p
        })
        .collect()
}

fn counter(pairs: &[(&str, &str)], value: f64) -> Metric {
    let mut c = proto::Counter::default();
    c.set_value(value);
    let mut m = Metric::from_label(labels(pairs));
    m.set_counter(c);
    m
}

fn gauge(pairs: &[(&str, &str)], value: f64) -> Metric {
    let mut g = proto::Gauge::default();
    g.set_value(value);
    let mut m = Metric::from_label(labels(pairs));
    m.set_gauge(g);
    m
}

fn histogram(origin: &str, o: &Origin) -> Metric {
    let counts = o.ttfb.bucket_counts();
    let mut cumulative = 0;
    let buckets = TTFB_BUCKETS
        .iter()
        .zip(counts)
        .map(|(&bound, n)| {
            cumulative += n;
            let mut b = proto::Bucket::default();
            b.set_upper_bound(bound);
            b.set_cumulative_count(cumulative);
            b
        })
        .collect();
    let mut h = proto::Histogram::default();
    h.set_bucket(buckets);
    h.set_sample_count(counts.iter().sum());
    h.set_sample_sum(o.ttfb.sum_seconds());
    let mut m = Metric::from_label(labels(&[("origin", origin)]));
    m.set_histogram(h);
    m
}

/// Seconds since the Unix epoch.
fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}
