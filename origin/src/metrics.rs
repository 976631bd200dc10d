//! The origin's Prometheus registry. These series are the one source of
//! truth for request counts, streams and utilization: the load report and
//! `/load` read them back rather than keeping figures of their own.

use cdn_types::status::{status_class_index, STATUS_CLASSES};
use cdn_types::{LoadReport, Source};
use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

/// Every series the origin exports.
pub struct Metrics {
    registry: Registry,
    /// `origin_requests_total{code}`, indexed by status class (1xx..5xx).
    requests: [IntCounter; 5],
    /// `origin_response_bytes_total`: body bytes handed to connections.
    pub response_bytes: IntCounter,
    /// `origin_active_streams`: file bodies being streamed now.
    pub active_streams: IntGauge,
    /// `origin_stream_buffered_bytes`: file bytes read into memory that the
    /// connections have not yet written to their sockets.
    pub buffered: IntGauge,
    /// `origin_queued_requests`: requests waiting for a slot of the
    /// concurrency-limit fault.
    pub queued: IntGauge,
    /// `origin_request_duration_seconds`: from request to the end of the body.
    pub duration: Histogram,
    /// `origin_cpu_utilization_ratio{source}`.
    pub cpu_utilization: Gauge,
    /// `origin_memory_utilization_ratio{source}`.
    pub mem_utilization: Gauge,
    /// The request rate in the load report (not exported: rates are PromQL's job).
    pub rps: Gauge,
    cpu_source: Source,
    mem_source: Source,
}

impl Metrics {
    /// Builds the registry; `name` becomes a label of `origin_info`.
    pub fn new(name: &str, cpu_source: Source, mem_source: Source) -> prometheus::Result<Self> {
        let registry = Registry::new();
        let requests_vec = IntCounterVec::new(
            Opts::new(
                "origin_requests_total",
                "Requests answered, by status class.",
            ),
            &["code"],
        )?;
        registry.register(Box::new(requests_vec.clone()))?;
        let requests = STATUS_CLASSES.map(|c| requests_vec.with_label_values(&[c]));

        let response_bytes =
            IntCounter::new("origin_response_bytes_total", "Response body bytes sent.")?;
        let active_streams =
            IntGauge::new("origin_active_streams", "File bodies being streamed now.")?;
        let buffered = IntGauge::new(
            "origin_stream_buffered_bytes",
            "File bytes read into memory and not yet written to a socket.",
        )?;
        let queued = IntGauge::new(
            "origin_queued_requests",
            "Requests waiting for a slot of the concurrency-limit fault.",
        )?;
        let duration = Histogram::with_opts(
            HistogramOpts::new(
                "origin_request_duration_seconds",
                "Time from receiving a request to the end of its response body.",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0, 30.0, 60.0,
            ]),
        )?;
        let cpu_utilization = Gauge::with_opts(
            Opts::new(
                "origin_cpu_utilization_ratio",
                "CPU in use against what this origin may use (cgroup quota, else all cores).",
            )
            .const_label("source", cpu_source.as_str()),
        )?;
        let mem_utilization = Gauge::with_opts(
            Opts::new(
                "origin_memory_utilization_ratio",
                "Memory in use against what this origin may use (cgroup limit, else total memory).",
            )
            .const_label("source", mem_source.as_str()),
        )?;
        let rps = Gauge::new(
            "origin_requests_per_second",
            "Request rate, smoothed over about a second.",
        )?;
        let info = IntGauge::with_opts(
            Opts::new(
                "origin_info",
                "Constant 1, labelled with this origin's name and version.",
            )
            .const_label("name", name)
            .const_label("version", env!("CARGO_PKG_VERSION")),
        )?;
        info.set(1);
        for c in [
            Box::new(response_bytes.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(active_streams.clone()),
            Box::new(buffered.clone()),
            Box::new(queued.clone()),
            Box::new(duration.clone()),
            Box::new(cpu_utilization.clone()),
            Box::new(mem_utilization.clone()),
            Box::new(info),
        ] {
            registry.register(c)?;
        }
        // process_cpu_seconds_total, process_resident_memory_bytes, open fds, ...
        registry.register(Box::new(
            cdn_types::process_metrics::ProcessMetrics::for_self(),
        ))?;
        Ok(Metrics {
            registry,
            requests,
            response_bytes,
            active_streams,
            buffered,
            queued,
            duration,
            cpu_utilization,
            mem_utilization,
            rps,
            cpu_source,
            mem_source,
        })
    }

    /// Counts one answered request by its status code.
    pub fn count_request(&self, status: u16) {
        self.requests[status_class_index(status)].inc();
    }

    /// Requests answered so far, all classes.
    pub fn requests_total(&self) -> u64 {
        self.requests.iter().map(IntCounter::get).sum()
    }

    /// The current load report, read from the series above.
    pub fn load_report(&self) -> LoadReport {
        LoadReport {
            cpu_utilization: self.cpu_utilization.get(),
            mem_utilization: self.mem_utilization.get(),
            rps_fractional: self.rps.get(),
            active_streams: self.active_streams.get().max(0) as u64,
            cpu_source: self.cpu_source,
            mem_source: self.mem_source,
        }
    }

    /// Prometheus text exposition of every series.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 * 1024);
        // Encoding into a Vec only fails on invalid metric names, which are fixed here.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_class_and_reports_from_the_same_series() {
        let m = Metrics::new("t", Source::Process, Source::Cgroup).unwrap();
        m.count_request(200);
        m.count_request(206);
        m.count_request(404);
        m.count_request(999); // out of range: counted as 5xx, never a panic
        m.count_request(0);
        assert_eq!(m.requests_total(), 5);
        m.active_streams.set(3);
        m.cpu_utilization.set(0.25);
        let r = m.load_report();
        assert_eq!((r.active_streams, r.cpu_utilization), (3, 0.25));
        assert_eq!(r.mem_source, Source::Cgroup);
        let text = String::from_utf8(m.render()).unwrap();
        assert!(text.contains("origin_requests_total{code=\"2xx\"} 2"));
        assert!(text.contains("origin_memory_utilization_ratio{source=\"cgroup\"}"));
    }
}
