//! A request id (`X-Request-Id` by default, `request_id_header`): the one a
//! client or a proxy in front sent when it is well-formed, else a new
//! random one. Origins get it on every fetch, the client gets it back, and
//! logs carry it, so one request can be followed through every hop.

use http::{HeaderName, HeaderValue};
use pingora::http::{RequestHeader, ResponseHeader};

/// Longest request id kept from a client.
const MAX_LEN: usize = 128;

/// Makes sure `req` carries a well-formed id in `name`, replacing a
/// malformed one with a new random id.
pub fn ensure(req: &mut RequestHeader, name: &HeaderName) {
    let mut lines = req.headers.get_all(name).iter();
    let kept = matches!((lines.next(), lines.next()), (Some(v), None) if well_formed(v));
    if !kept {
        let _ = req.insert_header(name.clone(), new_id().as_slice());
    }
}

/// 128 random bits as 32 hex digits (without the formatting machinery:
/// this runs on every request).
fn new_id() -> [u8; 32] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut bits = fastrand::u128(..);
    let mut id = [0u8; 32];
    for c in id.iter_mut().rev() {
        *c = HEX[(bits & 0xf) as usize];
        bits >>= 4;
    }
    id
}

/// Copies `req`'s id in `name` onto the response.
pub fn echo(resp: &mut ResponseHeader, req: &RequestHeader, name: &HeaderName) {
    if let Some(id) = req.headers.get(name) {
        let _ = resp.insert_header(name.clone(), id.clone());
    }
}

/// 1–128 visible ASCII characters with no comma, quote or backslash: safe
/// in a header list, a log line and a JSON string.
fn well_formed(v: &HeaderValue) -> bool {
    let b = v.as_bytes();
    (1..=MAX_LEN).contains(&b.len())
        && b.iter()
            .all(|&c| c.is_ascii_graphic() && !matches!(c, b',' | b'"' | b'\\'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(ids: &[&str]) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        for id in ids {
            r.append_header("x-request-id", *id).unwrap();
        }
        r
    }

    fn id(r: &RequestHeader) -> Vec<String> {
        r.headers
            .get_all("x-request-id")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn a_well_formed_id_is_kept_and_anything_else_replaced() {
        let name = HeaderName::from_static("x-request-id");
        let mut r = with(&["abc-123_XYZ.9:1"]);
        ensure(&mut r, &name);
        assert_eq!(id(&r), ["abc-123_XYZ.9:1"]);
        let long = "a".repeat(129);
        for bad in [
            vec![],
            vec!["a,b"],
            vec![long.as_str()],
            vec!["a", "b"],
            vec!["x y"],
        ] {
            let mut r = with(&bad);
            ensure(&mut r, &name);
            let got = id(&r);
            assert_eq!(got.len(), 1, "{bad:?}");
            assert_eq!(got[0].len(), 32, "{bad:?}: {got:?}");
            assert!(got[0].bytes().all(|c| c.is_ascii_hexdigit()));
        }
        let (mut a, mut b) = (with(&[]), with(&[]));
        ensure(&mut a, &name);
        ensure(&mut b, &name);
        assert_ne!(id(&a), id(&b), "new ids differ");
        let mut resp = ResponseHeader::build(200, None).unwrap();
        echo(&mut resp, &a, &name);
        assert_eq!(
            resp.headers.get("x-request-id").unwrap().to_str().unwrap(),
            id(&a)[0]
        );
    }
}
