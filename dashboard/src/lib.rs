//! The live dashboard sidecar: a WebSocket server pushing metrics snapshots
//! and the Chart.js page. Not built yet; it is the subject of its own issue.
