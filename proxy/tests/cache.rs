//! The slice cache through the real binaries: answers from a cold and a
//! warm cache are the origin's own, byte for byte; concurrent viewers of a
//! cold video cost one origin fetch per slice (counted in the origin's
//! access log); stale entries are revalidated (304) or replaced by a new
//! version, never mixed with it; stale-while-revalidate and stale-if-error
//! (every origin down) serve the stale copy; the cache survives a restart
//! with its corrupt and truncated files discarded; it stays within its
//! budget; the admin API purges by URL and prefix; the access log says
//! what the cache did.

mod common;
use common::*;
use std::path::Path;
use std::time::Duration;

/// Small slices, so the clip (3 MiB + 17) spans 49 of them.
const SLICE: usize = 64 * 1024;

fn sections(
    addrs: &[std::net::SocketAddr],
    cache_dir: &Path,
    max_size: usize,
) -> std::collections::BTreeMap<&'static str, String> {
    let mut s = default_sections(addrs);
    s.insert("media", format!("{{slice_size: {SLICE}}}"));
    s.insert(
        "cache",
        format!("{{dir: {}, max_size: {max_size}}}", cache_dir.display()),
    );
    s
}

/// The origin's access log, parsed. A marker request sent to the origin
/// directly is waited for first: the log is written in order, so every
/// earlier request is in by then.
async fn origin_log(origin: &Server, log: &Path) -> Vec<serde_json::Value> {
    let marker = format!("/videos/marker-{}.mp4", fastrand::u64(..));
    let _ = client()
        .get(format!("{}{marker}", origin.url()))
        .send()
        .await
        .unwrap();
    let lines = testkit::wait_until(
        "the origin logs the marker",
        Duration::from_secs(10),
        || async {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            text.contains(&marker).then_some(text)
        },
    )
    .await;
    lines
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// How many requests for `target` the origin answered, by its access log.
async fn origin_requests(origin: &Server, log: &Path, target: &str) -> usize {
    let lines = origin_log(origin, log).await;
    lines.iter().filter(|l| l["target"] == target).count()
}

/// An origin writing a JSON access log to `log`.
fn logged_origin(media: &MediaFixture, log: &Path, extra: &[&str]) -> Server {
    let mut args = vec![
        "--access-log",
        "json",
        "--access-log-path",
        log.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    start_origin_at(media, "127.0.0.1:0", &args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_range_and_conditional_matrix_matches_the_origin_cold_and_warm() {
    let media = MediaFixture::new().unwrap();
    let origins = start_origins(&media, 2);
    let addrs: Vec<_> = origins.iter().map(|o| o.addr).collect();
    let cache = tempfile::tempdir().unwrap();
    let edge = start_proxy(&sections(&addrs, cache.path(), 64 << 20), 2).await;
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
    let cases = range_matrix(&etag, &modified, size, SLICE);
    let purge_all = || {
        http.post(format!("http://{}/cache/purge", edge.admin))
            .body(r#"{"prefix": "/"}"#)
            .send()
    };
    for round in ["cold", "warm"] {
        if round == "warm" {
            for file in ["clip.mp4", "sub/nested.mp4"] {
                let r = http
                    .get(format!("{}/videos/{file}", edge.url()))
                    .send()
                    .await
                    .unwrap();
                r.bytes().await.unwrap();
            }
        }
        for (file, headers) in &cases {
            // Every cold case starts from an empty cache.
            if round == "cold" {
                assert_eq!(purge_all().await.unwrap().status(), 200);
            }
            let what = format!("{round}: {file} {headers:?}");
            let x_cache =
                same_as_origin(&http, &origins[0].url(), &edge.url(), file, headers, &what).await;
            let cached = *file == "clip.mp4" || *file == "sub/nested.mp4";
            let several = headers
                .iter()
                .any(|(k, v)| *k == "range" && v.contains(','));
            if cached && !several {
                let expected = if round == "warm" { "HIT" } else { "MISS" };
                assert_eq!(x_cache.as_deref(), Some(expected), "{what}");
            }
            if !cached || several {
                assert_eq!(x_cache.as_deref(), Some("BYPASS"), "{what}");
            }
        }
    }
    // HEAD from the cache: the GET's header, no body.
    let r = http
        .head(format!("{}/videos/clip.mp4", edge.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-cache"], "HIT");
    assert_eq!(r.headers()["content-length"], size.to_string());
    assert_eq!(r.headers()["etag"], etag.as_str());
    assert!(r.bytes().await.unwrap().is_empty());
    // Every slice of the clip was stored once, the nested file (one slice) too.
    assert_eq!(series(&edge, "cdn_cache_slices").await, 49.0 + 1.0);
    assert!(series(&edge, "cdn_cache_requests_total{status=\"HIT\"}").await >= 20.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_viewers_of_a_cold_video_cost_one_origin_fetch_per_slice() {
    let media = MediaFixture::new().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("origin.log");
    // 4 MiB/s per origin response: the viewers overlap on every slice.
    let origin = logged_origin(&media, &log, &["--fault-bandwidth", "4194304"]);
    let cache = tempfile::tempdir().unwrap();
    let edge = start_proxy(&sections(&[origin.addr], cache.path(), 64 << 20), 1).await;
    let http = client();
    let size = media.clip.len();
    let viewers: Vec<_> = (0..20)
        .map(|i| {
            let (http, url) = (http.clone(), format!("{}/videos/clip.mp4", edge.url()));
            // Half whole files, half ranges starting mid-slice.
            let range = (i % 2 == 1).then(|| (1000 * i, size - 1 - 777 * i));
            tokio::spawn(async move {
                let mut req = http.get(url);
                if let Some((a, b)) = range {
                    req = req.header("range", format!("bytes={a}-{b}"));
                }
                let r = req.send().await.unwrap();
                let status = r.headers()["x-cache"].to_str().unwrap().to_string();
                (range, status, r.bytes().await.unwrap())
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for v in viewers {
        let (range, status, bytes) = v.await.unwrap();
        let (a, b) = range.unwrap_or((0, size - 1));
        assert!(
            bytes == media.clip[a..=b],
            "{range:?}: not the origin's bytes"
        );
        statuses.push(status);
    }
    // Viewers who joined another's fill of their first slice are hits.
    assert!(statuses.iter().any(|s| s == "HIT"), "{statuses:?}");
    assert!(
        statuses.iter().all(|s| s == "HIT" || s == "MISS"),
        "{statuses:?}"
    );
    // Every viewer, following a fill or not, was sent from the files by
    // the kernel (plain HTTP/1).
    assert_eq!(
        series(&edge, "cdn_cache_sendfile_bytes_total").await,
        series(&edge, "cdn_cache_client_bytes_total").await
    );
    let fetches = origin_requests(&origin, &log, "/videos/clip.mp4").await;
    eprintln!("20 concurrent viewers, {fetches} origin requests for 49 slices");
    assert_eq!(fetches, 49, "one origin fetch per slice");
    let fill = series(&edge, "cdn_cache_fill_bytes_total").await;
    assert_eq!(fill, size as f64, "the origins sent the clip once");
    // Repeat views cost the origin nothing.
    let r = http
        .get(format!("{}/videos/clip.mp4", edge.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-cache"], "HIT");
    assert!(r.bytes().await.unwrap() == media.clip);
    assert_eq!(origin_requests(&origin, &log, "/videos/clip.mp4").await, 49);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_entries_are_revalidated_and_a_new_version_replaces_the_old() {
    let media = MediaFixture::new().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("origin.log");
    // Fresh for one second.
    let origin = logged_origin(&media, &log, &["--max-age", "1"]);
    let cache = tempfile::tempdir().unwrap();
    let edge = start_proxy(&sections(&[origin.addr], cache.path(), 64 << 20), 1).await;
    let http = client();
    let get = |range: &'static str| {
        http.get(format!("{}/videos/clip.mp4", edge.url()))
            .header("range", range)
            .send()
    };
    let first = get("bytes=0-99").await.unwrap();
    assert_eq!(first.headers()["x-cache"], "MISS");
    let etag = first.headers()["etag"].clone();
    assert_eq!(get("bytes=0-99").await.unwrap().headers()["x-cache"], "HIT");
    // Once stale, the origin is asked whether it changed: it did not (304).
    let status = testkit::wait_until("the entry goes stale", Duration::from_secs(10), || async {
        let r = get("bytes=0-99").await.unwrap();
        let s = r.headers()["x-cache"].to_str().unwrap().to_string();
        (s != "HIT").then_some(s)
    })
    .await;
    assert_eq!(status, "REVALIDATED");
    // The file changes on the origin: a new ETag, new bytes.
    let new_body: Vec<u8> = media.clip.iter().map(|b| b.wrapping_add(1)).collect();
    let path = media.path().join("clip.mp4");
    std::fs::write(&path, &new_body).unwrap();
    // Once stale, the origin answers with the new version: the old
    // slices go, the new bytes come.
    let (status, r) = testkit::wait_until(
        "the new version is fetched",
        Duration::from_secs(10),
        || async {
            let r = get("bytes=0-99").await.unwrap();
            let s = r.headers()["x-cache"].to_str().unwrap().to_string();
            (s != "HIT").then_some((s, r))
        },
    )
    .await;
    assert_eq!(status, "EXPIRED");
    assert_ne!(r.headers()["etag"], etag);
    assert!(r.bytes().await.unwrap() == new_body[..100]);
    let r = get("bytes=0-").await.unwrap();
    assert_ne!(r.headers()["etag"], etag);
    assert!(r.bytes().await.unwrap() == new_body, "only the new version");
    let r = get("bytes=0-").await.unwrap();
    assert_eq!(r.headers()["x-cache"], "HIT");
    assert!(r.bytes().await.unwrap() == new_body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_the_cache_and_discards_corrupt_and_truncated_files() {
    let media = MediaFixture::new().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("origin.log");
    let origin = logged_origin(&media, &log, &[]);
    let cache = tempfile::tempdir().unwrap();
    let s = sections(&[origin.addr], cache.path(), 64 << 20);
    let http = client();
    let url = |edge: &Edge| format!("{}/videos/clip.mp4", edge.url());
    {
        let edge = start_proxy(&s, 1).await;
        let r = http.get(url(&edge)).send().await.unwrap();
        assert_eq!(r.headers()["x-cache"], "MISS");
        assert!(r.bytes().await.unwrap() == media.clip);
        // The last fill stores its slice just after its last byte went out.
        testkit::wait_until("every slice stored", Duration::from_secs(10), || async {
            (series(&edge, "cdn_cache_slices").await == 49.0).then_some(())
        })
        .await;
    }
    assert_eq!(origin_requests(&origin, &log, "/videos/clip.mp4").await, 49);
    // Slice 3's body gets a flipped byte, slice 7 loses its last byte, and
    // a half-written file is left behind.
    let files: Vec<_> = walkdir::WalkDir::new(cache.path())
        .into_iter()
        .filter_map(Result::ok)
        .map(|e| e.path().to_path_buf())
        .collect();
    let slice = |i: usize| {
        files
            .iter()
            .find(|p| p.extension().is_some_and(|e| e == i.to_string().as_str()))
            .unwrap_or_else(|| panic!("slice {i} on disk"))
            .clone()
    };
    let mut bytes = std::fs::read(slice(3)).unwrap();
    let n = bytes.len();
    bytes[n - 100] ^= 0xff;
    std::fs::write(slice(3), &bytes).unwrap();
    let seven = std::fs::OpenOptions::new()
        .write(true)
        .open(slice(7))
        .unwrap();
    seven.set_len(seven.metadata().unwrap().len() - 1).unwrap();
    let part = slice(9).with_extension("9.part123");
    std::fs::copy(slice(9), &part).unwrap();

    let edge = start_proxy(&s, 1).await;
    let r = http.get(url(&edge)).send().await.unwrap();
    assert_eq!(r.headers()["x-cache"], "HIT");
    assert!(
        r.bytes().await.unwrap() == media.clip,
        "never the damaged bytes"
    );
    // Only the two damaged slices were fetched again.
    assert_eq!(origin_requests(&origin, &log, "/videos/clip.mp4").await, 51);
    assert!(!part.exists(), "a partial file is discarded at start");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_stays_within_its_budget() {
    let media = MediaFixture::new().unwrap();
    let origin = start_origin_at(&media, "127.0.0.1:0", &[]);
    let cache = tempfile::tempdir().unwrap();
    let budget = 8 * SLICE + 8 * 1024;
    let edge = start_proxy(&sections(&[origin.addr], cache.path(), budget), 1).await;
    let http = client();
    let r = http
        .get(format!("{}/videos/clip.mp4", edge.url()))
        .send()
        .await
        .unwrap();
    assert!(r.bytes().await.unwrap() == media.clip);
    let size = series(&edge, "cdn_cache_size_bytes").await;
    assert!(
        size > 0.0 && size <= budget as f64,
        "{size} bytes for a budget of {budget}"
    );
    assert!(series(&edge, "cdn_cache_evictions_total").await >= 40.0);
    let on_disk: u64 = walkdir::WalkDir::new(cache.path())
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .filter(|e| !e.path().to_string_lossy().ends_with(".meta"))
        .map(|e| e.metadata().unwrap().len())
        .sum();
    assert!(on_disk <= budget as u64, "{on_disk} bytes on disk");
    // The last slices are the recent ones: a range there is a hit.
    let r = http
        .get(format!("{}/videos/clip.mp4", edge.url()))
        .header("range", format!("bytes={}-", 47 * SLICE))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-cache"], "HIT");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_origin_down_stale_if_error_serves_the_stale_copy() {
    let media = MediaFixture::new().unwrap();
    // Fresh for one second; one may serve it stale for ten minutes if no origin answers.
    let lenient = start_origin_at(
        &media,
        "127.0.0.1:0",
        &["--max-age", "1", "--stale-if-error", "600"],
    );
    let cache = tempfile::tempdir().unwrap();
    let edge = start_proxy(&sections(&[lenient.addr], cache.path(), 64 << 20), 1).await;
    let http = client();
    let get = || {
        http.get(format!("{}/videos/clip.mp4", edge.url()))
            .header("range", "bytes=0-99")
            .send()
    };
    assert_eq!(get().await.unwrap().headers()["x-cache"], "MISS");
    drop(lenient);
    // Once stale, with its only origin gone, the copy is served stale.
    let r = testkit::wait_until("the entry goes stale", Duration::from_secs(10), || async {
        let r = get().await.unwrap();
        (r.headers()["x-cache"] != "HIT").then_some(r)
    })
    .await;
    assert_eq!(r.status(), 206);
    assert_eq!(r.headers()["x-cache"], "STALE");
    assert!(r.bytes().await.unwrap() == media.clip[..100]);

    // Without stale-if-error, a stale copy is not served: the error is.
    let strict = start_origin_at(&media, "127.0.0.1:0", &["--max-age", "1"]);
    let cache = tempfile::tempdir().unwrap();
    let edge = start_proxy(&sections(&[strict.addr], cache.path(), 64 << 20), 1).await;
    let get = || {
        http.get(format!("{}/videos/clip.mp4", edge.url()))
            .header("range", "bytes=0-99")
            .send()
    };
    assert_eq!(get().await.unwrap().headers()["x-cache"], "MISS");
    drop(strict);
    let r = testkit::wait_until("the entry goes stale", Duration::from_secs(10), || async {
        let r = get().await.unwrap();
        (r.headers().get("x-cache").is_none_or(|v| v != "HIT")).then_some(r)
    })
    .await;
    assert!(r.status().is_server_error(), "{}", r.status());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_while_revalidate_answers_at_once_and_refreshes_behind() {
    let media = MediaFixture::new().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("origin.log");
    let origin = logged_origin(
        &media,
        &log,
        &["--max-age", "1", "--stale-while-revalidate", "600"],
    );
    let cache = tempfile::tempdir().unwrap();
    let edge = start_proxy(&sections(&[origin.addr], cache.path(), 64 << 20), 1).await;
    let http = client();
    let get = || {
        http.get(format!("{}/videos/clip.mp4", edge.url()))
            .header("range", "bytes=0-99")
            .send()
    };
    assert_eq!(get().await.unwrap().headers()["x-cache"], "MISS");
    let r = testkit::wait_until("the entry goes stale", Duration::from_secs(10), || async {
        let r = get().await.unwrap();
        (r.headers()["x-cache"] != "HIT").then_some(r)
    })
    .await;
    assert_eq!(r.headers()["x-cache"], "STALE");
    assert!(r.bytes().await.unwrap() == media.clip[..100]);
    // The revalidation behind it (a 304) made the entry fresh again.
    testkit::wait_until(
        "the entry is fresh again",
        Duration::from_secs(10),
        || async {
            let r = get().await.unwrap();
            (r.headers()["x-cache"] == "HIT").then_some(())
        },
    )
    .await;
    let lines = origin_log(&origin, &log).await;
    assert!(
        lines.iter().any(|l| l["status"] == 304),
        "the origin was asked and answered 304"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_by_url_and_by_prefix_on_the_admin_api() {
    let media = MediaFixture::new().unwrap();
    let origin = start_origin_at(&media, "127.0.0.1:0", &[]);
    let cache = tempfile::tempdir().unwrap();
    let mut s = sections(&[origin.addr], cache.path(), 64 << 20);
    let log = cache.path().join("access.log");
    s.insert(
        "access_log",
        format!("{{format: json, path: {}}}", log.display()),
    );
    let edge = start_proxy(&s, 1).await;
    let http = client();
    let get = |path: &'static str| {
        http.get(format!("{}{path}", edge.url()))
            .header("range", "bytes=0-99")
            .send()
    };
    for path in ["/videos/clip.mp4", "/videos/sub/nested.mp4"] {
        assert_eq!(get(path).await.unwrap().headers()["x-cache"], "MISS");
        assert_eq!(get(path).await.unwrap().headers()["x-cache"], "HIT");
    }
    let admin = format!("http://{}", edge.admin);
    let purge = |body: &'static str| {
        http.post(format!("{admin}/cache/purge"))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let r = purge(r#"{"url": "/videos/clip.mp4"}"#).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["purged"], 1);
    assert_eq!(
        get("/videos/clip.mp4").await.unwrap().headers()["x-cache"],
        "MISS"
    );
    assert_eq!(
        get("/videos/sub/nested.mp4").await.unwrap().headers()["x-cache"],
        "HIT"
    );
    let r = purge(r#"{"prefix": "/videos/"}"#).await.unwrap();
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["purged"], 2);
    assert_eq!(
        get("/videos/sub/nested.mp4").await.unwrap().headers()["x-cache"],
        "MISS"
    );
    let view: serde_json::Value = http
        .get(format!("{admin}/cache"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        view["objects"], 1,
        "only the nested file, fetched again: {view}"
    );
    // The access log says what the cache did, hits included.
    let logged = |cache: &'static str| {
        let log = log.clone();
        async move {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            text.lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .find(|l| l["cache"] == cache && l["target"] == "/videos/clip.mp4")
        }
    };
    for status in ["MISS", "HIT"] {
        let line = testkit::wait_until("the line is logged", Duration::from_secs(10), || {
            logged(status)
        })
        .await;
        assert_eq!(line["status"], 206);
        assert_eq!(line["bytes"], 100);
        assert!(line["ttfb"].as_f64().is_some(), "{line}");
    }
    // A body that names nothing, or both, is refused.
    for bad in [
        r#"{}"#,
        r#"{"url": "/a", "prefix": "/"}"#,
        r#"{"url": "a"}"#,
        "x",
    ] {
        assert_eq!(purge(bad).await.unwrap().status(), 400, "{bad}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_that_cannot_write_still_serves_every_request() {
    let media = MediaFixture::new().unwrap();
    let origin = start_origin_at(&media, "127.0.0.1:0", &[]);
    let cache = tempfile::tempdir().unwrap();
    let edge = start_proxy(&sections(&[origin.addr], cache.path(), 64 << 20), 1).await;
    // The cache's folder becomes a file: every write fails (even for root).
    let v1 = cache.path().join("v1");
    std::fs::remove_dir_all(&v1).unwrap();
    std::fs::write(&v1, "not a folder").unwrap();
    let http = client();
    for range in [None, Some((70_000, 200_000))] {
        let mut req = http.get(format!("{}/videos/clip.mp4", edge.url()));
        if let Some((a, b)) = range {
            req = req.header("range", format!("bytes={a}-{b}"));
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), if range.is_some() { 206 } else { 200 });
        let (a, b) = range.unwrap_or((0, media.clip.len() - 1));
        assert!(r.bytes().await.unwrap() == media.clip[a..=b], "{range:?}");
    }
    assert!(series(&edge, "cdn_cache_errors_total").await >= 1.0);
    assert_eq!(series(&edge, "cdn_cache_slices").await, 0.0);
}

/// Reads one response off a kept-alive connection: its status, headers and
/// exactly its `Content-Length` of body. Bytes after it stay in `buf`.
async fn read_one(
    conn: &mut tokio::net::TcpStream,
    buf: &mut Vec<u8>,
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    use tokio::io::AsyncReadExt;
    let mut chunk = [0u8; 1024];
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = conn.read(&mut chunk).await.unwrap();
        assert!(n > 0, "closed before a whole header");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = std::str::from_utf8(&buf[..head_end]).unwrap().to_owned();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap().split(' ').nth(1).unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .map(|(_, v)| v.parse().unwrap())
        .expect("a content-length");
    // Small reads: a slow client, whose socket is full most of the time.
    while buf.len() < head_end + length {
        let n = conn.read(&mut chunk).await.unwrap();
        assert!(
            n > 0,
            "closed {} bytes short",
            head_end + length - buf.len()
        );
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = buf[head_end..head_end + length].to_vec();
    buf.drain(..head_end + length);
    (status.parse().unwrap(), headers, body)
}

/// The proxy's access log line for request id `id`, once it is written.
async fn logged_request(log: &Path, id: &str) -> serde_json::Value {
    testkit::wait_until(
        &format!("{id} is logged"),
        Duration::from_secs(10),
        || async {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            text.lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .find(|l| l["request_id"] == id)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hits_to_plain_http1_clients_are_sent_from_their_files_by_the_kernel() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let media = MediaFixture::new().unwrap();
    let origin = start_origin_at(&media, "127.0.0.1:0", &[]);
    let cache = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("access.log");
    let mut s = sections(&[origin.addr], cache.path(), 64 << 20);
    s.insert(
        "access_log",
        format!("{{format: json, path: {}}}", log.display()),
    );
    let edge = start_proxy(&s, 1).await;
    let (clip, size) = (&media.clip, media.clip.len());
    let url = format!("{}/videos/clip.mp4", edge.url());
    let sent = || series(&edge, "cdn_cache_sendfile_bytes_total");
    // The first viewer follows the fill, sent from the files as they grow.
    let r = client().get(&url).send().await.unwrap();
    assert_eq!(r.headers()["x-cache"], "MISS");
    assert!(r.bytes().await.unwrap() == *clip);
    assert_eq!(sent().await, size as f64);

    // One kept-alive connection, read a KiB at a time through a small
    // receive buffer: a whole hit, two pipelined ranges (one sent by the
    // kernel, one small enough to be copied), then a small one that closes
    // the connection. Pingora's session stays in step throughout.
    let request = |id: &str, range: &str, close: bool| {
        let close = if close { "connection: close\r\n" } else { "" };
        format!(
            "GET /videos/clip.mp4 HTTP/1.1\r\nhost: t\r\nx-request-id: {id}\r\n{range}{close}\r\n"
        )
    };
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut conn = socket.connect(edge.server.addr).await.unwrap();
    let mut buf = Vec::new();
    let exchange = async {
        conn.write_all(request("whole", "", false).as_bytes())
            .await
            .unwrap();
        let (status, headers, body) = read_one(&mut conn, &mut buf).await;
        assert_eq!(status, 200);
        assert!(headers.contains(&("x-cache".into(), "HIT".into())));
        assert!(body == *clip, "the whole clip");
        let pipelined = request("a", "range: bytes=70000-200000\r\n", false)
            + &request("b", "range: bytes=-1000\r\n", false);
        conn.write_all(pipelined.as_bytes()).await.unwrap();
        let (status, _, body) = read_one(&mut conn, &mut buf).await;
        assert_eq!(status, 206);
        assert!(body == clip[70000..=200000], "the first pipelined range");
        let (status, _, body) = read_one(&mut conn, &mut buf).await;
        assert_eq!(status, 206);
        assert!(body == clip[size - 1000..], "the second pipelined range");
        conn.write_all(request("last", "range: bytes=5-5\r\n", true).as_bytes())
            .await
            .unwrap();
        let (status, _, body) = read_one(&mut conn, &mut buf).await;
        assert_eq!((status, body.as_slice()), (206, &clip[5..=5]));
        let mut rest = Vec::new();
        conn.read_to_end(&mut rest).await.unwrap();
        assert!(
            rest.is_empty() && buf.is_empty(),
            "nothing after the last answer"
        );
    };
    tokio::time::timeout(Duration::from_secs(30), exchange)
        .await
        .expect("the exchange ends within 30 s");
    // Answers under 64 KiB are copied through Pingora (cheaper than
    // setting up the socket), on the same connection.
    let bodies = [("whole", size), ("a", 130_001), ("b", 1000), ("last", 1)];
    assert_eq!(sent().await, (size + size + 130_001) as f64);
    // The access log counts the bytes Pingora's session did not write.
    for (id, bytes) in bodies {
        let line = logged_request(&log, id).await;
        assert_eq!(
            (line["bytes"].as_u64(), line["cache"].as_str()),
            (Some(bytes as u64), Some("HIT")),
            "{id}"
        );
    }

    // A viewer who leaves mid-stream ends only its own answer.
    let mut leaving = tokio::net::TcpStream::connect(edge.server.addr)
        .await
        .unwrap();
    leaving
        .write_all(request("left", "", false).as_bytes())
        .await
        .unwrap();
    let mut some = vec![0u8; 64 * 1024];
    leaving.read_exact(&mut some).await.unwrap();
    drop(leaving);
    let line = logged_request(&log, "left").await;
    assert_eq!(line["status"], 200);
    assert!(line["bytes"].as_u64().unwrap() <= size as u64, "{line}");

    // Turned off (by a reload): hits are read and written by the proxy.
    s.insert(
        "cache",
        format!(
            "{{dir: {}, max_size: {}, sendfile: false}}",
            cache.path().display(),
            64 << 20
        ),
    );
    let (public, admin) = (edge.server.addr.port(), edge.admin.port());
    std::fs::write(&edge.cdn_yaml, render(public, admin, &s)).unwrap();
    edge.server.signal("HUP").unwrap();
    testkit::wait_until("the reload is applied", Duration::from_secs(10), || async {
        (metrics(&edge).await["global"]["config_reloads_applied"] == 1).then_some(())
    })
    .await;
    let before = sent().await;
    let r = client().get(&url).send().await.unwrap();
    assert_eq!(r.headers()["x-cache"], "HIT");
    assert!(r.bytes().await.unwrap() == *clip);
    assert_eq!(sent().await, before, "no sendfile once turned off");
}

/// Syncs and evicts every file under `dir` from the page cache.
async fn evict(dir: &Path) {
    let files: Vec<_> = walkdir::WalkDir::new(dir)
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
        .map(|e| e.into_path())
        .collect();
    // The kernel may keep a page a moment (still on a CPU's LRU batch):
    // evict again until util-linux's `fincore` sees none resident.
    testkit::wait_until("the cache files evicted", Duration::from_secs(10), || {
        for path in &files {
            let f = std::fs::File::open(path).unwrap();
            f.sync_all().unwrap();
            rustix::fs::fadvise(&f, 0, None, rustix::fs::Advice::DontNeed).unwrap();
        }
        let out = std::process::Command::new("fincore")
            .args(["--bytes", "--noheadings", "--output", "RES"])
            .args(&files)
            .output()
            .expect("fincore (util-linux) runs");
        let resident = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(|n| n.parse::<u64>().unwrap())
            .sum::<u64>();
        std::future::ready((out.status.success() && resident == 0).then_some(()))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_hits_are_read_from_disk_off_the_request_threads() {
    let media = MediaFixture::new().unwrap();
    let origin = start_origin_at(&media, "127.0.0.1:0", &[]);
    for sendfile in [true, false] {
        // On the build's disk: pages of a tmpfs /tmp cannot be evicted.
        let cache = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        let mut s = sections(&[origin.addr], cache.path(), 64 << 20);
        s.insert(
            "cache",
            format!(
                "{{dir: {}, max_size: {}, sendfile: {sendfile}}}",
                cache.path().display(),
                64 << 20
            ),
        );
        let edge = start_proxy(&s, 1).await;
        let url = format!("{}/videos/clip.mp4", edge.url());
        let get = |range: Option<&'static str>| {
            let mut req = client().get(&url);
            if let Some(r) = range {
                req = req.header("range", r);
            }
            req.send()
        };
        let r = get(None).await.unwrap();
        assert_eq!(r.headers()["x-cache"], "MISS");
        assert!(r.bytes().await.unwrap() == media.clip);
        let r = get(None).await.unwrap();
        assert_eq!(r.headers()["x-cache"], "HIT");
        assert!(r.bytes().await.unwrap() == media.clip);
        assert_eq!(
            series(&edge, "cdn_cache_cold_reads_total").await,
            0.0,
            "all warm"
        );
        // Out of the page cache: every slice read comes from the disk.
        evict(cache.path()).await;
        let r = get(Some("bytes=70000-1000000")).await.unwrap();
        assert_eq!(r.headers()["x-cache"], "HIT");
        assert!(r.bytes().await.unwrap() == media.clip[70000..=1_000_000]);
        let r = get(None).await.unwrap();
        assert!(r.bytes().await.unwrap() == media.clip);
        let cold = series(&edge, "cdn_cache_cold_reads_total").await;
        // The range's 15 slices, and the whole clip's 49 less those, at least.
        assert!(cold >= 49.0, "sendfile {sendfile}: {cold} cold reads");
        let sent = series(&edge, "cdn_cache_sendfile_bytes_total").await;
        assert_eq!(
            sent > 0.0,
            sendfile,
            "sendfile {sendfile}: {sent} bytes by sendfile"
        );
    }
}
