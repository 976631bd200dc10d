//! The live dashboard sidecar: a small HTTP server on its own (loopback)
//! listener that serves the dashboard page under `/dashboard` and pushes
//! metrics snapshots over a WebSocket at `/ws`. A proxy in front may
//! instead complete the WebSocket handshake on its own connection
//! ([`Hub::admit`]) and hand the upgraded stream to [`Hub::serve_client`].
//!
//! It must never slow the proxy, so:
//! - a snapshot is serialized once per tick and the same bytes go to every
//!   client (a `broadcast` channel of cheaply cloned frames);
//! - the last `history` frames are kept and sent to each new client first,
//!   so its charts are never empty;
//! - a client that cannot keep up drops frames (the channel is bounded) and
//!   is closed once it has lagged `max_lag` times, or when one send takes
//!   longer than `send_timeout`: nothing is buffered without limit;
//! - at most `max_clients` clients; a client that sends data is closed (the
//!   page never sends any), and only that client; a frame announced larger
//!   than 4 KiB closes it before its payload is read.

mod page;

/// Request header by which the proxy says where it serves the page (its
/// `endpoints.dashboard`) when that is not `/dashboard`.
pub const BASE_HEADER: &str = "x-dashboard-base";
/// Request header by which the proxy says where it serves the WebSocket.
pub const SOCKET_HEADER: &str = "x-dashboard-socket";

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use page::{reply, Caching};
use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{broadcast, OwnedSemaphorePermit, Semaphore};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{
    frame::coding::CloseCode, CloseFrame, Role, WebSocketConfig,
};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;

/// How the sidecar behaves.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Time between snapshots.
    pub interval: Duration,
    /// Snapshots kept and sent to a new client first.
    pub history: usize,
    /// Most clients at once; more get `503`.
    pub max_clients: usize,
    /// Most clients at once from one address; more get `429` (one viewer
    /// cannot take every slot).
    pub max_clients_per_ip: usize,
    /// A send slower than this closes the client.
    pub send_timeout: Duration,
    /// Times a client may fall behind (dropping frames) before it is closed.
    pub max_lag: u32,
    /// Folder with `index.html`, `app.js`, `style.css`.
    pub web_root: PathBuf,
    /// Chart.js's UMD build (from the npm package), served as `/dashboard/vendor/chart.umd.js`.
    pub chart_js: PathBuf,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            interval: Duration::from_secs(1),
            history: 300,
            max_clients: 64,
            max_clients_per_ip: 8,
            send_timeout: Duration::from_secs(5),
            max_lag: 3,
            web_root: "dashboard/web".into(),
            chart_js: "dashboard/node_modules/chart.js/dist/chart.umd.js".into(),
        }
    }
}

/// Largest frame or message a client may send (the page sends none; pings
/// and closes are at most 125 bytes). Larger ones close the connection.
const MAX_CLIENT_FRAME: usize = 4096;

/// A WebSocket handshake the hub accepted: the `Sec-WebSocket-Accept` value
/// to answer with, and the client slot it holds until the client goes.
pub struct Admission {
    accept: String,
    // Both slots are held (not read) until the client goes.
    _permit: OwnedSemaphorePermit,
    _address_slot: Option<AddressSlot>,
}

/// One client counted against its address until it goes.
struct AddressSlot {
    counts: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = counts.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

impl Admission {
    /// The `Sec-WebSocket-Accept` value for the `101` response.
    pub fn accept_key(&self) -> &str {
        &self.accept
    }
}

/// Why the hub refused a WebSocket handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not a WebSocket upgrade (no `Upgrade: websocket` or no key): `400`.
    NotWebSocket,
    /// `max_clients` are connected: `503`.
    Full,
    /// `max_clients_per_ip` are connected from this address: `429`.
    TooManyFromAddress,
}

impl Refusal {
    /// The status to answer with.
    pub fn status(self) -> StatusCode {
        match self {
            Refusal::NotWebSocket => StatusCode::BAD_REQUEST,
            Refusal::Full => StatusCode::SERVICE_UNAVAILABLE,
            Refusal::TooManyFromAddress => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    /// A one-line body for the answer.
    pub fn message(self) -> &'static str {
        match self {
            Refusal::NotWebSocket => "expected a WebSocket upgrade\n",
            Refusal::Full => "too many dashboard clients\n",
            Refusal::TooManyFromAddress => "too many dashboard clients from this address\n",
        }
    }
}

/// Produces the current snapshot as JSON text, or `None` while there is
/// none yet (that tick sends nothing and keeps nothing).
pub type Source = Arc<dyn Fn() -> Option<String> + Send + Sync>;

/// The sidecar: history, fan-out and client accounting.
pub struct Hub {
    settings: Settings,
    history: Mutex<VecDeque<Utf8Bytes>>,
    tx: broadcast::Sender<Utf8Bytes>,
    clients: Arc<Semaphore>,
    /// Clients connected now, by address.
    per_address: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl Hub {
    /// A hub with these settings.
    pub fn new(settings: Settings) -> Arc<Hub> {
        let (tx, _) = broadcast::channel(16);
        Arc::new(Hub {
            clients: Arc::new(Semaphore::new(settings.max_clients)),
            per_address: Arc::default(),
            history: Mutex::new(VecDeque::with_capacity(settings.history)),
            settings,
            tx,
        })
    }

    /// Snapshots kept for new clients.
    pub fn history_len(&self) -> usize {
        self.history.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// The settings it runs with.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Clients connected now.
    pub fn clients(&self) -> usize {
        self.settings.max_clients - self.clients.available_permits()
    }

    /// Builds one frame per interval from `source` and sends it to every client. Runs forever.
    pub async fn run_ticker(self: Arc<Self>, source: Source) {
        let mut tick = tokio::time::interval(self.settings.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(frame) = source() else { continue };
            let frame = Utf8Bytes::from(frame);
            {
                let mut h = self.history.lock().unwrap_or_else(|p| p.into_inner());
                if h.len() == self.settings.history {
                    h.pop_front();
                }
                h.push_back(frame.clone());
            }
            // No receivers is fine: nobody is watching.
            let _ = self.tx.send(frame);
        }
    }

    /// Serves the page and the WebSocket on `listener`. Runs forever.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!("dashboard accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let hub = self.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let hub = hub.clone();
                    async move { Ok::<_, Infallible>(hub.route(req).await) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .with_upgrades();
                if let Err(e) = conn.await {
                    tracing::debug!("dashboard connection ended: {e}");
                }
            });
        }
    }

    async fn route(self: Arc<Self>, req: Request<Incoming>) -> Response<Full<Bytes>> {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            let mut r = reply(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "use GET\n");
            r.headers_mut()
                .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
            return r;
        }
        let path = req.uri().path().to_string();
        match path.as_str() {
            "/ws" => self.upgrade(req),
            "/dashboard" | "/dashboard/" => {
                let index = self.settings.web_root.join("index.html");
                let told = |name| {
                    let v = req.headers().get(name)?.to_str().ok()?;
                    page::is_plain_path(v).then_some(v)
                };
                match (told(BASE_HEADER), told(SOCKET_HEADER)) {
                    (Some(base), Some(socket)) if base != "/dashboard" || socket != "/ws" => {
                        page::index_at(&index, base, socket).await
                    }
                    _ => page::file(&index, req.headers(), Caching::Revalidate).await,
                }
            }
            "/dashboard/vendor/chart.umd.js" => {
                page::file(&self.settings.chart_js, req.headers(), Caching::Pinned).await
            }
            p => match p.strip_prefix("/dashboard/") {
                // Only plain file names from the page folder.
                Some(name)
                    if !name.is_empty()
                        && name
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
                        && !name.starts_with('.') =>
                {
                    let file = self.settings.web_root.join(name);
                    page::file(&file, req.headers(), Caching::Revalidate).await
                }
                _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
            },
        }
    }

    /// Checks a WebSocket upgrade request (RFC 6455, section 4.2.1) and takes
    /// a client slot for it. Used by this crate's own listener and by a proxy
    /// that completes the handshake on its own connection.
    pub fn admit(
        &self,
        headers: &http::HeaderMap,
        client: Option<IpAddr>,
    ) -> Result<Admission, Refusal> {
        let wants_ws = headers
            .get(header::UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
        let accept = headers
            .get(header::SEC_WEBSOCKET_KEY)
            .filter(|_| wants_ws)
            .map(|k| derive_accept_key(k.as_bytes()))
            .ok_or(Refusal::NotWebSocket)?;
        let address_slot = match client {
            Some(ip) => Some(self.take_address_slot(ip)?),
            None => None,
        };
        let permit = self
            .clients
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refusal::Full)?;
        Ok(Admission {
            accept,
            _permit: permit,
            _address_slot: address_slot,
        })
    }

    /// Counts one more client from `ip`, unless it has its share already.
    fn take_address_slot(&self, ip: IpAddr) -> Result<AddressSlot, Refusal> {
        let mut counts = self.per_address.lock().unwrap_or_else(|p| p.into_inner());
        let n = counts.entry(ip).or_insert(0);
        if *n >= self.settings.max_clients_per_ip {
            return Err(Refusal::TooManyFromAddress);
        }
        *n += 1;
        Ok(AddressSlot {
            counts: self.per_address.clone(),
            ip,
        })
    }

    /// Serves one admitted client on `io`, the connection after the `101`.
    /// Returns when the client goes, lags or misbehaves.
    pub async fn serve_client<S>(self: Arc<Self>, io: S, admission: Admission)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        // The page sends nothing but control frames (at most 125 bytes), so a
        // client cannot make the hub buffer its data: tungstenite would
        // otherwise take frames up to 16 MiB and messages up to 64 MiB.
        let limits = WebSocketConfig::default()
            .max_frame_size(Some(MAX_CLIENT_FRAME))
            .max_message_size(Some(MAX_CLIENT_FRAME));
        let ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(limits)).await;
        // The admission (its slots) lives as long as the client.
        self.client(ws, admission).await;
    }

    /// Answers a WebSocket upgrade on this crate's own listener.
    fn upgrade(self: Arc<Self>, mut req: Request<Incoming>) -> Response<Full<Bytes>> {
        let admission = match self.admit(req.headers(), None) {
            Ok(a) => a,
            Err(refusal) => {
                return reply(refusal.status(), "text/plain", refusal.message());
            }
        };
        let accept = header::HeaderValue::from_str(admission.accept_key()).ok();
        let on_upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            match on_upgrade.await {
                Ok(upgraded) => self.serve_client(TokioIo::new(upgraded), admission).await,
                Err(e) => tracing::debug!("WebSocket upgrade failed: {e}"),
            }
        });
        let mut r = Response::new(Full::new(Bytes::new()));
        *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let h = r.headers_mut();
        h.insert(
            header::UPGRADE,
            header::HeaderValue::from_static("websocket"),
        );
        h.insert(
            header::CONNECTION,
            header::HeaderValue::from_static("Upgrade"),
        );
        if let Some(v) = accept {
            h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
        }
        r
    }

    /// One client: history first, then live frames, until it goes, lags or misbehaves.
    async fn client<S>(self: Arc<Self>, ws: WebSocketStream<S>, _admission: Admission)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        // Subscribe before copying the history, so no frame falls in between
        // (one may come twice; the page ignores frames it has seen).
        let mut rx = self.tx.subscribe();
        let history: Vec<Utf8Bytes> = self
            .history
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect();
        let (mut sink, mut incoming) = ws.split();
        let timeout = self.settings.send_timeout;
        for frame in history {
            if !matches!(
                tokio::time::timeout(timeout, sink.feed(Message::Text(frame))).await,
                Ok(Ok(()))
            ) {
                return;
            }
        }
        if !matches!(
            tokio::time::timeout(timeout, sink.flush()).await,
            Ok(Ok(()))
        ) {
            return;
        }
        let mut lagged = 0;
        let close = |reason: &'static str| {
            Message::Close(Some(CloseFrame {
                code: CloseCode::Policy,
                reason: reason.into(),
            }))
        };
        loop {
            tokio::select! {
                frame = rx.recv() => match frame {
                    Ok(frame) => {
                        let sent = tokio::time::timeout(timeout, sink.send(Message::Text(frame))).await;
                        if !matches!(sent, Ok(Ok(()))) {
                            tracing::debug!("dashboard client too slow; closed");
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        lagged += 1;
                        if lagged > self.settings.max_lag {
                            let _ = tokio::time::timeout(timeout, sink.send(close("too slow"))).await;
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                msg = incoming.next() => match msg {
                    Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                    Some(Ok(Message::Text(_) | Message::Binary(_))) => {
                        // The page never sends data: anything else is a bad client.
                        let _ = tokio::time::timeout(timeout, sink.send(close("clients do not send data"))).await;
                        return;
                    }
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                },
            }
        }
    }
}
