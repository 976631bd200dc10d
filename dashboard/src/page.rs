//! The dashboard page's files over HTTP: content types from `mime_guess`,
//! an `ETag` on every file and `304 Not Modified` for a matching
//! `If-None-Match`. Page files (`index.html`, `app.js`, `style.css`) are
//! revalidated on every load (`no-cache`), so an edit shows at once; the
//! pinned Chart.js build (208 KB) is immutable for a day.

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Response, StatusCode};
use http_body_util::Full;
use std::path::Path;
use std::time::UNIX_EPOCH;

/// How a file may be cached by the browser.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caching {
    /// The page's own files: store, but ask again each time.
    Revalidate,
    /// A pinned vendor build: reuse for a day without asking.
    Pinned,
}

impl Caching {
    fn header(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            Caching::Revalidate => "no-cache",
            Caching::Pinned => "public, max-age=86400",
        })
    }
}

/// A response of `status` with a plain-text or other fixed body, never cached.
pub fn reply(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// The weak validator of a file: its size and modification time, as the
/// origin's and nginx's ETags are made.
fn etag(meta: &std::fs::Metadata) -> String {
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    format!("\"{:x}-{:x}\"", meta.len(), mtime)
}

/// Does `If-None-Match` list `etag` (or `*`)?
fn matches(request: &HeaderMap, etag: &str) -> bool {
    request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == "*" || t == etag)
}

/// Serves the file at `path` (already checked to be a page file).
pub async fn file(path: &Path, request: &HeaderMap, caching: Caching) -> Response<Full<Bytes>> {
    let read = async {
        let meta = tokio::fs::metadata(path).await?;
        let tag = etag(&meta);
        if matches(request, &tag) {
            return Ok((tag, None));
        }
        Ok::<_, std::io::Error>((tag, Some(tokio::fs::read(path).await?)))
    };
    let (tag, body) = match read.await {
        Ok(found) => found,
        Err(e) => {
            tracing::warn!(path = %path.display(), "dashboard file missing: {e} (run `make e2e-deps` or `npm ci` in dashboard/)");
            return reply(StatusCode::NOT_FOUND, "text/plain", "not found\n");
        }
    };
    let mut r = match body {
        Some(bytes) => {
            let mime = mime_guess::from_path(path).first_or_octet_stream();
            let text = mime.type_() == mime_guess::mime::TEXT
                || mime.subtype() == mime_guess::mime::JAVASCRIPT;
            let content_type = if text {
                format!("{mime}; charset=utf-8")
            } else {
                mime.to_string()
            };
            let mut r = Response::new(Full::new(Bytes::from(bytes)));
            if let Ok(v) = HeaderValue::from_str(&content_type) {
                r.headers_mut().insert(header::CONTENT_TYPE, v);
            }
            r
        }
        None => {
            let mut r = Response::new(Full::new(Bytes::new()));
            *r.status_mut() = StatusCode::NOT_MODIFIED;
            r
        }
    };
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&tag) {
        h.insert(header::ETAG, v);
    }
    h.insert(header::CACHE_CONTROL, caching.header());
    r
}

/// Whether `path` is `/` then letters, digits and `-_./` only (safe to
/// write into the page as it is).
pub fn is_plain_path(path: &str) -> bool {
    path.starts_with('/')
        && path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/-_.".contains(&b))
}

/// The page with its own paths moved: files under `base` instead of
/// `/dashboard`, the WebSocket at `socket` instead of `/ws`. Not cached
/// (the paths are the proxy's config, which a reload may change).
pub async fn index_at(index: &Path, base: &str, socket: &str) -> Response<Full<Bytes>> {
    let Ok(html) = tokio::fs::read_to_string(index).await else {
        tracing::warn!(path = %index.display(), "dashboard page missing");
        return reply(StatusCode::NOT_FOUND, "text/plain", "not found\n");
    };
    let html = html
        .replace("\"/dashboard/", &format!("\"{base}/"))
        .replace("data-socket=\"/ws\"", &format!("data-socket=\"{socket}\""));
    let mut r = Response::new(Full::new(Bytes::from(html)));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_page_can_be_served_under_other_paths() {
        let dir = tempfile::tempdir().unwrap();
        let index = dir.path().join("index.html");
        std::fs::write(
            &index,
            "<link href=\"/dashboard/style.css\"><body data-socket=\"/ws\">",
        )
        .unwrap();
        let r = index_at(&index, "/ops/dash", "/ops/ws").await;
        let body = http_body_util::BodyExt::collect(r.into_body())
            .await
            .unwrap()
            .to_bytes();
        assert_eq!(
            std::str::from_utf8(&body).unwrap(),
            "<link href=\"/ops/dash/style.css\"><body data-socket=\"/ops/ws\">"
        );
        assert!(is_plain_path("/ops/dash-1"));
        assert!(!is_plain_path("/x\"><script>"));
        assert!(!is_plain_path("ops"));
    }

    #[tokio::test]
    async fn types_etags_and_not_modified() {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in [
            ("app.js", "1;"),
            ("style.css", "a{}"),
            ("index.html", "<p>"),
        ] {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        let none = HeaderMap::new();
        let get = |name: &str, h: HeaderMap| {
            let path = dir.path().join(name);
            async move { file(&path, &h, Caching::Revalidate).await }
        };
        let js = get("app.js", none.clone()).await;
        assert_eq!(js.status(), 200);
        assert_eq!(
            js.headers()[header::CONTENT_TYPE],
            "text/javascript; charset=utf-8"
        );
        assert_eq!(js.headers()[header::CACHE_CONTROL], "no-cache");
        let css = get("style.css", none.clone()).await;
        assert_eq!(
            css.headers()[header::CONTENT_TYPE],
            "text/css; charset=utf-8"
        );
        let html = get("index.html", none.clone()).await;
        assert_eq!(
            html.headers()[header::CONTENT_TYPE],
            "text/html; charset=utf-8"
        );

        let tag = js.headers()[header::ETAG].clone();
        let mut h = HeaderMap::new();
        h.insert(header::IF_NONE_MATCH, tag.clone());
        let again = get("app.js", h).await;
        assert_eq!(again.status(), 304, "a matching If-None-Match");
        assert_eq!(again.headers()[header::ETAG], tag);
        let mut h = HeaderMap::new();
        h.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"other\""));
        assert_eq!(get("app.js", h).await.status(), 200);

        std::fs::write(dir.path().join("app.js"), "2;;").unwrap();
        let mut h = HeaderMap::new();
        h.insert(header::IF_NONE_MATCH, tag);
        assert_eq!(
            get("app.js", h).await.status(),
            200,
            "an edit changes the tag"
        );
        assert_eq!(get("gone.js", none).await.status(), 404);
    }
}
