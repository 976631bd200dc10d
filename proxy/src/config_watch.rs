//! `watch_config`: reload when the files change, without a SIGHUP. A
//! Kubernetes ConfigMap or Secret is updated by swapping a `..data`
//! symlink under the mounted folder, which file events miss or double;
//! so the watcher reads the files every `watch_config` (a few KiB) and
//! compares a hash of their contents: `cdn.yaml`, the certificates and
//! keys it names, and the admin token file. Any change (a new file, a
//! renewed certificate, a rotated token) triggers the same reload as SIGHUP;
//! a file that cannot be read counts as empty, so its return is a change too.

use crate::config::Config;
use std::path::Path;

/// A hash of the contents of `path` and of the files its config names.
pub fn fingerprint(path: &Path, cfg: &Config) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    let mut add = |p: &Path| {
        h.update(p.as_os_str().as_encoded_bytes());
        h.update(&[0]);
        h.update(&std::fs::read(p).unwrap_or_default());
        h.update(&[0]);
    };
    add(path);
    for t in &cfg.tls {
        for c in &t.certificates {
            add(&c.cert);
            add(&c.key);
        }
    }
    if let Some(token) = &cfg.admin_auth.token_file {
        add(token);
    }
    h.digest()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_to_the_file_or_a_file_it_names_changes_the_fingerprint() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("cdn.yaml");
        let token = dir.path().join("token");
        std::fs::write(&token, "0123456789abcdef").unwrap();
        let text = format!(
            "origins: [{{address: 127.0.0.1:9}}]\nadmin_auth: {{token_file: {}}}\n",
            token.display()
        );
        std::fs::write(&conf, &text).unwrap();
        let cfg = Config::parse(&text, "cdn.yaml").unwrap();
        let first = fingerprint(&conf, &cfg);
        assert_eq!(fingerprint(&conf, &cfg), first, "nothing changed");
        std::fs::write(&token, "fedcba9876543210").unwrap();
        let rotated = fingerprint(&conf, &cfg);
        assert_ne!(rotated, first, "a rotated token");
        std::fs::write(&conf, format!("{text}# edited\n")).unwrap();
        assert_ne!(fingerprint(&conf, &cfg), rotated, "an edited config");
    }
}
