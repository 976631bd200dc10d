//! The sidecar with real WebSocket clients over loopback.

use cdn_dashboard::{Hub, Settings, Source};
use futures_util::{SinkExt, StreamExt};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

/// Starts a hub whose snapshots are `{"n":<counter>,"pad":"<pad bytes>"}`.
async fn start(settings: Settings, pad: usize) -> (Arc<Hub>, String) {
    let hub = Hub::new(settings);
    let n = Arc::new(AtomicU64::new(0));
    let padding = "x".repeat(pad);
    let source: Source = Arc::new(move || {
        Some(format!(
            "{{\"n\":{},\"pad\":\"{padding}\"}}",
            n.fetch_add(1, Ordering::Relaxed) + 1
        ))
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/ws", listener.local_addr().unwrap());
    tokio::spawn(hub.clone().serve(listener));
    tokio::spawn(hub.clone().run_ticker(source));
    (hub, url)
}

fn fast() -> Settings {
    Settings {
        interval: Duration::from_millis(50),
        history: 20,
        max_clients: 8,
        ..Settings::default()
    }
}

fn number(m: &Message) -> u64 {
    let t = m.to_text().unwrap();
    let start = t.find("\"n\":").unwrap() + 4;
    t[start..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

async fn next(
    ws: &mut (impl StreamExt<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin),
) -> Message {
    tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .expect("a frame in time")
        .unwrap()
        .unwrap()
}

async fn wait_history(hub: &Hub, n: usize) {
    let what = format!("{n} snapshots of history");
    testkit::wait_until(&what, Duration::from_secs(10), || async {
        (hub.history_len() >= n).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_client_gets_the_history_then_every_snapshot_in_order() {
    let (hub, url) = start(fast(), 0).await;
    wait_history(&hub, 5).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    let first = number(&next(&mut ws).await);
    assert_eq!(first, 1, "history starts with the oldest kept snapshot");
    let mut last = first;
    for _ in 0..15 {
        let n = number(&next(&mut ws).await);
        // History then live: strictly increasing, at most one duplicate at the seam.
        assert!(n == last + 1 || n == last, "{n} after {last}");
        last = n;
    }
    assert!(last >= 15);
}

#[tokio::test]
async fn history_is_bounded() {
    let (hub, url) = start(
        Settings {
            history: 5,
            ..fast()
        },
        0,
    )
    .await;
    // Watch the live frames until the twelfth has been sent.
    let (mut watcher, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    while number(&next(&mut watcher).await) < 12 {}
    assert_eq!(hub.history_len(), 5);
    // A new client gets only the last five: its first frame is at least the eighth.
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    let first = number(&next(&mut ws).await);
    assert!(
        first >= 8,
        "history should start at frame 8 or later, got {first}"
    );
}

#[tokio::test]
async fn a_stalled_client_does_not_delay_the_others_and_is_closed() {
    // 512 KiB frames fill a non-reading client's socket buffers within a few ticks.
    let settings = Settings {
        send_timeout: Duration::from_millis(500),
        max_lag: 2,
        history: 1,
        ..fast()
    };
    let (hub, url) = start(settings, 512 * 1024).await;
    let (stalled, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    let (mut reader, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    // The reading client keeps getting every frame while the other reads nothing.
    let mut last = number(&next(&mut reader).await);
    for _ in 0..40 {
        let n = number(&next(&mut reader).await);
        assert!(n > last, "{n} after {last}");
        last = n;
    }
    // The stalled client was closed by the server: only the reader is left.
    testkit::wait_until(
        "the stalled client to be closed",
        Duration::from_secs(10),
        || async { (hub.clients() <= 1).then_some(()) },
    )
    .await;
    drop(stalled);
}

#[tokio::test]
async fn the_client_cap_holds() {
    let (hub, url) = start(
        Settings {
            max_clients: 2,
            ..fast()
        },
        0,
    )
    .await;
    let (_a, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    let (_b, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    testkit::wait_until("two clients", Duration::from_secs(10), || async {
        (hub.clients() >= 2).then_some(())
    })
    .await;
    match tokio_tungstenite::connect_async(&url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 503),
        other => panic!("a third client must be refused, got {other:?}"),
    }
}

#[tokio::test]
async fn garbage_from_a_client_closes_that_client_only() {
    let (_hub, url) = start(fast(), 0).await;
    let (mut bad, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    let (mut good, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    bad.send(Message::Binary(vec![0xff, 0x00, 0x13].into()))
        .await
        .unwrap();
    // The bad client is closed: its stream ends (after a Close frame).
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(Ok(m)) = bad.next().await {
            if m.is_close() {
                return true;
            }
        }
        true
    })
    .await
    .unwrap();
    assert!(closed);
    // The good one keeps receiving.
    let a = number(&next(&mut good).await);
    let b = number(&next(&mut good).await);
    assert!(b > a);
}

#[tokio::test]
async fn the_page_is_served_and_paths_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("index.html"), "<h1>dash</h1>").unwrap();
    std::fs::write(dir.path().join("app.js"), "console.log(1)").unwrap();
    let settings = Settings {
        web_root: dir.path().into(),
        ..fast()
    };
    let (_hub, url) = start(settings, 0).await;
    let addr = url
        .trim_start_matches("ws://")
        .trim_end_matches("/ws")
        .to_string();
    let get = |path: &'static str| {
        let addr = addr.clone();
        async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(
                format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes(),
            )
            .await
            .unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            out
        }
    };
    let page = get("/dashboard").await;
    assert!(
        page.starts_with("HTTP/1.1 200") && page.contains("<h1>dash</h1>"),
        "{page}"
    );
    assert!(get("/dashboard/app.js").await.contains("text/javascript"));
    assert!(get("/dashboard/../Cargo.toml")
        .await
        .starts_with("HTTP/1.1 404"));
    assert!(get("/dashboard/.hidden").await.starts_with("HTTP/1.1 404"));
    assert!(
        get("/ws").await.starts_with("HTTP/1.1 400"),
        "a plain GET of /ws is not an upgrade"
    );
}

/// A client announcing a frame larger than the hub takes (1 MiB, within
/// tungstenite's 16 MiB default) is closed at once, before its payload is
/// read: the hub never buffers client data.
#[tokio::test]
async fn an_oversized_frame_closes_the_client_before_its_payload() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (_hub, url) = start(fast(), 0).await;
    let addr = url.trim_start_matches("ws://").trim_end_matches("/ws");
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await
    .unwrap();
    // A masked binary frame announcing 1 MiB, and only its first 1 KiB.
    let mut frame = vec![0x82, 0x80 | 127];
    frame.extend_from_slice(&(1u64 << 20).to_be_bytes());
    frame.extend_from_slice(&[1, 2, 3, 4]);
    frame.extend_from_slice(&[0u8; 1024]);
    tcp.write_all(&frame).await.unwrap();
    // Snapshots may still arrive; the connection must then end.
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the hub waited for the 1 MiB payload");
}

/// Ticks whose source has no snapshot yet send nothing and keep nothing.
#[tokio::test]
async fn ticks_without_a_snapshot_are_skipped() {
    let hub = Hub::new(fast());
    let calls = Arc::new(AtomicU64::new(0));
    let c = calls.clone();
    // No snapshot for the first 5 ticks, then 1, 2, 3, ...
    let source: Source = Arc::new(move || {
        let k = c.fetch_add(1, Ordering::Relaxed);
        (k >= 5).then(|| format!("{{\"n\":{}}}", k - 4))
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/ws", listener.local_addr().unwrap());
    tokio::spawn(hub.clone().serve(listener));
    tokio::spawn(hub.clone().run_ticker(source));
    testkit::wait_until("eight ticks", Duration::from_secs(10), || async {
        (calls.load(Ordering::Relaxed) >= 8).then_some(())
    })
    .await;
    assert!(hub.history_len() <= (calls.load(Ordering::Relaxed) - 5) as usize);
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    assert_eq!(
        number(&next(&mut ws).await),
        1,
        "the first frame is the first real snapshot"
    );
}
