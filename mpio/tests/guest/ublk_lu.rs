//! The fixture of the ublk scenarios: one LIO LU on both inner paths, a
//! daemon serving it as device `d0` with `frontend = "ublk"`, both paths
//! up and `/dev/ublkbN` there; and the faults that take a path away.

use mpio_testbed::vm::fault::{self, GuestBlackhole, LinkDown};

use super::*;

/// The device's name in the daemon.
pub(crate) const DEV: &str = "d0";

/// Commands that move data through TCG (mkfs, files, fio).
pub(crate) const TOOL: Duration = Duration::from_secs(300);

/// A path's failure, its return (reconnect, login, probation) or the
/// block device's appearance: generous, a hang guard on a loaded machine.
/// A device configuration for faults in a row: round robin, paths that
/// return within a second and are damped little when they fail again, so
/// repeated faults take seconds, not minutes. `device` keys go before the
/// timers table, `timers` keys into it.
pub(crate) fn quick_return(device: &str, timers: &str) -> String {
    format!(
        "policy = \"round-robin\"\n{device}\n[device.timers]\n{timers}reconnect_max = \"1s\"\n\
         damping_base = \"100ms\"\ndamping_max = \"500ms\"\n"
    )
}

pub(crate) const PATH_EVENT: Duration = Duration::from_secs(120);

/// LU, daemon and block device; dropped in this order: the daemon (which
/// removes the block device) before the LU.
pub(crate) struct UblkLu {
    pub(crate) d: GuestDaemon<'static>,
    pub(crate) lio: Lio<'static>,
    /// `/dev/ublkbN`.
    pub(crate) dev: String,
    /// LIO's portals of paths p1 and p2.
    pub(crate) portals: [SocketAddr; 2],
    _log: KernelLogOnPanic,
}

impl UblkLu {
    /// Target `name` at `port` with `lun`; the device's `[[device]]`
    /// table gets `extra` keys (policy, hold, `[device.timers]`).
    pub(crate) fn start(vm: &'static Vm, name: &str, port: u16, lun: LunSpec, extra: &str) -> UblkLu {
        UblkLu::serve(vm, one_lu(vm, name, port, lun), port, extra)
    }

    /// The same on `lio`, a target whose TPG 1 has a portal at `port` on
    /// both inner paths; the device is on its LUN 0.
    pub(crate) fn serve(vm: &'static Vm, lio: Lio<'static>, port: u16, extra: &str) -> UblkLu {
        let portals = inner_portals(vm, port);
        let iqn = lio.iqn(1);
        let d = start_daemon(vm, |dir| config(dir, &iqn, &device(vm, DEV, 0, "ublk", extra, &portals)));
        d.wait_device(DEV, true, PATH_EVENT).unwrap_or_else(|e| panic!("{e}"));
        let v = d.json(&["device", "show", DEV]).unwrap();
        let dev = v["block_device"].as_str().unwrap_or_else(|| panic!("no block device: {v}")).to_owned();
        UblkLu { d, lio, dev, portals, _log: KernelLogOnPanic(vm) }
    }

    pub(crate) fn vm(&self) -> &'static Vm {
        self.d.vm()
    }

    /// A guest script that must succeed within [`TOOL`]; its stdout.
    pub(crate) fn sh(&self, script: &str) -> String {
        self.vm().sh(script).timeout(TOOL).run_ok().unwrap_or_else(|e| panic!("{e}"))
    }

    /// Waits until every path carries I/O again.
    pub(crate) fn wait_all_paths(&self) {
        self.d.wait_device(DEV, true, PATH_EVENT).unwrap_or_else(|e| panic!("{e}"));
    }

    /// Path `path`'s `write_bytes`.
    pub(crate) fn write_bytes(&self, path: &str) -> u64 {
        path_field(&self.d, DEV, path, "write_bytes").as_u64().unwrap()
    }

    /// Takes path `i` (0: p1, 1: p2) away with `fault`; undone on Drop of
    /// the guard or by [`PathFault::restore`].
    pub(crate) fn fail_path(&self, i: usize, fault: Fault) -> PathFault<'_> {
        let vm = self.vm();
        let portal = self.portals[i];
        match fault {
            Fault::Reset => {
                let cut = fault::reset_connections(vm, portal).unwrap();
                assert!(cut >= 1, "no connection to reset on {portal}");
                PathFault::Reset
            }
            Fault::PortalRemoved => {
                self.lio.remove_portal(1, 1, portal).unwrap();
                // LIO keeps the sessions that came in through a removed
                // portal: only new connections are refused.
                fault::reset_connections(vm, portal).unwrap();
                PathFault::PortalRemoved(PortalBack { lio: &self.lio, portal: Some(portal) })
            }
            Fault::Blackhole => PathFault::Blackhole(GuestBlackhole::new(vm, portal).unwrap()),
            Fault::LinkDown => PathFault::LinkDown(LinkDown::initiator(vm, &vm.inner_path(i).initiator_if).unwrap()),
        }
    }
}

/// The ways a path fails (testbed's faults on one inner path).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    /// Its connections reset (RST): seen at once; reconnects work.
    Reset,
    /// LIO's portal removed (`rmdir np/...`) and its connections reset:
    /// reconnects are refused until it is back.
    PortalRemoved,
    /// iptables DROP both ways: silence, seen by the NOP-Out keepalive.
    Blackhole,
    /// The initiator's end of the veth down: no route.
    LinkDown,
}

/// A fault in place; [`PathFault::restore`] (or Drop: each variant's
/// guard) ends it.
pub(crate) enum PathFault<'a> {
    Reset,
    PortalRemoved(PortalBack<'a>),
    Blackhole(GuestBlackhole<'static>),
    LinkDown(LinkDown<'static>),
}

impl PathFault<'_> {
    pub(crate) fn restore(self) {
        match self {
            PathFault::Reset => Ok(()),
            PathFault::PortalRemoved(g) => g.restore(),
            PathFault::Blackhole(g) => g.remove(),
            PathFault::LinkDown(g) => g.restore(),
        }
        .unwrap_or_else(|e| panic!("ending the fault: {e}"));
    }
}

/// A removed portal, added again on Drop.
pub(crate) struct PortalBack<'a> {
    lio: &'a Lio<'static>,
    portal: Option<SocketAddr>,
}

impl PortalBack<'_> {
    fn restore(mut self) -> mpio_testbed::Result<()> {
        self.portal.take().map_or(Ok(()), |p| self.lio.add_portal(1, 1, p))
    }
}

impl Drop for PortalBack<'_> {
    fn drop(&mut self) {
        if let Some(p) = self.portal.take()
            && let Err(e) = self.lio.add_portal(1, 1, p)
        {
            eprintln!("warning: adding portal {p} again: {e}");
        }
    }
}
