//! Where a request on the public listener goes, by path alone: to an
//! origin, or to one of the proxy's own endpoints.

/// The destination of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Proxied to an origin: `/`, `/videos` and everything under `/videos/`.
    Origin,
    /// `/healthz`: the proxy's own liveness.
    Healthz,
    /// `/metrics`: the JSON snapshot.
    Metrics,
    /// `/prometheus`: the Prometheus text.
    Prometheus,
    /// `/dashboard` and its files, proxied to the dashboard sidecar.
    Dashboard,
    /// `/ws`: the dashboard's WebSocket, answered by the proxy itself.
    DashboardSocket,
    /// Anything else: 404.
    NotFound,
}

impl Route {
    /// The route of `path`.
    pub fn of(path: &str) -> Route {
        match path {
            "/" | "/videos" => Route::Origin,
            "/healthz" => Route::Healthz,
            "/metrics" => Route::Metrics,
            "/prometheus" => Route::Prometheus,
            "/ws" => Route::DashboardSocket,
            "/dashboard" => Route::Dashboard,
            p if p.starts_with("/videos/") => Route::Origin,
            p if p.starts_with("/dashboard/") => Route::Dashboard,
            _ => Route::NotFound,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_to_routes() {
        for (path, route) in [
            ("/", Route::Origin),
            ("/videos", Route::Origin),
            ("/videos/a/b.mp4", Route::Origin),
            ("/videosx", Route::NotFound),
            ("/healthz", Route::Healthz),
            ("/metrics", Route::Metrics),
            ("/prometheus", Route::Prometheus),
            ("/dashboard", Route::Dashboard),
            ("/dashboard/app.js", Route::Dashboard),
            ("/ws", Route::DashboardSocket),
            ("/hls/a.m3u8", Route::NotFound),
        ] {
            assert_eq!(Route::of(path), route, "{path}");
        }
    }
}
