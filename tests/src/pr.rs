//! Persistent reservations held by another initiator, and the test of
//! what the multipath device does with them, written against any target
//! fixture that can offer one LU through several portals ([`SharedLu`]):
//! tgtd on the host and LIO in the test VM.

use std::net::SocketAddr;
use std::time::Duration;

use mpio_dsm::Errno;
use mpio_dsm::Lun;
use mpio_dsm::pr::{PrOutAction, PrOutParameters, PrType, persistent_reserve_out};
use mpio_mpath::scsi::LuAccess;
use mpio_mpath::{DeviceConfig, DeviceEvent, EventKind, PathConfig};
use mpio_transport::{ConnectionSpec, SessionConfig, SessionHandle};

use crate::mp::{drain, open_all, test_timers};
use crate::{INITIATOR, assert_data, pattern};

/// The initiator name of the other host that holds reservations.
pub const OTHER_INITIATOR: &str = "iqn.2026-11.test.mpio:other-host";

/// One logical unit behind several portals of one target, as a fixture
/// offers it.
#[derive(Clone, Debug)]
pub struct SharedLu {
    /// The target's IQN.
    pub target: String,
    /// Its portals; the device gets one path per portal.
    pub portals: Vec<SocketAddr>,
    /// The LU.
    pub lun: Lun,
}

impl SharedLu {
    /// LU `lun` of target `tid` of a testbed tgtd, through every portal.
    pub fn tgtd(tgtd: &mpio_testbed::tgtd::Tgtd, tid: u32, lun: u64) -> SharedLu {
        SharedLu {
            target: tgtd.iqn(tid).to_owned(),
            portals: tgtd.portals(),
            lun: Lun::from_number(lun).expect("addressable LUN"),
        }
    }

    /// LUN `lun` of TPG `tag` of target `target` of a LIO in a test VM,
    /// through every portal of that TPG (LIO's LUNs start at 0).
    pub fn lio(lio: &mpio_testbed::lio::Lio<'_>, target: usize, tag: u16, lun: u64) -> SharedLu {
        SharedLu {
            target: lio.iqn(target),
            portals: lio.portals(target, tag),
            lun: Lun::from_number(lun).expect("addressable LUN"),
        }
    }

    /// A session of `initiator` through portal `portal`.
    pub fn session_config(&self, initiator: &str, portal: usize) -> SessionConfig {
        let mut cfg = SessionConfig::new(
            initiator.parse().expect("valid initiator name"),
            self.target.parse().expect("valid target name"),
            self.portals[portal].into(),
        );
        cfg.timeouts.connect = Duration::from_secs(5);
        cfg.timeouts.login = Duration::from_secs(5);
        cfg
    }

    /// A session of `initiator` with one connection per listed portal
    /// (MCS).
    pub fn mcs_config(&self, initiator: &str, portals: &[usize]) -> SessionConfig {
        let mut cfg = self.session_config(initiator, portals[0]);
        cfg.connections = portals.iter().map(|p| ConnectionSpec::to(self.portals[*p].into())).collect();
        cfg
    }

    /// A round-robin device of our initiator with one path per portal.
    pub fn device_config(&self) -> DeviceConfig {
        let paths = self
            .portals
            .iter()
            .enumerate()
            .map(|(i, p)| PathConfig::new(format!("p{}", i + 1), ConnectionSpec::to((*p).into())))
            .collect();
        let mut cfg = DeviceConfig::new(
            "mp0",
            INITIATOR.parse().expect("valid initiator name"),
            self.target.parse().expect("valid target name"),
            self.lun,
            paths,
        );
        cfg.timers = test_timers();
        cfg.startup_timeout = Duration::from_secs(15);
        cfg
    }
}

/// A reservation held through a session of another initiator (another
/// I_T nexus, as another host would have), released on [`Holder::release`].
pub struct Holder {
    session: SessionHandle,
    lu: LuAccess,
    key: u64,
}

impl Holder {
    /// Logs in as `initiator` through portal 0, registers `key` and
    /// reserves the LU with `pr_type`.
    pub async fn reserve(lu: &SharedLu, initiator: &str, key: u64, pr_type: PrType) -> Holder {
        let session = SessionHandle::spawn(lu.session_config(initiator, 0)).expect("session config");
        session.wait_up(Duration::from_secs(10)).await.expect("the other initiator logs in");
        let access = LuAccess::new(session.clone(), lu.lun);
        let h = Holder { session, lu: access, key };
        h.pr_out(PrOutAction::REGISTER, pr_type, PrOutParameters { service_action_key: key, ..Default::default() })
            .await;
        h.pr_out(PrOutAction::RESERVE, pr_type, PrOutParameters { reservation_key: key, ..Default::default() }).await;
        h
    }

    async fn pr_out(&self, action: PrOutAction, pr_type: PrType, params: PrOutParameters) {
        let (cmd, list) = persistent_reserve_out(action, pr_type, &params).expect("PERSISTENT RESERVE OUT");
        let r = self.lu.run("PERSISTENT RESERVE OUT", &cmd, bytes::Bytes::copy_from_slice(&list)).await;
        r.unwrap_or_else(|e| panic!("{action} by the other initiator: {e}"));
    }

    /// Removes the reservation and every registration (CLEAR), and logs
    /// out.
    pub async fn release(self) {
        let params = PrOutParameters { reservation_key: self.key, ..Default::default() };
        self.pr_out(PrOutAction::CLEAR, PrType(0), params).await;
        let _ = self.session.logout().await;
    }
}

/// What the device did while another initiator held a reservation.
#[derive(Debug)]
pub struct ConflictReport {
    /// Per path, the errors counted by `mpio_path_errors_total`.
    pub metric_errors: Vec<f64>,
}

const CHUNK: usize = 64 << 10;
const CHUNKS: u64 = 16;

/// Another initiator holds WRITE EXCLUSIVE: our writes through a device
/// over every portal of `lu` fail with EBADE (RESERVATION CONFLICT) to the
/// caller; no path fails, nothing fails over, nothing is retried (the
/// classifier's verdict is final: `dsm::classify`), the path metrics count
/// each error; reads still succeed and the data is what was written before
/// the reservation. Once it is released, writes succeed again.
///
/// `target_errors`, when the fixture can tell, is the number of commands
/// of our initiator the target failed so far: it must grow by exactly one
/// per conflicting write (nothing retried behind the caller's back).
pub async fn conflict_reaches_the_caller_without_failover(
    lu: &SharedLu,
    target_errors: Option<&dyn Fn() -> u64>,
) -> ConflictReport {
    let dev = open_all(lu.device_config()).await;
    let n = lu.portals.len();
    for i in 0..CHUNKS {
        let at = i * CHUNK as u64;
        dev.write(at, pattern(at, CHUNK, 1), false).await.unwrap_or_else(|e| panic!("write before: {e}"));
    }

    let holder = Holder::reserve(lu, OTHER_INITIATOR, 0xabc0_0001, PrType::WRITE_EXCLUSIVE).await;
    let mut events = dev.events();
    let before = dev.snapshot();
    let target_before = target_errors.map(|f| f());
    // One write per chunk, in turn: round robin spreads them over every
    // path.
    for i in 0..CHUNKS {
        let at = i * CHUNK as u64;
        let e = dev.write(at, pattern(at, CHUNK, 2), false).await.expect_err("a write under another's reservation");
        assert_eq!(e.errno, Errno::ReservationConflict, "write at {at}: {e}");
        assert!(e.message.contains("RESERVATION CONFLICT"), "write at {at}: {e}");
    }
    // Reads are allowed under WRITE EXCLUSIVE, and find the old data: the
    // conflicting writes changed nothing.
    for i in 0..CHUNKS {
        let at = i * CHUNK as u64;
        let got =
            dev.read(at, CHUNK as u64).await.unwrap_or_else(|e| panic!("read at {at} under the reservation: {e}"));
        assert_data(&got.to_bytes(), &pattern(at, CHUNK, 1), &format!("chunk {i} under the reservation"));
    }
    let after = dev.snapshot();
    if let (Some(f), Some(b)) = (target_errors, target_before) {
        assert_eq!(f() - b, CHUNKS, "commands the target failed during the conflicting writes");
    }
    let seen = drain(&mut events);
    assert_no_path_change(&seen);
    assert_eq!(after.counters.failovers, before.counters.failovers, "failovers");
    let mut errors = Vec::new();
    for (b, a) in before.paths.iter().zip(&after.paths) {
        assert_eq!(a.state, "active", "{} after the conflicts", a.name);
        assert_eq!(a.stats.failures, b.stats.failures, "{}: path failures", a.name);
        assert_eq!(a.stats.redriven, b.stats.redriven, "{}: re-driven requests", a.name);
        assert_eq!(a.stats.retries, b.stats.retries, "{}: retries", a.name);
        errors.push(a.stats.errors - b.stats.errors);
    }
    assert_eq!(errors.iter().sum::<u64>(), CHUNKS, "errors per path {errors:?}");
    assert!(errors.iter().all(|e| *e > 0), "round robin sent conflicting writes on every path: {errors:?}");

    // The same counts in the exposition.
    let text = mpio_metrics::encode(vec![mpio_metrics::DeviceView::gather(&dev).await]);
    let metric_errors: Vec<f64> =
        (1..=n).map(|i| sample(&text, &format!("mpio_path_errors_total{{device=\"mp0\",path=\"p{i}\"}}"))).collect();
    assert_eq!(metric_errors, errors.iter().map(|e| *e as f64).collect::<Vec<_>>(), "{text}");

    // Released: writes work again, on the same paths.
    holder.release().await;
    for i in 0..CHUNKS {
        let at = i * CHUNK as u64;
        dev.write(at, pattern(at, CHUNK, 3), false).await.unwrap_or_else(|e| panic!("write after the release: {e}"));
        let got = dev.read(at, CHUNK as u64).await.expect("read after the release");
        assert_data(&got.to_bytes(), &pattern(at, CHUNK, 3), &format!("chunk {i} after the release"));
    }
    assert_no_path_change(&drain(&mut events));
    ConflictReport { metric_errors }
}

/// No path failed, nothing failed over, no hold started.
#[track_caller]
fn assert_no_path_change(events: &[DeviceEvent]) {
    let changes: Vec<String> = events
        .iter()
        .filter(|e| {
            matches!(
                e.kind,
                EventKind::PathFailed
                    | EventKind::PathReconnected
                    | EventKind::Failover { .. }
                    | EventKind::Failback { .. }
                    | EventKind::HoldStarted
                    | EventKind::ProbationStarted
            )
        })
        .map(|e| format!("{}: {}", e.kind.name(), e.reason))
        .collect();
    assert!(changes.is_empty(), "a device error changed the paths: {changes:?}");
}

/// The value of the sample `name{labels}` in an exposition.
fn sample(text: &str, series: &str) -> f64 {
    let line = text.lines().find(|l| l.starts_with(series)).unwrap_or_else(|| panic!("no {series} in:\n{text}"));
    line[series.len()..].trim().parse().unwrap_or_else(|_| panic!("not a number: {line}"))
}
