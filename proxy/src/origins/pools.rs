//! Origin pools by name (`origins[].pool`, `routes[].pool`). Each name gets
//! one bit for the life of the process, so an origin's pools are a mask the
//! request path tests with one AND, and a reload that adds or renames pools
//! never moves a bit under requests in flight.

use std::sync::{PoisonError, RwLock};

/// Most pool names one process can know (the bits of a `u64`).
pub const MAX_POOLS: usize = 64;

/// The pool every origin and route is in unless it names another.
pub const DEFAULT_POOL: &str = "default";

/// Names in the order their bits were given.
static NAMES: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// The bit of pool `name`, given now if new; `None` once [`MAX_POOLS`]
/// names are taken.
pub fn bit(name: &str) -> Option<u64> {
    if let Some(i) = NAMES
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .position(|n| n == name)
    {
        return Some(1 << i);
    }
    let mut names = NAMES.write().unwrap_or_else(PoisonError::into_inner);
    if let Some(i) = names.iter().position(|n| n == name) {
        return Some(1 << i);
    }
    if names.len() >= MAX_POOLS {
        return None;
    }
    names.push(name.to_owned());
    Some(1 << (names.len() - 1))
}

/// The names of the pools in `mask`.
pub fn names(mask: u64) -> Vec<String> {
    let names = NAMES.read().unwrap_or_else(PoisonError::into_inner);
    (names.iter().enumerate())
        .filter(|(i, _)| mask & (1 << i) != 0)
        .map(|(_, n)| n.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_keeps_its_bit_and_masks_name_their_pools() {
        let a = bit("pools-test-a").unwrap();
        let b = bit("pools-test-b").unwrap();
        assert_ne!(a, b);
        assert_eq!(a.count_ones(), 1);
        assert_eq!(bit("pools-test-a"), Some(a));
        assert_eq!(names(a | b), ["pools-test-a", "pools-test-b"]);
    }
}
