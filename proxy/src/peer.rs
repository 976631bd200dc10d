//! The Pingora peer for a request to an origin, with the configured
//! timeouts: one place for the plain proxy path and the media path.

use crate::config::Timeouts;
use pingora::prelude::HttpPeer;
use std::net::SocketAddr;

/// The peer for a request to `addr`, with the timeouts `t`.
pub fn origin_peer(addr: SocketAddr, t: &Timeouts) -> HttpPeer {
    let mut peer = HttpPeer::new(addr, false, String::new());
    peer.options.connection_timeout = Some(t.connect);
    peer.options.total_connection_timeout = Some(t.connect);
    peer.options.read_timeout = Some(t.read);
    peer.options.idle_timeout = Some(t.idle);
    peer
}
