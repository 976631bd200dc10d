//! Where a request on the public listener goes, by path alone: to one of
//! the proxy's own endpoints (`endpoints.*`, the dashboard), or to the
//! origins by the longest matching `routes[].prefix`, or nowhere (`404`).

use crate::config::{Config, OriginRoute};

/// The destination of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Proxied to an origin; `media`: the route lets media GETs take the slice path.
    Origin {
        /// Media GETs on this route are answered from slices.
        media: bool,
        /// Media GETs on this route use the cache (when there is one).
        cache: bool,
        /// The bit of the route's pool: only origins in it serve the route.
        pool: u64,
        /// Its index in `routes` (for per-route figures).
        index: usize,
    },
    /// `endpoints.healthz`: the proxy's own liveness.
    Healthz,
    /// `endpoints.metrics`: the JSON snapshot.
    Metrics,
    /// `endpoints.prometheus`: the Prometheus text.
    Prometheus,
    /// `endpoints.dashboard` (`/dashboard`) and its files, proxied to the dashboard sidecar.
    Dashboard,
    /// `endpoints.dashboard_socket` (`/ws`): the dashboard's WebSocket, answered by the proxy itself.
    DashboardSocket,
    /// No route: 404.
    NotFound,
}

impl Route {
    /// The route of `path` under `cfg`.
    pub fn of(path: &str, cfg: &Config) -> Route {
        let e = &cfg.endpoints;
        // Exact paths first; an empty endpoint is switched off.
        if !e.healthz.is_empty() && path == e.healthz {
            return Route::Healthz;
        }
        if !e.metrics.is_empty() && path == e.metrics {
            return Route::Metrics;
        }
        if !e.prometheus.is_empty() && path == e.prometheus {
            return Route::Prometheus;
        }
        if cfg.dashboard.enabled {
            if !e.dashboard_socket.is_empty() && path == e.dashboard_socket {
                return Route::DashboardSocket;
            }
            if !e.dashboard.is_empty() && covers(&e.dashboard, path) {
                return Route::Dashboard;
            }
        }
        // Longest prefix first (sorted when the file is read).
        cfg.routes_by_length
            .iter()
            .map(|&i| (i, &cfg.routes[i]))
            .find(|(_, r)| covers(&r.prefix, path))
            .map_or(Route::NotFound, |(index, r): (usize, &OriginRoute)| {
                Route::Origin {
                    media: r.media,
                    cache: r.cache,
                    pool: r.pool_bit,
                    index,
                }
            })
    }
}

/// Whether `prefix` covers `path`: equal, or followed by `/` in it (so
/// `/videos` covers `/videos/a.mp4` but not `/videosx`).
fn covers(prefix: &str, path: &str) -> bool {
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || prefix.ends_with('/') || rest.starts_with('/'),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn default_bit() -> u64 {
        crate::origins::pools::bit("default").unwrap()
    }

    fn cfg(extra: &str) -> Config {
        let text = format!("origins:\n  - address: 127.0.0.1:9101\n{extra}");
        Config::parse(&text, "cdn.yaml").unwrap()
    }

    #[test]
    fn by_default_every_path_but_the_local_endpoints_goes_to_the_origins() {
        let c = cfg("");
        let origin = Route::Origin {
            media: true,
            cache: true,
            pool: default_bit(),
            index: 0,
        };
        for (path, route) in [
            ("/", origin),
            ("/videos/a/b.mp4", origin),
            ("/hls/a.m3u8", origin),
            ("/healthzx", origin),
            ("/healthz", Route::Healthz),
            ("/metrics", Route::Metrics),
            ("/prometheus", Route::Prometheus),
            ("/dashboard", Route::Dashboard),
            ("/dashboard/app.js", Route::Dashboard),
            ("/ws", Route::DashboardSocket),
        ] {
            assert_eq!(Route::of(path, &c), route, "{path}");
        }
    }

    #[test]
    fn the_longest_prefix_wins_and_endpoints_move_or_go() {
        let c = cfg(concat!(
            "routes:\n  - {prefix: /videos}\n  - {prefix: /videos/live/, media: false, cache: false}\n",
            "endpoints: {metrics: /_edge/metrics, prometheus: \"\", dashboard: /_edge/dash}\n",
        ));
        let vod = Route::Origin {
            media: true,
            cache: true,
            pool: default_bit(),
            index: 0,
        };
        for (path, route) in [
            ("/videos", vod),
            ("/videos/a.mp4", vod),
            (
                "/videos/live/a.ts",
                Route::Origin {
                    media: false,
                    cache: false,
                    pool: default_bit(),
                    index: 1,
                },
            ),
            ("/videosx", Route::NotFound),
            ("/", Route::NotFound),
            ("/metrics", Route::NotFound),
            ("/_edge/metrics", Route::Metrics),
            ("/prometheus", Route::NotFound),
            ("/dashboard", Route::NotFound),
            ("/_edge/dash", Route::Dashboard),
            ("/_edge/dash/app.js", Route::Dashboard),
            ("/_edge/dashx", Route::NotFound),
            ("/ws", Route::DashboardSocket),
            ("/healthz", Route::Healthz),
        ] {
            assert_eq!(Route::of(path, &c), route, "{path}");
        }
    }
}
