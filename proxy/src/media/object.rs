//! The object a stream delivers, as the first slice's response fixed it:
//! size, validator, and the header the client gets. Every later slice is
//! checked against it, so two versions of a file are never spliced.

use super::slicing::content_range;
use super::HOP_BY_HOP;
use cdn_types::range::Validators;
use http::header::{CONTENT_RANGE, ETAG, LAST_MODIFIED};
use http::HeaderValue;
use pingora::http::ResponseHeader;
use std::ops::RangeInclusive;

/// What the first slice's response said about the object.
#[derive(Debug)]
pub struct Object {
    /// Its size in bytes.
    pub size: u64,
    /// Its strong entity tag, if it has one.
    pub etag: Option<HeaderValue>,
    /// Its `Last-Modified`, if any.
    pub last_modified: Option<HeaderValue>,
    /// The response's object headers (type, validators, caching), without
    /// the per-connection and per-range ones.
    pub headers: ResponseHeader,
}

/// Why a slice's response cannot be part of this stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mismatch {
    /// Not a 206 (a 200 to `If-Range` means the object changed).
    Status(u16),
    /// No or a malformed Content-Range.
    NoContentRange,
    /// Other bytes, or another size, than asked.
    Range {
        /// What we asked for.
        asked: RangeInclusive<u64>,
        /// What the Content-Range said.
        got: String,
    },
    /// Another validator: the object changed between slices.
    Validator,
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Mismatch::Status(s) => write!(f, "status {s} where 206 was expected"),
            Mismatch::NoContentRange => f.write_str("no valid Content-Range"),
            Mismatch::Range { asked, got } => {
                write!(
                    f,
                    "asked for bytes {}-{}, got {got}",
                    asked.start(),
                    asked.end()
                )
            }
            Mismatch::Validator => f.write_str("the object's validator changed"),
        }
    }
}

impl Object {
    /// Reads the object from a 206: its Content-Range (size) and validators.
    /// `None` if the response has no usable Content-Range.
    pub fn from_first(resp: &ResponseHeader) -> Option<(Object, RangeInclusive<u64>)> {
        let cr = resp.headers.get(CONTENT_RANGE)?.to_str().ok()?;
        let (range, size) = content_range(cr)?;
        // A weak tag cannot validate a range (RFC 9110 §13.1.5).
        let etag = resp
            .headers
            .get(ETAG)
            .filter(|t| t.as_bytes().first() == Some(&b'"'))
            .cloned();
        let mut headers = ResponseHeader::build(200, Some(resp.headers.len())).ok()?;
        for (name, value) in &resp.headers {
            let n = name.as_str();
            // Per connection or per range, not the object's.
            let per_response =
                HOP_BY_HOP.contains(&n) || matches!(n, "content-range" | "content-length");
            if !per_response && n != cdn_types::LOAD_HEADER {
                headers.append_header(name.clone(), value.clone()).ok()?;
            }
        }
        let object = Object {
            size,
            etag,
            last_modified: resp.headers.get(LAST_MODIFIED).cloned(),
            headers,
        };
        Some((object, range))
    }

    /// The object a cache entry holds.
    pub fn from_entry(entry: &crate::cache::Entry) -> Object {
        let value = |v: &Option<String>| v.as_deref().and_then(|v| HeaderValue::from_str(v).ok());
        Object {
            size: entry.meta.size,
            etag: value(&entry.meta.etag),
            last_modified: value(&entry.meta.last_modified),
            headers: entry.headers.clone(),
        }
    }

    /// The object's headers as name and value pairs, as the cache stores them.
    pub fn header_pairs(&self) -> Vec<(String, String)> {
        header_pairs(&self.headers)
    }

    /// The value for `If-Range` on later slices: the strong ETag, else the
    /// date. `None`: nothing can tell two versions apart.
    pub fn if_range(&self) -> Option<&HeaderValue> {
        self.etag.as_ref().or(self.last_modified.as_ref())
    }

    /// The validators in the form the shared Range rules take.
    pub fn validators(&self) -> Validators {
        let text =
            |v: &Option<HeaderValue>| v.as_ref().and_then(|v| v.to_str().ok()).map(str::to_owned);
        Validators {
            size: self.size,
            etag: text(&self.etag).unwrap_or_default(),
            last_modified: text(&self.last_modified)
                .and_then(|d| httpdate::parse_http_date(&d).ok()),
        }
    }

    /// Checks a later slice's response: a 206 of exactly `asked`, of this
    /// object (same size and validator).
    pub fn check(
        &self,
        resp: &ResponseHeader,
        asked: &RangeInclusive<u64>,
    ) -> Result<(), Mismatch> {
        let status = resp.status.as_u16();
        if status != 206 {
            return Err(Mismatch::Status(status));
        }
        let cr = resp
            .headers
            .get(CONTENT_RANGE)
            .and_then(|v| v.to_str().ok())
            .ok_or(Mismatch::NoContentRange)?;
        match content_range(cr) {
            Some((got, size)) if got == *asked && size == self.size => {}
            Some(_) => {
                return Err(Mismatch::Range {
                    asked: asked.clone(),
                    got: cr.to_owned(),
                })
            }
            None => return Err(Mismatch::NoContentRange),
        }
        let same = |ours: &Option<HeaderValue>, name| match ours {
            Some(v) => resp.headers.get(name) == Some(v),
            None => true,
        };
        if same(&self.etag, ETAG) && same(&self.last_modified, LAST_MODIFIED) {
            Ok(())
        } else {
            Err(Mismatch::Validator)
        }
    }

    /// The client's response header: the object's headers with `status`
    /// and, for a 206, the Content-Range of `range`.
    pub fn client_header(
        &self,
        status: u16,
        range: &RangeInclusive<u64>,
    ) -> pingora::Result<ResponseHeader> {
        let mut h = self.headers.clone();
        h.set_status(status)?;
        let len = range.end() - range.start() + 1;
        h.insert_header("content-length", len.to_string())?;
        if status == 206 {
            let cr = format!("bytes {}-{}/{}", range.start(), range.end(), self.size);
            h.insert_header("content-range", cr)?;
        }
        Ok(h)
    }
}

/// A header's fields as name and value pairs (values that are not text left out).
pub fn header_pairs(h: &ResponseHeader) -> Vec<(String, String)> {
    (h.headers.iter())
        .filter_map(|(n, v)| Some((n.as_str().to_string(), v.to_str().ok()?.to_string())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(status: u16, pairs: &[(&str, &str)]) -> ResponseHeader {
        let mut r = ResponseHeader::build(status, None).unwrap();
        for (k, v) in pairs {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    fn first() -> Object {
        let r = resp(
            206,
            &[
                ("content-range", "bytes 0-9/100"),
                ("content-length", "10"),
                ("etag", "\"v1\""),
                ("last-modified", "Sat, 28 Nov 2026 10:00:00 GMT"),
                ("content-type", "video/mp4"),
                ("connection", "keep-alive"),
                (cdn_types::LOAD_HEADER, "TEXT cpu_utilization=0.1"),
            ],
        );
        let (o, range) = Object::from_first(&r).unwrap();
        assert_eq!(range, 0..=9);
        o
    }

    #[test]
    fn the_first_response_fixes_size_validators_and_headers() {
        let o = first();
        assert_eq!(o.size, 100);
        assert_eq!(o.if_range().unwrap(), "\"v1\"");
        let h = o.client_header(206, &(10..=19)).unwrap();
        assert_eq!(h.headers["content-range"], "bytes 10-19/100");
        assert_eq!(h.headers["content-length"], "10");
        assert_eq!(h.headers["content-type"], "video/mp4");
        assert!(h.headers.get("connection").is_none());
        assert!(h.headers.get(cdn_types::LOAD_HEADER).is_none());
        let full = o.client_header(200, &(0..=99)).unwrap();
        assert!(full.headers.get("content-range").is_none());
        assert_eq!(full.headers["content-length"], "100");
    }

    #[test]
    fn a_weak_etag_leaves_the_date_as_validator() {
        let r = resp(
            206,
            &[
                ("content-range", "bytes 0-9/100"),
                ("etag", "W/\"v1\""),
                ("last-modified", "Sat, 28 Nov 2026 10:00:00 GMT"),
            ],
        );
        let (o, _) = Object::from_first(&r).unwrap();
        assert_eq!(o.if_range().unwrap(), "Sat, 28 Nov 2026 10:00:00 GMT");
    }

    #[test]
    fn later_slices_must_be_the_same_object() {
        let o = first();
        let ok = |cr: &str, etag: &str| {
            let r = resp(
                206,
                &[
                    ("content-range", cr),
                    ("etag", etag),
                    ("last-modified", "Sat, 28 Nov 2026 10:00:00 GMT"),
                ],
            );
            o.check(&r, &(10..=19))
        };
        assert_eq!(ok("bytes 10-19/100", "\"v1\""), Ok(()));
        assert_eq!(ok("bytes 10-19/100", "\"v2\""), Err(Mismatch::Validator));
        assert!(matches!(
            ok("bytes 10-18/100", "\"v1\""),
            Err(Mismatch::Range { .. })
        ));
        assert!(matches!(
            ok("bytes 10-19/101", "\"v1\""),
            Err(Mismatch::Range { .. })
        ));
        let changed = resp(200, &[("etag", "\"v2\"")]);
        assert_eq!(o.check(&changed, &(10..=19)), Err(Mismatch::Status(200)));
    }
}
