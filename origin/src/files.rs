//! The media folder: safe resolution of request paths to files, and the catalog.
//!
//! Every request path is checked twice: syntactically (no `..`, no encoded
//! separators, no NUL, no empty segments) and then physically (the canonical
//! path, symlinks resolved, must still lie inside the canonical media root).
//! Anything that fails either check is simply "not found".

use percent_encoding::percent_decode_str;
use serde::Serialize;
use std::fs::{File, Metadata};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// A media folder whose files are served under `/videos/`.
#[derive(Debug, Clone)]
pub struct Media {
    root: PathBuf,
}

/// A file opened for serving, with the metadata its validators come from.
#[derive(Debug)]
pub struct OpenFile {
    /// The open file handle; reads happen on the blocking pool.
    pub file: File,
    /// Size in bytes at open time.
    pub size: u64,
    /// Modification time at open time.
    pub modified: SystemTime,
    /// Path relative to the media root, with `/` separators (used for Content-Type).
    pub name: String,
}

/// One entry of the `/videos` JSON catalog.
#[derive(Debug, Serialize)]
pub struct CatalogEntry {
    /// Path relative to the media root, `/`-separated.
    pub name: String,
    /// URL path that serves it.
    pub url: String,
    /// Size in bytes.
    pub size: u64,
    /// Content type derived from the extension.
    pub content_type: &'static str,
    /// The strong ETag the file is served with.
    pub etag: String,
    /// Modification time, RFC 3339 UTC.
    pub modified: String,
}

impl Media {
    /// Opens a media folder; it must exist and be a directory.
    pub fn new(root: &Path) -> io::Result<Self> {
        let root = root.canonicalize().map_err(|e| {
            io::Error::new(e.kind(), format!("media folder {}: {e}", root.display()))
        })?;
        if !root.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("media folder {} is not a directory", root.display()),
            ));
        }
        Ok(Media { root })
    }

    /// The canonical media root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Opens a file by its decoded path relative to the root (as
    /// [`decode_request_path`] returns it). `Ok(None)` means "not found" for
    /// any reason a client could cause; `Err` is left for server-side I/O
    /// failures. Blocking: call from the blocking pool.
    pub fn open(&self, rel: &str) -> io::Result<Option<OpenFile>> {
        if !is_safe_relative(rel) {
            return Ok(None);
        }
        let rel = rel.to_string();
        let candidate = self.root.join(&rel);
        let canonical = match candidate.canonicalize() {
            Ok(p) => p,
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => return Err(e),
        };
        // Symlinks may point anywhere; only what stays under the root is served.
        if !canonical.starts_with(&self.root) {
            return Ok(None);
        }
        let file = match File::open(&canonical) {
            Ok(f) => f,
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => return Err(e),
        };
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Ok(None);
        }
        Ok(Some(OpenFile {
            file,
            size: meta.len(),
            modified: modified(&meta),
            name: rel,
        }))
    }

    /// Lists every regular file under the root (symlinks are not listed), sorted by name.
    /// Blocking: call from the blocking pool.
    pub fn catalog(&self) -> Vec<CatalogEntry> {
        let mut entries: Vec<CatalogEntry> = walkdir::WalkDir::new(&self.root)
            .follow_links(false)
            .into_iter()
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_file())
            .filter_map(|e| {
                let meta = e.metadata().ok()?;
                let rel = e.path().strip_prefix(&self.root).ok()?;
                let name = rel
                    .components()
                    .map(|c| c.as_os_str().to_str())
                    .collect::<Option<Vec<_>>>()?
                    .join("/");
                let modified = modified(&meta);
                Some(CatalogEntry {
                    url: format!("/videos/{}", encode_path(&name)),
                    size: meta.len(),
                    content_type: content_type(&name),
                    etag: etag(meta.len(), modified),
                    modified: humantime::format_rfc3339_seconds(modified).to_string(),
                    name,
                })
            })
            .collect();
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        entries
    }
}

/// Decodes a percent-encoded request path (the part after `/videos/`) into a
/// safe relative path, or `None` if it could name anything outside the
/// folder or is malformed.
pub fn decode_request_path(encoded: &str) -> Option<String> {
    // An encoded separator would let a client smuggle `/` or `\` past the segment check.
    let lower = encoded.to_ascii_lowercase();
    if lower.contains("%2f") || lower.contains("%5c") {
        return None;
    }
    let decoded = percent_decode_str(encoded).decode_utf8().ok()?;
    is_safe_relative(&decoded).then(|| decoded.into_owned())
}

/// A relative path of plain segments: no `.`/`..`, no empty segment (so no
/// leading `/`), no NUL, no backslash.
pub fn is_safe_relative(rel: &str) -> bool {
    !rel.is_empty()
        && !rel.contains('\0')
        && !rel.contains('\\')
        && rel
            .split('/')
            .all(|seg| !seg.is_empty() && seg != "." && seg != "..")
}

/// The strong ETag of a file: its size and modification time in nanoseconds.
/// Any write that changes either changes the tag (as nginx and Apache do).
pub fn etag(size: u64, modified: SystemTime) -> String {
    let nanos = modified
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("\"{size:x}-{nanos:x}\"")
}

/// Content type from the file extension; `application/octet-stream` when unknown.
pub fn content_type(name: &str) -> &'static str {
    let ext = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
    // Streaming formats mime_guess gets wrong or does not know, as players
    // and the HLS (RFC 8216) and DASH specifications name them.
    let streaming = match ext.as_deref() {
        Some("m3u8") => Some("application/vnd.apple.mpegurl"),
        Some("ts") => Some("video/mp2t"),
        Some("m4s") => Some("video/iso.segment"),
        Some("mpd") => Some("application/dash+xml"),
        _ => None,
    };
    streaming.unwrap_or_else(|| {
        mime_guess::from_path(name)
            .first_raw()
            .unwrap_or("application/octet-stream")
    })
}

/// Is this file a playlist or manifest (HLS `.m3u8`, DASH `.mpd`), which a
/// live stream rewrites, rather than media, which never changes?
pub fn is_manifest(name: &str) -> bool {
    let ext = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
    matches!(ext.as_deref(), Some("m3u8" | "mpd"))
}

fn modified(meta: &Metadata) -> SystemTime {
    meta.modified().unwrap_or(UNIX_EPOCH)
}

fn is_not_found(e: &io::Error) -> bool {
    // ENOTDIR (a file used as a folder) and ELOOP are client-caused too.
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory | io::ErrorKind::PermissionDenied
    ) || e.raw_os_error() == Some(40)
}

fn encode_path(name: &str) -> String {
    use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};
    const SEGMENT: &AsciiSet = &CONTROLS
        .add(b' ')
        .add(b'"')
        .add(b'#')
        .add(b'%')
        .add(b'?')
        .add(b'<')
        .add(b'>')
        .add(b'`')
        .add(b'{')
        .add(b'}');
    utf8_percent_encode(name, SEGMENT).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_and_nested_paths() {
        assert_eq!(decode_request_path("a.mp4").as_deref(), Some("a.mp4"));
        assert_eq!(
            decode_request_path("sub/b.mp4").as_deref(),
            Some("sub/b.mp4")
        );
        assert_eq!(
            decode_request_path("my%20clip.mp4").as_deref(),
            Some("my clip.mp4")
        );
    }

    #[test]
    fn refuses_traversal_and_malformed_paths() {
        for bad in [
            "../etc/passwd",
            "sub/../../x",
            "%2e%2e/x",
            "%2E%2E/x",
            "sub%2f..%2fx",
            "..%5cx",
            "/etc/passwd",
            "a//b",
            "./a",
            "a%00b",
            "",
            "%ff",
        ] {
            assert_eq!(decode_request_path(bad), None, "{bad:?} must be refused");
        }
    }

    #[test]
    fn etag_changes_with_size_and_time() {
        let t = UNIX_EPOCH + std::time::Duration::from_nanos(1_700_000_000_123_456_789);
        let a = etag(10, t);
        assert!(a.starts_with('"') && a.ends_with('"'));
        assert_ne!(a, etag(11, t));
        assert_ne!(a, etag(10, t + std::time::Duration::from_nanos(1)));
    }

    #[test]
    fn content_type_from_extension() {
        assert_eq!(content_type("x/clip.mp4"), "video/mp4");
        assert_eq!(content_type("noext"), "application/octet-stream");
        assert_eq!(content_type("hls/a.M3U8"), "application/vnd.apple.mpegurl");
        assert_eq!(content_type("hls/seg1.ts"), "video/mp2t");
        assert_eq!(content_type("dash/chunk-1.m4s"), "video/iso.segment");
        assert_eq!(content_type("dash/manifest.mpd"), "application/dash+xml");
        assert!(is_manifest("hls/a.m3u8") && is_manifest("m.MPD"));
        assert!(!is_manifest("seg.ts") && !is_manifest("m3u8"));
    }
}
