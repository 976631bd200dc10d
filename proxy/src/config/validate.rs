//! What the types of `cdn.yaml` cannot check: sums, orderings, clashes,
//! well-formed names. Pure: no I/O, so it is as fast on reload as at start.

use super::{Config, HostPort};
use std::collections::HashSet;

/// Smallest and largest `media.slice_size`: below 64 KiB the per-slice
/// request costs more than it saves; above 64 MiB a resume re-reads too much.
const MIN_SLICE: u64 = 64 * 1024;
const MAX_SLICE: u64 = 64 * 1024 * 1024;

/// Checks what types cannot: sums, orderings, well-formed addresses, duplicates.
/// An error is the dotted key and what is wrong with it, with the fix.
pub(super) fn check(c: &Config) -> Result<(), (String, String)> {
    let err = |k: &str, m: String| Err((k.to_string(), m));
    if c.listen.is_empty() {
        return err(
            "listen",
            "at least one listener is needed, e.g. `listen: [\"0.0.0.0:8080\"]`".into(),
        );
    }
    let mut seen = HashSet::new();
    let dashboard = c.dashboard.enabled.then_some(&c.dashboard.listen);
    let tls = c.tls.iter().map(|t| &t.listen);
    let all = c
        .listen
        .iter()
        .chain(std::iter::once(&c.admin_listen))
        .chain(dashboard)
        .chain(tls);
    let first_tls = c.listen.len() + 1 + usize::from(dashboard.is_some());
    for (i, l) in all.enumerate() {
        if !seen.insert(*l) {
            let key = match i.checked_sub(c.listen.len()) {
                None => format!("listen[{i}]"),
                Some(0) => "admin_listen".into(),
                Some(_) if i >= first_tls => format!("tls[{}].listen", i - first_tls),
                Some(_) => "dashboard.listen".into(),
            };
            return err(
                &key,
                format!("{l} is listed twice; every listener needs its own address"),
            );
        }
    }
    for (i, t) in c.tls.iter().enumerate() {
        if t.certificates.is_empty() {
            return err(
                &format!("tls[{i}].certificates"),
                "an HTTPS listener needs a certificate, e.g. `- {cert: conf/tls/cert.pem, key: conf/tls/key.pem}`".into(),
            );
        }
    }
    let mut prefixes = HashSet::new();
    for (i, r) in c.routes.iter().enumerate() {
        if !r.prefix.starts_with('/') {
            return err(
                &format!("routes[{i}].prefix"),
                format!("{:?} must start with `/`, e.g. /videos", r.prefix),
            );
        }
        if !prefixes.insert(r.prefix.as_str()) {
            return err(
                &format!("routes[{i}].prefix"),
                format!("{:?} is listed twice; each prefix once", r.prefix),
            );
        }
    }
    let e = &c.endpoints;
    let mut paths: Vec<(&str, &str)> = Vec::new();
    for (key, path) in [
        ("healthz", &e.healthz),
        ("metrics", &e.metrics),
        ("prometheus", &e.prometheus),
        ("dashboard", &e.dashboard),
        ("dashboard_socket", &e.dashboard_socket),
    ] {
        if path.is_empty() {
            continue;
        }
        // Plain path characters only: the dashboard's paths are written into its page.
        let plain = path.len() > 1
            && path.starts_with('/')
            && !path.ends_with('/')
            && path
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"/-_.".contains(&b));
        // The dashboard's files lie under its path: nothing else may.
        let under_dashboard = key != "dashboard"
            && !e.dashboard.is_empty()
            && path.starts_with(&format!("{}/", e.dashboard));
        let taken = paths.iter().any(|(_, p)| *p == path.as_str());
        if !plain || under_dashboard || taken {
            return err(
                &format!("endpoints.{key}"),
                format!("{path:?} must be a plain path (`/` then letters, digits, `-_./`, no `/` at the end) that no other endpoint uses or lies under; or \"\" to switch it off"),
            );
        }
        paths.push((key, path.as_str()));
    }
    let auth = &c.admin_auth;
    if auth.token_file.is_some() && auth.token_env.is_some() {
        return err(
            "admin_auth",
            "give token_file or token_env, not both".into(),
        );
    }
    if c.redirect_to_https && c.tls.is_empty() {
        return err(
            "redirect_to_https",
            "there is no HTTPS listener to redirect to; add one under `tls` or set it to false"
                .into(),
        );
    }
    if !(c.client_read_buffer == 0 || (1024..=1024 * 1024).contains(&c.client_read_buffer)) {
        return err(
            "client_read_buffer",
            format!(
                "{} must be 0 (no buffer) or between 1024 and 1048576 bytes, e.g. 16384",
                c.client_read_buffer
            ),
        );
    }
    if !(1024..=1024 * 1024).contains(&c.client_max_header) {
        return err(
            "client_max_header",
            format!(
                "{} must be between 1024 and 1048576 bytes, e.g. 65536",
                c.client_max_header
            ),
        );
    }
    if c.client_header_timeout.is_zero() {
        return err("client_header_timeout", "must be above 0, e.g. 10s".into());
    }
    if c.origins.is_empty() {
        return err(
            "origins",
            "no origins; add `- address: 127.0.0.1:9101` or `- dns: origin:8000`".into(),
        );
    }
    for (i, o) in c.origins.iter().enumerate() {
        let key = format!("origins[{i}]");
        match (&o.address, &o.dns) {
            (Some(a), None) => {
                // Whether the name resolves is checked when the file is loaded.
                if HostPort::parse(a).is_none() {
                    return err(
                        &format!("{key}.address"),
                        format!("{a:?} must be host:port, e.g. 127.0.0.1:9101"),
                    );
                }
            }
            (None, Some(d)) => {
                if HostPort::parse(d).is_none() {
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
    let s = &c.selection;
    let w = s.weights;
    let parts = w.as_array();
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
    let sc = s.scales;
    if sc.latency_ratio.is_nan() || sc.latency_ratio <= 1.0 {
        return err(
            "selection.scales.latency_ratio",
            format!("{} must be above 1, e.g. 3", sc.latency_ratio),
        );
    }
    for (key, v) in [
        ("queue_excess", sc.queue_excess),
        ("error_ratio", sc.error_ratio),
        ("cpu_excess", sc.cpu_excess),
        ("memory_excess", sc.memory_excess),
    ] {
        if !(v > 0.0 && v.is_finite()) {
            return err(
                &format!("selection.scales.{key}"),
                format!("{v} must be a number above 0"),
            );
        }
    }
    if s.probe_every.is_zero() {
        return err(
            "selection.probe_every",
            "must be above 0, e.g. 500ms".into(),
        );
    }
    if s.ewma_decay.is_zero() {
        return err("selection.ewma_decay", "must be above 0, e.g. 10s".into());
    }
    if !(s.consistent_load_factor >= 1.0 && s.consistent_load_factor.is_finite()) {
        return err(
            "selection.consistent_load_factor",
            format!(
                "{} must be at least 1 (1.25 lets an origin take 25% over its share)",
                s.consistent_load_factor
            ),
        );
    }
    if c.health.rise == 0 || c.health.fall == 0 {
        return err("health", "rise and fall must be at least 1".into());
    }
    if c.health.interval.is_zero() || c.health.timeout.is_zero() {
        return err("health", "interval and timeout must be above 0".into());
    }
    if !c.health.path.starts_with('/') {
        return err(
            "health.path",
            format!("{:?} must start with /", c.health.path),
        );
    }
    if c.ejection.base > c.ejection.max {
        return err("ejection.base", "must not exceed ejection.max".into());
    }
    if c.retry.attempts == 0 {
        return err(
            "retry.attempts",
            "must be at least 1 (1 means no retries)".into(),
        );
    }
    if !(0.0..=1.0).contains(&c.retry.budget_ratio) || c.retry.budget_min_per_sec < 0.0 {
        return err(
            "retry",
            "budget_ratio must be 0–1 and budget_min_per_sec 0 or more".into(),
        );
    }
    if !(MIN_SLICE..=MAX_SLICE).contains(&c.media.slice_size) {
        return err(
            "media.slice_size",
            format!(
                "{} must be between {MIN_SLICE} and {MAX_SLICE} bytes, e.g. 1048576 (1 MiB)",
                c.media.slice_size
            ),
        );
    }
    if let Some((i, e)) = (c.media.extensions.iter().enumerate())
        .find(|(_, e)| e.is_empty() || e.contains(['.', '/']))
    {
        return err(
            &format!("media.extensions[{i}]"),
            format!("{e:?} must be an extension without the dot, e.g. mp4"),
        );
    }
    if c.timeouts.response_header.is_zero() {
        return err(
            "timeouts.response_header",
            "must be above 0, e.g. 10s".into(),
        );
    }
    if c.timeouts.connect.is_zero() || c.timeouts.read.is_zero() {
        return err("timeouts", "connect and read must be above 0".into());
    }
    let d = &c.dashboard;
    if d.interval.is_zero() || d.history == 0 || d.max_clients == 0 {
        return err(
            "dashboard",
            "interval, history and max_clients must be above 0".into(),
        );
    }
    if c.discovery.interval.is_zero() {
        return err("discovery.interval", "must be above 0, e.g. 5s".into());
    }
    let pools: HashSet<&str> = c.origins.iter().map(|o| o.pool.as_str()).collect();
    for (i, o) in c.origins.iter().enumerate() {
        let well_formed = !o.pool.is_empty()
            && o.pool.len() <= 64
            && o.pool
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !well_formed {
            return err(
                &format!("origins[{i}].pool"),
                format!(
                    "{:?} is not a pool name; use letters, digits, '-' and '_' (at most 64)",
                    o.pool
                ),
            );
        }
    }
    for (i, r) in c.routes.iter().enumerate() {
        if !pools.contains(r.pool.as_str()) {
            let mut known: Vec<&str> = pools.iter().copied().collect();
            known.sort_unstable();
            return err(
                &format!("routes[{i}].pool"),
                format!(
                    "no origin is in pool {:?}; give some origins `pool: {}`, or use one of: {}",
                    r.pool,
                    r.pool,
                    known.join(", ")
                ),
            );
        }
    }
    if pools
        .iter()
        .any(|p| crate::origins::pools::bit(p).is_none())
    {
        return err(
            "origins",
            format!(
                "more than {} pool names since the proxy started; restart it to use new ones",
                crate::origins::pools::MAX_POOLS
            ),
        );
    }
    for (i, h) in c.cache.key_headers.iter().enumerate() {
        if http::HeaderName::try_from(h.as_str()).is_err() {
            return err(
                &format!("cache.key_headers[{i}]"),
                format!("{h:?} is not a header name; write e.g. host or accept-language"),
            );
        }
    }
    // A budget under a few slices would evict what is being written.
    if c.cache.dir.is_some() && c.cache.max_size < 4 * c.media.slice_size {
        return err(
            "cache.max_size",
            format!(
                "{} bytes is less than four slices ({} bytes each); give the cache at least {} bytes",
                c.cache.max_size,
                c.media.slice_size,
                4 * c.media.slice_size
            ),
        );
    }
    if c.cache
        .dir
        .as_ref()
        .is_some_and(|d| d.as_os_str().is_empty())
    {
        return err(
            "cache.dir",
            "is empty; name a folder (e.g. /var/cache/cdn) or leave the key out for no cache"
                .into(),
        );
    }
    for (i, t) in c.forwarded.trusted_proxies.iter().enumerate() {
        if trusted_net(t).is_none() {
            return err(
                &format!("forwarded.trusted_proxies[{i}]"),
                format!("{t:?} is not an address or CIDR range; write e.g. 10.0.0.0/8, 192.0.2.7 or fd00::/8"),
            );
        }
    }
    for (i, o) in c.cors.allowed_origins.iter().enumerate() {
        let scheme_host = o
            .strip_prefix("https://")
            .or_else(|| o.strip_prefix("http://"));
        let well_formed = o == "*"
            || scheme_host.is_some_and(|h| !h.is_empty() && !h.contains(['/', '?', '#', ' ']));
        if !well_formed {
            return err(
                &format!("cors.allowed_origins[{i}]"),
                format!("{o:?} is not a page origin; write scheme://host[:port] with no path (e.g. https://player.example), or \"*\" for any"),
            );
        }
    }
    for (key, name) in [
        ("served_by_header", &c.served_by_header),
        ("request_id_header", &c.request_id_header),
        ("cache.status_header", &c.cache.status_header),
    ] {
        if !name.is_empty() && http::HeaderName::try_from(name.as_str()).is_err() {
            return err(
                key,
                format!("{name:?} is not a valid header name; use letters, digits and '-', or \"\" for none"),
            );
        }
    }
    Ok(())
}

/// A `forwarded.trusted_proxies` entry: a CIDR range, or one address.
pub(super) fn trusted_net(s: &str) -> Option<ipnet::IpNet> {
    s.parse()
        .ok()
        .or_else(|| s.parse::<std::net::IpAddr>().ok().map(ipnet::IpNet::from))
}
