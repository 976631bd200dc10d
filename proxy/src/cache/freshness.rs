//! HTTP caching rules for a shared cache (RFC 9111): whether an origin's
//! response may be stored, and for how long it is fresh. Pure, no I/O.
//!
//! Heuristic freshness is off: a response without `max-age`, `s-maxage` or
//! `Expires` is stored (when it has a validator) but revalidated on every
//! use, so a cache never serves what the origin did not say it may.

use http::header::{AGE, AUTHORIZATION, CACHE_CONTROL, DATE, EXPIRES};
use http::HeaderMap;
use std::time::{Duration, SystemTime};

/// What a response's caching headers allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Freshness {
    /// May a shared cache store it at all (`no-store`, `private` and
    /// unmarked answers to authorized requests may not)?
    pub storable: bool,
    /// How long from its arrival it stays fresh (zero: stale at once).
    pub fresh_for: Duration,
    /// `stale-while-revalidate`: how long past freshness a stale copy may be
    /// served while it is revalidated.
    pub stale_while_revalidate: Duration,
    /// `stale-if-error`: how long past freshness a stale copy may be served
    /// when no origin can answer.
    pub stale_if_error: Duration,
    /// `must-revalidate` / `proxy-revalidate` / `s-maxage`: never serve it stale.
    pub must_revalidate: bool,
}

/// The directives of every `Cache-Control` line, as `(name, value)`,
/// names lowercased, quotes taken off values.
fn directives(headers: &HeaderMap) -> impl Iterator<Item = (String, Option<String>)> + '_ {
    headers
        .get_all(CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|line| line.split(','))
        .filter_map(|d| {
            let d = d.trim();
            if d.is_empty() {
                return None;
            }
            Some(match d.split_once('=') {
                Some((n, v)) => (
                    n.trim().to_ascii_lowercase(),
                    Some(v.trim().trim_matches('"').to_string()),
                ),
                None => (d.to_ascii_lowercase(), None),
            })
        })
}

/// Seconds in a directive's value; a malformed one counts as zero
/// (RFC 9111 §1.2.2: invalid delta-seconds mean stale).
fn seconds(v: &Option<String>) -> Duration {
    Duration::from_secs(v.as_deref().and_then(|s| s.parse().ok()).unwrap_or(0))
}

/// Judges an origin's response (`resp`) to a request (`req`) that arrived
/// at `now`.
pub fn judge(req: &HeaderMap, resp: &HeaderMap, now: SystemTime) -> Freshness {
    let mut f = Freshness {
        storable: true,
        ..Freshness::default()
    };
    let (mut max_age, mut s_maxage, mut public, mut no_cache) = (None, None, false, false);
    for (name, value) in directives(resp) {
        match name.as_str() {
            "no-store" | "private" => f.storable = false,
            "no-cache" => no_cache = true,
            "public" => public = true,
            "must-revalidate" | "proxy-revalidate" => f.must_revalidate = true,
            "max-age" => max_age = Some(seconds(&value)),
            "s-maxage" => s_maxage = Some(seconds(&value)),
            "stale-while-revalidate" => f.stale_while_revalidate = seconds(&value),
            "stale-if-error" => f.stale_if_error = seconds(&value),
            _ => {}
        }
    }
    // RFC 9111 §3.5: a shared cache stores answers to authorized requests
    // only when the origin says so.
    if req.contains_key(AUTHORIZATION) && !(public || s_maxage.is_some() || f.must_revalidate) {
        f.storable = false;
    }
    if s_maxage.is_some() {
        f.must_revalidate = true;
    }
    let date = |h| {
        resp.get(h)
            .and_then(|v| v.to_str().ok())
            .and_then(|s| httpdate::parse_http_date(s).ok())
    };
    let lifetime = s_maxage.or(max_age).unwrap_or_else(|| {
        // Expires relative to the origin's own Date (its clock, not ours);
        // an invalid Expires means already expired.
        match resp.get(EXPIRES) {
            Some(_) => match (date(EXPIRES), date(DATE).unwrap_or(now)) {
                (Some(expires), origin_now) => {
                    expires.duration_since(origin_now).unwrap_or_default()
                }
                (None, _) => Duration::ZERO,
            },
            None => Duration::ZERO,
        }
    });
    if no_cache {
        f.fresh_for = Duration::ZERO;
        return f;
    }
    // Its age on arrival (§4.2.3, without the request's round trip).
    let age_header = resp
        .get(AGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.trim().parse().ok())
        .map_or(Duration::ZERO, Duration::from_secs);
    let apparent = date(DATE)
        .and_then(|d| now.duration_since(d).ok())
        .unwrap_or_default();
    f.fresh_for = lifetime.saturating_sub(age_header.max(apparent));
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn judged(pairs: &[(&str, &str)]) -> Freshness {
        judge(&HeaderMap::new(), &headers(pairs), at(1_800_000_000))
    }

    #[test]
    fn max_age_and_s_maxage_set_the_lifetime() {
        let f = judged(&[("cache-control", "public, max-age=60")]);
        assert!(f.storable);
        assert_eq!(f.fresh_for, Duration::from_secs(60));
        assert!(!f.must_revalidate);
        let f = judged(&[("cache-control", "max-age=60, s-maxage=600")]);
        assert_eq!(f.fresh_for, Duration::from_secs(600));
        assert!(f.must_revalidate, "s-maxage forbids serving stale");
        let f = judged(&[("cache-control", "max-age=\"30\""), ("age", "10")]);
        assert_eq!(f.fresh_for, Duration::from_secs(20));
        let f = judged(&[("cache-control", "max-age=x")]);
        assert_eq!(f.fresh_for, Duration::ZERO);
    }

    #[test]
    fn no_store_and_private_are_not_stored_no_cache_is_stale_at_once() {
        assert!(!judged(&[("cache-control", "no-store")]).storable);
        assert!(
            !judged(&[
                ("cache-control", "max-age=60"),
                ("cache-control", "Private")
            ])
            .storable
        );
        let f = judged(&[("cache-control", "no-cache, max-age=60")]);
        assert!(f.storable);
        assert_eq!(f.fresh_for, Duration::ZERO);
    }

    #[test]
    fn expires_counts_from_the_origins_date_and_no_lifetime_means_stale() {
        let origin_now = httpdate::parse_http_date("Sun, 29 Nov 2026 00:00:00 GMT").unwrap();
        let resp = headers(&[
            ("date", "Sun, 29 Nov 2026 00:00:00 GMT"),
            ("expires", "Sun, 29 Nov 2026 00:02:00 GMT"),
        ]);
        let f = judge(
            &HeaderMap::new(),
            &resp,
            origin_now + Duration::from_secs(20),
        );
        assert_eq!(f.fresh_for, Duration::from_secs(100), "20 s old on arrival");
        let f = judged(&[("expires", "0")]);
        assert_eq!(f.fresh_for, Duration::ZERO);
        let f = judged(&[("etag", "\"a\"")]);
        assert!(f.storable);
        assert_eq!(f.fresh_for, Duration::ZERO, "no heuristic freshness");
    }

    #[test]
    fn stale_extensions_are_read() {
        let f = judged(&[(
            "cache-control",
            "max-age=1, stale-while-revalidate=30, stale-if-error=600",
        )]);
        assert_eq!(f.stale_while_revalidate, Duration::from_secs(30));
        assert_eq!(f.stale_if_error, Duration::from_secs(600));
    }

    #[test]
    fn authorized_requests_are_stored_only_when_marked() {
        let req = headers(&[("authorization", "Bearer x")]);
        let now = at(1_800_000_000);
        assert!(!judge(&req, &headers(&[("cache-control", "max-age=60")]), now).storable);
        assert!(
            judge(
                &req,
                &headers(&[("cache-control", "public, max-age=60")]),
                now
            )
            .storable
        );
    }
}
