//! Access logs of both binaries, read back: the proxy's line and the
//! origin's line for one request share its id, the origin sees the client
//! in X-Forwarded-For, both formats parse, and SIGUSR1 reopens the file.

mod common;
use common::*;
use std::path::Path;
use std::time::Duration;

/// The first JSON line of `path` that `pick` accepts, once it is there.
async fn logged(path: &Path, pick: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    testkit::wait_until(
        &format!("the line in {}", path.display()),
        Duration::from_secs(10),
        || async {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            (text.lines())
                .map(|l| serde_json::from_str::<serde_json::Value>(l).expect(l))
                .find(|l| pick(l))
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_logs_record_one_request_with_its_id_and_client() {
    let media = MediaFixture::new().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let origin_log = logs.path().join("origin.log");
    let origin_log_arg = origin_log.to_str().unwrap();
    let origin = start_origin_at(
        &media,
        "127.0.0.1:0",
        &["--access-log", "json", "--access-log-path", origin_log_arg],
    );
    let proxy_log = logs.path().join("proxy.log");
    let mut sections = default_sections(&[origin.addr]);
    sections.insert(
        "access_log",
        format!("{{format: json, path: {}}}", proxy_log.display()),
    );
    let edge = start_proxy(&sections, 1).await;
    let http = client();
    let r = http
        .get(format!("{}/videos/clip.mp4?from=test", edge.url()))
        .header("range", "bytes=100-199")
        .header("x-request-id", "play-42")
        .header("user-agent", "test-player/1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.bytes().await.unwrap().len(), 100);

    let line = logged(&proxy_log, |l| l["request_id"] == "play-42").await;
    assert_eq!(line["method"], "GET");
    assert_eq!(line["target"], "/videos/clip.mp4?from=test");
    assert_eq!(line["status"], 206);
    assert_eq!(line["bytes"], 100);
    assert_eq!(line["client"], "127.0.0.1");
    assert_eq!(line["user_agent"], "test-player/1");
    assert_eq!(line["origin"], origin.addr.to_string());
    assert_eq!(line["attempts"], 1);
    assert!(line["duration"].as_f64().unwrap() >= line["ttfb"].as_f64().unwrap());
    assert!(line["time"].as_str().unwrap().ends_with('Z'));

    // The origin's line for the same request: its id and the client, forwarded.
    let theirs = logged(&origin_log, |l| l["request_id"] == "play-42").await;
    assert_eq!(theirs["forwarded_for"], "127.0.0.1");
    assert_eq!(theirs["status"], 206);
    // The edge asked for the client's range (it lies in one slice).
    assert_eq!(theirs["bytes"], 100);
    assert_eq!(theirs["target"], "/videos/clip.mp4?from=test");

    // A local answer and a client that asked for a missing file are logged too.
    let r = http
        .get(format!("{}/healthz?probe", edge.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let local = logged(&proxy_log, |l| l["target"] == "/healthz?probe").await;
    assert_eq!(local["status"], 200);
    assert!(local.get("origin").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn combined_lines_parse_and_sigusr1_reopens_the_file() {
    let media = MediaFixture::new().unwrap();
    let origins = start_origins(&media, 1);
    let logs = tempfile::tempdir().unwrap();
    let path = logs.path().join("access.log");
    let mut sections = default_sections(&[origins[0].addr]);
    sections.insert(
        "access_log",
        format!("{{format: combined, path: {}}}", path.display()),
    );
    let edge = start_proxy(&sections, 1).await;
    let http = client();
    let get = |p: &'static str| http.get(format!("{}{p}", edge.url())).send();
    assert_eq!(
        get("/sub/nested.mp4")
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
            .len(),
        65536
    );

    // Lines land within the writer's poll (50 ms); the proxy's own
    // /metrics lines from start-up may come first.
    let line = testkit::wait_until("the request's line", Duration::from_secs(10), || async {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        text.lines()
            .find(|l| l.contains("/sub/nested.mp4"))
            .map(String::from)
    })
    .await;
    // client - - [time] "request" status bytes "referer" "agent" key=value...
    let (prefix, rest) = line.split_once(" - - [").unwrap();
    assert_eq!(prefix, "127.0.0.1");
    let (time, rest) = rest.split_once("] ").unwrap();
    assert_eq!(time.len(), "28/Nov/2026:21:40:05 +0000".len(), "{time}");
    let mut quoted = rest.split('"');
    assert_eq!(quoted.next(), Some(""));
    assert_eq!(quoted.next(), Some("GET /sub/nested.mp4 HTTP/1.1"));
    assert_eq!(quoted.next(), Some(" 200 65536 "));
    assert!(
        rest.contains(&format!("origin=\"{}\"", origins[0].addr)),
        "{line}"
    );
    assert!(rest.contains(" rt="), "{line}");

    // logrotate: move the file away, then SIGUSR1.
    let rotated = logs.path().join("access.log.1");
    std::fs::rename(&path, &rotated).unwrap();
    edge.server.signal("USR1").unwrap();
    // Lines written before the reopen go on into the moved file; poll until one lands in the new one.
    testkit::wait_until(
        "a line in the reopened file",
        Duration::from_secs(10),
        || async {
            let _ = get("/sub/nested.mp4").await;
            std::fs::read_to_string(&path)
                .ok()
                .filter(|t| t.contains("/sub/nested.mp4"))
        },
    )
    .await;
    assert!(std::fs::read_to_string(&rotated)
        .unwrap()
        .contains("/sub/nested.mp4"));
}
