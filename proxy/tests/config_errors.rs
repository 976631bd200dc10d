//! The real binary refuses bad configuration with the file, the key and the fix.

use std::process::Command;

fn check(yaml: &str) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("cdn.yaml");
    std::fs::write(&f, yaml).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_cdn-proxy"))
        .args(["--check", "--cdn-conf", f.to_str().unwrap()])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    (
        out.status.code().unwrap_or(-1),
        text.replace(f.to_str().unwrap(), "FILE"),
    )
}

#[test]
fn check_accepts_the_shipped_config() {
    // Its HTTPS listener names the local certificate `make run` makes, from the workspace root.
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let made = Command::new(env!("CARGO_BIN_EXE_cdn-proxy"))
        .current_dir(root)
        .arg("dev-cert")
        .status()
        .unwrap();
    assert!(made.success());
    let out = Command::new(env!("CARGO_BIN_EXE_cdn-proxy"))
        .current_dir(root)
        .args([
            "--check",
            "--cdn-conf",
            concat!(env!("CARGO_MANIFEST_DIR"), "/../conf/cdn.yaml"),
        ])
        .args([
            "-c",
            concat!(env!("CARGO_MANIFEST_DIR"), "/../conf/pingora.yaml"),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).ends_with(": ok\n"));
}

#[test]
fn bad_configs_are_refused_with_file_key_and_fix() {
    let o = "origins:\n  - address: 127.0.0.1:9101\n";
    let cases = [
        (
            format!("{o}colour: blue\n"),
            "FILE: colour: unknown field `colour`",
        ),
        (
            format!("{o}health:\n  rise: lots\n"),
            "FILE: health.rise: invalid type",
        ),
        (
            format!("{o}selection:\n  weights: {{cpu: 0.9}}\n"),
            "FILE: selection.weights: weights sum to 1.6000; they must sum to 1.0",
        ),
        (
            format!("{o}selection:\n  tier_bounds: [25, 75, 50]\n"),
            "FILE: selection.tier_bounds: [25.0, 75.0, 50.0] must be strictly increasing",
        ),
        (
            "origins:\n  - address: nowhere.invalid:80\n".to_string(),
            "FILE: origins[0].address: \"nowhere.invalid:80\" does not resolve",
        ),
        (
            format!("{o}listen: [\"127.0.0.1:8080\", \"127.0.0.1:8080\"]\n"),
            "FILE: listen[1]: 127.0.0.1:8080 is listed twice",
        ),
        (
            format!("{o}client_read_buffer: 100\n"),
            "FILE: client_read_buffer: 100 must be 0 (no buffer) or between 1024 and 1048576 bytes",
        ),
        (
            format!("{o}forwarded:\n  trusted_proxies: [10.0.0.0/8, lan]\n"),
            "FILE: forwarded.trusted_proxies[1]: \"lan\" is not an address or CIDR range; write e.g. 10.0.0.0/8",
        ),
        (
            format!("{o}routes: [{{prefix: /}}, {{prefix: /archive, pool: archive}}]\n"),
            "FILE: routes[1].pool: no origin is in pool \"archive\"; give some origins `pool: archive`, or use one of: default",
        ),
        (
            format!("{o}cache: {{dir: /tmp/x, max_size: 1000}}\n"),
            "FILE: cache.max_size: 1000 bytes is less than four slices",
        ),
        (
            format!("{o}request_id_header: \"x request\"\n"),
            "FILE: request_id_header: \"x request\" is not a valid header name",
        ),
        (
            format!("{o}cors:\n  allowed_origins: [https://player.example/watch]\n"),
            "FILE: cors.allowed_origins[0]: \"https://player.example/watch\" is not a page origin; write scheme://host[:port]",
        ),
        (
            format!("{o}tls:\n  - listen: 127.0.0.1:8443\n    certificates: [{{cert: /nonexistent/c.pem, key: /nonexistent/k.pem}}]\n"),
            "FILE: tls[0].certificates[0].cert: /nonexistent/c.pem: cannot read PEM certificates",
        ),
        (
            format!("{o}tls:\n  - listen: 127.0.0.1:8443\n    certificates: []\n"),
            "FILE: tls[0].certificates: an HTTPS listener needs a certificate",
        ),
        (
            format!("{o}redirect_to_https: true\n"),
            "FILE: redirect_to_https: there is no HTTPS listener to redirect to",
        ),
        (
            format!("{o}routes: [{{prefix: videos}}]\n"),
            "FILE: routes[0].prefix: \"videos\" must start with `/`",
        ),
        (
            format!("{o}endpoints: {{metrics: /healthz}}\n"),
            "FILE: endpoints.metrics: \"/healthz\" must be a plain path",
        ),
        (
            format!("{o}endpoints: {{healthz: /dashboard/health}}\n"),
            "FILE: endpoints.healthz: \"/dashboard/health\" must be a plain path",
        ),
        ("listen: [\n".to_string(), "FILE: "),
    ];
    for (yaml, want) in cases {
        let (code, text) = check(&yaml);
        assert_eq!(code, 2, "{yaml}: {text}");
        assert!(
            text.contains(want),
            "for\n{yaml}\nexpected {want:?} in {text:?}"
        );
    }
    let (code, text) = Command::new(env!("CARGO_BIN_EXE_cdn-proxy"))
        .args(["--check", "--cdn-conf", "/nonexistent/cdn.yaml"])
        .output()
        .map(|o| {
            (
                o.status.code().unwrap(),
                String::from_utf8_lossy(&o.stderr).to_string(),
            )
        })
        .unwrap();
    assert_eq!(code, 2);
    assert!(
        text.contains("/nonexistent/cdn.yaml: cannot read"),
        "{text}"
    );
}
