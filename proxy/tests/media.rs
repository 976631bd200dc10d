//! The media path through the real binaries: responses built from slices
//! are the origin's own, byte for byte and header for header; streams
//! survive an origin killed under them or closing connections mid-slice,
//! and hold small counted buffers; a file replaced mid-stream cuts the
//! stream (counted) rather than splicing two versions.

mod common;
use common::*;
use std::time::Duration;

/// Small slices, so the clip (3 MiB + 17) spans 49 of them.
const SLICE: usize = 64 * 1024;

fn sections(
    addrs: &[std::net::SocketAddr],
    slice: usize,
) -> std::collections::BTreeMap<&'static str, String> {
    let mut s = default_sections(addrs);
    s.insert("media", format!("{{slice_size: {slice}}}"));
    s
}

/// A media series from `/prometheus` (current, where `/metrics` is a
/// snapshot of up to a second ago).
async fn media_counter(edge: &Edge, series: &str) -> u64 {
    let text = prometheus_text(edge).await;
    let line = text.lines().find(|l| l.split(' ').next() == Some(series));
    line.and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {series} in /prometheus"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_range_and_conditional_matrix_matches_the_origin_across_slices() {
    let media = MediaFixture::new().unwrap();
    let origins = start_origins(&media, 2);
    let addrs: Vec<_> = origins.iter().map(|o| o.addr).collect();
    let edge = start_proxy(&sections(&addrs, SLICE), 2).await;
    let http = client();
    let size = media.clip.len();
    let head = http
        .head(format!("{}/videos/clip.mp4", origins[0].url()))
        .send()
        .await
        .unwrap();
    let etag = head.headers()["etag"].to_str().unwrap().to_string();
    let modified = head.headers()["last-modified"]
        .to_str()
        .unwrap()
        .to_string();
    let s = SLICE;
    let cases = range_matrix(&etag, &modified, size, s);
    let slices_before = media_counter(&edge, "cdn_media_slices_total").await;
    for (file, headers) in &cases {
        let what = format!("{file} {headers:?}");
        same_as_origin(&http, &origins[0].url(), &edge.url(), file, headers, &what).await;
    }
    // The slices really were the proxy's: dozens per whole-clip answer.
    let slices = media_counter(&edge, "cdn_media_slices_total").await - slices_before;
    assert!(
        slices > 3 * (size / s) as u64,
        "only {slices} slices served"
    );
    assert_eq!(
        media_counter(&edge, "cdn_media_resume_aborts_total").await,
        0
    );
}

/// Reads a whole body; the error (a cut stream) as text.
async fn body(r: reqwest::Response) -> Result<Vec<u8>, String> {
    r.bytes()
        .await
        .map(|b| b.to_vec())
        .map_err(|e| format!("{e:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_an_origin_mid_stream_breaks_no_stream() {
    let media = MediaFixture::new().unwrap();
    // 1 MiB/s per stream: the clip takes ~3 s, 20 streams ~60 MB/s in all.
    let mut origins: Vec<_> = (0..3)
        .map(|_| start_origin_at(&media, "127.0.0.1:0", &["--fault-bandwidth", "1048576"]))
        .collect();
    let addrs: Vec<_> = origins.iter().map(|o| o.addr).collect();
    let edge = start_proxy(&sections(&addrs, 256 * 1024), 3).await;
    let http = client();
    let size = media.clip.len();
    let streams: Vec<_> = (0..20)
        .map(|i| {
            let (http, url) = (http.clone(), format!("{}/videos/clip.mp4", edge.url()));
            // Half whole files, half ranges that start and end mid-slice.
            let range = (i % 2 == 1).then(|| (1000 * i, size - 1 - 777 * i));
            tokio::spawn(async move {
                let mut req = http.get(url);
                if let Some((a, b)) = range {
                    req = req.header("range", format!("bytes={a}-{b}"));
                }
                let r = req.send().await.map_err(|e| e.to_string())?;
                Ok::<_, String>((range, r.status().as_u16(), body(r).await?))
            })
        })
        .collect();
    // Kill one origin once every stream is under way (its slices in flight).
    testkit::wait_until("20 streams open", Duration::from_secs(10), || async {
        (media_counter(&edge, "cdn_media_streams").await == 20).then_some(())
    })
    .await;
    // Every open stream holds a read buffer, counted.
    let buffered = media_counter(&edge, "cdn_media_buffered_bytes").await;
    assert!(
        buffered >= 20 * 4096,
        "{buffered} bytes buffered by 20 streams"
    );
    drop(origins.remove(1));
    for s in streams {
        let (range, status, bytes) = s.await.unwrap().expect("the stream completes");
        let (a, b) = range.unwrap_or((0, size - 1));
        assert_eq!(status, if range.is_some() { 206 } else { 200 });
        assert!(
            bytes == media.clip[a..=b],
            "{range:?}: {} bytes, not the origin's",
            bytes.len()
        );
    }
    let resumes = media_counter(&edge, "cdn_media_resumes_total").await;
    eprintln!("20 streams complete across the kill, {resumes} slices resumed");
    assert!(resumes >= 1, "the killed origin was mid-slice");
    assert_eq!(media_counter(&edge, "cdn_media_broken_total").await, 0);
    testkit::wait_until("no buffers held", Duration::from_secs(10), || async {
        (media_counter(&edge, "cdn_media_buffered_bytes").await == 0).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_closing_connections_mid_slice_is_resumed_from_another() {
    let media = MediaFixture::new().unwrap();
    // Every body from this one ends with a closed connection after 20,000 bytes.
    let cutter = start_origin_at(&media, "127.0.0.1:0", &["--fault-cut-after", "20000"]);
    let healthy = start_origin_at(&media, "127.0.0.1:0", &[]);
    let edge = start_proxy(&sections(&[cutter.addr, healthy.addr], SLICE), 2).await;
    let http = client();
    let size = media.clip.len();
    for range in [None, Some((70_000, size - 6))] {
        let mut req = http.get(format!("{}/videos/clip.mp4", edge.url()));
        if let Some((a, b)) = range {
            req = req.header("range", format!("bytes={a}-{b}"));
        }
        let r = req.send().await.unwrap();
        let (a, b) = range.unwrap_or((0, size - 1));
        let bytes = body(r).await.expect("the stream completes");
        assert!(
            bytes == media.clip[a..=b],
            "{range:?}: {} bytes, not the origin's",
            bytes.len()
        );
    }
    assert!(
        media_counter(&edge, "cdn_media_resumes_total").await >= 1,
        "slices of the cutting origin were resumed"
    );
    assert_eq!(media_counter(&edge, "cdn_media_broken_total").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_replaced_mid_stream_cuts_the_stream_and_is_counted() {
    let media = MediaFixture::new().unwrap();
    let origin = start_origin_at(&media, "127.0.0.1:0", &["--fault-bandwidth", "262144"]);
    let edge = start_proxy(&sections(&[origin.addr], SLICE), 1).await;
    let mut r = client()
        .get(format!("{}/videos/clip.mp4", edge.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let first = r.chunk().await.unwrap().expect("a first chunk");
    assert_eq!(first[..], media.clip[..first.len()]);
    // Replaced as deployments do: a new file renamed over the old one.
    let path = media.path().join("clip.mp4");
    let fresh = media.path().join("clip.mp4.new");
    std::fs::write(&fresh, testkit::pseudo_random(media.clip.len() + 5, 9)).unwrap();
    std::fs::rename(&fresh, &path).unwrap();
    let mut received = first.len();
    let cut = loop {
        match r.chunk().await {
            Ok(Some(c)) => received += c.len(),
            Ok(None) => break false,
            Err(_) => break true,
        }
    };
    assert!(
        cut && received < media.clip.len(),
        "the stream went on: {received} bytes, cut: {cut}"
    );
    assert_eq!(
        media_counter(&edge, "cdn_media_resume_aborts_total").await,
        1
    );
}
