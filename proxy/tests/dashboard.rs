//! The dashboard through the proxy's public listener: the page proxied to
//! the sidecar, and `/ws` answered by the proxy itself.

mod common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use std::time::Duration;
use tokio_tungstenite::tungstenite::{self, Message};

/// One origin and a proxy with the dashboard on, at most `max_clients` WebSocket clients.
async fn start(max_clients: usize) -> (MediaFixture, Vec<Server>, Edge) {
    let media = MediaFixture::new().unwrap();
    let origins = start_origins(&media, 1);
    let mut sections = default_sections(&[origins[0].addr]);
    let web_root = concat!(env!("CARGO_MANIFEST_DIR"), "/../dashboard/web");
    sections.insert(
        "dashboard",
        format!(
            "{{listen: 127.0.0.1:{}, interval: 100ms, max_clients: {max_clients}, web_root: {web_root}}}",
            testkit::reserve_port()
        ),
    );
    let edge = start_proxy(&sections, 1).await;
    (media, origins, edge)
}

fn ws_url(edge: &Edge) -> String {
    format!("ws://{}/ws", edge.server.addr)
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The next frame, or a panic after 10 s.
async fn next(ws: &mut Ws) -> Option<Result<Message, tungstenite::Error>> {
    tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .expect("a frame within 10 s")
}

/// Regression: Pingora 0.9.1 tore a proxied HTTP/1 upgrade down right after
/// the `101` whenever the sidecar answered before the proxy had consumed the
/// request's empty body (cloudflare/pingora#946): about 1 in 70 fresh
/// connections got the `101` and then EOF. Every one must get a snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fresh_websocket_gets_a_snapshot() {
    let (_media, _origins, edge) = start(8).await;
    // Four clients connecting in turn, 2,000 connections in all: a busy
    // proxy makes the lost ordering likelier (the old path failed most runs).
    let clients = (0..4).map(|c| {
        let url = ws_url(&edge);
        tokio::spawn(async move {
            for i in 0..500 {
                let (mut ws, resp) = tokio_tungstenite::connect_async(&url).await.unwrap();
                assert_eq!(resp.status(), 101);
                let frame = match next(&mut ws).await {
                    Some(Ok(Message::Text(t))) => t,
                    other => {
                        panic!("client {c}, connection {i}: expected a text frame, got {other:?}")
                    }
                };
                let snapshot: serde_json::Value = serde_json::from_str(&frame).unwrap();
                assert!(snapshot["global"]["requests_total"].is_number(), "{frame}");
                // The history holds real snapshots only, not the placeholder from before the first round.
                assert!(snapshot["timestamp_ms"].as_u64() > Some(0), "{frame}");
                // The whole closing handshake: the server's slot for this
                // address is freed once it has closed, so a client that
                // reconnected at once could find all eight still held
                // (`429`) on a busy machine.
                ws.close(None).await.unwrap();
                while let Some(Ok(_)) = next(&mut ws).await {}
            }
        })
    });
    for c in clients.collect::<Vec<_>>() {
        c.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_keep_coming_and_a_client_that_sends_data_is_closed() {
    let (_media, _origins, edge) = start(8).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_url(&edge))
        .await
        .unwrap();
    for _ in 0..5 {
        assert!(matches!(next(&mut ws).await, Some(Ok(Message::Text(_)))));
    }
    // Client to hub works too: the page never sends data, so the hub closes
    // with a policy close frame.
    ws.send(Message::text("hello")).await.unwrap();
    loop {
        match next(&mut ws).await {
            Some(Ok(Message::Text(_))) => continue,
            Some(Ok(Message::Close(Some(f)))) => {
                assert_eq!(u16::from(f.code), 1008, "{f:?}");
                break;
            }
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_and_freed_client_slots() {
    let (_media, _origins, edge) = start(2).await;
    let http = client();
    let plain = http.get(format!("{}/ws", edge.url())).send().await.unwrap();
    assert_eq!(plain.status(), 400);
    assert_eq!(
        plain.text().await.unwrap(),
        "expected a WebSocket upgrade\n"
    );

    let url = ws_url(&edge);
    let (a, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    let (_b, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    match tokio_tungstenite::connect_async(&url).await {
        Err(tungstenite::Error::Http(r)) => assert_eq!(r.status(), 503),
        other => panic!("a third client over max_clients=2: {other:?}"),
    }
    // A client that goes frees its slot.
    drop(a);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio_tungstenite::connect_async(&url).await {
            Ok(_) => break,
            Err(tungstenite::Error::Http(r)) if r.status() == 503 => {
                assert!(tokio::time::Instant::now() < deadline, "slot never freed");
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            Err(e) => panic!("{e}"),
        }
    }

    // The page itself is still proxied to the sidecar.
    let page = http
        .get(format!("{}/dashboard", edge.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("<canvas"));
}

/// `endpoints.dashboard` and `.dashboard_socket` move the page, its files and
/// its socket; the page is told where; the old paths go to the origins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_and_its_socket_can_move() {
    let media = MediaFixture::new().unwrap();
    let origins = start_origins(&media, 1);
    let mut sections = default_sections(&[origins[0].addr]);
    let web_root = concat!(env!("CARGO_MANIFEST_DIR"), "/../dashboard/web");
    sections.insert(
        "dashboard",
        format!(
            "{{listen: 127.0.0.1:{}, interval: 100ms, web_root: {web_root}}}",
            testkit::reserve_port()
        ),
    );
    sections.insert(
        "endpoints",
        "{dashboard: /_edge/dashboard, dashboard_socket: /_edge/live}".into(),
    );
    let edge = start_proxy(&sections, 1).await;
    let http = client();
    let page = http
        .get(format!("{}/_edge/dashboard", edge.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("\"/_edge/dashboard/app.js\""), "{html}");
    assert!(html.contains("data-socket=\"/_edge/live\""), "{html}");
    assert!(!html.contains("\"/dashboard/"), "{html}");
    let js = http
        .get(format!("{}/_edge/dashboard/app.js", edge.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(js.status(), 200);
    assert!(js.text().await.unwrap().contains("dataset.socket"));
    let (mut ws, resp) =
        tokio_tungstenite::connect_async(format!("ws://{}/_edge/live", edge.server.addr))
            .await
            .unwrap();
    assert_eq!(resp.status(), 101);
    assert!(matches!(next(&mut ws).await, Some(Ok(Message::Text(_)))));
    // The seed's paths are no longer the dashboard's: they reach the origin.
    let old = http
        .get(format!("{}/dashboard", edge.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(old.status(), 404);
    assert!(old.headers().contains_key("x-served-by"));
}

/// One address cannot take every dashboard slot: past
/// `dashboard.max_clients_per_ip` it gets `429`, while another address still
/// gets in, and a client that goes gives its address the slot back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_take_every_slot() {
    let media = MediaFixture::new().unwrap();
    let origins = start_origins(&media, 1);
    let mut sections = default_sections(&[origins[0].addr]);
    let web_root = concat!(env!("CARGO_MANIFEST_DIR"), "/../dashboard/web");
    sections.insert(
        "dashboard",
        format!(
            "{{listen: 127.0.0.1:{}, max_clients: 8, max_clients_per_ip: 2, web_root: {web_root}}}",
            testkit::reserve_port()
        ),
    );
    let edge = start_proxy(&sections, 1).await;
    let url = ws_url(&edge);
    // A WebSocket from a given loopback source address.
    let from = |source: &'static str| {
        let (url, addr) = (url.clone(), edge.server.addr);
        async move {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
            let tcp = socket.connect(addr).await.unwrap();
            tokio_tungstenite::client_async(url, tcp).await
        }
    };
    let (first, _) = from("127.0.0.1").await.unwrap();
    let (_second, _) = from("127.0.0.1").await.unwrap();
    match from("127.0.0.1").await {
        Err(tungstenite::Error::Http(r)) => assert_eq!(r.status(), 429),
        other => panic!("a third client from one address: {other:?}"),
    }
    let (_other, resp) = from("127.0.0.2").await.expect("another address gets in");
    assert_eq!(resp.status(), 101);
    drop(first);
    testkit::wait_until(
        "the address's slot back",
        Duration::from_secs(10),
        || async { from("127.0.0.1").await.ok() },
    )
    .await;
}
