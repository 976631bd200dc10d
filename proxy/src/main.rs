//! `cdn-proxy`: the Pingora load-balancing edge in front of `cdn-origin`s.
//!
//! Not built yet: the proxy is the subject of its own issue. This binary
//! exists so the workspace has its final shape; it says so and exits.

use clap::Parser;

/// The Pingora load-balancing edge in front of cdn-origin servers (not built yet).
#[derive(Debug, Parser)]
#[command(name = "cdn-proxy", version)]
struct Args {}

fn main() {
    let _ = Args::parse();
    eprintln!("cdn-proxy is not implemented yet; run cdn-origin directly (see README.md)");
    std::process::exit(2);
}
