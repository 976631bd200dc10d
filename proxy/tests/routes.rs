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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_route_is_served_by_its_own_pool_of_origins() {
    let media = MediaFixture::new().unwrap();
    let main = start_origins(&media, 2);
    let archive = start_origin_at(&media, "127.0.0.1:0", &[]);
    let mut sections = default_sections(&[]);
    sections.insert(
        "origins",
        format!(
            "\n  - {{address: {}}}\n  - {{address: {}}}\n  - {{address: {}, pool: archive}}",
            main[0].addr, main[1].addr, archive.addr
        ),
    );
    // The archive on the media path (/videos/sub) and the plain path (/sub).
    sections.insert(
        "routes",
        "[{prefix: /}, {prefix: /videos/sub, pool: archive}, {prefix: /sub, pool: archive, media: false}]".into(),
    );
    let edge = start_proxy(&sections, 3).await;
    let http = client();
    let served_by = |path: &'static str| {
        let http = http.clone();
        let url = format!("{}{path}", edge.url());
        async move {
            let r = http.get(url).send().await.unwrap();
            assert!(r.status().is_success(), "{path}: {}", r.status());
            let by = r.headers()["x-served-by"].to_str().unwrap().to_string();
            r.bytes().await.unwrap();
            by
        }
    };
    let main_addrs: Vec<String> = main.iter().map(|o| o.addr.to_string()).collect();
    let mut main_seen = std::collections::HashSet::new();
    for _ in 0..20 {
        let by = served_by("/videos/clip.mp4").await;
        assert!(main_addrs.contains(&by), "the default pool served {by}");
        main_seen.insert(by);
        assert_eq!(
            served_by("/videos/sub/nested.mp4").await,
            archive.addr.to_string()
        );
        assert_eq!(served_by("/sub/nested.mp4").await, archive.addr.to_string());
    }
    assert_eq!(
        main_seen.len(),
        2,
        "both origins of the default pool served"
    );
    // The admin API lists each origin's pools.
    let origins: serde_json::Value = http
        .get(format!("http://{}/origins", edge.admin))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let pools_of = |addr: String| {
        origins
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["address"] == addr.as_str())
            .map(|o| o["pools"].clone())
            .unwrap()
    };
    assert_eq!(
        pools_of(archive.addr.to_string()),
        serde_json::json!(["archive"])
    );
    assert_eq!(
        pools_of(main_addrs[0].clone()),
        serde_json::json!(["default"])
    );
    // With its pool's only origin gone, a route is not served by another pool.
    drop(archive);
    let gone = testkit::wait_until(
        "the archive route fails",
        std::time::Duration::from_secs(10),
        || async {
            let r = http
                .get(format!("{}/sub/nested.mp4", edge.url()))
                .send()
                .await
                .unwrap();
            r.status().is_server_error().then_some(r)
        },
    )
    .await;
    assert!(gone.headers().get("x-served-by").is_none());
    // The edge closes the connection after a failed attempt, and says so.
    assert_eq!(gone.headers()["connection"], "close");
    let r = http
        .get(format!("{}/videos/sub/nested.mp4", edge.url()))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_server_error(), "{}", r.status());
    assert!(main_addrs.contains(&served_by("/videos/clip.mp4").await));
}
