//! Network faults in (and at the edge of) a test VM, as guards undone on
//! Drop, plus TCP connection reset and listing.
//!
//! | fault | guard / call | what the peer sees |
//! |---|---|---|
//! | blackhole `addr:port` in the guest | [`GuestBlackhole`] (iptables INPUT+OUTPUT DROP) | silence; connects hang |
//! | delay, loss on a guest interface | [`Netem`] (`tc qdisc ... netem`) | slow or lossy link |
//! | interface down in the guest / initiator namespace / on the host | [`LinkDown`] | no route: connects fail at once (`ENETUNREACH`) on the side that is down; silence on the other |
//! | reset the connections of a portal | [`reset_connections`] (`ss -K`) | RST: the connection fails at once |
//! | target host hangs | [`super::Vm::freeze`] | silence, for everything |
//!
//! Host-side iptables and tc on a VM's TAP traffic are [`crate::netfault`]'s
//! guards ([`crate::netfault::Blackhole`] matches both directions).
//!
//! The guest's iptables is the legacy one (`iptables` is
//! `xtables-legacy-multi` there), so a rule is one small ip_tables module
//! away, not nf_tables. Guards of a VM that died meanwhile are dropped
//! quietly.

use std::net::SocketAddr;

use crate::error::{Error, Result};
use crate::vm::Vm;
use crate::vm::net::INNER_NETNS;

/// Drops every TCP packet to and from `addr:port` in the guest (both
/// INPUT and OUTPUT, so an established connection goes completely silent,
/// whichever side the initiator is on). Undone on Drop.
#[derive(Debug)]
pub struct GuestBlackhole<'vm> {
    vm: &'vm Vm,
    addr: SocketAddr,
    rules: Vec<[String; 2]>,
}

impl<'vm> GuestBlackhole<'vm> {
    /// Inserts the rules at the top of INPUT and OUTPUT.
    pub fn new(vm: &'vm Vm, addr: SocketAddr) -> Result<GuestBlackhole<'vm>> {
        let (ip, port) = (addr.ip().to_string(), addr.port().to_string());
        let mut guard = GuestBlackhole { vm, addr, rules: Vec::new() };
        for (chain, rule) in [
            ("INPUT", format!("-p tcp -d {ip} --dport {port} -j DROP")),
            ("OUTPUT", format!("-p tcp -s {ip} --sport {port} -j DROP")),
        ] {
            vm.sh(&format!("iptables -w -I {chain} {rule}")).run_ok()?;
            guard.rules.push([chain.to_owned(), rule]);
        }
        Ok(guard)
    }

    /// The blackholed address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Removes the rules now, reporting errors (Drop only prints them).
    pub fn remove(mut self) -> Result<()> {
        self.remove_rules()
    }

    fn remove_rules(&mut self) -> Result<()> {
        let mut first = None;
        for [chain, rule] in self.rules.drain(..) {
            if let Err(e) = self.vm.sh(&format!("iptables -w -D {chain} {rule}")).run_ok() {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }
}

impl Drop for GuestBlackhole<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.remove_rules().filter_dead(self.vm) {
            eprintln!("warning: removing the guest blackhole of {}: {e}", self.addr);
        }
    }
}

/// A netem qdisc on a guest interface (`delay 200ms`, `loss 30%`,
/// `delay 50ms 10ms loss 1%`: tc-netem(8)'s words). Undone on Drop.
#[derive(Debug)]
pub struct Netem<'vm> {
    vm: &'vm Vm,
    dev: String,
    netns: Option<String>,
}

impl<'vm> Netem<'vm> {
    /// `tc qdisc replace dev DEV root netem PARAMS` in the root namespace.
    pub fn new(vm: &'vm Vm, dev: &str, params: &str) -> Result<Netem<'vm>> {
        Netem::in_netns(vm, None, dev, params)
    }

    /// The same in network namespace `netns` (e.g. [`INNER_NETNS`]).
    pub fn in_netns(vm: &'vm Vm, netns: Option<&str>, dev: &str, params: &str) -> Result<Netem<'vm>> {
        let guard = Netem { vm, dev: dev.to_owned(), netns: netns.map(str::to_owned) };
        guard.tc(&format!("qdisc replace dev {dev} root netem {params}"))?;
        Ok(guard)
    }

    fn tc(&self, args: &str) -> Result<()> {
        let mut argv: Vec<&str> = vec!["tc"];
        argv.extend(args.split_whitespace());
        let cmd = self.vm.command(argv);
        match &self.netns {
            Some(ns) => cmd.netns(ns).run_ok(),
            None => cmd.run_ok(),
        }
        .map(drop)
    }
}

impl Drop for Netem<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.tc(&format!("qdisc del dev {} root", self.dev)).filter_dead(self.vm) {
            eprintln!("warning: removing netem on {}: {e}", self.dev);
        }
    }
}

/// An interface taken down, brought up again on Drop (its addresses stay;
/// the kernel restores the subnet route when the link comes up).
#[derive(Debug)]
pub struct LinkDown<'vm> {
    vm: &'vm Vm,
    side: Side,
    restored: bool,
}

#[derive(Debug, Clone)]
enum Side {
    Guest { dev: String, netns: Option<String> },
    Host { tap: String },
}

impl<'vm> LinkDown<'vm> {
    /// `ip link set DEV down` in the guest's root namespace (`nic0`, `vt1`).
    pub fn guest(vm: &'vm Vm, dev: &str) -> Result<LinkDown<'vm>> {
        LinkDown::take(vm, Side::Guest { dev: dev.to_owned(), netns: None })
    }

    /// `ip link set DEV down` in [`INNER_NETNS`] (`vi0`: the initiator's
    /// end of inner path 0).
    pub fn initiator(vm: &'vm Vm, dev: &str) -> Result<LinkDown<'vm>> {
        LinkDown::take(vm, Side::Guest { dev: dev.to_owned(), netns: Some(INNER_NETNS.to_owned()) })
    }

    /// The host end (TAP device) of NIC `nic` down.
    pub fn host(vm: &'vm Vm, nic: usize) -> Result<LinkDown<'vm>> {
        LinkDown::take(vm, Side::Host { tap: vm.nic(nic).tap.clone() })
    }

    fn take(vm: &'vm Vm, side: Side) -> Result<LinkDown<'vm>> {
        let guard = LinkDown { vm, side, restored: false };
        guard.set("down")?;
        Ok(guard)
    }

    fn set(&self, state: &str) -> Result<()> {
        match &self.side {
            Side::Guest { dev, netns } => {
                let cmd = self.vm.command(["ip", "link", "set", dev, state]);
                match netns {
                    Some(ns) => cmd.netns(ns).run_ok(),
                    None => cmd.run_ok(),
                }
                .map(drop)
            }
            Side::Host { tap } => crate::cmd::run_ok(
                std::process::Command::new("ip").args(["link", "set", tap, state]),
                std::time::Duration::from_secs(30),
            )
            .map(drop),
        }
    }

    /// Brings the link up now, reporting errors (Drop only prints them).
    pub fn restore(mut self) -> Result<()> {
        self.restored = true;
        self.set("up")
    }
}

impl Drop for LinkDown<'_> {
    fn drop(&mut self) {
        if self.restored {
            return;
        }
        if let Err(e) = self.set("up").filter_dead(self.vm) {
            eprintln!("warning: bringing {:?} up again: {e}", self.side);
        }
    }
}

/// Resets (`ss -K`, the kernel sends RST) every established TCP
/// connection in the guest whose local end is `local` (a portal), and
/// returns how many there were.
pub fn reset_connections(vm: &Vm, local: SocketAddr) -> Result<usize> {
    let out = vm.command(["ss", "-K", "-H", "-tn", "state", "established", "src", &local.to_string()]).run_ok()?;
    Ok(out.lines().filter(|l| !l.trim().is_empty()).count())
}

/// The peers of the established TCP connections in the guest whose local
/// end is `local`.
pub fn established(vm: &Vm, local: SocketAddr) -> Result<Vec<SocketAddr>> {
    let out = vm.command(["ss", "-H", "-tn", "state", "established", "src", &local.to_string()]).run_ok()?;
    parse_peers(&out).map_err(|detail| Error::parse("ss -Htn state established", detail, &out))
}

/// `Recv-Q Send-Q Local:Port Peer:Port` lines (`state` filter: no State column).
fn parse_peers(text: &str) -> std::result::Result<Vec<SocketAddr>, String> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let peer = l.split_whitespace().nth(3).ok_or_else(|| format!("short line {l:?}"))?;
            // IPv6 peers print as [addr]:port, which parses as is.
            peer.parse::<SocketAddr>().map_err(|e| format!("peer {peer:?}: {e}"))
        })
        .collect()
}

/// Errors of undoing a fault on a VM that is gone do not matter.
trait FilterDead {
    fn filter_dead(self, vm: &Vm) -> Result<()>;
}

impl FilterDead for Result<()> {
    fn filter_dead(self, vm: &Vm) -> Result<()> {
        match self {
            Err(Error::Vm { .. }) if !vm.is_alive() => Ok(()),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_of_established_connections() {
        let text = "0      0         10.240.3.2:3260      10.240.3.1:41234\n0 0 10.240.3.2:3260 10.240.3.1:41236\n";
        let peers = parse_peers(text).unwrap();
        assert_eq!(peers, ["10.240.3.1:41234".parse::<SocketAddr>().unwrap(), "10.240.3.1:41236".parse().unwrap()]);
        assert!(parse_peers("0 0 x\n").is_err());
    }
}
