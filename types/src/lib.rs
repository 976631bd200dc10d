//! What `cdn-origin` and `cdn-proxy` share.
//!
//! Mostly the origin's load report, which crosses the process boundary two
//! ways: in-band on every response as an ORCA `endpoint-load-metrics` header
//! (the text format Envoy and gRPC use), and as JSON on the origin's `/load`.
//! Also [`own_process`]: the CPU and memory figures both binaries report
//! about themselves, [`healthcheck`]: the probe behind their
//! `healthcheck` subcommands, [`status`]: the status classes their counters
//! use, [`clock`], [`logging`] and [`access_log`], and [`range`]: conditional and Range
//! requests, evaluated the same way by the origin and the proxy's media path.

pub mod access_log;
pub mod clock;
pub mod healthcheck;
pub mod logging;
pub mod own_process;
pub mod process_metrics;
pub mod range;
pub mod status;

use serde::{Deserialize, Serialize};
use std::fmt::Write as _;

/// Name of the response header that carries the in-band load report.
pub const LOAD_HEADER: &str = "endpoint-load-metrics";

/// Where a utilization figure was measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The container's cgroup: usage against its quota or limit.
    Cgroup,
    /// This process against the host: CPU time against the cores available,
    /// or resident memory against total memory.
    #[default]
    Process,
}

impl Source {
    /// The label value used in metrics and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Cgroup => "cgroup",
            Source::Process => "process",
        }
    }
}

/// One load report of an origin: what it costs to send it one more request.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct LoadReport {
    /// CPU in use as a fraction of what this origin may use (0.0–1.0, may exceed 1.0 briefly).
    pub cpu_utilization: f64,
    /// Memory in use as a fraction of what this origin may use (0.0–1.0).
    pub mem_utilization: f64,
    /// Requests per second over the last sampling window.
    pub rps_fractional: f64,
    /// Response bodies being streamed right now.
    pub active_streams: u64,
    /// How `cpu_utilization` was measured (JSON only; not part of the ORCA text).
    #[serde(default)]
    pub cpu_source: Source,
    /// How `mem_utilization` was measured (JSON only; not part of the ORCA text).
    #[serde(default)]
    pub mem_source: Source,
}

/// Why an ORCA text report could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// The value does not start with the `TEXT ` format marker.
    NotText,
    /// A `key=value` pair was malformed; holds the offending pair.
    BadPair(String),
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ParseError::NotText => f.write_str("load report is not in ORCA TEXT format"),
            ParseError::BadPair(p) => write!(f, "malformed load report entry {p:?}"),
        }
    }
}

impl std::error::Error for ParseError {}

impl LoadReport {
    /// Formats the report as the value of an `endpoint-load-metrics` header, e.g.
    /// `TEXT cpu_utilization=0.31, mem_utilization=0.42, rps_fractional=118.5, named_metrics.active_streams=3`.
    pub fn to_orca_text(&self) -> String {
        let mut s = String::with_capacity(112);
        // Writing to a String cannot fail.
        let _ = write!(
            s,
            "TEXT cpu_utilization={:.4}, mem_utilization={:.4}, rps_fractional={:.2}, named_metrics.active_streams={}",
            self.cpu_utilization, self.mem_utilization, self.rps_fractional, self.active_streams
        );
        s
    }

    /// Parses an `endpoint-load-metrics` header value in ORCA TEXT format.
    ///
    /// Unknown keys are ignored (ORCA allows more than we use); missing keys stay 0.
    /// Non-finite or negative numbers are refused so a bad origin cannot poison a score.
    pub fn parse_orca_text(value: &str) -> Result<Self, ParseError> {
        let body = value
            .trim()
            .strip_prefix("TEXT")
            .ok_or(ParseError::NotText)?;
        let mut report = LoadReport::default();
        for pair in body.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let bad = || ParseError::BadPair(pair.to_string());
            let (key, val) = pair.split_once('=').ok_or_else(bad)?;
            let num: f64 = val.trim().parse().map_err(|_| bad())?;
            if !num.is_finite() || num < 0.0 {
                return Err(bad());
            }
            match key.trim() {
                "cpu_utilization" => report.cpu_utilization = num,
                "mem_utilization" => report.mem_utilization = num,
                "rps_fractional" => report.rps_fractional = num,
                "named_metrics.active_streams" => report.active_streams = num as u64,
                _ => {}
            }
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orca_text_round_trips() {
        let r = LoadReport {
            cpu_utilization: 0.31,
            mem_utilization: 0.42,
            rps_fractional: 118.5,
            active_streams: 3,
            ..Default::default()
        };
        let text = r.to_orca_text();
        assert!(text.starts_with("TEXT cpu_utilization=0.3100, "));
        assert_eq!(LoadReport::parse_orca_text(&text).unwrap(), r);
    }

    #[test]
    fn parses_the_documented_example_and_ignores_unknown_keys() {
        let r = LoadReport::parse_orca_text(
            "TEXT cpu_utilization=0.31, mem_utilization=0.42, rps_fractional=118.5, named_metrics.active_streams=3, named_metrics.foo=9",
        )
        .unwrap();
        assert_eq!(r.cpu_utilization, 0.31);
        assert_eq!(r.mem_utilization, 0.42);
        assert_eq!(r.rps_fractional, 118.5);
        assert_eq!(r.active_streams, 3);
    }

    #[test]
    fn refuses_malformed_reports() {
        assert_eq!(
            LoadReport::parse_orca_text("JSON {}"),
            Err(ParseError::NotText)
        );
        assert!(LoadReport::parse_orca_text("TEXT cpu_utilization").is_err());
        assert!(LoadReport::parse_orca_text("TEXT cpu_utilization=abc").is_err());
        assert!(LoadReport::parse_orca_text("TEXT cpu_utilization=NaN").is_err());
        assert!(LoadReport::parse_orca_text("TEXT cpu_utilization=-1").is_err());
    }

    #[test]
    fn json_carries_the_measurement_source() {
        let r = LoadReport {
            cpu_source: Source::Cgroup,
            ..Default::default()
        };
        let v: serde_json::Value = serde_json::to_value(r).unwrap();
        assert_eq!(v["cpu_source"], "cgroup");
        assert_eq!(v["mem_source"], "process");
    }
}
