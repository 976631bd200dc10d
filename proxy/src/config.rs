//! `cdn.yaml`: the proxy's own configuration (Pingora's server settings live
//! in `pingora.yaml`). Every key has a default; unknown keys, wrong types and
//! inconsistent values are refused with the file, the key and the fix.

use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::time::Duration;

/// The whole `cdn.yaml`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Public listeners (video, `/metrics`, `/prometheus`, `/healthz`).
    pub listen: Vec<SocketAddr>,
    /// Operator listener (origins, drain, capacity); loopback by default.
    pub admin_listen: SocketAddr,
    /// Response header naming the origin that served a request (empty: none).
    pub served_by_header: String,
    /// The origins: static addresses and DNS names.
    pub origins: Vec<OriginEntry>,
    /// DNS re-resolution.
    pub discovery: Discovery,
    /// How an origin is picked.
    pub selection: Selection,
    /// Active health checks.
    pub health: Health,
    /// Passive outlier ejection.
    pub ejection: Ejection,
    /// Retries on another origin.
    pub retry: Retry,
    /// Timeouts towards origins.
    pub timeouts: Timeouts,
    /// The dashboard sidecar.
    pub dashboard: Dashboard,
}

/// The dashboard sidecar: its own listener, proxied from the public one at `/dashboard` and `/ws`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Dashboard {
    /// Whether to run it.
    pub enabled: bool,
    /// Its listener (loopback: users reach it through the public listener).
    pub listen: SocketAddr,
    /// Time between snapshots pushed to clients.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Snapshots kept and sent to a new client first (300 at 1 s: five minutes).
    pub history: usize,
    /// Most dashboard clients at once.
    pub max_clients: usize,
    /// Folder with the page (index.html, app.js, style.css).
    pub web_root: std::path::PathBuf,
    /// Chart.js's UMD build, from the npm package installed in dashboard/.
    pub chart_js: std::path::PathBuf,
}

impl Default for Dashboard {
    fn default() -> Self {
        Dashboard {
            enabled: true,
            listen: "127.0.0.1:8082".parse().expect("literal"),
            interval: Duration::from_secs(1),
            history: 300,
            max_clients: 64,
            web_root: "dashboard/web".into(),
            chart_js: "dashboard/node_modules/chart.js/dist/chart.umd.js".into(),
        }
    }
}

/// One origin, or one DNS name standing for every address it resolves to.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OriginEntry {
    /// `host:port` resolved once at start (an IP literal, or a name).
    #[serde(default)]
    pub address: Option<String>,
    /// `name:port` re-resolved every `discovery.interval`; each A/AAAA record is an origin.
    #[serde(default)]
    pub dns: Option<String>,
    /// Relative capacity (weight): 2.0 takes about twice the traffic of 1.0.
    #[serde(default = "one")]
    pub capacity: f64,
}

fn one() -> f64 {
    1.0
}

/// DNS discovery settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Discovery {
    /// How often DNS names are re-resolved.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// DNS servers (`ip:port`) to ask; empty: the system's resolver configuration.
    pub nameservers: Vec<SocketAddr>,
}

/// The selection policy and the tier model's parameters.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Selection {
    /// Which policy picks origins.
    pub policy: Policy,
    /// Weights of the load score's inputs; must sum to 1.
    pub weights: Weights,
    /// Upper bounds of tiers 0, 1 and 2 on the 0–100 score (tier 3 is the rest); increasing.
    pub tier_bounds: [f64; 3],
    /// Score points an origin must cross past a bound before it changes tier.
    pub hysteresis: f64,
    /// The values that count as 100% for the inputs the proxy measures.
    pub ceilings: Ceilings,
    /// Time constant of the response-time EWMA (and the decay of p2c_ewma's peak).
    #[serde(with = "humantime_serde")]
    pub ewma_decay: Duration,
}

/// Selection policies.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    /// Weighted four-tier score, power of two choices inside the best tier.
    #[default]
    Tier,
    /// Each origin in turn.
    RoundRobin,
    /// Uniformly at random (capacity-weighted).
    Random,
    /// Fewest requests in flight per unit of capacity.
    LeastConn,
    /// Power of two choices on peak-EWMA latency × in-flight (Finagle/Linkerd).
    P2cEwma,
    /// Ketama consistent hashing on the request path.
    Consistent,
}

/// Weights of the score's inputs.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Weights {
    /// Origin CPU utilization (from its load report).
    pub cpu: f64,
    /// Origin memory utilization (from its load report).
    pub memory: f64,
    /// Request rate to the origin, measured by the proxy.
    pub requests: f64,
    /// Requests in flight to the origin, measured by the proxy.
    pub streams: f64,
    /// EWMA of time to first byte, measured by the proxy.
    pub response_time: f64,
}

/// Normalisation ceilings for the proxy-measured inputs.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Ceilings {
    /// Requests per second that count as a full `requests` input.
    pub requests_per_sec: f64,
    /// Requests in flight that count as a full `streams` input.
    pub streams: f64,
    /// Time to first byte that counts as a full `response_time` input.
    #[serde(with = "humantime_serde")]
    pub response_time: Duration,
}

/// Active health checks.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Health {
    /// Time between checks of one origin.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// A check slower than this fails.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Path checked on every origin (200 healthy, 503 draining).
    pub path: String,
    /// Consecutive passes that make a down origin up.
    pub rise: u32,
    /// Consecutive failures that make an up origin down.
    pub fall: u32,
}

/// Passive ejection, as Envoy's outlier detection.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Ejection {
    /// Consecutive connect errors, timeouts or 5xx that eject an origin (0: never).
    pub consecutive_failures: u32,
    /// First ejection time; doubles with each repeated ejection.
    #[serde(with = "humantime_serde")]
    pub base: Duration,
    /// Longest ejection.
    #[serde(with = "humantime_serde")]
    pub max: Duration,
}

/// Retries on a different origin.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Retry {
    /// Most origins tried for one request (1: no retry).
    pub attempts: u32,
    /// Retries allowed as a fraction of requests (a retry budget, as Linkerd's).
    pub budget_ratio: f64,
    /// Retries per second always allowed, whatever the ratio.
    pub budget_min_per_sec: f64,
}

/// Timeouts towards origins.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    /// TCP connect.
    #[serde(with = "humantime_serde")]
    pub connect: Duration,
    /// Each read from an origin, the response header included.
    #[serde(with = "humantime_serde")]
    pub read: Duration,
    /// Idle pooled connections to origins are closed after this.
    #[serde(with = "humantime_serde")]
    pub idle: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: vec!["0.0.0.0:8080".parse().expect("literal")],
            admin_listen: "127.0.0.1:8081".parse().expect("literal"),
            served_by_header: "X-Served-By".into(),
            origins: Vec::new(),
            discovery: Discovery::default(),
            selection: Selection::default(),
            health: Health::default(),
            ejection: Ejection::default(),
            retry: Retry::default(),
            timeouts: Timeouts::default(),
            dashboard: Dashboard::default(),
        }
    }
}

impl Default for Discovery {
    fn default() -> Self {
        Discovery {
            interval: Duration::from_secs(5),
            nameservers: Vec::new(),
        }
    }
}

impl Default for Selection {
    fn default() -> Self {
        Selection {
            policy: Policy::Tier,
            weights: Weights::default(),
            tier_bounds: [25.0, 50.0, 75.0],
            hysteresis: 5.0,
            ceilings: Ceilings::default(),
            ewma_decay: Duration::from_secs(10),
        }
    }
}

impl Default for Weights {
    fn default() -> Self {
        Weights {
            cpu: 0.30,
            memory: 0.25,
            requests: 0.20,
            streams: 0.15,
            response_time: 0.10,
        }
    }
}

impl Default for Ceilings {
    fn default() -> Self {
        Ceilings {
            requests_per_sec: 500.0,
            streams: 100.0,
            response_time: Duration::from_millis(500),
        }
    }
}

impl Default for Health {
    fn default() -> Self {
        Health {
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            path: "/healthz".into(),
            rise: 2,
            fall: 2,
        }
    }
}

impl Default for Ejection {
    fn default() -> Self {
        Ejection {
            consecutive_failures: 5,
            base: Duration::from_secs(5),
            max: Duration::from_secs(60),
        }
    }
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            attempts: 3,
            budget_ratio: 0.2,
            budget_min_per_sec: 10.0,
        }
    }
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(1),
            read: Duration::from_secs(10),
            idle: Duration::from_secs(60),
        }
    }
}

/// A refused configuration: which file, which key, what is wrong and how to fix it.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    /// The file read.
    pub file: String,
    /// Dotted path of the offending key (empty for the whole file).
    pub key: String,
    /// What is wrong, and the fix.
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(f, "{}: {}: {}", self.file, self.key, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Reads, parses and validates a file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: file.clone(),
            key: String::new(),
            message: format!("cannot read: {e}"),
        })?;
        Self::parse(&text, &file)
    }

    /// Parses and validates YAML text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
        let de = serde_yaml::Deserializer::from_str(text);
        let config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            let mut message = e.into_inner().to_string();
            // serde_yaml prefixes its own (partial) path; ours is exact, so drop its copy.
            if let Some((prefix, rest)) = message.split_once(": ") {
                if !prefix.contains(char::is_whitespace) {
                    message = rest.to_string();
                }
            }
            ConfigError {
                file: file.into(),
                key: if key == "." { String::new() } else { key },
                message,
            }
        })?;
        config.validate().map_err(|(key, message)| ConfigError {
            file: file.into(),
            key,
            message,
        })?;
        Ok(config)
    }

    /// Checks what types cannot: sums, orderings, resolvability, duplicates.
    fn validate(&self) -> Result<(), (String, String)> {
        let err = |k: &str, m: String| Err((k.to_string(), m));
        if self.listen.is_empty() {
            return err(
                "listen",
                "at least one listener is needed, e.g. `listen: [\"0.0.0.0:8080\"]`".into(),
            );
        }
        let mut seen = HashSet::new();
        let dashboard = self.dashboard.enabled.then_some(&self.dashboard.listen);
        let all = self
            .listen
            .iter()
            .chain(std::iter::once(&self.admin_listen))
            .chain(dashboard);
        for (i, l) in all.enumerate() {
            if !seen.insert(*l) {
                let key = match i.checked_sub(self.listen.len()) {
                    None => format!("listen[{i}]"),
                    Some(0) => "admin_listen".into(),
                    Some(_) => "dashboard.listen".into(),
                };
                return err(
                    &key,
                    format!("{l} is listed twice; every listener needs its own address"),
                );
            }
        }
        if self.origins.is_empty() {
            return err(
                "origins",
                "no origins; add `- address: 127.0.0.1:9101` or `- dns: origin:8000`".into(),
            );
        }
        for (i, o) in self.origins.iter().enumerate() {
            let key = format!("origins[{i}]");
            match (&o.address, &o.dns) {
                (Some(a), None) => {
                    let resolved = a
                        .to_socket_addrs()
                        .map(|mut it| it.next().is_some())
                        .unwrap_or(false);
                    if !resolved {
                        return err(
                            &format!("{key}.address"),
                            format!("{a:?} does not resolve; use host:port with a reachable name or an IP, or `dns:` for names that appear later"),
                        );
                    }
                }
                (None, Some(d)) => {
                    let ok = d
                        .rsplit_once(':')
                        .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
                    if !ok {
                        return err(
                            &format!("{key}.dns"),
                            format!("{d:?} must be name:port, e.g. origin:8000"),
                        );
                    }
                }
                _ => return err(&key, "give exactly one of `address` or `dns`".into()),
            }
            if !(o.capacity.is_finite() && o.capacity > 0.0) {
                return err(
                    &format!("{key}.capacity"),
                    format!("{} must be a number above 0", o.capacity),
                );
            }
        }
        let s = &self.selection;
        let w = s.weights;
        let parts = [w.cpu, w.memory, w.requests, w.streams, w.response_time];
        if parts.iter().any(|x| !x.is_finite() || *x < 0.0) {
            return err("selection.weights", "every weight must be 0 or more".into());
        }
        let sum: f64 = parts.iter().sum();
        if (sum - 1.0).abs() > 1e-6 {
            return err(
                "selection.weights",
                format!(
                    "weights sum to {sum:.4}; they must sum to 1.0 (adjust one by {:+.4})",
                    1.0 - sum
                ),
            );
        }
        let b = s.tier_bounds;
        if !(0.0 < b[0] && b[0] < b[1] && b[1] < b[2] && b[2] < 100.0) {
            return err(
                "selection.tier_bounds",
                format!("{b:?} must be strictly increasing between 0 and 100, e.g. [25, 50, 75]"),
            );
        }
        let min_gap = (b[0]).min(b[1] - b[0]).min(b[2] - b[1]).min(100.0 - b[2]);
        if !(0.0..min_gap / 2.0).contains(&s.hysteresis) {
            return err(
                "selection.hysteresis",
                format!(
                    "{} must be at least 0 and below half the narrowest tier ({:.1})",
                    s.hysteresis,
                    min_gap / 2.0
                ),
            );
        }
        let c = s.ceilings;
        if !(c.requests_per_sec > 0.0 && c.streams > 0.0 && !c.response_time.is_zero()) {
            return err("selection.ceilings", "every ceiling must be above 0".into());
        }
        if s.ewma_decay.is_zero() {
            return err("selection.ewma_decay", "must be above 0, e.g. 10s".into());
        }
        if self.health.rise == 0 || self.health.fall == 0 {
            return err("health", "rise and fall must be at least 1".into());
        }
        if self.health.interval.is_zero() || self.health.timeout.is_zero() {
            return err("health", "interval and timeout must be above 0".into());
        }
        if !self.health.path.starts_with('/') {
            return err(
                "health.path",
                format!("{:?} must start with /", self.health.path),
            );
        }
        if self.ejection.base > self.ejection.max {
            return err("ejection.base", "must not exceed ejection.max".into());
        }
        if self.retry.attempts == 0 {
            return err(
                "retry.attempts",
                "must be at least 1 (1 means no retries)".into(),
            );
        }
        if !(0.0..=1.0).contains(&self.retry.budget_ratio) || self.retry.budget_min_per_sec < 0.0 {
            return err(
                "retry",
                "budget_ratio must be 0–1 and budget_min_per_sec 0 or more".into(),
            );
        }
        if self.timeouts.connect.is_zero() || self.timeouts.read.is_zero() {
            return err("timeouts", "connect and read must be above 0".into());
        }
        let d = &self.dashboard;
        if d.interval.is_zero() || d.history == 0 || d.max_clients == 0 {
            return err(
                "dashboard",
                "interval, history and max_clients must be above 0".into(),
            );
        }
        if self.discovery.interval.is_zero() {
            return err("discovery.interval", "must be above 0, e.g. 5s".into());
        }
        http::HeaderName::try_from(self.served_by_header.as_str())
            .map(|_| ())
            .or_else(|_| {
                if self.served_by_header.is_empty() {
                    Ok(())
                } else {
                    err(
                        "served_by_header",
                        format!("{:?} is not a valid header name", self.served_by_header),
                    )
                }
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: &str = "origins:\n  - address: 127.0.0.1:9101\n";

    fn parse(extra: &str) -> Result<Config, ConfigError> {
        Config::parse(&format!("{MIN}{extra}"), "cdn.yaml")
    }

    #[test]
    fn minimal_file_gets_every_default() {
        let c = parse("").unwrap();
        assert_eq!(c.selection.policy, Policy::Tier);
        assert_eq!(c.selection.tier_bounds, [25.0, 50.0, 75.0]);
        assert_eq!(c.origins[0].capacity, 1.0);
        assert_eq!(c.health.interval, Duration::from_secs(1));
    }

    #[test]
    fn the_shipped_config_is_valid() {
        let text = include_str!("../../conf/cdn.yaml");
        Config::parse(text, "conf/cdn.yaml").unwrap();
    }

    #[test]
    fn errors_name_the_file_the_key_and_the_fix() {
        let e = parse("selection:\n  weigths: {}\n").unwrap_err();
        assert_eq!(e.key, "selection.weigths");
        assert!(
            e.message
                .contains("unknown field `weigths`, expected one of"),
            "{e}"
        );
        assert!(
            e.to_string()
                .starts_with("cdn.yaml: selection.weigths: unknown field"),
            "{e}"
        );

        let e = parse("health:\n  rise: many\n").unwrap_err();
        assert_eq!(e.key, "health.rise");

        let e = parse("selection:\n  weights: {cpu: 0.5}\n").unwrap_err();
        assert_eq!(e.key, "selection.weights");
        assert!(e.message.contains("sum to 1.2000"), "{e}");

        let e = parse("selection:\n  tier_bounds: [50, 25, 75]\n").unwrap_err();
        assert_eq!(e.key, "selection.tier_bounds");

        let e = Config::parse("origins:\n  - address: no-such-host.invalid:80\n", "f.yaml")
            .unwrap_err();
        assert_eq!(e.key, "origins[0].address");
        assert!(e.message.contains("does not resolve"));

        let e = parse("listen: [\"127.0.0.1:8080\", \"127.0.0.1:8080\"]\n").unwrap_err();
        assert_eq!(e.key, "listen[1]");
        let e = parse("listen: [\"127.0.0.1:8081\"]\n").unwrap_err();
        assert_eq!(e.key, "admin_listen");
        let e = parse("dashboard: {listen: 127.0.0.1:8081}\n").unwrap_err();
        assert_eq!(e.key, "dashboard.listen");

        let e = parse("selection:\n  policy: fastest\n").unwrap_err();
        assert_eq!(e.key, "selection.policy");
        let e = parse("timeouts:\n  connect: soon\n").unwrap_err();
        assert_eq!(e.key, "timeouts.connect");
        let e = Config::parse("origins:\n  - {address: 127.0.0.1:1, dns: a:1}\n", "f").unwrap_err();
        assert_eq!(e.key, "origins[0]");
        let e = Config::parse("origins: []\n", "f").unwrap_err();
        assert_eq!(e.key, "origins");
    }
}
