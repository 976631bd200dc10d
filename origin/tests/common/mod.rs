//! Starts the real `cdn-origin` binary over a media fixture.
#![allow(dead_code)]

pub use testkit::{MediaFixture, Server};

/// Starts `cdn-origin` on a free loopback port over `media`, `clip.mp4` as `/`.
pub fn start_origin(media: &MediaFixture, extra: &[&str]) -> Server {
    testkit::raise_fd_limit();
    let dir = media.path_str();
    let mut args = vec![
        "--listen",
        "127.0.0.1:0",
        "--media",
        &dir,
        "--name",
        "test-origin",
        "--default",
        "clip.mp4",
    ];
    args.extend_from_slice(extra);
    Server::start(env!("CARGO_BIN_EXE_cdn-origin").as_ref(), &args).expect("cdn-origin starts")
}

/// A client that never pools across tests and never follows redirects.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

/// `GET {server}{path}` parsed as JSON.
pub async fn get_json(http: &reqwest::Client, server: &Server, path: &str) -> serde_json::Value {
    let resp = http
        .get(format!("{}{path}", server.url()))
        .send()
        .await
        .expect("request");
    resp.json().await.expect("JSON body")
}
