//! Networks of a VM: TAP NICs between host and guest, and veth paths
//! between network namespaces inside the guest.
//!
//! **Host to guest.** NIC `i` of the VM in slot `s` is a TAP device
//! `mpvm<s>n<i>` that qemu creates (and the kernel removes when qemu
//! exits) on its own subnet `10.(240+i).s.0/24`: the host is `.1`, the
//! guest's addresses are `.2`, `.3`, ... on its interface `nic<i>`. One
//! subnet per NIC means one route per NIC, so taking a NIC down (on the
//! host: `ip link set mpvm<s>n<i> down`; in the guest: `ip link set nic<i>
//! down`) cuts exactly the paths over it, and host iptables/tc rules
//! ([`crate::netfault`]) see real traffic on a real interface. Several
//! addresses on one NIC give several portals behind one link.
//!
//! **Inside the guest** (initiator and target both in the VM, issue 9):
//! path `i` is a veth pair, `vt<i>` in the root namespace with
//! `10.250.i.1/24` (where LIO listens) and `vi<i>` in the namespace
//! [`INNER_NETNS`] with `10.250.i.2/24` (where the initiator runs, see
//! [`super::GuestCommand::netns`]). Both ends in one namespace would not
//! do: traffic between two local addresses goes over loopback whatever
//! interface holds them, so taking a link down would cut nothing.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::process::Command;
use std::time::Duration;

use crate::cmd;
use crate::error::Result;

/// Network namespace of the initiator side of the inner paths.
pub const INNER_NETNS: &str = "ini";

/// Most NICs a VM can have.
pub const MAX_NICS: usize = 8;

/// Most addresses on one NIC.
pub const MAX_ADDRESSES: u8 = 16;

/// One NIC between host and guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nic {
    /// Its index in the spec (0, 1, ...).
    pub index: usize,
    /// The TAP device on the host (`mpvm3n0`).
    pub tap: String,
    /// Its name in the guest (`nic0`).
    pub guest_if: String,
    /// The host's address on it (`10.240.3.1`).
    pub host_addr: Ipv4Addr,
    /// The guest's addresses on it (`10.240.3.2`, ...).
    pub guest_addrs: Vec<Ipv4Addr>,
    /// Its MAC address (`52:54:00:6d:03:00`).
    pub mac: String,
}

/// One path between the namespaces inside the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InnerPath {
    /// Its index (0, 1, ...).
    pub index: usize,
    /// The target side's address (root namespace): `10.250.i.1`.
    pub target_addr: Ipv4Addr,
    /// The initiator side's address ([`INNER_NETNS`]): `10.250.i.2`.
    pub initiator_addr: Ipv4Addr,
    /// The target side's interface (`vt<i>`).
    pub target_if: String,
    /// The initiator side's interface (`vi<i>`, in [`INNER_NETNS`]).
    pub initiator_if: String,
}

/// The NICs of the VM in `slot`, with `addresses[i]` guest addresses on NIC `i`.
pub(crate) fn plan_nics(slot: u32, addresses: &[u8]) -> Vec<Nic> {
    let s = slot as u8;
    addresses
        .iter()
        .enumerate()
        .map(|(i, &n)| {
            let net = 240 + i as u8;
            Nic {
                index: i,
                tap: format!("mpvm{slot}n{i}"),
                guest_if: format!("nic{i}"),
                host_addr: Ipv4Addr::new(10, net, s, 1),
                guest_addrs: (0..n).map(|k| Ipv4Addr::new(10, net, s, 2 + k)).collect(),
                mac: format!("52:54:00:6d:{s:02x}:{i:02x}"),
            }
        })
        .collect()
}

/// The inner paths (the same in every VM: they never leave it).
pub(crate) fn plan_inner(n: u8) -> Vec<InnerPath> {
    (0..n)
        .map(|i| InnerPath {
            index: i as usize,
            target_addr: Ipv4Addr::new(10, 250, i, 1),
            initiator_addr: Ipv4Addr::new(10, 250, i, 2),
            target_if: format!("vt{i}"),
            initiator_if: format!("vi{i}"),
        })
        .collect()
}

/// Gives the host end of `nic` its address and brings it up, once qemu
/// has created the TAP device.
pub(crate) fn configure_host(nic: &Nic) -> Result<()> {
    // No IPv6 chatter (router solicitations) on a test link.
    let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{}/disable_ipv6", nic.tap), "1");
    let ip = |args: &[&str]| cmd::run_ok(Command::new("ip").args(args), Duration::from_secs(30)).map(drop);
    ip(&["addr", "add", &format!("{}/24", nic.host_addr), "dev", &nic.tap])?;
    ip(&["link", "set", &nic.tap, "up"])
}

/// The guest script that names the NICs (found by MAC), gives them their
/// addresses and builds the inner paths.
pub(crate) fn guest_setup_script(nics: &[Nic], inner: &[InnerPath]) -> String {
    let mut s = String::from(
        "set -e\n\
         by_mac() { for d in /sys/class/net/*; do [ \"$(cat $d/address)\" = \"$1\" ] && { basename $d; return; }; done; \
         echo \"no NIC with MAC $1\" >&2; return 1; }\n",
    );
    for nic in nics {
        let _ = writeln!(s, "dev=$(by_mac {})", nic.mac);
        let _ = writeln!(s, "ip link set \"$dev\" name {}", nic.guest_if);
        let _ = writeln!(s, "echo 1 > /proc/sys/net/ipv6/conf/{}/disable_ipv6", nic.guest_if);
        for a in &nic.guest_addrs {
            let _ = writeln!(s, "ip addr add {a}/24 dev {}", nic.guest_if);
        }
        let _ = writeln!(s, "ip link set {} up", nic.guest_if);
    }
    if !inner.is_empty() {
        let _ = writeln!(s, "ip netns add {INNER_NETNS}\nip -n {INNER_NETNS} link set lo up");
    }
    for p in inner {
        let (t, i) = (&p.target_if, &p.initiator_if);
        let _ = writeln!(s, "ip link add {t} type veth peer name {i} netns {INNER_NETNS}");
        let _ = writeln!(s, "ip addr add {}/24 dev {t}\nip link set {t} up", p.target_addr);
        let _ = writeln!(s, "ip -n {INNER_NETNS} addr add {}/24 dev {i}", p.initiator_addr);
        let _ = writeln!(s, "ip -n {INNER_NETNS} link set {i} up");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_slot_and_nic_has_its_own_subnet() {
        let a = plan_nics(3, &[2, 1]);
        assert_eq!(a[0].tap, "mpvm3n0");
        assert_eq!(a[0].host_addr, Ipv4Addr::new(10, 240, 3, 1));
        assert_eq!(a[0].guest_addrs, [Ipv4Addr::new(10, 240, 3, 2), Ipv4Addr::new(10, 240, 3, 3)]);
        assert_eq!(a[1].guest_addrs, [Ipv4Addr::new(10, 241, 3, 2)]);
        assert_eq!(a[1].mac, "52:54:00:6d:03:01");
        let b = plan_nics(4, &[1]);
        assert_ne!(a[0].host_addr, b[0].host_addr);
        assert!(plan_nics(200, &[MAX_ADDRESSES; MAX_NICS]).iter().all(|n| n.tap.len() <= 15));
        let script = guest_setup_script(&a, &plan_inner(1));
        assert!(script.contains("ip addr add 10.240.3.3/24 dev nic0"), "{script}");
        assert!(script.contains("ip -n ini addr add 10.250.0.2/24 dev vi0"), "{script}");
    }
}
