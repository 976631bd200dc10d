//! `cdn.yaml`: the proxy's own configuration (Pingora's server settings live
//! in `pingora.yaml`). Every key has a default; unknown keys, wrong types and
//! inconsistent values are refused with the file, the key and the fix.
//!
//! - `schema.rs`: the keys, their types and defaults;
//! - `validate.rs`: what types cannot check;
//! - here: reading a file and naming what is wrong in it.

mod schema;
mod validate;

pub use schema::*;

use std::net::ToSocketAddrs;
use std::path::Path;

/// A refused configuration: which file, which key, what is wrong and how to fix it.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    /// The file read.
    pub file: String,
    /// Dotted path of the offending key (empty for the whole file).
    pub key: String,
    /// What is wrong, and the fix.
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(f, "{}: {}: {}", self.file, self.key, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Reads, parses and validates a file, and checks that every static
    /// origin address resolves now. Blocks on DNS: call it at start, or off
    /// the runtime's threads (the reloader uses `spawn_blocking`).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: file.clone(),
            key: String::new(),
            message: format!("cannot read: {e}"),
        })?;
        let config = Self::parse(&text, &file)?;
        config.check_addresses_resolve(&file)?;
        config.check_certificates(&file)?;
        let mut config = config;
        config.admin_auth.token = config.admin_auth.read_token(&file)?;
        Ok(config)
    }

    /// Parses and validates YAML text; `file` names it in errors. No I/O.
    pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
        let de = serde_yaml::Deserializer::from_str(text);
        let config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            let mut message = e.into_inner().to_string();
            // serde_yaml prefixes its own (partial) path; ours is exact, so drop its copy.
            if let Some((prefix, rest)) = message.split_once(": ") {
                if !prefix.contains(char::is_whitespace) {
                    message = rest.to_string();
                }
            }
            ConfigError {
                file: file.into(),
                key: if key == "." { String::new() } else { key },
                message,
            }
        })?;
        let mut config = config;
        validate::check(&config).map_err(|(key, message)| ConfigError {
            file: file.into(),
            key,
            message,
        })?;
        config.served_by_name = (!config.served_by_header.is_empty())
            .then(|| bytes::Bytes::from(config.served_by_header.clone()));
        // Checked by `validate::check` above.
        config.request_id_name = http::HeaderName::try_from(config.request_id_header.as_str()).ok();
        config.cache_status_name =
            http::HeaderName::try_from(config.cache.status_header.as_str()).ok();
        // Checked by `validate::check` above: every name has a bit.
        for r in &mut config.routes {
            r.pool_bit = crate::origins::pools::bit(&r.pool).unwrap_or(0);
        }
        config.routes_by_length = (0..config.routes.len()).collect();
        (config.routes_by_length)
            .sort_by_key(|&i| std::cmp::Reverse(config.routes[i].prefix.len()));
        config.forwarded.trusted = (config.forwarded.trusted_proxies.iter())
            .filter_map(|t| validate::trusted_net(t))
            .collect();
        Ok(config)
    }

    /// Refuses certificate and key files that cannot be read or do not go together.
    pub fn check_certificates(&self, file: &str) -> Result<(), ConfigError> {
        for (i, t) in self.tls.iter().enumerate() {
            crate::tls::certs::CertStore::load(&t.certificates).map_err(|e| ConfigError {
                file: file.into(),
                key: format!("tls[{i}].certificates[{}].{}", e.index, e.file),
                message: e.message,
            })?;
        }
        Ok(())
    }

    /// Refuses a static `origins[].address` that does not resolve (a typo
    /// would otherwise only show as an origin that never comes up).
    pub fn check_addresses_resolve(&self, file: &str) -> Result<(), ConfigError> {
        for (i, o) in self.origins.iter().enumerate() {
            let Some(a) = &o.address else { continue };
            let resolved = a
                .to_socket_addrs()
                .map(|mut it| it.next().is_some())
                .unwrap_or(false);
            if !resolved {
                return Err(ConfigError {
                    file: file.into(),
                    key: format!("origins[{i}].address"),
                    message: format!("{a:?} does not resolve; use host:port with a reachable name or an IP, or `dns:` for names that appear later"),
                });
            }
        }
        Ok(())
    }
}

impl AdminAuth {
    /// The token from its file or variable (none when neither is set);
    /// refused when unreadable, unset or shorter than 16 characters.
    fn read_token(&self, file: &str) -> Result<Option<String>, ConfigError> {
        let (key, read) = match (&self.token_file, &self.token_env) {
            (Some(path), _) => (
                "admin_auth.token_file",
                std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display())),
            ),
            (None, Some(var)) => (
                "admin_auth.token_env",
                std::env::var(var).map_err(|_| format!("the environment has no {var}")),
            ),
            (None, None) => return Ok(None),
        };
        let fail = |message: String| ConfigError {
            file: file.into(),
            key: key.into(),
            message,
        };
        let token = read.map_err(fail)?.trim().to_string();
        if token.len() < 16 || !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(fail(
                "the token must be at least 16 visible ASCII characters, e.g. from `openssl rand -hex 24`".into(),
            ));
        }
        Ok(Some(token))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::select::PolicyName as Policy;
    use std::time::Duration;

    const MIN: &str = "origins:\n  - address: 127.0.0.1:9101\n";

    fn parse(extra: &str) -> Result<Config, ConfigError> {
        Config::parse(&format!("{MIN}{extra}"), "cdn.yaml")
    }

    #[test]
    fn minimal_file_gets_every_default() {
        let c = parse("").unwrap();
        assert_eq!(c.selection.policy, Policy::Tier);
        assert_eq!(c.selection.tier_bounds, [25.0, 50.0, 75.0]);
        assert_eq!(c.origins[0].capacity, 1.0);
        assert_eq!(c.health.interval, Duration::from_secs(1));
    }

    #[test]
    fn the_shipped_config_is_valid() {
        let text = include_str!("../../../conf/cdn.yaml");
        Config::parse(text, "conf/cdn.yaml").unwrap();
    }

    #[test]
    fn errors_name_the_file_the_key_and_the_fix() {
        let e = parse("selection:\n  weigths: {}\n").unwrap_err();
        assert_eq!(e.key, "selection.weigths");
        assert!(
            e.message
                .contains("unknown field `weigths`, expected one of"),
            "{e}"
        );
        assert!(
            e.to_string()
                .starts_with("cdn.yaml: selection.weigths: unknown field"),
            "{e}"
        );

        let e = parse("health:\n  rise: many\n").unwrap_err();
        assert_eq!(e.key, "health.rise");

        let e = parse("selection:\n  weights: {cpu: 0.5}\n").unwrap_err();
        assert_eq!(e.key, "selection.weights");
        assert!(e.message.contains("sum to 1.2000"), "{e}");

        let e = parse("selection:\n  tier_bounds: [50, 25, 75]\n").unwrap_err();
        assert_eq!(e.key, "selection.tier_bounds");

        let e = Config::parse("origins:\n  - address: no-such-host.invalid:80\n", "f.yaml")
            .and_then(|c| c.check_addresses_resolve("f.yaml"))
            .unwrap_err();
        assert_eq!(e.key, "origins[0].address");
        assert!(e.message.contains("does not resolve"));

        let e = parse("listen: [\"127.0.0.1:8080\", \"127.0.0.1:8080\"]\n").unwrap_err();
        assert_eq!(e.key, "listen[1]");
        let e = parse("listen: [\"127.0.0.1:8081\"]\n").unwrap_err();
        assert_eq!(e.key, "admin_listen");
        let e = parse("dashboard: {listen: 127.0.0.1:8081}\n").unwrap_err();
        assert_eq!(e.key, "dashboard.listen");

        let e = parse("selection:\n  policy: fastest\n").unwrap_err();
        assert_eq!(e.key, "selection.policy");
        let e = parse("timeouts:\n  connect: soon\n").unwrap_err();
        assert_eq!(e.key, "timeouts.connect");
        let e = Config::parse("origins:\n  - {address: 127.0.0.1:1, dns: a:1}\n", "f").unwrap_err();
        assert_eq!(e.key, "origins[0]");
        let e = Config::parse("origins: []\n", "f").unwrap_err();
        assert_eq!(e.key, "origins");
    }
}
