//! Many concurrent streams, and graceful shutdown with a stream open.

mod common;
use common::*;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_concurrent_ranged_streams_are_byte_exact() {
    let media = MediaFixture::new().unwrap();
    let o = start_origin(&media, &[]);
    let clip = std::sync::Arc::new(media.clip.clone());
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let url = format!("{}/videos/clip.mp4", o.url());
    let mut tasks = Vec::new();
    for i in 0..500u64 {
        let (http, url, clip) = (http.clone(), url.clone(), clip.clone());
        tasks.push(tokio::spawn(async move {
            let start = (i * 7919 * 13) % (clip.len() as u64 - 300_000);
            let end = start + 100_000 + (i * 104_729) % 200_000;
            let resp = http
                .get(&url)
                .header("range", format!("bytes={start}-{end}"))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 206);
            let body = resp.bytes().await.unwrap();
            assert_eq!(
                &body[..],
                &clip[start as usize..=end as usize],
                "stream {i}"
            );
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

#[test]
fn sigterm_drains_then_exits_zero_after_open_streams_finish() {
    let media = MediaFixture::new().unwrap();
    // ~1.5 s per 3 MiB stream; a drain delay during which /healthz says 503.
    let mut o = start_origin(
        &media,
        &[
            "--fault-bandwidth",
            "2000000",
            "--drain-delay",
            "2s",
            "--grace",
            "60s",
        ],
    );
    let addr = o.addr;
    let url = format!("{}/videos/clip.mp4", o.url());
    let stream = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut resp = reqwest::get(url).await.unwrap();
            let mut body = resp.chunk().await.unwrap().unwrap().to_vec();
            started_tx_signal();
            while let Some(c) = resp.chunk().await.unwrap() {
                body.extend_from_slice(&c);
            }
            body
        })
    });
    testkit::wait_for("the stream to start", Duration::from_secs(10), || {
        STARTED.get().copied()
    });
    assert_eq!(testkit::raw_get(addr, "/healthz").unwrap().status, 200);
    o.signal("TERM").unwrap();
    // While draining, health turns 503 ...
    testkit::wait_for(
        "/healthz to turn 503",
        Duration::from_secs(10),
        || match testkit::raw_get(addr, "/healthz") {
            Ok(r) if r.status == 503 => Some(()),
            Ok(_) => None,
            Err(e) => panic!("port closed before /healthz reported draining: {e}"),
        },
    );
    // ... then the port closes ...
    testkit::wait_for("the listener to close", Duration::from_secs(10), || {
        std::net::TcpStream::connect(addr).is_err().then_some(())
    });
    // ... while the open stream still completes, byte for byte.
    let body = stream.join().unwrap();
    assert_eq!(body, media.clip);
    let status = o.wait_exit(Duration::from_secs(30)).unwrap();
    assert!(status.success(), "exit status {status:?}");
}

static STARTED: std::sync::OnceLock<()> = std::sync::OnceLock::new();
fn started_tx_signal() {
    let _ = STARTED.set(());
}

#[tokio::test]
async fn a_client_that_stops_reading_stalls_the_stream_instead_of_growing_a_buffer() {
    use std::io::{Read, Write};
    let media = MediaFixture::new().unwrap();
    // A 1 GiB sparse file: far more than socket buffers can absorb.
    const SIZE: u64 = 1 << 30;
    std::fs::File::create(media.path().join("huge.bin"))
        .unwrap()
        .set_len(SIZE)
        .unwrap();
    let o = start_origin(&media, &[]);
    // A raw socket, so nothing on the client side reads ahead.
    let mut sock = std::net::TcpStream::connect(o.addr).unwrap();
    sock.write_all(b"GET /videos/huge.bin HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let mut first = [0u8; 4096];
    let n = sock.read(&mut first).unwrap();
    assert!(first[..n].starts_with(b"HTTP/1.1 200"));
    // Now read nothing. The origin's sent-bytes counter must settle far below the file size.
    let http = client();
    let metric = |name: &'static str| {
        let http = http.clone();
        let url = format!("{}/metrics", o.url());
        async move {
            let text = http.get(url).send().await.unwrap().text().await.unwrap();
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap()
        }
    };
    let sent = || metric("origin_response_bytes_total");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut last = sent().await;
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = sent().await;
        // Each /metrics answer adds its own few KiB; a moving stream adds chunks of 512 KiB.
        if now - last < 64.0 * 1024.0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the stream never stalled ({now} bytes)"
        );
        last = now;
    }
    assert!(
        last < (128 << 20) as f64,
        "{last} bytes sent to a client that reads nothing"
    );
    // The stalled stream holds a small chunk, not a whole 512 KiB one: its
    // chunks shrank to what the full socket takes.
    let held = metric("origin_stream_buffered_bytes").await;
    assert!(
        held <= (32 * 1024) as f64,
        "a stalled stream holds {held} bytes"
    );
    // And the stream is still alive: reading resumes it.
    let mut buf = vec![0u8; 1 << 20];
    let mut got = 0usize;
    while got < (64 << 20) {
        let n = sock.read(&mut buf).unwrap();
        assert!(n > 0, "stream ended early");
        got += n;
    }
}

/// `cdn-origin healthcheck` (the container HEALTHCHECK) run against `addr`.
fn healthcheck(addr: std::net::SocketAddr) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_cdn-origin"))
        .args(["--listen", &addr.to_string(), "healthcheck"])
        .output()
        .expect("cdn-origin healthcheck runs")
}

#[test]
fn healthcheck_subcommand_follows_the_origins_health() {
    let media = MediaFixture::new().unwrap();
    let mut o = start_origin(&media, &["--drain-delay", "30s", "--grace", "1s"]);
    let addr = o.addr;
    let up = healthcheck(addr);
    assert!(up.status.success(), "{up:?}");
    assert!(String::from_utf8_lossy(&up.stdout).contains("healthy"));

    // Draining: /healthz answers 503, so the container must read as unhealthy.
    o.signal("TERM").unwrap();
    testkit::wait_for("/healthz to turn 503", Duration::from_secs(10), || {
        (testkit::raw_get(addr, "/healthz").ok()?.status == 503).then_some(())
    });
    let draining = healthcheck(addr);
    assert_eq!(draining.status.code(), Some(1), "{draining:?}");
    assert!(String::from_utf8_lossy(&draining.stderr).contains("answered 503"));

    o.signal("KILL").unwrap();
    o.wait_exit(Duration::from_secs(10)).unwrap();
    let gone = healthcheck(addr);
    assert_eq!(gone.status.code(), Some(1), "{gone:?}");
    assert!(String::from_utf8_lossy(&gone.stderr).contains("connect"));
}

/// The first line the origin logs to stderr, started with `format`.
fn first_log_line(format: Option<&str>) -> String {
    use std::io::BufRead;
    let media = MediaFixture::new().unwrap();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_cdn-origin"));
    cmd.args(["--listen", "127.0.0.1:0", "--media", &media.path_str()])
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    if let Some(f) = format {
        cmd.env("CDN_LOG_FORMAT", f);
    }
    let mut child = cmd.spawn().unwrap();
    let mut line = String::new();
    // The origin logs "cdn-origin started" at once; a closed pipe ends the read.
    std::io::BufReader::new(child.stderr.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    line
}

#[test]
fn process_logs_are_json_on_request_and_never_coloured_off_a_terminal() {
    let json: serde_json::Value =
        serde_json::from_str(&first_log_line(Some("json"))).expect("one JSON object per line");
    assert_eq!(json["level"], "INFO");
    assert_eq!(json["fields"]["message"], "cdn-origin started");
    let text = first_log_line(None);
    assert!(text.contains("cdn-origin started"), "{text}");
    assert!(!text.contains('\u{1b}'), "colour codes in a pipe: {text:?}");
}
