//! Configuration files for `mpio daemon` in the test VM: what the guest
//! tests, the tour and the benchmark write, from one place.
//!
//! A file is [`head`] (the daemon's sockets in its directory, metrics
//! off), then the caller's own tables (`[timers]`, `[[target]]`), then a
//! [`device`] table per device, each with a path per portal.

use std::net::{IpAddr, SocketAddr};

use crate::vm::Vm;

/// `initiator`, `[daemon]` (control socket in `dir`, `log` filter,
/// `ready_timeout`), `[metrics]` off, `[nbd]` socket in `dir`.
pub fn head(dir: &str, initiator: &str, log: &str, ready_timeout: &str) -> String {
    format!(
        "initiator = \"{initiator}\"\n\n[daemon]\ncontrol_socket = \"{dir}/mpio.sock\"\nlog = \"{log}\"\n\
         ready_timeout = \"{ready_timeout}\"\n\n[metrics]\nenabled = false\n\n[nbd]\nsocket = \"{dir}/nbd.sock\"\n"
    )
}

/// `[[target]]` `name` with `iqn` and `extra` keys.
pub fn target(name: &str, iqn: &str, extra: &str) -> String {
    format!("\n[[target]]\nname = \"{name}\"\niqn = \"{iqn}\"\n{extra}")
}

/// A `[[device]]` `name` on LUN `lun` of target `target` with `frontend`
/// (`nbd`, `ublk`, or a TOML list: `["ublk", "nbd"]`) and `extra` keys
/// (its own, then tables such as `[device.timers]`), and a path
/// `p{i+1}` per portal; a portal on one of `vm`'s inner paths is reached
/// from the initiator's address of that path (`source`).
pub fn device(
    vm: &Vm,
    name: &str,
    target: &str,
    lun: u32,
    frontend: &str,
    extra: &str,
    portals: &[SocketAddr],
) -> String {
    let frontend = if frontend.starts_with('[') { frontend.to_owned() } else { format!("\"{frontend}\"") };
    let mut s = format!(
        "\n[[device]]\nname = \"{name}\"\ntarget = \"{target}\"\nlun = {lun}\nfrontend = {frontend}\n{extra}\n"
    );
    for (i, p) in portals.iter().enumerate() {
        s.push_str(&format!("\n[[device.path]]\nname = \"p{}\"\nportal = \"{p}\"\n", i + 1));
        if let Some(ip) = vm.inner_paths().iter().find(|ip| IpAddr::V4(ip.target_addr) == p.ip()) {
            s.push_str(&format!("source = \"{}\"\n", ip.initiator_addr));
        }
    }
    s
}
