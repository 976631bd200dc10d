//! The route table: by default every path but the proxy's own endpoints
//! reaches the origins; a table limits that, longest prefix first, with the
//! media path per route; local endpoints move or go.

mod common;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_default_any_path_reaches_the_origins() {
    let media = MediaFixture::new().unwrap();
    std::fs::create_dir_all(media.path().join("hls")).unwrap();
    std::fs::write(media.path().join("hls/index.m3u8"), "#EXTM3U\n").unwrap();
    let origins = start_origins(&media, 1);
    let edge = start_proxy(&default_sections(&[origins[0].addr]), 1).await;
    let http = client();
    let r = http
        .get(format!("{}/hls/index.m3u8", edge.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/vnd.apple.mpegurl");
    assert!(r.headers().contains_key("x-served-by"));
    assert_eq!(r.text().await.unwrap(), "#EXTM3U\n");
    let r = http
        .get(format!("{}/sub/nested.mp4", edge.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap(), media.nested);
    // A missing file is the origin's 404, not the edge's.
    let r = http
        .get(format!("{}/nothing", edge.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.headers().contains_key("x-served-by"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_table_limits_paths_and_sets_the_media_path_per_route() {
    let media = MediaFixture::new().unwrap();
    std::fs::create_dir_all(media.path().join("live")).unwrap();
    std::fs::write(media.path().join("live/seg.mp4"), &media.nested).unwrap();
    let origins = start_origins(&media, 1);
    let mut sections = default_sections(&[origins[0].addr]);
    sections.insert(
        "routes",
        "[{prefix: /videos}, {prefix: /live/, media: false}]".into(),
    );
    sections.insert(
        "endpoints",
        "{metrics: /_edge/metrics, prometheus: /_edge/prometheus}".into(),
    );
    let edge = start_proxy_at(&sections, 1, "/_edge/metrics").await;
    let http = client();
    let get = |p: &str| http.get(format!("{}{p}", edge.url())).send();

    // Outside every route: the edge's own 404, no origin asked.
    let r = get("/sub/nested.mp4").await.unwrap();
    assert_eq!(r.status(), 404);
    assert!(!r.headers().contains_key("x-served-by"));
    assert_eq!(get("/metrics").await.unwrap().status(), 404);

    // /videos takes the media path (slices), /live/ is proxied as it is.
    let before = slices_at(&edge, "/_edge/prometheus").await;
    let r = get("/videos/sub/nested.mp4").await.unwrap();
    assert_eq!(r.bytes().await.unwrap(), media.nested);
    let after_media = slices_at(&edge, "/_edge/prometheus").await;
    assert!(after_media > before, "a media route fetches slices");
    let r = get("/live/seg.mp4").await.unwrap();
    assert_eq!(r.bytes().await.unwrap(), media.nested);
    assert_eq!(
        slices_at(&edge, "/_edge/prometheus").await,
        after_media,
        "media: false proxies"
    );
}

/// `cdn_media_slices_total` from the Prometheus text at `path`.
async fn slices_at(edge: &Edge, path: &str) -> f64 {
    let r = testkit::raw_get_async(edge.server.addr, path)
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{path}");
    let text = String::from_utf8(r.body).unwrap();
    let line = (text.lines())
        .find(|l| l.starts_with("cdn_media_slices_total "))
        .expect("the counter is exported");
    line.rsplit(' ').next().unwrap().parse().unwrap()
}
