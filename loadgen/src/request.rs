//! One request of the load: a Range (or whole-file) GET whose body is read
//! to the end and checked for length, timed from its scheduled send time.

use bytes::Bytes;
use http::{header, Request, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use std::time::Duration;
use tokio::time::Instant;

/// What became of one request.
pub struct Outcome {
    /// Seconds from the start of the measured run to its scheduled send time.
    pub at: f64,
    /// Seconds from its scheduled send time to its last body byte (or the failure).
    pub latency: f64,
    /// The origin that answered (`x-origin-name`), or why it failed.
    pub result: Result<String, String>,
}

/// The URL under load, the file's size, and a connection pool.
pub struct Target {
    client: Client<HttpConnector, Empty<Bytes>>,
    uri: http::Uri,
    size: u64,
    range_bytes: u64,
    timeout: Duration,
}

impl Target {
    /// Learns the file's size (a one-byte Range GET) and opens a pool.
    pub async fn new(url: &str, range_bytes: u64, timeout: Duration) -> anyhow::Result<Self> {
        let uri: http::Uri = url.parse()?;
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(4096)
            .build(connector);
        let req = Request::get(uri.clone())
            .header(header::RANGE, "bytes=0-0")
            .body(Empty::new())?;
        let resp = client.request(req).await?;
        let total = resp
            .headers()
            .get(header::CONTENT_RANGE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit('/').next())
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "{url} answered {} without a Content-Range total",
                    resp.status()
                )
            })?;
        resp.into_body().collect().await?;
        Ok(Target {
            client,
            uri,
            size: total,
            range_bytes: range_bytes.min(total),
            timeout,
        })
    }

    /// Fetches a range starting at `offset` (0–1 of the room left) or the
    /// whole file, scheduled at `due`.
    pub async fn fetch(&self, offset: f64, due: Instant, measured_from: Instant) -> Outcome {
        let result = tokio::time::timeout(self.timeout, self.get(offset))
            .await
            .unwrap_or_else(|_| Err("timeout".into()));
        Outcome {
            at: due.saturating_duration_since(measured_from).as_secs_f64(),
            latency: Instant::now().saturating_duration_since(due).as_secs_f64(),
            result,
        }
    }

    async fn get(&self, offset: f64) -> Result<String, String> {
        let mut req = Request::get(self.uri.clone());
        let (status, want) = if self.range_bytes > 0 {
            let start = ((self.size - self.range_bytes) as f64 * offset) as u64;
            let end = start + self.range_bytes - 1;
            req = req.header(header::RANGE, format!("bytes={start}-{end}"));
            (StatusCode::PARTIAL_CONTENT, self.range_bytes)
        } else {
            (StatusCode::OK, self.size)
        };
        let req = req.body(Empty::new()).map_err(|e| e.to_string())?;
        let resp = self
            .client
            .request(req)
            .await
            .map_err(|_| "connect or send".to_string())?;
        if resp.status() != status {
            return Err(format!("status {}", resp.status().as_u16()));
        }
        let origin = resp
            .headers()
            .get("x-origin-name")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("?")
            .to_string();
        let mut body = resp.into_body();
        let mut got = 0u64;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|_| "body cut".to_string())?;
            if let Some(data) = frame.data_ref() {
                got += data.len() as u64;
            }
        }
        if got != want {
            return Err("short body".into());
        }
        Ok(origin)
    }
}

/// POSTs a JSON body (a fault to an origin) on a connection of its own.
pub async fn post_json(url: &str, body: &str) -> anyhow::Result<()> {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let req = Request::post(url)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.to_string())))?;
    let resp = client.request(req).await?;
    anyhow::ensure!(
        resp.status().is_success(),
        "{} answered {}",
        url,
        resp.status()
    );
    Ok(())
}
