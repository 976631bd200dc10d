//! `cdn-proxy`: the Pingora load-balancing edge in front of `cdn-origin`s.
//!
//! Being built: configuration, origin state and selection exist and are
//! tested; the Pingora service that uses them is not wired yet, so this
//! binary still says so and exits.
#![allow(dead_code)] // until main wires the modules in

mod config;
mod origins;
mod select;

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
