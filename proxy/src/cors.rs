//! Cross-origin access for players on other sites (`cors` in cdn.yaml).
//!
//! A player page on `https://player.example` that fetches segments from the
//! edge needs `Access-Control-Allow-Origin` on every response, and an answer
//! to the browser's preflight (`OPTIONS`) before any request with headers
//! beyond the safelisted ones. The edge answers preflights itself (origins
//! answer `OPTIONS` with 405) and adds the headers to what the origins send,
//! exposing the ones players read (`Content-Range` to know an object's
//! size, `X-Cache`, `X-Request-Id`).

use crate::config::Cors;
use http::header::{
    ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN,
    ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE, ACCESS_CONTROL_REQUEST_HEADERS,
    ACCESS_CONTROL_REQUEST_METHOD, ORIGIN, VARY,
};
use http::{HeaderValue, Method};
use pingora::http::{RequestHeader, ResponseHeader};

/// What a player's script may read from responses.
const EXPOSED: &str =
    "Content-Range, Content-Length, Accept-Ranges, ETag, X-Cache, X-Request-Id, X-Served-By";

/// The methods the edge serves cross-origin.
const METHODS: &str = "GET, HEAD, OPTIONS";

/// Is this request a CORS preflight (RFC: Fetch §3.2.2) that the edge
/// should answer? Only when CORS is on.
pub fn is_preflight(req: &RequestHeader, cfg: &Cors) -> bool {
    !cfg.allowed_origins.is_empty()
        && req.method == Method::OPTIONS
        && req.headers.contains_key(ORIGIN)
        && req.headers.contains_key(ACCESS_CONTROL_REQUEST_METHOD)
}

/// The answer to a preflight: `204` with the permissions when the page's
/// origin is allowed and it asks for a method we serve, else `403`.
pub fn preflight_answer(req: &RequestHeader, cfg: &Cors) -> pingora::Result<ResponseHeader> {
    let allowed = req.headers.get(ORIGIN).and_then(|o| allow_origin(o, cfg));
    let method_ok = req
        .headers
        .get(ACCESS_CONTROL_REQUEST_METHOD)
        .is_some_and(|m| matches!(m.as_bytes(), b"GET" | b"HEAD"));
    let Some(allowed) = allowed.filter(|_| method_ok) else {
        let mut h = ResponseHeader::build(403, Some(2))?;
        h.insert_header("content-length", "0")?;
        h.insert_header("vary", "Origin")?;
        return Ok(h);
    };
    let mut h = ResponseHeader::build(204, Some(6))?;
    h.insert_header(ACCESS_CONTROL_ALLOW_ORIGIN, allowed)?;
    h.insert_header(ACCESS_CONTROL_ALLOW_METHODS, METHODS)?;
    if let Some(asked) = req.headers.get(ACCESS_CONTROL_REQUEST_HEADERS) {
        // Any request header may go to the origins; say yes to what was asked.
        h.insert_header(ACCESS_CONTROL_ALLOW_HEADERS, asked.clone())?;
    }
    h.insert_header(ACCESS_CONTROL_MAX_AGE, cfg.max_age.as_secs().to_string())?;
    h.insert_header(VARY, "Origin, Access-Control-Request-Headers")?;
    h.insert_header("content-length", "0")?;
    Ok(h)
}

/// Adds the CORS headers to a response to a cross-origin request from an
/// allowed origin; leaves it alone otherwise (or when CORS is off).
pub fn decorate(resp: &mut ResponseHeader, req: &RequestHeader, cfg: &Cors) {
    if cfg.allowed_origins.is_empty() {
        return;
    }
    let Some(allowed) = req.headers.get(ORIGIN).and_then(|o| allow_origin(o, cfg)) else {
        return;
    };
    let any = allowed.as_bytes() == b"*";
    let _ = resp.insert_header(ACCESS_CONTROL_ALLOW_ORIGIN, allowed);
    let _ = resp.insert_header(ACCESS_CONTROL_EXPOSE_HEADERS, EXPOSED);
    if !any {
        // The answer depends on the page's origin: caches must key on it.
        let _ = resp.append_header(VARY, "Origin");
    }
}

/// `*` when any origin is allowed, the page's own origin when it is listed.
fn allow_origin(origin: &HeaderValue, cfg: &Cors) -> Option<HeaderValue> {
    let origin_str = origin.to_str().ok()?;
    cfg.allowed_origins.iter().find_map(|a| {
        if a == "*" {
            Some(HeaderValue::from_static("*"))
        } else if a.eq_ignore_ascii_case(origin_str) {
            Some(origin.clone())
        } else {
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn cfg(allowed: &[&str]) -> Cors {
        Cors {
            allowed_origins: allowed.iter().map(|s| s.to_string()).collect(),
            max_age: Duration::from_secs(600),
        }
    }

    fn req(method: &str, headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build(method, b"/videos/a.mp4", None).unwrap();
        for (k, v) in headers {
            r.insert_header(k.to_string(), *v).unwrap();
        }
        r
    }

    fn get<'a>(h: &'a ResponseHeader, name: &str) -> Option<&'a str> {
        h.headers.get(name).map(|v| v.to_str().unwrap())
    }

    #[test]
    fn an_allowed_page_gets_its_preflight_answered_and_others_403() {
        let c = cfg(&["https://player.example"]);
        let pre = req(
            "OPTIONS",
            &[
                ("origin", "https://player.example"),
                ("access-control-request-method", "GET"),
                ("access-control-request-headers", "range, x-request-id"),
            ],
        );
        assert!(is_preflight(&pre, &c));
        assert!(
            !is_preflight(&pre, &cfg(&[])),
            "CORS off: the origin answers"
        );
        let h = preflight_answer(&pre, &c).unwrap();
        assert_eq!(h.status, 204);
        assert_eq!(
            get(&h, "access-control-allow-origin"),
            Some("https://player.example")
        );
        assert_eq!(
            get(&h, "access-control-allow-headers"),
            Some("range, x-request-id")
        );
        assert_eq!(get(&h, "access-control-max-age"), Some("600"));
        let other = req(
            "OPTIONS",
            &[
                ("origin", "https://evil.example"),
                ("access-control-request-method", "GET"),
            ],
        );
        assert_eq!(preflight_answer(&other, &c).unwrap().status, 403);
        let delete = req(
            "OPTIONS",
            &[
                ("origin", "https://player.example"),
                ("access-control-request-method", "DELETE"),
            ],
        );
        assert_eq!(preflight_answer(&delete, &c).unwrap().status, 403);
        assert!(!is_preflight(
            &req("OPTIONS", &[("origin", "https://player.example")]),
            &c
        ));
    }

    #[test]
    fn responses_to_allowed_pages_expose_what_players_read() {
        let c = cfg(&["https://player.example"]);
        let mut resp = ResponseHeader::build(206, None).unwrap();
        decorate(
            &mut resp,
            &req("GET", &[("origin", "https://player.example")]),
            &c,
        );
        assert_eq!(
            get(&resp, "access-control-allow-origin"),
            Some("https://player.example")
        );
        assert!(get(&resp, "access-control-expose-headers")
            .unwrap()
            .contains("Content-Range"));
        assert_eq!(get(&resp, "vary"), Some("Origin"));
        let mut resp = ResponseHeader::build(206, None).unwrap();
        decorate(
            &mut resp,
            &req("GET", &[("origin", "https://evil.example")]),
            &c,
        );
        assert!(get(&resp, "access-control-allow-origin").is_none());
        let mut resp = ResponseHeader::build(206, None).unwrap();
        decorate(
            &mut resp,
            &req("GET", &[("origin", "https://any.example")]),
            &cfg(&["*"]),
        );
        assert_eq!(get(&resp, "access-control-allow-origin"), Some("*"));
        assert!(get(&resp, "vary").is_none());
    }
}
