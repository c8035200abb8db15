//! The exposition: every family of dashboards/METRICS.md, written from
//! [`DeviceView`]s in the OpenMetrics text format.
//!
//! The values are not kept in prometheus-client metric objects: the
//! device and its sessions own the counters, and a scrape copies them
//! out of their snapshots. A [`Collector`] writes them, so a family's
//! HELP and TYPE come out even when no device is configured, and every
//! label set a configured path can have comes out at zero before it
//! first moves (a series that appears at 1 hides its first increase from
//! `rate()` and `increase()`).

use std::fmt;

use mpio_mpath::session_view::{ConnectionCounters, ConnectionView};
use mpio_mpath::stats::LATENCY_BUCKETS_US;
use mpio_mpath::{CauseKind, Op, PathPhase, PathSnapshot, PathStats, PathStatus, SessionPhase, SessionView};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::{Registry, Unit};

use crate::view::DeviceView;

/// The exposition of `devices`, `# EOF` included.
pub fn encode(devices: Vec<DeviceView>) -> String {
    let mut registry = Registry::with_prefix("mpio");
    registry.register_collector(Box::new(Exposition(devices)));
    let mut out = String::new();
    // Writing into a String cannot fail, and no family here can be
    // refused by the encoder (none is a native-only histogram).
    prometheus_client::encoding::text::encode(&mut out, &registry).expect("the exposition encodes into a String");
    out
}

#[derive(Debug)]
struct Exposition(Vec<DeviceView>);

impl Collector for Exposition {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> fmt::Result {
        let devices = &self.0;
        path_families(&mut enc, devices)?;
        device_families(&mut enc, devices)?;
        session_families(&mut enc, devices)?;
        connection_families(&mut enc, devices)
    }
}

/// Writes one family: descriptor, then a sample per label set.
fn family<L, M>(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    unit: Option<Unit>,
    help: &str,
    samples: impl IntoIterator<Item = (L, M)>,
) -> fmt::Result
where
    L: EncodeLabelSet,
    M: EncodeMetric + TypedMetric,
{
    let mut m = enc.encode_descriptor(name, help, unit.as_ref(), M::TYPE)?;
    for (labels, metric) in samples {
        metric.encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

fn counter(v: u64) -> ConstCounter<u64> {
    ConstCounter::new(v)
}

fn gauge(v: u64) -> ConstGauge<u64> {
    ConstGauge::new(v)
}

fn flag(b: bool) -> ConstGauge<u64> {
    ConstGauge::new(u64::from(b))
}

type PathLabels<'a> = [(&'static str, &'a str); 2];

/// A path's labels and one more (`op`, `state`, `cause`).
type PathLabelsAnd<'a> = (PathLabels<'a>, [(&'static str, &'static str); 1]);

fn path_labels<'a>(d: &'a DeviceView, p: &'a PathSnapshot) -> PathLabels<'a> {
    [("device", d.name.as_str()), ("path", p.name.as_str())]
}

fn paths(devices: &[DeviceView]) -> impl Iterator<Item = (&DeviceView, &PathSnapshot)> {
    devices.iter().flat_map(|d| d.snapshot.paths.iter().map(move |p| (d, p)))
}

/// A path's value as a sample of a family labelled `device`, `path`.
fn per_path<'a, M>(
    devices: &'a [DeviceView],
    value: impl Fn(&'a PathSnapshot) -> M + 'a,
) -> impl Iterator<Item = (PathLabels<'a>, M)> + 'a {
    paths(devices).map(move |(d, p)| (path_labels(d, p), value(p)))
}

/// A path's value per op, labelled `device`, `path`, `op`.
fn per_op<'a>(
    devices: &'a [DeviceView],
    value: fn(&PathStats, Op) -> u64,
) -> impl Iterator<Item = (PathLabelsAnd<'a>, ConstCounter<u64>)> + 'a {
    paths(devices).flat_map(move |(d, p)| {
        Op::ALL.into_iter().map(move |op| ((path_labels(d, p), [("op", op.name())]), counter(value(&p.stats, op))))
    })
}

fn path_families(enc: &mut DescriptorEncoder<'_>, devices: &[DeviceView]) -> fmt::Result {
    family(
        enc,
        "path_up",
        None,
        "1 when the path may carry I/O (state active or standby), else 0.",
        per_path(devices, |p| flag(p.status == PathStatus::Ready)),
    )?;
    family(
        enc,
        "path_state",
        None,
        "1 for the path's current state, 0 for the others (every state of the path state machine is listed).",
        paths(devices).flat_map(|(d, p)| {
            PathPhase::ALL.into_iter().map(move |s| ((path_labels(d, p), [("state", s.name())]), flag(p.state == s)))
        }),
    )?;
    family(
        enc,
        "path_requests",
        None,
        "Requests completed on the path, by operation.",
        per_op(devices, |s, op| s.requests_of(op)),
    )?;
    family(
        enc,
        "path",
        Some(Unit::Bytes),
        "Bytes of the requests completed on the path, by operation.",
        per_op(devices, |s, op| s.bytes_of(op)),
    )?;
    family(
        enc,
        "path_outstanding_commands",
        None,
        "Commands in flight on the path.",
        per_path(devices, |p| gauge(u64::from(p.in_flight))),
    )?;
    family(
        enc,
        "path_outstanding",
        Some(Unit::Bytes),
        "Bytes of the commands in flight on the path.",
        per_path(devices, |p| gauge(p.bytes_in_flight)),
    )?;
    family(
        enc,
        "path_latency",
        Some(Unit::Seconds),
        "Completion time of the requests completed on the path.",
        per_path(devices, |p| Latency(&p.stats)),
    )?;
    family(
        enc,
        "path_smoothed_latency",
        Some(Unit::Seconds),
        "Moving average of the path's completion time, as the service-time policy sees it (0 when idle for 1 s).",
        per_path(devices, |p| ConstGauge::new(p.latency_ns as f64 / 1e9)),
    )?;
    family(
        enc,
        "path_failures",
        None,
        "Times the path failed, by cause.",
        paths(devices).flat_map(|(d, p)| {
            // Every cause, at zero before it first happens.
            CauseKind::ALL.into_iter().map(move |k| {
                let v = p.stats.failures.get(&k).copied().unwrap_or(0);
                ((path_labels(d, p), [("cause", k.label())]), counter(v))
            })
        }),
    )?;
    family(
        enc,
        "path_redrives",
        None,
        "Requests that failed on the path and were sent again on another path.",
        per_path(devices, |p| counter(p.stats.redriven)),
    )?;
    family(
        enc,
        "path_retries",
        None,
        "Requests retried on the path after a transient condition of the logical unit (UNIT ATTENTION, BUSY, ...).",
        per_path(devices, |p| counter(p.stats.retries)),
    )?;
    family(
        enc,
        "path_errors",
        None,
        "Requests that failed on the path with an error for the caller, without failover (reservation conflict, \
         medium error, write protected, retries exhausted, ...).",
        per_path(devices, |p| counter(p.stats.errors)),
    )?;
    family(
        enc,
        "path_login_failures",
        None,
        "Login attempts of the path that failed (TCP connect or login refused), each retry counted.",
        per_path(devices, |p| counter(p.stats.login_failures)),
    )?;
    family(
        enc,
        "path_login_refusals_in_a_row",
        None,
        "Login attempts in a row that failed with the same reason (0 once logged in); a login_refused_repeatedly event says what to check.",
        per_path(devices, |p| gauge(u64::from(p.stats.login_refusals_in_a_row))),
    )
}

fn device_families(enc: &mut DescriptorEncoder<'_>, devices: &[DeviceView]) -> fmt::Result {
    let per_device =
        |value: fn(&DeviceView) -> u64| devices.iter().map(move |d| ([("device", d.name.as_str())], counter(value(d))));
    family(
        enc,
        "device_policy",
        None,
        "The device's load-balance policy, all-paths-down hold mode and failback mode (labels; value 1).",
        devices.iter().map(|d| {
            let s = &d.snapshot;
            let info = [
                ("policy", s.policy.kind().name().to_string()),
                ("hold", s.hold.to_string()),
                ("failback", s.failback.to_string()),
            ];
            ([("device", d.name.as_str())], Info::new(info))
        }),
    )?;
    family(
        enc,
        "device_frontend",
        None,
        "How the device is presented: one sample per frontend (ublk, nbd), with its kernel block device where \
         the daemon knows it (labels; value 1).",
        devices.iter().flat_map(|d| {
            d.frontends.iter().map(|f| {
                let info = [("frontend", f.kind.clone()), ("block_device", f.block_device.clone())];
                ([("device", d.name.as_str())], Info::new(info))
            })
        }),
    )?;
    family(
        enc,
        "device_failovers",
        None,
        "Times the paths carrying I/O changed because paths failed.",
        per_device(|d| d.snapshot.counters.failovers),
    )?;
    family(
        enc,
        "device_failbacks",
        None,
        "Times preferred paths took I/O back from paths that still worked.",
        per_device(|d| d.snapshot.counters.failbacks),
    )?;
    family(
        enc,
        "device_all_paths_down",
        Some(Unit::Seconds),
        "Time I/O waited with no usable path, in completed episodes (a running one is device_holding_seconds).",
        devices.iter().map(|d| {
            ([("device", d.name.as_str())], ConstCounter::new(d.snapshot.counters.all_paths_down.as_secs_f64()))
        }),
    )?;
    family(
        enc,
        "device_holding",
        Some(Unit::Seconds),
        "How long I/O has been waiting with no usable path in the running episode (since the device started, before its first path came up); 0 when none.",
        devices.iter().map(|d| {
            let held = d
                .snapshot
                .all_paths_down_since
                .map_or(0.0, |since| d.at.saturating_duration_since(since).as_secs_f64());
            ([("device", d.name.as_str())], ConstGauge::new(held))
        }),
    )?;
    family(
        enc,
        "device_no_path_failures",
        None,
        "Requests failed with EIO because no path was usable (hold time passed, or hold mode fail).",
        per_device(|d| d.snapshot.counters.hold_failures),
    )?;
    family(
        enc,
        "device_held_requests",
        None,
        "Requests waiting now for a usable path (all-paths-down hold, or no path claimed yet) or for a write fence.",
        devices.iter().map(|d| ([("device", d.name.as_str())], ConstGauge::new(d.snapshot.waiting))),
    )?;
    family(
        enc,
        "device_hold_expirations",
        None,
        "All-paths-down holds whose time ran out (held and new requests failed with EIO until a path returned).",
        per_device(|d| d.snapshot.counters.hold_expirations),
    )?;
    family(
        enc,
        "device_fua_flushes",
        None,
        "SYNCHRONIZE CACHE commands sent after FUA writes, because the LU has a write cache and does not take the FUA bit (DPOFUA 0).",
        per_device(|d| d.snapshot.counters.fua_flushes),
    )?;
    family(
        enc,
        "device_write_through",
        None,
        "FUA writes and flushes that needed no command because the LU writes through (no write cache: WCE 0).",
        per_device(|d| d.snapshot.counters.write_through),
    )
}

/// `(device, path, session)` of every path whose session answered.
fn sessions(devices: &[DeviceView]) -> impl Iterator<Item = (PathLabels<'_>, &SessionView)> {
    devices.iter().flat_map(|d| {
        d.snapshot.paths.iter().zip(&d.sessions).filter_map(move |(p, s)| Some((path_labels(d, p), s.as_ref()?)))
    })
}

fn session_families(enc: &mut DescriptorEncoder<'_>, devices: &[DeviceView]) -> fmt::Result {
    let per_session = |value: fn(&SessionView) -> u64| sessions(devices).map(move |(l, s)| (l, counter(value(s))));
    family(
        enc,
        "session_up",
        None,
        "1 when the path's iSCSI session has a connection in the full feature phase.",
        sessions(devices).map(|(l, s)| (l, flag(s.phase == SessionPhase::Up))),
    )?;
    family(
        enc,
        "session_logins",
        None,
        "Session logins (the first one and each reinstatement).",
        per_session(|s| s.logins),
    )?;
    family(
        enc,
        "session_reinstatements",
        None,
        "Session reinstatements (logins that replaced a failed session of the same path).",
        per_session(|s| s.reinstatements),
    )?;
    family(
        enc,
        "session_command_timeouts",
        None,
        "Commands aborted because they did not complete within the I/O timeout.",
        per_session(|s| s.command_timeouts),
    )?;
    family(
        enc,
        "session_command_retries",
        None,
        "Commands sent again on the session after one of its connections failed.",
        per_session(|s| s.command_retries),
    )
}

type ConnLabels<'a> = (PathLabels<'a>, ([(&'static str, u16); 1], [(&'static str, &'a str); 1]));

fn connections(devices: &[DeviceView]) -> impl Iterator<Item = (ConnLabels<'_>, &ConnectionView)> {
    sessions(devices).flat_map(|(l, s)| {
        s.connections.iter().map(move |c| ((l, ([("cid", c.cid)], [("portal", c.portal.as_str())])), c))
    })
}

fn connection_families(enc: &mut DescriptorEncoder<'_>, devices: &[DeviceView]) -> fmt::Result {
    let per_conn = |value: fn(&ConnectionCounters) -> u64| {
        connections(devices).map(move |(l, c)| (l, counter(value(&c.counters))))
    };
    family(
        enc,
        "connection_up",
        None,
        "1 when the connection is in the full feature phase.",
        connections(devices).map(|(l, c)| (l, flag(c.up))),
    )?;
    family(
        enc,
        "connection_queue_depth",
        None,
        "SCSI commands in flight on the connection.",
        connections(devices).map(|(l, c)| (l, gauge(c.queue_depth as u64))),
    )?;
    family(
        enc,
        "connection_logins",
        None,
        "Login attempts of the connection by result (failure includes TCP connect failures).",
        connections(devices).flat_map(|(l, c)| {
            [("success", c.counters.logins), ("failure", c.counters.login_failures)]
                .map(|(result, v)| ((l, [("result", result)]), counter(v)))
        }),
    )?;
    family(
        enc,
        "connection_failures",
        None,
        "Times the connection failed after it was up (each is followed by a reconnect).",
        per_conn(|s| s.failures),
    )?;
    family(enc, "connection_pdus_sent", None, "iSCSI PDUs sent on the connection.", per_conn(|s| s.pdus_sent))?;
    family(
        enc,
        "connection_pdus_received",
        None,
        "iSCSI PDUs received on the connection.",
        per_conn(|s| s.pdus_received),
    )?;
    family(
        enc,
        "connection_sent",
        Some(Unit::Bytes),
        "Bytes sent on the connection (headers, data and digests).",
        per_conn(|s| s.bytes_sent),
    )?;
    family(
        enc,
        "connection_received_data",
        Some(Unit::Bytes),
        "Data-segment bytes received on the connection.",
        per_conn(|s| s.data_bytes_received),
    )?;
    family(
        enc,
        "connection_digest_errors",
        None,
        "Header or data digest (CRC32C) mismatches; each fails the connection, except those ErrorRecoveryLevel 1 recovers (counted below).",
        per_conn(|s| s.digest_errors),
    )?;
    family(
        enc,
        "connection_header_digest_skips",
        None,
        "PDUs skipped after a header digest error, their length proven by the next header (ErrorRecoveryLevel 1).",
        per_conn(|s| s.header_digest_skips),
    )?;
    family(
        enc,
        "connection_data_snacks",
        None,
        "Data SNACKs that asked the target for Data-In again after a data digest error or a DataSN gap (ErrorRecoveryLevel 1).",
        per_conn(|s| s.data_snacks),
    )?;
    family(
        enc,
        "connection_status_snacks",
        None,
        "Status SNACKs that asked the target for statuses that never arrived (ErrorRecoveryLevel 1).",
        per_conn(|s| s.status_snacks),
    )?;
    family(
        enc,
        "connection_data_out_rejects",
        None,
        "Data-Out the target rejected for a data digest error and asked for again with a recovery R2T (ErrorRecoveryLevel 1).",
        per_conn(|s| s.data_out_rejects),
    )?;
    family(
        enc,
        "connection_command_retries",
        None,
        "Commands sent again because the target rejected their immediate data's digest (ErrorRecoveryLevel 1).",
        per_conn(|s| s.command_retries),
    )?;
    family(
        enc,
        "connection_unknown_itt",
        None,
        "PDUs for a task the initiator does not know (late answers after an abort), discarded.",
        per_conn(|s| s.unknown_itt),
    )?;
    family(
        enc,
        "connection_statsn_gaps",
        None,
        "Responses whose StatSN was out of sequence (resynchronised).",
        per_conn(|s| s.statsn_gaps),
    )
}

/// A path's latency histogram, in seconds, from its microsecond buckets.
#[derive(Debug)]
struct Latency<'a>(&'a PathStats);

impl TypedMetric for Latency<'_> {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Latency<'_> {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> fmt::Result {
        let stats = self.0;
        // LATENCY_BUCKETS_US bounds, then +Inf for the last count.
        let buckets: Vec<(f64, u64)> = LATENCY_BUCKETS_US
            .iter()
            .map(|us| *us as f64 / 1e6)
            .chain([f64::INFINITY])
            .zip(stats.latency_buckets.iter().copied())
            .collect();
        let count = stats.latency_buckets.iter().sum();
        encoder.encode_histogram::<NoLabelSet>(stats.latency_sum_us as f64 / 1e6, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use mpio_mpath::core::{Completion, Selection};
    use mpio_mpath::{DeviceCore, PolicySpec, TimerConfig};

    use super::*;
    use crate::Frontend;

    fn view(core: &DeviceCore, at: Instant) -> DeviceView {
        let snapshot = core.snapshot();
        let sessions = vec![None; snapshot.paths.len()];
        DeviceView { name: "mp0".into(), snapshot, sessions, at, frontends: Vec::new() }
    }

    fn has(text: &str, line: &str) {
        assert!(text.lines().any(|l| l == line), "no line {line:?} in\n{text}");
    }

    #[test]
    fn no_device_still_describes_every_family() {
        let text = encode(Vec::new());
        for name in ["mpio_path_up", "mpio_path_latency_seconds", "mpio_device_policy", "mpio_connection_logins"] {
            assert!(text.contains(&format!("# TYPE {name} ")), "{name} missing in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
        assert!(!text.lines().any(|l| !l.starts_with('#')), "samples without a device:\n{text}");
    }

    #[test]
    fn a_device_before_its_first_login_shows_zeroes() {
        let now = Instant::now();
        let core = DeviceCore::new(TimerConfig::default(), vec!["p1".into(), "p2".into()], PolicySpec::default(), now);
        let text = encode(vec![view(&core, now + Duration::from_secs(3))]);
        has(&text, r#"mpio_path_up{device="mp0",path="p2"} 0"#);
        has(&text, r#"mpio_path_state{device="mp0",path="p1",state="connecting"} 1"#);
        has(&text, r#"mpio_path_state{device="mp0",path="p1",state="active"} 0"#);
        has(&text, r#"mpio_path_requests_total{device="mp0",path="p1",op="write"} 0"#);
        has(&text, r#"mpio_path_failures_total{device="mp0",path="p2",cause="login"} 0"#);
        has(&text, r#"mpio_path_latency_seconds_count{device="mp0",path="p1"} 0"#);
        has(&text, r#"mpio_path_latency_seconds_bucket{le="+Inf",device="mp0",path="p1"} 0"#);
        has(&text, r#"mpio_device_failovers_total{device="mp0"} 0"#);
        has(&text, r#"mpio_device_policy_info{policy="round-robin",hold="20s",failback="immediate",device="mp0"} 1"#);
        // No path yet since the start: the running episode counts from it.
        has(&text, r#"mpio_device_holding_seconds{device="mp0"} 3.0"#);
        has(&text, r#"mpio_device_all_paths_down_seconds_total{device="mp0"} 0.0"#);
    }

    #[test]
    fn each_frontend_is_a_sample_naming_its_block_device() {
        let now = Instant::now();
        let core = DeviceCore::new(TimerConfig::default(), vec!["p1".into()], PolicySpec::default(), now);
        let both = DeviceView {
            frontends: vec![
                Frontend { kind: "ublk".into(), block_device: "/dev/ublkb0".into() },
                Frontend { kind: "nbd".into(), block_device: String::new() },
            ],
            ..view(&core, now)
        };
        let bare = DeviceView { name: "mp1".into(), ..view(&core, now) };
        let text = encode(vec![both, bare]);
        has(&text, r#"mpio_device_frontend_info{frontend="ublk",block_device="/dev/ublkb0",device="mp0"} 1"#);
        has(&text, r#"mpio_device_frontend_info{frontend="nbd",block_device="",device="mp0"} 1"#);
        assert!(
            !text.contains(r#"mpio_device_frontend_info{frontend="ublk",block_device="/dev/ublkb0",device="mp1"}"#)
        );
        assert_eq!(text.matches("mpio_device_frontend_info{").count(), 2, "a device without a frontend has no sample");
    }

    #[test]
    fn counters_histogram_and_states_follow_the_core() {
        let now = Instant::now();
        let mut core =
            DeviceCore::new(TimerConfig::default(), vec!["p1".into(), "p2".into()], PolicySpec::default(), now);
        core.session_up(now, 0, false);
        core.session_up(now, 1, false);
        let Selection::Path(t) = core.select(now, Op::Write, 4096) else { panic!("no path") };
        core.complete(now, t, Duration::from_micros(300), Completion::Success, 0);
        let Selection::Path(held) = core.select(now, Op::Read, 8192) else { panic!("no path") };
        core.disable(now, 1 - t.path);
        let text = encode(vec![view(&core, now)]);
        let (done, other) = if t.path == 0 { ("p1", "p2") } else { ("p2", "p1") };
        has(&text, &format!(r#"mpio_path_requests_total{{device="mp0",path="{done}",op="write"}} 1"#));
        has(&text, &format!(r#"mpio_path_bytes_total{{device="mp0",path="{done}",op="write"}} 4096"#));
        // 300 µs: above the 250 µs bound, within 500 µs (cumulative buckets).
        has(&text, &format!(r#"mpio_path_latency_seconds_bucket{{le="0.00025",device="mp0",path="{done}"}} 0"#));
        has(&text, &format!(r#"mpio_path_latency_seconds_bucket{{le="0.0005",device="mp0",path="{done}"}} 1"#));
        has(&text, &format!(r#"mpio_path_latency_seconds_count{{device="mp0",path="{done}"}} 1"#));
        has(&text, &format!(r#"mpio_path_latency_seconds_sum{{device="mp0",path="{done}"}} 0.0003"#));
        assert_eq!(held.path, 1 - t.path, "round robin sent the read to the other path");
        has(&text, &format!(r#"mpio_path_outstanding_commands{{device="mp0",path="{other}"}} 1"#));
        has(&text, &format!(r#"mpio_path_outstanding_bytes{{device="mp0",path="{other}"}} 8192"#));
        has(&text, &format!(r#"mpio_path_state{{device="mp0",path="{other}",state="disabled"}} 1"#));
        has(&text, &format!(r#"mpio_path_up{{device="mp0",path="{other}"}} 0"#));
        has(&text, &format!(r#"mpio_path_failures_total{{device="mp0",path="{other}",cause="admin"}} 1"#));
        has(&text, r#"mpio_device_failovers_total{device="mp0"} 1"#);
        has(&text, r#"mpio_device_holding_seconds{device="mp0"} 0.0"#);
    }
}
