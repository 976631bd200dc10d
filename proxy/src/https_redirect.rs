//! `redirect_to_https`: a request for an origin on a plain listener is
//! answered with `308` to the same host, path and query on the first HTTPS
//! listener's port (308, unlike 301, keeps the method).

use pingora::http::RequestHeader;

/// Where to send a plain-HTTP request: `https://host[:port]/path?query`;
/// `None` when the request names no usable host (the caller answers 400).
pub fn location(req: &RequestHeader, https_port: u16) -> Option<String> {
    let host = req
        .headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri.authority().map(|a| a.as_str()))?;
    let name = host_name(host)?;
    let path = req.uri.path_and_query().map_or("/", |p| p.as_str());
    Some(if https_port == 443 {
        format!("https://{name}{path}")
    } else {
        format!("https://{name}:{https_port}{path}")
    })
}

/// The name of a `Host` value without its port, if it is a plausible
/// name or IP literal (nothing that could smuggle a path or a header).
fn host_name(host: &str) -> Option<&str> {
    let name = if host.starts_with('[') {
        &host[..=host.find(']')?]
    } else {
        host.split(':').next()?
    };
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.[]:".contains(&b));
    ok.then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(uri: &str, host: Option<&str>) -> RequestHeader {
        let mut r = RequestHeader::build("GET", uri.as_bytes(), None).unwrap();
        if let Some(h) = host {
            r.insert_header("host", h).unwrap();
        }
        r
    }

    #[test]
    fn the_host_keeps_its_name_and_takes_the_https_port() {
        let r = req("/videos/a.mp4?t=1", Some("cdn.example:8080"));
        assert_eq!(
            location(&r, 8443).unwrap(),
            "https://cdn.example:8443/videos/a.mp4?t=1"
        );
        assert_eq!(
            location(&r, 443).unwrap(),
            "https://cdn.example/videos/a.mp4?t=1"
        );
        let v6 = req("/", Some("[::1]:8080"));
        assert_eq!(location(&v6, 8443).unwrap(), "https://[::1]:8443/");
    }

    #[test]
    fn a_missing_or_odd_host_gets_no_redirect() {
        assert_eq!(location(&req("/", None), 8443), None);
        assert_eq!(location(&req("/", Some("evil.example/x")), 8443), None);
        assert_eq!(location(&req("/", Some("a@b")), 8443), None);
    }
}
