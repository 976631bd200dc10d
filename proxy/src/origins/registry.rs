//! Every origin the proxy knows, by address. Only discovery adds origins
//! (and forgets those that are gone and idle); everyone else reads.

use super::Origin;
use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

/// Every known origin. Reads are a lock-free snapshot load; writes
/// (discovery, rare) copy the map under a mutex.
#[derive(Default)]
pub struct Registry {
    map: ArcSwap<HashMap<SocketAddr, Arc<Origin>>>,
    write: Mutex<()>,
}

impl Registry {
    /// The origin at `addr`, created with `source` and `capacity` if new.
    pub fn get_or_insert(&self, addr: SocketAddr, source: &str, capacity: f64) -> Arc<Origin> {
        if let Some(o) = self.get(&addr) {
            return o;
        }
        let _w = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let mut map = HashMap::clone(&self.map.load());
        let o = map
            .entry(addr)
            .or_insert_with(|| Arc::new(Origin::new(addr, source, capacity)))
            .clone();
        self.map.store(Arc::new(map));
        o
    }

    /// The origin at `addr`, if known.
    pub fn get(&self, addr: &SocketAddr) -> Option<Arc<Origin>> {
        self.map.load().get(addr).cloned()
    }

    /// Every origin, sorted by address.
    pub fn all(&self) -> Vec<Arc<Origin>> {
        let mut v: Vec<_> = self.map.load().values().cloned().collect();
        v.sort_by_key(|o| o.addr);
        v
    }

    /// Forgets origins that are gone and have nothing in flight.
    pub fn prune(&self) {
        let _w = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let mut map = HashMap::clone(&self.map.load());
        map.retain(|_, o| !(o.health.gone() && o.inflight() == 0));
        self.map.store(Arc::new(map));
    }
}
