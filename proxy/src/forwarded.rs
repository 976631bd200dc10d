//! What origins are told about the client: `X-Forwarded-For` (appended),
//! `X-Forwarded-Proto`, `X-Forwarded-Host` and RFC 7239 `Forwarded`.
//!
//! The headers are added to the client's request header itself, so the
//! plain proxy path and every slice fetch of the media path send them
//! alike. Forwarding headers that arrive from a client that is not a
//! trusted proxy (`forwarded.trusted_proxies`) are dropped first: anyone
//! could write them, and an origin that logs or rate-limits by client
//! address must not believe them.

use crate::config::Forwarded;
use http::HeaderName;
use pingora::http::RequestHeader;
use std::fmt::Write;
use std::net::IpAddr;

const XFF: HeaderName = HeaderName::from_static("x-forwarded-for");
const XFP: HeaderName = HeaderName::from_static("x-forwarded-proto");
const XFH: HeaderName = HeaderName::from_static("x-forwarded-host");
const FORWARDED: HeaderName = http::header::FORWARDED;

/// Adds this hop to `req`, from a client at `client` over `proto`
/// (`http` or `https`).
pub fn add(req: &mut RequestHeader, client: Option<IpAddr>, proto: &'static str, cfg: &Forwarded) {
    if !(cfg.x_forwarded_for || cfg.x_forwarded_proto || cfg.x_forwarded_host || cfg.forwarded) {
        return;
    }
    let trusted = client.is_some_and(|ip| cfg.trusted.iter().any(|net| net.contains(&ip)));
    if !trusted {
        for name in [XFF, XFP, XFH, FORWARDED] {
            // A look-up by a ready name is cheap; a removal parses the name.
            if req.headers.contains_key(&name) {
                req.remove_header(&name);
            }
        }
    }
    let mut ip = String::with_capacity(48);
    match client {
        Some(IpAddr::V4(v4)) => push_ipv4(&mut ip, v4.octets()),
        Some(v6) => {
            let _ = write!(ip, "{v6}");
        }
        None => ip.push_str("unknown"),
    }
    if cfg.x_forwarded_for {
        let _ = req.insert_header("x-forwarded-for", appended(req, &XFF, &ip));
    }
    if cfg.x_forwarded_proto && !req.headers.contains_key(&XFP) {
        let _ = req.insert_header("x-forwarded-proto", proto);
    }
    if cfg.x_forwarded_host && !req.headers.contains_key(&XFH) {
        if let Some(host) = req.headers.get(http::header::HOST).cloned() {
            let _ = req.insert_header("x-forwarded-host", host);
        }
    }
    if cfg.forwarded {
        let host = req
            .headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok());
        let element = element(client, &ip, host, proto);
        let _ = req.insert_header("forwarded", appended(req, &FORWARDED, &element));
    }
}

/// `a.b.c.d` without the formatting machinery (this runs on every request).
fn push_ipv4(out: &mut String, octets: [u8; 4]) {
    for (i, o) in octets.into_iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        if o >= 100 {
            out.push(char::from(b'0' + o / 100));
        }
        if o >= 10 {
            out.push(char::from(b'0' + o / 10 % 10));
        }
        out.push(char::from(b'0' + o % 10));
    }
}

/// The list in every `name` header line of `req`, with `item` added last.
fn appended(req: &RequestHeader, name: &HeaderName, item: &str) -> String {
    let mut list = String::new();
    for line in req.headers.get_all(name) {
        if let Ok(v) = line.to_str() {
            if !v.trim().is_empty() {
                list.push_str(v.trim());
                list.push_str(", ");
            }
        }
    }
    list.push_str(item);
    list
}

/// One `Forwarded` element (RFC 7239 §4): `for=` the client (an IPv6
/// address quoted and bracketed, §6), `host=` and `proto=`.
fn element(client: Option<IpAddr>, ip: &str, host: Option<&str>, proto: &str) -> String {
    let mut e = String::with_capacity(64);
    match client {
        Some(IpAddr::V6(_)) => {
            let _ = write!(e, "for=\"[{ip}]\"");
        }
        _ => {
            let _ = write!(e, "for={ip}");
        }
    }
    let quotable = |h: &&str| {
        h.bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
    };
    if let Some(host) = host.filter(quotable) {
        let _ = write!(e, ";host=\"{host}\"");
    }
    let _ = write!(e, ";proto={proto}");
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every header on.
    fn cfg(trusted: &[&str]) -> Forwarded {
        Forwarded {
            x_forwarded_host: true,
            forwarded: true,
            trusted: trusted.iter().map(|t| t.parse().unwrap()).collect(),
            ..Forwarded::default()
        }
    }

    fn request(headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/videos/a.mp4", None).unwrap();
        r.insert_header("host", "cdn.example:8080").unwrap();
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    fn get<'a>(r: &'a RequestHeader, name: &str) -> Vec<&'a str> {
        r.headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect()
    }

    #[test]
    fn addresses_are_written_as_std_writes_them() {
        for ip in ["0.0.0.0", "1.20.100.255", "10.0.9.99", "255.255.255.255"] {
            let mut s = String::new();
            push_ipv4(&mut s, ip.parse::<std::net::Ipv4Addr>().unwrap().octets());
            assert_eq!(s, ip);
        }
    }

    #[test]
    fn by_default_only_for_and_proto_are_sent() {
        let mut r = request(&[]);
        add(
            &mut r,
            Some("192.0.2.7".parse().unwrap()),
            "http",
            &Forwarded::default(),
        );
        assert_eq!(get(&r, "x-forwarded-for"), ["192.0.2.7"]);
        assert_eq!(get(&r, "x-forwarded-proto"), ["http"]);
        assert!(get(&r, "x-forwarded-host").is_empty());
        assert!(get(&r, "forwarded").is_empty());
    }

    #[test]
    fn a_direct_client_replaces_whatever_it_claims() {
        let mut r = request(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-proto", "https"),
            ("forwarded", "for=6.6.6.6"),
        ]);
        add(
            &mut r,
            Some("192.0.2.7".parse().unwrap()),
            "http",
            &cfg(&[]),
        );
        assert_eq!(get(&r, "x-forwarded-for"), ["192.0.2.7"]);
        assert_eq!(get(&r, "x-forwarded-proto"), ["http"]);
        assert_eq!(get(&r, "x-forwarded-host"), ["cdn.example:8080"]);
        assert_eq!(
            get(&r, "forwarded"),
            ["for=192.0.2.7;host=\"cdn.example:8080\";proto=http"]
        );
    }

    #[test]
    fn a_trusted_proxy_s_chain_is_kept_and_appended_to() {
        let mut r = request(&[
            ("x-forwarded-for", "203.0.113.1"),
            ("x-forwarded-for", "198.51.100.2"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "video.example"),
            ("forwarded", "for=203.0.113.1;proto=https"),
        ]);
        add(
            &mut r,
            Some("10.1.2.3".parse().unwrap()),
            "http",
            &cfg(&["10.0.0.0/8"]),
        );
        assert_eq!(
            get(&r, "x-forwarded-for"),
            ["203.0.113.1, 198.51.100.2, 10.1.2.3"]
        );
        assert_eq!(get(&r, "x-forwarded-proto"), ["https"]);
        assert_eq!(get(&r, "x-forwarded-host"), ["video.example"]);
        assert_eq!(
            get(&r, "forwarded"),
            ["for=203.0.113.1;proto=https, for=10.1.2.3;host=\"cdn.example:8080\";proto=http"]
        );
    }

    #[test]
    fn ipv6_clients_are_quoted_and_switches_are_honoured() {
        let mut r = request(&[]);
        let mut c = cfg(&[]);
        (c.x_forwarded_for, c.x_forwarded_proto, c.x_forwarded_host) = (false, false, false);
        add(&mut r, Some("2001:db8::1".parse().unwrap()), "https", &c);
        assert!(get(&r, "x-forwarded-for").is_empty());
        assert_eq!(
            get(&r, "forwarded"),
            ["for=\"[2001:db8::1]\";host=\"cdn.example:8080\";proto=https"]
        );
        let mut r = request(&[("forwarded", "for=6.6.6.6")]);
        c.forwarded = false;
        add(&mut r, None, "http", &c);
        assert_eq!(get(&r, "forwarded"), ["for=6.6.6.6"], "all off: untouched");
    }
}
