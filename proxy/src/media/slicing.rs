//! Slice arithmetic: which bytes a client asked for, what to ask an origin
//! for first, and where the slice holding a byte ends. Pure, no I/O.
//!
//! Slice `i` covers bytes `[i·size, (i+1)·size)` of the object, aligned as
//! nginx's slice module aligns them, so the edge cache can key its entries by
//! slice index. A fetch never crosses a slice boundary: a stream of N slices
//! is N origin requests, each picked by the balancer on its own.

use http_range_header::{EndPosition, StartPosition};
use std::ops::RangeInclusive;

/// What a client's `Range` header asks for, before the object's size is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asked {
    /// No usable Range (absent or malformed, which the origin ignores too): the whole object.
    Whole,
    /// `bytes=a-` (`None`) or `bytes=a-b`.
    From(u64, Option<u64>),
    /// `bytes=-n`: the last `n` bytes.
    Suffix(u64),
    /// Several ranges (multipart/byteranges): left to the plain proxy path.
    Several,
}

impl Asked {
    /// Reads a `Range` header value (`None`: no header).
    pub fn of(range: Option<&str>) -> Asked {
        let Some(value) = range else {
            return Asked::Whole;
        };
        match http_range_header::parse_range_header(value) {
            Ok(parsed) if parsed.ranges.len() == 1 => {
                let r = &parsed.ranges[0];
                match (r.start, r.end) {
                    // Reversed: invalid, so ignored (RFC 9110 §14.1.1).
                    (StartPosition::Index(a), EndPosition::Index(b)) if b < a => Asked::Whole,
                    (StartPosition::Index(a), EndPosition::Index(b)) => Asked::From(a, Some(b)),
                    (StartPosition::Index(a), EndPosition::LastByte) => Asked::From(a, None),
                    (StartPosition::FromLast(n), _) => Asked::Suffix(n),
                }
            }
            Ok(parsed) if parsed.ranges.len() > 1 => Asked::Several,
            _ => Asked::Whole,
        }
    }
}

/// The byte range of the first origin request: it learns the object (size,
/// validator, type) and, when the client's range starts there, carries its
/// first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstAsk {
    /// `bytes=a-b`, within one slice.
    Bytes(u64, u64),
    /// `bytes=-n`, a suffix no longer than a slice.
    Suffix(u64),
}

impl FirstAsk {
    /// The first request for what the client `asked`, with slices of `slice` bytes.
    /// A suffix longer than a slice only learns the object (one byte):
    /// its start is unknown until the size is.
    pub fn for_asked(asked: Asked, slice: u64) -> FirstAsk {
        match asked {
            Asked::From(a, b) => FirstAsk::Bytes(a, b.unwrap_or(u64::MAX).min(slice_end(a, slice))),
            Asked::Suffix(n) if n > 0 && n <= slice => FirstAsk::Suffix(n),
            Asked::Suffix(_) => FirstAsk::Bytes(0, 0),
            Asked::Whole | Asked::Several => FirstAsk::Bytes(0, slice - 1),
        }
    }

    /// The `Range` header value.
    pub fn header(self) -> String {
        match self {
            FirstAsk::Bytes(a, b) => format!("bytes={a}-{b}"),
            FirstAsk::Suffix(n) => format!("bytes=-{n}"),
        }
    }

    /// The bytes an origin must send for this ask of an object of `size` bytes
    /// (`None`: nothing is satisfiable).
    pub fn expected(self, size: u64) -> Option<RangeInclusive<u64>> {
        match self {
            FirstAsk::Bytes(a, _) if a >= size => None,
            FirstAsk::Bytes(a, b) => Some(a..=b.min(size - 1)),
            FirstAsk::Suffix(_) if size == 0 => None,
            FirstAsk::Suffix(n) => Some(size - n.min(size)..=size - 1),
        }
    }
}

/// The last byte of the slice holding byte `at`.
pub fn slice_end(at: u64, slice: u64) -> u64 {
    (at / slice + 1) * slice - 1
}

/// The next fetch of a stream at `pos` towards `last`: up to the end of
/// `pos`'s slice.
pub fn next_fetch(pos: u64, last: u64, slice: u64) -> RangeInclusive<u64> {
    pos..=last.min(slice_end(pos, slice))
}

/// Parses a `Content-Range: bytes a-b/size` value (`*` sizes and
/// unsatisfied ranges give `None`).
pub fn content_range(value: &str) -> Option<(RangeInclusive<u64>, u64)> {
    let rest = value.trim().strip_prefix("bytes ")?;
    let (range, size) = rest.split_once('/')?;
    let (a, b) = range.split_once('-')?;
    let (a, b, size) = (a.parse().ok()?, b.parse().ok()?, size.parse().ok()?);
    (a <= b && b < size).then_some((a..=b, size))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn reads_what_the_client_asked() {
        assert_eq!(Asked::of(None), Asked::Whole);
        assert_eq!(Asked::of(Some("bytes=10-")), Asked::From(10, None));
        assert_eq!(Asked::of(Some("bytes=10-20")), Asked::From(10, Some(20)));
        assert_eq!(Asked::of(Some("bytes=-500")), Asked::Suffix(500));
        assert_eq!(Asked::of(Some("bytes=0-1, 5-6")), Asked::Several);
        // Malformed: the origin ignores it and sends the whole file; so do we.
        assert_eq!(Asked::of(Some("bytes=5-2")), Asked::Whole);
        assert_eq!(Asked::of(Some("items=0-1")), Asked::Whole);
    }

    #[test]
    fn the_first_ask_stays_in_one_slice() {
        assert_eq!(
            FirstAsk::for_asked(Asked::Whole, MIB),
            FirstAsk::Bytes(0, MIB - 1)
        );
        let short = FirstAsk::for_asked(Asked::From(5, Some(9)), MIB);
        assert_eq!(short, FirstAsk::Bytes(5, 9));
        let mid = FirstAsk::for_asked(Asked::From(MIB + 5, None), MIB);
        assert_eq!(mid, FirstAsk::Bytes(MIB + 5, 2 * MIB - 1));
        assert_eq!(mid.header(), format!("bytes={}-{}", MIB + 5, 2 * MIB - 1));
        assert_eq!(
            FirstAsk::for_asked(Asked::Suffix(100), MIB),
            FirstAsk::Suffix(100)
        );
        // A suffix longer than a slice: one byte, to learn the size.
        assert_eq!(
            FirstAsk::for_asked(Asked::Suffix(2 * MIB), MIB),
            FirstAsk::Bytes(0, 0)
        );
    }

    #[test]
    fn expected_bytes_follow_the_size() {
        assert_eq!(FirstAsk::Bytes(0, 99).expected(50), Some(0..=49));
        assert_eq!(FirstAsk::Bytes(50, 99).expected(50), None);
        assert_eq!(FirstAsk::Suffix(10).expected(100), Some(90..=99));
        assert_eq!(FirstAsk::Suffix(500).expected(100), Some(0..=99));
        assert_eq!(FirstAsk::Suffix(5).expected(0), None);
    }

    #[test]
    fn fetches_end_at_slice_boundaries() {
        assert_eq!(slice_end(0, MIB), MIB - 1);
        assert_eq!(slice_end(MIB - 1, MIB), MIB - 1);
        assert_eq!(slice_end(MIB, MIB), 2 * MIB - 1);
        assert_eq!(next_fetch(10, 5 * MIB, MIB), 10..=MIB - 1);
        assert_eq!(next_fetch(MIB, MIB + 3, MIB), MIB..=MIB + 3);
    }

    #[test]
    fn parses_content_ranges() {
        assert_eq!(content_range("bytes 0-9/100"), Some((0..=9, 100)));
        assert_eq!(content_range("bytes 9-0/100"), None);
        assert_eq!(content_range("bytes 0-100/100"), None);
        assert_eq!(content_range("bytes */100"), None);
        assert_eq!(content_range("bytes 0-9/*"), None);
    }
}
