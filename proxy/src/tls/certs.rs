//! A listener's certificates, picked per handshake by the name the client
//! asks for (SNI): an exact name first, then a wildcard one level up
//! (`*.example.com`), else the first certificate listed.

use crate::config::CertificateFiles;
use pingora::tls::sign::CertifiedKey;
use pingora::tls::{CertificateDer, CryptoProvider, PrivateKeyDer};
use rustls_pki_types::pem::PemObject;
use std::collections::HashMap;
use std::sync::Arc;

/// Loaded certificates with the names each serves.
#[derive(Debug)]
pub struct CertStore {
    /// Served when no name matches, and to clients that send none.
    default: Arc<CertifiedKey>,
    /// Exact names (lowercase) → certificate.
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// `example.com` for a certificate naming `*.example.com`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
}

/// Why a certificate could not be loaded: which entry, which file, what.
#[derive(Debug, Clone, PartialEq)]
pub struct CertError {
    /// Index in the listener's `certificates`.
    pub index: usize,
    /// `cert` or `key`.
    pub file: &'static str,
    /// What is wrong, and the fix.
    pub message: String,
}

impl CertStore {
    /// Reads and checks every certificate chain and key (each key must match
    /// its certificate). Blocking file I/O.
    pub fn load(files: &[CertificateFiles]) -> Result<CertStore, CertError> {
        let provider = crypto_provider();
        let mut loaded = Vec::with_capacity(files.len());
        for (index, f) in files.iter().enumerate() {
            let fail = |file, message: String| CertError {
                index,
                file,
                message,
            };
            let chain = read_chain(&f.cert).map_err(|m| fail("cert", m))?;
            let names = names_in(&chain[0]).map_err(|m| fail("cert", m))?;
            let key = PrivateKeyDer::from_pem_file(&f.key).map_err(|e| {
                fail(
                    "key",
                    format!(
                        "{}: no PEM private key read ({e}); give a PKCS#8, PKCS#1 or SEC1 key",
                        f.key.display()
                    ),
                )
            })?;
            let certified = CertifiedKey::from_der(chain, key, &provider).map_err(|e| {
                fail(
                    "key",
                    format!(
                        "{} does not go with {}: {e}",
                        f.key.display(),
                        f.cert.display()
                    ),
                )
            })?;
            loaded.push((Arc::new(certified), names));
        }
        let Some(default) = loaded.first().map(|(c, _)| c.clone()) else {
            return Err(CertError {
                index: 0,
                file: "cert",
                message: "no certificate listed".into(),
            });
        };
        let mut store = CertStore {
            default,
            exact: HashMap::new(),
            wildcard: HashMap::new(),
        };
        // The first certificate naming a name serves it.
        for (cert, names) in loaded {
            for name in names {
                match name.strip_prefix("*.") {
                    Some(parent) => store.wildcard.entry(parent.to_string()),
                    None => store.exact.entry(name),
                }
                .or_insert_with(|| cert.clone());
            }
        }
        Ok(store)
    }

    /// The certificate for `server_name` (the client's SNI).
    pub fn pick(&self, server_name: Option<&str>) -> Arc<CertifiedKey> {
        let Some(name) = server_name else {
            return self.default.clone();
        };
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if let Some(c) = self.exact.get(&name) {
            return c.clone();
        }
        let parent = name.split_once('.').map(|(_, p)| p);
        parent
            .and_then(|p| self.wildcard.get(p))
            .unwrap_or(&self.default)
            .clone()
    }
}

/// The process's rustls crypto provider (ring, through Pingora).
fn crypto_provider() -> Arc<CryptoProvider> {
    pingora::tls::install_default_crypto_provider();
    CryptoProvider::get_default()
        .cloned()
        .expect("installed just above")
}

/// The PEM certificates in `path`, leaf first.
fn read_chain(path: &std::path::Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let chain = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            format!(
                "{}: cannot read PEM certificates: {e} (a local test one: `cdn-proxy dev-cert --dir <folder>`)",
                path.display()
            )
        })?;
    if chain.is_empty() {
        return Err(format!(
            "{}: no certificate in it; give the PEM chain, leaf first",
            path.display()
        ));
    }
    Ok(chain)
}

/// The DNS names a leaf certificate is for: its subject alternative names,
/// else its common name; lowercase.
fn names_in(leaf: &CertificateDer<'_>) -> Result<Vec<String>, String> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf)
        .map_err(|e| format!("the first certificate does not parse: {e}"))?;
    let mut names: Vec<String> = match cert.subject_alternative_name() {
        Ok(Some(san)) => (san.value.general_names.iter())
            .filter_map(|n| match n {
                GeneralName::DNSName(d) => Some(d.to_ascii_lowercase()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    if names.is_empty() {
        names.extend(
            (cert.subject().iter_common_name())
                .filter_map(|cn| cn.as_str().ok())
                .map(str::to_ascii_lowercase),
        );
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::dev_cert;

    fn store(sets: &[&[&str]]) -> (tempfile::TempDir, CertStore, Vec<Vec<u8>>) {
        let dir = tempfile::tempdir().unwrap();
        let ca = dev_cert::Authority::new().unwrap();
        let mut files = Vec::new();
        let mut leaves = Vec::new();
        for (i, names) in sets.iter().enumerate() {
            let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
            let (cert, key) = ca.leaf(&names).unwrap();
            let f = CertificateFiles {
                cert: dir.path().join(format!("{i}.crt")),
                key: dir.path().join(format!("{i}.key")),
            };
            std::fs::write(&f.cert, &cert).unwrap();
            std::fs::write(&f.key, &key).unwrap();
            leaves.push(
                CertificateDer::from_pem_slice(cert.as_bytes())
                    .unwrap()
                    .to_vec(),
            );
            files.push(f);
        }
        let s = CertStore::load(&files).unwrap();
        (dir, s, leaves)
    }

    fn leaf_of(c: &CertifiedKey) -> Vec<u8> {
        c.cert[0].to_vec()
    }

    #[test]
    fn names_pick_their_certificate_and_others_get_the_first() {
        let (_d, s, leaves) = store(&[&["a.test"], &["b.test", "*.media.test"]]);
        assert_eq!(leaf_of(&s.pick(Some("b.test"))), leaves[1]);
        assert_eq!(leaf_of(&s.pick(Some("B.Test."))), leaves[1]);
        assert_eq!(leaf_of(&s.pick(Some("eu.media.test"))), leaves[1]);
        // A wildcard covers one label only.
        assert_eq!(leaf_of(&s.pick(Some("x.eu.media.test"))), leaves[0]);
        assert_eq!(leaf_of(&s.pick(Some("other.test"))), leaves[0]);
        assert_eq!(leaf_of(&s.pick(None)), leaves[0]);
    }

    #[test]
    fn a_key_of_another_certificate_is_refused() {
        let (dir, _s, _) = store(&[&["a.test"], &["b.test"]]);
        let crossed = CertificateFiles {
            cert: dir.path().join("0.crt"),
            key: dir.path().join("1.key"),
        };
        let e = CertStore::load(&[crossed]).unwrap_err();
        assert_eq!((e.index, e.file), (0, "key"));
        assert!(e.message.contains("does not go with"), "{}", e.message);
    }

    #[test]
    fn missing_and_empty_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let e = CertStore::load(&[CertificateFiles {
            cert: empty.clone(),
            key: empty.clone(),
        }])
        .unwrap_err();
        assert_eq!(e.file, "cert");
        assert!(e.message.contains("no certificate"), "{}", e.message);
        let e = CertStore::load(&[CertificateFiles {
            cert: dir.path().join("absent.pem"),
            key: empty,
        }])
        .unwrap_err();
        assert!(e.message.contains("absent.pem"), "{}", e.message);
    }
}
