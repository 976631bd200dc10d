//! The admin API with a bearer token: none or a wrong one gets 401, the
//! right one gets through; the token comes from a file or a variable; the
//! public listener does not serve the admin API at all.

mod common;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_wants_its_token() {
    let media = MediaFixture::new().unwrap();
    let origins = start_origins(&media, 1);
    let secrets = tempfile::tempdir().unwrap();
    let token_file = secrets.path().join("admin-token");
    std::fs::write(&token_file, "s3cret-admin-token-0123456789\n").unwrap();
    let mut sections = default_sections(&[origins[0].addr]);
    sections.insert(
        "admin_auth",
        format!("{{token_file: {}}}", token_file.display()),
    );
    let edge = start_proxy(&sections, 1).await;
    let http = client();
    let origins_url = format!("http://{}/origins", edge.admin);
    let get = |auth: Option<&'static str>| {
        let mut r = http.get(&origins_url);
        if let Some(a) = auth {
            r = r.header("authorization", a);
        }
        r.send()
    };
    let r = get(None).await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .starts_with("Bearer"));
    assert_eq!(
        get(Some("Bearer wrong-token-wrong-token"))
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        get(Some("Bearer s3cret-admin-token-012345678"))
            .await
            .unwrap()
            .status(),
        401,
        "a prefix is not the token"
    );
    assert_eq!(
        get(Some("Basic s3cret-admin-token-0123456789"))
            .await
            .unwrap()
            .status(),
        401
    );
    let r = get(Some("Bearer s3cret-admin-token-0123456789"))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r
        .text()
        .await
        .unwrap()
        .contains(&origins[0].addr.to_string()));
    // Changes need it too.
    let drain = format!("http://{}/origins/{}/drain", edge.admin, origins[0].addr);
    assert_eq!(http.post(&drain).send().await.unwrap().status(), 401);
    // The public listener has no admin API.
    let r = http
        .get(format!("{}/origins", edge.url()))
        .send()
        .await
        .unwrap();
    assert_ne!(r.status(), 200, "the public listener must not list origins");
}

#[test]
fn a_token_comes_from_a_variable_and_a_short_or_missing_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("cdn.yaml");
    let check = |yaml: &str, env: Option<&str>| {
        std::fs::write(&f, yaml).unwrap();
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_cdn-proxy"));
        cmd.args(["--check", "--cdn-conf", f.to_str().unwrap()]);
        cmd.env_remove("CDN_TEST_ADMIN_TOKEN");
        if let Some(v) = env {
            cmd.env("CDN_TEST_ADMIN_TOKEN", v);
        }
        let out = cmd.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let yaml =
        "origins: [{address: 127.0.0.1:9101}]\nadmin_auth: {token_env: CDN_TEST_ADMIN_TOKEN}\n";
    assert_eq!(check(yaml, Some("0123456789abcdef0123")).0, Some(0));
    let (code, err) = check(yaml, None);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("admin_auth.token_env: the environment has no CDN_TEST_ADMIN_TOKEN"),
        "{err}"
    );
    let (code, err) = check(yaml, Some("short"));
    assert_eq!(code, Some(2));
    assert!(err.contains("at least 16"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_can_move_from_the_public_listener_to_the_admin_one() {
    let media = MediaFixture::new().unwrap();
    let origins = start_origins(&media, 1);
    let secrets = tempfile::tempdir().unwrap();
    let token_file = secrets.path().join("admin-token");
    std::fs::write(&token_file, "s3cret-admin-token-0123456789").unwrap();
    let mut sections = default_sections(&[origins[0].addr]);
    sections.insert(
        "admin_auth",
        format!("{{token_file: {}}}", token_file.display()),
    );
    let edge = start_proxy(&sections, 1).await;
    // Switched off on the public listener (a reload): their paths then go
    // to the origins like any other.
    sections.insert("endpoints", "{metrics: \"\", prometheus: \"\"}".into());
    let (public, admin_port) = (edge.server.addr.port(), edge.admin.port());
    std::fs::write(&edge.cdn_yaml, render(public, admin_port, &sections)).unwrap();
    edge.server.signal("HUP").unwrap();
    testkit::wait_until(
        "public /prometheus goes to an origin",
        std::time::Duration::from_secs(10),
        || async {
            let r = client()
                .get(format!("{}/prometheus", edge.url()))
                .send()
                .await
                .ok()?;
            r.headers().contains_key("x-served-by").then_some(())
        },
    )
    .await;
    let http = client();
    let admin = |path: &str| {
        http.get(format!("http://{}{path}", edge.admin))
            .header("authorization", "Bearer s3cret-admin-token-0123456789")
            .send()
    };
    let snapshot: serde_json::Value = admin("/metrics").await.unwrap().json().await.unwrap();
    assert_eq!(snapshot["global"]["origins_total"], 1);
    let text = admin("/prometheus").await.unwrap().text().await.unwrap();
    assert!(text.contains("cdn_origin_up{"), "{text}");
    let anonymous = http
        .get(format!("http://{}/prometheus", edge.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401, "behind the token like the rest");
    for path in ["/metrics", "/prometheus"] {
        let r = http
            .get(format!("{}{path}", edge.url()))
            .send()
            .await
            .unwrap();
        assert!(
            r.headers().contains_key("x-served-by"),
            "{path} went to an origin"
        );
    }
}
