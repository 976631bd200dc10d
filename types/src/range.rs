//! What to send for a GET or HEAD of a file: conditional requests and Range
//! (RFC 9110 §13 and §14), evaluated in the order §13.2.2 prescribes.
//!
//! Shared by cdn-origin, which serves files with it, and cdn-proxy's media
//! path, which answers a client from the slices it fetches.
//!
//! Range syntax is parsed by the `http-range-header` crate; this module only
//! applies RFC rules the crate leaves to the server (suffix longer than the
//! file, parts that start past the end, our cap on the number of parts).

use http::header::{
    IF_MATCH, IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_RANGE, IF_UNMODIFIED_SINCE, RANGE,
};
use http::HeaderMap;
use http_range_header::{ParsedRanges, RangeUnsatisfiableError, StartPosition};
use std::ops::RangeInclusive;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// More parts than this in one Range header and the header is ignored (full 200).
pub const MAX_RANGES: usize = 16;

/// The validators of the file being served.
#[derive(Debug, Clone)]
pub struct Validators {
    /// Size in bytes.
    pub size: u64,
    /// Strong entity tag, quoted.
    pub etag: String,
    /// Last modification, truncated to whole seconds as HTTP dates are
    /// (`None` when the representation has none: date conditions are then ignored).
    pub last_modified: Option<SystemTime>,
}

impl Validators {
    /// Builds validators, truncating the modification time to seconds.
    pub fn new(size: u64, etag: String, modified: SystemTime) -> Self {
        let secs = modified
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        Validators {
            size,
            etag,
            last_modified: Some(UNIX_EPOCH + Duration::from_secs(secs)),
        }
    }
}

/// The decision for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// 200 with the whole file.
    Full,
    /// 206 with these byte ranges (one → plain 206, several → multipart/byteranges).
    Partial(Vec<RangeInclusive<u64>>),
    /// 304 Not Modified.
    NotModified,
    /// 412 Precondition Failed.
    PreconditionFailed,
    /// 416 Range Not Satisfiable.
    Unsatisfiable,
}

/// Evaluates the conditional and Range headers of a GET or HEAD request.
pub fn evaluate(headers: &HeaderMap, v: &Validators) -> Outcome {
    // Step 1/2: If-Match, else If-Unmodified-Since.
    if let Some(im) = header_str(headers, &IF_MATCH) {
        if !etag_list_matches(im, &v.etag, true) {
            return Outcome::PreconditionFailed;
        }
    } else if let (Some(date), Some(modified)) =
        (header_date(headers, &IF_UNMODIFIED_SINCE), v.last_modified)
    {
        if modified > date {
            return Outcome::PreconditionFailed;
        }
    }
    // Step 3/4: If-None-Match, else If-Modified-Since (GET/HEAD only, which is all we serve).
    if let Some(inm) = header_str(headers, &IF_NONE_MATCH) {
        if etag_list_matches(inm, &v.etag, false) {
            return Outcome::NotModified;
        }
    } else if let (Some(date), Some(modified)) =
        (header_date(headers, &IF_MODIFIED_SINCE), v.last_modified)
    {
        if modified <= date {
            return Outcome::NotModified;
        }
    }
    range_outcome(headers, v)
}

/// Step 5 alone: Range, gated by If-Range (for a caller whose preconditions
/// were already evaluated, e.g. by the origin).
pub fn range_outcome(headers: &HeaderMap, v: &Validators) -> Outcome {
    let Some(range) = header_str(headers, &RANGE) else {
        return Outcome::Full;
    };
    if let Some(if_range) = header_str(headers, &IF_RANGE) {
        if !if_range_matches(if_range, v) {
            return Outcome::Full;
        }
    }
    ranges(range, v.size)
}

/// Resolves a Range header value against a file size.
///
/// Policy (RFC 9110 §14.2 lets a server ignore Range): a syntactically
/// invalid header, overlapping parts, reversed parts or more than
/// [`MAX_RANGES`] parts are ignored and the full 200 is sent, which costs no
/// more than a plain GET. Parts that start past the end are dropped; if none
/// is left the answer is 416.
pub fn ranges(value: &str, size: u64) -> Outcome {
    let Ok(parsed) = http_range_header::parse_range_header(value) else {
        return Outcome::Full;
    };
    if parsed.ranges.len() > MAX_RANGES {
        return Outcome::Full;
    }
    let satisfiable: Vec<_> = parsed
        .ranges
        .into_iter()
        .filter_map(|mut r| {
            match r.start {
                // A suffix longer than the file means the whole file (§14.1.3).
                StartPosition::FromLast(n) if n > size => r.start = StartPosition::Index(0),
                StartPosition::Index(i) if i >= size => return None,
                _ => {}
            }
            // A suffix range on an empty file selects nothing.
            (size > 0).then_some(r)
        })
        .collect();
    if satisfiable.is_empty() {
        return Outcome::Unsatisfiable;
    }
    match (ParsedRanges {
        ranges: satisfiable,
    })
    .validate(size)
    {
        Ok(r) => Outcome::Partial(r),
        Err(RangeUnsatisfiableError::FileSuffixOutOfBounds) => Outcome::Unsatisfiable,
        Err(_) => Outcome::Full,
    }
}

fn header_str<'a>(headers: &'a HeaderMap, name: &http::HeaderName) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn header_date(headers: &HeaderMap, name: &http::HeaderName) -> Option<SystemTime> {
    header_str(headers, name).and_then(|s| httpdate::parse_http_date(s).ok())
}

/// Does a list of entity tags (or `*`) match ours? `strong` selects the
/// strong comparison (If-Match) over the weak one (If-None-Match).
fn etag_list_matches(list: &str, ours: &str, strong: bool) -> bool {
    if list.trim() == "*" {
        return true;
    }
    list.split(',').map(str::trim).any(|tag| {
        let (weak, opaque) = match tag.strip_prefix("W/") {
            Some(rest) => (true, rest),
            None => (false, tag),
        };
        opaque == ours && !(strong && weak)
    })
}

/// If-Range matches only on a strong ETag match or an exact date match.
fn if_range_matches(value: &str, v: &Validators) -> bool {
    let value = value.trim();
    if value.starts_with('"') {
        return value == v.etag;
    }
    if value.starts_with("W/") {
        return false;
    }
    httpdate::parse_http_date(value).is_ok_and(|d| Some(d) == v.last_modified)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn v() -> Validators {
        Validators::new(
            1000,
            "\"abc\"".into(),
            UNIX_EPOCH + Duration::from_millis(1_700_000_000_500),
        )
    }

    fn eval(pairs: &[(&http::HeaderName, &str)]) -> Outcome {
        let mut h = HeaderMap::new();
        for (k, val) in pairs {
            h.insert(*k, HeaderValue::from_str(val).unwrap());
        }
        evaluate(&h, &v())
    }

    fn date(secs: u64) -> String {
        httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(secs))
    }

    #[test]
    fn single_ranges() {
        assert_eq!(ranges("bytes=0-99", 1000), Outcome::Partial(vec![0..=99]));
        assert_eq!(
            ranges("bytes=900-", 1000),
            Outcome::Partial(vec![900..=999])
        );
        assert_eq!(
            ranges("bytes=-100", 1000),
            Outcome::Partial(vec![900..=999])
        );
        // Past the end: clipped.
        assert_eq!(
            ranges("bytes=990-5000", 1000),
            Outcome::Partial(vec![990..=999])
        );
        // Suffix longer than the file: the whole file, as a 206.
        assert_eq!(ranges("bytes=-5000", 1000), Outcome::Partial(vec![0..=999]));
    }

    #[test]
    fn unsatisfiable_and_ignored_ranges() {
        assert_eq!(ranges("bytes=1000-", 1000), Outcome::Unsatisfiable);
        assert_eq!(ranges("bytes=2000-3000", 1000), Outcome::Unsatisfiable);
        assert_eq!(ranges("bytes=0-", 0), Outcome::Unsatisfiable);
        assert_eq!(ranges("bytes=-5", 0), Outcome::Unsatisfiable);
        // Syntactically invalid: ignored.
        for bad in [
            "bytes=abc",
            "items=0-1",
            "bytes=",
            "bytes=5-2",
            "bytes=--1",
            "0-1",
        ] {
            assert_eq!(ranges(bad, 1000), Outcome::Full, "{bad}");
        }
    }

    #[test]
    fn multiple_ranges_and_their_limits() {
        assert_eq!(
            ranges("bytes=0-9, 20-29", 1000),
            Outcome::Partial(vec![0..=9, 20..=29])
        );
        // An unsatisfiable part is dropped, the rest served.
        assert_eq!(
            ranges("bytes=0-9, 5000-6000", 1000),
            Outcome::Partial(vec![0..=9])
        );
        // Overlap and too many parts: ignored.
        assert_eq!(ranges("bytes=0-50, 40-60", 1000), Outcome::Full);
        let many = (0..=MAX_RANGES)
            .map(|i| format!("{}-{}", i * 10, i * 10 + 1))
            .collect::<Vec<_>>()
            .join(",");
        assert_eq!(ranges(&format!("bytes={many}"), 1000), Outcome::Full);
    }

    #[test]
    fn conditionals_follow_rfc_9110_order() {
        assert_eq!(eval(&[(&IF_MATCH, "\"abc\"")]), Outcome::Full);
        assert_eq!(eval(&[(&IF_MATCH, "*")]), Outcome::Full);
        assert_eq!(eval(&[(&IF_MATCH, "\"zzz\"")]), Outcome::PreconditionFailed);
        assert_eq!(
            eval(&[(&IF_MATCH, "W/\"abc\"")]),
            Outcome::PreconditionFailed
        );
        assert_eq!(
            eval(&[(&IF_UNMODIFIED_SINCE, &date(1_600_000_000))]),
            Outcome::PreconditionFailed
        );
        assert_eq!(
            eval(&[(&IF_UNMODIFIED_SINCE, &date(1_700_000_000))]),
            Outcome::Full
        );
        assert_eq!(
            eval(&[(&IF_NONE_MATCH, "\"x\", W/\"abc\"")]),
            Outcome::NotModified
        );
        assert_eq!(eval(&[(&IF_NONE_MATCH, "\"x\"")]), Outcome::Full);
        assert_eq!(
            eval(&[(&IF_MODIFIED_SINCE, &date(1_700_000_000))]),
            Outcome::NotModified
        );
        assert_eq!(
            eval(&[(&IF_MODIFIED_SINCE, &date(1_699_999_999))]),
            Outcome::Full
        );
        // If-None-Match takes precedence over If-Modified-Since.
        assert_eq!(
            eval(&[
                (&IF_NONE_MATCH, "\"x\""),
                (&IF_MODIFIED_SINCE, &date(1_800_000_000))
            ]),
            Outcome::Full
        );
        // If-Match failing wins over a Range.
        assert_eq!(
            eval(&[(&IF_MATCH, "\"x\""), (&RANGE, "bytes=0-1")]),
            Outcome::PreconditionFailed
        );
    }

    #[test]
    fn if_range_gates_the_range() {
        assert_eq!(
            eval(&[(&RANGE, "bytes=0-1"), (&IF_RANGE, "\"abc\"")]),
            Outcome::Partial(vec![0..=1])
        );
        assert_eq!(
            eval(&[(&RANGE, "bytes=0-1"), (&IF_RANGE, "\"old\"")]),
            Outcome::Full
        );
        assert_eq!(
            eval(&[(&RANGE, "bytes=0-1"), (&IF_RANGE, "W/\"abc\"")]),
            Outcome::Full
        );
        assert_eq!(
            eval(&[(&RANGE, "bytes=0-1"), (&IF_RANGE, &date(1_700_000_000))]),
            Outcome::Partial(vec![0..=1])
        );
        assert_eq!(
            eval(&[(&RANGE, "bytes=0-1"), (&IF_RANGE, &date(1_600_000_000))]),
            Outcome::Full
        );
    }
}
