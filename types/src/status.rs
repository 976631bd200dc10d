//! HTTP status classes, the `code`/`class` label of both binaries' request
//! counters.

/// The five classes, in index order.
pub const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Index into [`STATUS_CLASSES`] of a status. Anything outside 100–499 is
/// 5xx: status 0 (no response was written, the request failed) and codes
/// past 599 are failures, never a panic.
pub fn status_class_index(status: u16) -> usize {
    match status {
        100..=199 => 0,
        200..=299 => 1,
        300..=399 => 2,
        400..=499 => 3,
        _ => 4,
    }
}

/// The class label of a status, e.g. `"2xx"`.
pub fn status_class(status: u16) -> &'static str {
    STATUS_CLASSES[status_class_index(status)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_and_out_of_range_statuses() {
        assert_eq!(status_class(101), "1xx");
        assert_eq!(status_class(206), "2xx");
        assert_eq!(status_class(304), "3xx");
        assert_eq!(status_class(416), "4xx");
        assert_eq!(status_class(503), "5xx");
        assert_eq!(status_class(0), "5xx", "no response is a failure");
        assert_eq!(status_class(999), "5xx");
        assert_eq!(status_class(42), "5xx");
    }
}
