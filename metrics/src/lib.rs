//! Prometheus metrics of mpio: the multipath devices, their paths, and
//! each path's iSCSI session and connections, read from their snapshots
//! at scrape time and written in the OpenMetrics text format.
//!
//! - [`render`] reads devices and returns the exposition;
//! - [`router`] and [`serve`] put it on GET /metrics, asking a closure
//!   for the current devices at each scrape;
//! - [`DeviceView`] and [`encode`] split the two steps, for callers that
//!   hold snapshots rather than devices (tests, a status dump).
//!
//! A scrape costs a copy of each device's core under its lock (the
//! request path takes the same lock for microseconds) and one message
//! round trip to each session's driver task.
//!
//! The rest of this page is dashboards/METRICS.md, the reference of every
//! family and label.
#![doc = ""]
#![doc = include_str!("../../dashboards/METRICS.md")]
#![warn(missing_docs)]

mod exposition;
mod http;
mod view;

pub use exposition::encode;
pub use http::{CONTENT_TYPE, DEFAULT_LISTEN, Limits, router, serve, serve_with};
pub use view::{DeviceView, Frontend, Served};

/// The exposition of `devices` (`# EOF` included).
pub async fn render<S: Into<Served>>(devices: Vec<S>) -> String {
    let mut views = Vec::with_capacity(devices.len());
    for d in devices {
        let Served { device, frontends } = d.into();
        views.push(DeviceView { frontends, ..DeviceView::gather(&device).await });
    }
    encode(views)
}
