//! A local certificate authority and a leaf certificate for trying HTTPS
//! on one machine (`cdn-proxy dev-cert`, run by `make run`): made once,
//! kept in a folder, remade only when the leaf is near its end.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use std::path::{Path, PathBuf};
use time::{Duration, OffsetDateTime};

/// How long a leaf is valid: under the 398 days browsers accept.
const LEAF_DAYS: i64 = 397;
/// A leaf this close to its end is remade.
const RENEW_DAYS: i64 = 30;

/// A certificate authority that signs leaf certificates.
pub struct Authority {
    /// Its certificate, PEM (the file clients are told to trust).
    pub cert_pem: String,
    /// Its key, PEM.
    key_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Authority {
    /// A new authority, valid ten years.
    pub fn new() -> Result<Authority, rcgen::Error> {
        let mut params = authority_params()?;
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::days(1);
        params.not_after = now + Duration::days(3650);
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        Ok(Authority {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// The authority kept in `cert`/`key` PEM files.
    fn read(cert: &Path, key: &Path) -> Result<Authority, String> {
        let cert_pem =
            std::fs::read_to_string(cert).map_err(|e| format!("{}: {e}", cert.display()))?;
        let key_pem =
            std::fs::read_to_string(key).map_err(|e| format!("{}: {e}", key.display()))?;
        let pair = KeyPair::from_pem(&key_pem).map_err(|e| format!("{}: {e}", key.display()))?;
        // The issuer's name and key are all a leaf takes from it.
        let params = authority_params().map_err(|e| e.to_string())?;
        Ok(Authority {
            cert_pem,
            key_pem,
            issuer: Issuer::new(params, pair),
        })
    }

    /// A leaf certificate for `names` (DNS names or IP literals) signed by
    /// this authority: (certificate PEM, key PEM).
    pub fn leaf(&self, names: &[String]) -> Result<(String, String), rcgen::Error> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        for n in names {
            params.subject_alt_names.push(match n.parse() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(n.clone().try_into()?),
            });
        }
        if let Some(first) = names.first() {
            params.distinguished_name.push(DnType::CommonName, first);
        }
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::days(1);
        params.not_after = now + Duration::days(LEAF_DAYS);
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}

/// The authority's name and uses (the same every time it is read back).
fn authority_params() -> Result<CertificateParams, rcgen::Error> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    (params.distinguished_name).push(DnType::CommonName, "cdn-proxy local development CA");
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    Ok(params)
}

/// The files `ensure` keeps in its folder.
pub struct DevFiles {
    /// The authority's certificate: what clients trust (`curl --cacert`).
    pub ca: PathBuf,
    /// The leaf certificate the listener serves.
    pub cert: PathBuf,
    /// The leaf's key.
    pub key: PathBuf,
    /// Whether anything was made this time.
    pub made: bool,
}

/// Makes `dir`/{ca.pem, ca.key, cert.pem, key.pem} for `names`, unless a
/// leaf is there for more than `RENEW_DAYS`; the authority is kept across renewals.
pub fn ensure(dir: &Path, names: &[String]) -> Result<DevFiles, String> {
    let files = DevFiles {
        ca: dir.join("ca.pem"),
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
        made: false,
    };
    let ca_key = dir.join("ca.key");
    if files.key.exists() && leaf_days_left(&files.cert).is_some_and(|d| d > RENEW_DAYS) {
        return Ok(files);
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let ca = match Authority::read(&files.ca, &ca_key) {
        Ok(ca) => ca,
        Err(_) => {
            let ca = Authority::new().map_err(|e| e.to_string())?;
            write_private(&ca_key, &ca.key_pem)?;
            write(&files.ca, &ca.cert_pem)?;
            ca
        }
    };
    let (cert, key) = ca.leaf(names).map_err(|e| e.to_string())?;
    write_private(&files.key, &key)?;
    write(&files.cert, &cert)?;
    Ok(DevFiles {
        made: true,
        ..files
    })
}

/// Days until the PEM certificate in `path` expires; `None` if unreadable.
fn leaf_days_left(path: &Path) -> Option<i64> {
    let pem = std::fs::read(path).ok()?;
    let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).ok()?;
    let cert = pem.parse_x509().ok()?;
    let left = cert.validity().not_after.timestamp() - OffsetDateTime::now_utc().unix_timestamp();
    Some(left / 86_400)
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Writes a key readable by its owner only.
fn write_private(path: &Path, text: &str) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    f.write_all(text.as_bytes())
        .map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_made_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let names = ["localhost".to_string(), "127.0.0.1".to_string()];
        let first = ensure(dir.path(), &names).unwrap();
        assert!(first.made);
        let cert = std::fs::read(&first.cert).unwrap();
        let again = ensure(dir.path(), &names).unwrap();
        assert!(!again.made);
        assert_eq!(std::fs::read(&again.cert).unwrap(), cert);
        assert!(leaf_days_left(&again.cert).unwrap() > 390);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&again.key).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "the key is private");
    }
}
