//! Range, HEAD and conditional requests pass through the proxy untouched,
//! and the proxy's own endpoints answer.

mod common;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_heads_and_conditionals_pass_through_byte_exact() {
    let media = MediaFixture::new().unwrap();
    let origins = start_origins(&media, 2);
    let addrs: Vec<_> = origins.iter().map(|o| o.addr).collect();
    let edge = start_proxy(&default_sections(&addrs), 2).await;
    let http = client();
    let url = format!("{}/videos/clip.mp4", edge.url());
    let size = media.clip.len();

    let r = http.get(format!("{}/", edge.url())).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let served_by = r.headers()["x-served-by"].to_str().unwrap().to_string();
    assert!(
        addrs.iter().any(|a| a.to_string() == served_by),
        "{served_by}"
    );
    assert!(
        r.headers().get("endpoint-load-metrics").is_none(),
        "the load report is stripped"
    );
    assert_eq!(r.bytes().await.unwrap(), media.clip);

    for (range, a, b) in [
        ("bytes=0-99", 0, 99),
        ("bytes=-500", size - 500, size - 1),
        ("bytes=1000-", 1000, size - 1),
    ] {
        let r = http.get(&url).header("range", range).send().await.unwrap();
        assert_eq!(r.status(), 206, "{range}");
        assert_eq!(
            r.headers()["content-range"],
            format!("bytes {a}-{b}/{size}").as_str()
        );
        assert_eq!(r.bytes().await.unwrap(), &media.clip[a..=b]);
    }
    let r = http
        .get(&url)
        .header("range", "bytes=0-9,20-29")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("multipart/byteranges"));

    let r = http
        .get(&url)
        .header("range", format!("bytes={size}-"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 416);
    assert_eq!(
        r.headers()["content-range"],
        format!("bytes */{size}").as_str()
    );

    let head = http.head(&url).send().await.unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["content-length"], size.to_string().as_str());
    let etag = head.headers()["etag"].to_str().unwrap().to_string();
    assert!(head.bytes().await.unwrap().is_empty());

    let r = http
        .get(&url)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);
    let r = http
        .get(&url)
        .header("if-match", "\"other\"")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 412);
    let r = http
        .get(&url)
        .header("range", "bytes=0-9")
        .header("if-range", "\"stale\"")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().len(), size);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_endpoints() {
    let media = MediaFixture::new().unwrap();
    let origins = start_origins(&media, 1);
    let edge = start_proxy(&default_sections(&[origins[0].addr]), 1).await;
    let http = client();
    let get = |p: &str| http.get(format!("{}{p}", edge.url())).send();
    assert_eq!(get("/healthz").await.unwrap().text().await.unwrap(), "ok\n");
    assert_eq!(get("/nothing").await.unwrap().status(), 404);
    let r = http
        .post(format!("{}/metrics", edge.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "GET, HEAD");
    let m: serde_json::Value = get("/metrics").await.unwrap().json().await.unwrap();
    for key in [
        "requests_per_minute",
        "concurrent_streams",
        "bandwidth_mbps",
        "response_time_avg_ms",
        "response_time_p95_ms",
        "cpu_percent",
        "memory_bytes",
    ] {
        assert!(m["global"][key].is_number(), "global.{key} in {m}");
    }
    let o = &m["origins"][0];
    for key in [
        "state",
        "tier",
        "score",
        "inputs",
        "throughput_mbps",
        "requests_total",
        "request_share",
        "in_flight",
        "errors_total",
        "last_health_check",
    ] {
        assert!(!o[key].is_null(), "origins[0].{key} in {o}");
    }
    assert_eq!(o["state"], "up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_header_larger_than_the_client_read_buffer_is_read_whole() {
    let media = MediaFixture::new().unwrap();
    let origins = start_origins(&media, 1);
    let mut sections = default_sections(&[origins[0].addr]);
    sections.insert("client_read_buffer", "1024".into());
    let edge = start_proxy(&sections, 1).await;
    // 6 KiB of header (the origin takes up to 16 KiB) against a 1 KiB read
    // buffer: several reads, one request.
    let big = "x".repeat(6 * 1024);
    let request = format!(
        "GET /videos/sub/nested.mp4 HTTP/1.1\r\nHost: t\r\nX-Padding: {big}\r\nConnection: close\r\n\r\n"
    );
    let r = testkit::raw_request_async(edge.server.addr, request.as_bytes())
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.body, media.nested, "byte-exact");
}
