//! Range, conditional requests and HEAD against the real binary (RFC 9110).

mod common;
use common::*;
use reqwest::header::HeaderMap;
use reqwest::StatusCode;

struct Fixture {
    media: MediaFixture,
    server: Server,
    http: reqwest::Client,
}

fn fixture() -> Fixture {
    let media = MediaFixture::new().unwrap();
    let server = start_origin(&media, &[]);
    Fixture {
        media,
        server,
        http: client(),
    }
}

impl Fixture {
    async fn get(&self, path: &str, headers: &[(&str, &str)]) -> (StatusCode, HeaderMap, Vec<u8>) {
        let mut req = self.http.get(format!("{}{path}", self.server.url()));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.unwrap();
        let (status, h) = (resp.status(), resp.headers().clone());
        (status, h, resp.bytes().await.unwrap().to_vec())
    }

    async fn head(&self, path: &str, headers: &[(&str, &str)]) -> (StatusCode, HeaderMap, Vec<u8>) {
        let mut req = self.http.head(format!("{}{path}", self.server.url()));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.unwrap();
        let (status, h) = (resp.status(), resp.headers().clone());
        (status, h, resp.bytes().await.unwrap().to_vec())
    }

    async fn validators(&self) -> (String, String) {
        let (_, h, _) = self.head("/videos/clip.mp4", &[]).await;
        (
            hdr(&h, "etag").to_string(),
            hdr(&h, "last-modified").to_string(),
        )
    }
}

fn hdr<'a>(h: &'a HeaderMap, name: &str) -> &'a str {
    h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

#[tokio::test]
async fn full_get_sends_exact_bytes_and_validators() {
    let f = fixture();
    for path in ["/", "/videos/clip.mp4", "/videos/inside-link.mp4"] {
        let (st, h, body) = f.get(path, &[]).await;
        assert_eq!(st, StatusCode::OK, "{path}");
        assert_eq!(body, f.media.clip, "{path}");
        assert_eq!(hdr(&h, "content-length"), f.media.clip.len().to_string());
        assert_eq!(hdr(&h, "content-type"), "video/mp4");
        assert_eq!(hdr(&h, "accept-ranges"), "bytes");
        let etag = hdr(&h, "etag");
        assert!(
            etag.starts_with('"') && etag.ends_with('"'),
            "strong etag: {etag}"
        );
        assert!(httpdate_ok(hdr(&h, "last-modified")));
        assert_eq!(hdr(&h, "x-origin-name"), "test-origin");
    }
    let (st, _, body) = f.get("/videos/sub/nested.mp4", &[]).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(body, f.media.nested);
}

fn httpdate_ok(s: &str) -> bool {
    s.ends_with(" GMT") && s.len() == 29
}

#[tokio::test]
async fn single_range_forms() {
    let f = fixture();
    let size = f.media.clip.len();
    let cases: [(&str, usize, usize); 5] = [
        ("bytes=0-99", 0, 99),
        ("bytes=1000-", 1000, size - 1),
        ("bytes=-500", size - 500, size - 1),
        // Past the end: clipped to the last byte.
        ("bytes=100-99999999", 100, size - 1),
        // A suffix longer than the file selects all of it.
        ("bytes=-99999999", 0, size - 1),
    ];
    for (range, a, b) in cases {
        let (st, h, body) = f.get("/videos/clip.mp4", &[("range", range)]).await;
        assert_eq!(st, StatusCode::PARTIAL_CONTENT, "{range}");
        assert_eq!(
            hdr(&h, "content-range"),
            format!("bytes {a}-{b}/{size}"),
            "{range}"
        );
        assert_eq!(
            hdr(&h, "content-length"),
            (b - a + 1).to_string(),
            "{range}"
        );
        assert_eq!(hdr(&h, "content-type"), "video/mp4");
        assert_eq!(body, &f.media.clip[a..=b], "{range}");
    }
}

#[tokio::test]
async fn unsatisfiable_and_invalid_ranges() {
    let f = fixture();
    let size = f.media.clip.len();
    for range in [
        format!("bytes={size}-"),
        format!("bytes={}-{}", size + 10, size + 20),
    ] {
        let (st, h, body) = f.get("/videos/clip.mp4", &[("range", &range)]).await;
        assert_eq!(st, StatusCode::RANGE_NOT_SATISFIABLE, "{range}");
        assert_eq!(hdr(&h, "content-range"), format!("bytes */{size}"));
        assert!(body.is_empty());
    }
    let (st, h, _) = f.get("/videos/empty.mp4", &[("range", "bytes=0-")]).await;
    assert_eq!(st, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(hdr(&h, "content-range"), "bytes */0");
    // Syntactically invalid: ignored, full 200.
    for range in ["bytes=abc", "pages=1-2", "bytes=5-1", "bytes 0-1"] {
        let (st, _, body) = f.get("/videos/clip.mp4", &[("range", range)]).await;
        assert_eq!(st, StatusCode::OK, "{range}");
        assert_eq!(body.len(), size, "{range}");
    }
    // Documented policy: overlapping parts or more than 16 parts → the full 200.
    let many = (0..17)
        .map(|i| format!("{}-{}", i * 100, i * 100 + 9))
        .collect::<Vec<_>>()
        .join(",");
    for range in ["bytes=0-100,50-150".to_string(), format!("bytes={many}")] {
        let (st, _, body) = f.get("/videos/clip.mp4", &[("range", &range)]).await;
        assert_eq!(st, StatusCode::OK, "{range}");
        assert_eq!(body, f.media.clip);
    }
}

#[tokio::test]
async fn multiple_ranges_are_multipart_byteranges() {
    let f = fixture();
    let size = f.media.clip.len();
    let (st, h, body) = f
        .get("/videos/clip.mp4", &[("range", "bytes=0-9, 100-199, -5")])
        .await;
    assert_eq!(st, StatusCode::PARTIAL_CONTENT);
    let ct = hdr(&h, "content-type");
    let boundary = ct
        .strip_prefix("multipart/byteranges; boundary=")
        .expect(ct);
    assert_eq!(hdr(&h, "content-length"), body.len().to_string());
    assert!(h.get("content-range").is_none());
    // Parse the parts back and compare every byte.
    let expected = [(0usize, 9usize), (100, 199), (size - 5, size - 1)];
    let mut rest = &body[..];
    for (a, b) in expected {
        let delim = format!("\r\n--{boundary}\r\n");
        assert!(rest.starts_with(delim.as_bytes()), "part delimiter");
        rest = &rest[delim.len()..];
        let end = rest.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        let head = std::str::from_utf8(&rest[..end]).unwrap();
        assert!(head.contains("Content-Type: video/mp4"), "{head}");
        assert!(
            head.contains(&format!("Content-Range: bytes {a}-{b}/{size}")),
            "{head}"
        );
        rest = &rest[end + 4..];
        assert_eq!(&rest[..b - a + 1], &f.media.clip[a..=b]);
        rest = &rest[b - a + 1..];
    }
    assert_eq!(rest, format!("\r\n--{boundary}--\r\n").as_bytes());
}

#[tokio::test]
async fn conditional_requests() {
    let f = fixture();
    let (etag, lm) = f.validators().await;
    let p = "/videos/clip.mp4";

    let (st, h, body) = f.get(p, &[("if-none-match", &etag)]).await;
    assert_eq!(st, StatusCode::NOT_MODIFIED);
    assert!(body.is_empty());
    assert_eq!(hdr(&h, "etag"), etag);
    let (st, ..) = f
        .get(p, &[("if-none-match", &format!("\"nope\", W/{etag}"))])
        .await;
    assert_eq!(
        st,
        StatusCode::NOT_MODIFIED,
        "weak comparison for If-None-Match"
    );
    let (st, ..) = f.get(p, &[("if-none-match", "*")]).await;
    assert_eq!(st, StatusCode::NOT_MODIFIED);
    let (st, ..) = f.get(p, &[("if-none-match", "\"other\"")]).await;
    assert_eq!(st, StatusCode::OK);

    let (st, ..) = f.get(p, &[("if-modified-since", &lm)]).await;
    assert_eq!(st, StatusCode::NOT_MODIFIED);
    let (st, ..) = f
        .get(p, &[("if-modified-since", "Sat, 01 Jan 2000 00:00:00 GMT")])
        .await;
    assert_eq!(st, StatusCode::OK);
    // If-None-Match wins over If-Modified-Since.
    let (st, ..) = f
        .get(
            p,
            &[("if-none-match", "\"other\""), ("if-modified-since", &lm)],
        )
        .await;
    assert_eq!(st, StatusCode::OK);

    let (st, ..) = f.get(p, &[("if-match", &etag)]).await;
    assert_eq!(st, StatusCode::OK);
    let (st, _, body) = f.get(p, &[("if-match", "\"other\"")]).await;
    assert_eq!(st, StatusCode::PRECONDITION_FAILED);
    assert!(body.is_empty());
    let (st, ..) = f
        .get(
            p,
            &[("if-unmodified-since", "Sat, 01 Jan 2000 00:00:00 GMT")],
        )
        .await;
    assert_eq!(st, StatusCode::PRECONDITION_FAILED);
    let (st, ..) = f.get(p, &[("if-unmodified-since", &lm)]).await;
    assert_eq!(st, StatusCode::OK);
}

#[tokio::test]
async fn if_range_decides_between_partial_and_full() {
    let f = fixture();
    let (etag, lm) = f.validators().await;
    let p = "/videos/clip.mp4";
    let range = ("range", "bytes=10-19");
    let (st, _, body) = f.get(p, &[range, ("if-range", &etag)]).await;
    assert_eq!(st, StatusCode::PARTIAL_CONTENT);
    assert_eq!(body, &f.media.clip[10..20]);
    let (st, _, body) = f.get(p, &[range, ("if-range", &lm)]).await;
    assert_eq!(st, StatusCode::PARTIAL_CONTENT);
    assert_eq!(body, &f.media.clip[10..20]);
    for stale in [
        "\"changed\"",
        "Sat, 01 Jan 2000 00:00:00 GMT",
        &format!("W/{etag}"),
    ] {
        let (st, _, body) = f.get(p, &[range, ("if-range", stale)]).await;
        assert_eq!(st, StatusCode::OK, "If-Range {stale}");
        assert_eq!(body, f.media.clip);
    }
}

#[tokio::test]
async fn head_sends_exactly_the_headers_get_would() {
    let f = fixture();
    let (etag, _) = f.validators().await;
    let size = f.media.clip.len();
    let cases: Vec<(&str, Vec<(&str, String)>)> = vec![
        ("/", vec![]),
        ("/videos/clip.mp4", vec![]),
        ("/videos/clip.mp4", vec![("range", "bytes=5-50".into())]),
        (
            "/videos/clip.mp4",
            vec![("range", "bytes=0-1,10-20".into())],
        ),
        (
            "/videos/clip.mp4",
            vec![("range", format!("bytes={size}-"))],
        ),
        ("/videos/clip.mp4", vec![("if-none-match", etag.clone())]),
        ("/videos/clip.mp4", vec![("if-match", "\"x\"".into())]),
        ("/videos/missing.mp4", vec![]),
        ("/videos", vec![]),
        ("/healthz", vec![]),
    ];
    for (path, headers) in cases {
        let hs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (gs, gh, _) = f.get(path, &hs).await;
        let (hst, hh, hbody) = f.head(path, &hs).await;
        assert_eq!(gs, hst, "{path} {headers:?}");
        assert!(hbody.is_empty(), "HEAD has no body");
        // Date and the load report are the only headers allowed to differ.
        let strip = |h: &HeaderMap| {
            let mut v: Vec<(String, String)> = h
                .iter()
                .filter(|(k, _)| *k != "date" && *k != "endpoint-load-metrics")
                .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_string()))
                .collect();
            v.sort();
            v
        };
        assert_eq!(strip(&gh), strip(&hh), "{path} {headers:?}");
    }
}

#[tokio::test]
async fn streaming_formats_get_their_types_and_media_a_long_max_age() {
    let media = MediaFixture::new().unwrap();
    let dir = media.path();
    std::fs::create_dir_all(dir.join("hls")).unwrap();
    std::fs::write(dir.join("hls/index.m3u8"), "#EXTM3U\n").unwrap();
    std::fs::write(dir.join("hls/seg0.ts"), [0x47u8; 188]).unwrap();
    std::fs::write(dir.join("hls/manifest.mpd"), "<MPD/>").unwrap();
    std::fs::write(dir.join("hls/chunk0.m4s"), [0u8; 8]).unwrap();
    let server = start_origin(&media, &["--max-age", "600"]);
    let http = client();
    for (path, kind, cache) in [
        (
            "hls/index.m3u8",
            "application/vnd.apple.mpegurl",
            "public, max-age=2",
        ),
        (
            "hls/manifest.mpd",
            "application/dash+xml",
            "public, max-age=2",
        ),
        ("hls/seg0.ts", "video/mp2t", "public, max-age=600"),
        ("hls/chunk0.m4s", "video/iso.segment", "public, max-age=600"),
        ("clip.mp4", "video/mp4", "public, max-age=600"),
    ] {
        // Under /videos/ and at the root alike (an edge routes any prefix here).
        let at_root = http
            .get(format!("{}/{path}", server.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(at_root.status(), StatusCode::OK, "/{path}");
        assert_eq!(at_root.headers()["content-type"], kind, "/{path}");
        let resp = http
            .get(format!("{}/videos/{path}", server.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        assert_eq!(resp.headers()["content-type"], kind, "{path}");
        assert_eq!(resp.headers()["cache-control"], cache, "{path}");
        // A revalidation answer carries it too (RFC 9111 §4.3.4 refreshes with it).
        let etag = resp.headers()["etag"].clone();
        let again = http
            .get(format!("{}/videos/{path}", server.url()))
            .header("if-none-match", etag)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED, "{path}");
        assert_eq!(again.headers()["cache-control"], cache, "{path}");
    }
}
