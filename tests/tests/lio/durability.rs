//! ext4 on LIO's default fileio LU (write cache off, DPOFUA = 0, so LIO
//! rejects the FUA bit) through a two-path device, our NBD export and the
//! guest kernel's NBD client, which advertises FUA to ext4 because our
//! export offers it: the FUA writes (ext4's journal commits, `dd
//! oflag=dsync`) must reach LIO as plain writes, which a write-through LU
//! makes durable itself.

use std::sync::Arc;

use mpio_mpath::{Device, EventKind, Op, WriteCache};
use mpio_nbd::{ExportConfig, ListenAddr, ListenSpec, Server, ServerConfig};
use mpio_testbed::vm::fault;
use mpio_tests::mp::{open_all, wait_device_event};
use mpio_tests::pattern;
use mpio_tests::pr::SharedLu;

use super::*;

const PORT: u16 = 3270;
const FILE_LEN: usize = 512 << 10;
const TOOL: Duration = Duration::from_secs(300);

/// Files `f{first}..f{first+n}` written from the guest's tmpfs with fsync
/// each (`dd conv=fsync`); their contents are [`pattern`]s with the file
/// number as seed, kept in /tmp/src for the comparison.
async fn write_files(vm: &'static Vm, first: usize, n: usize) {
    tokio::task::spawn_blocking(move || {
        for i in first..first + n {
            vm.write_file(&format!("/tmp/src/f{i}"), &pattern(0, FILE_LEN, i as u64)).expect("copy a file in");
        }
    })
    .await
    .unwrap();
    let script: String = (first..first + n)
        .map(|i| format!("dd if=/tmp/src/f{i} of=/mnt/mp/f{i} bs=64k conv=fsync status=none\n"))
        .collect();
    guest(vm, &format!("set -e\n{script}"), TOOL).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ext4_on_a_default_lio_lu_mounts_and_survives_a_path_failure() {
    let Some(vm) = VM.get_or_skip() else { return };
    let _log = KernelLogOnPanic(vm);
    let lio = one_lu(vm, "ext4", PORT, LunSpec::fileio(128 * MIB));
    let lu = SharedLu::lio(&lio, 1, 1, 0);
    let dev = open_all(lu.device_config()).await;
    assert_eq!(
        dev.info().unwrap().write_cache,
        WriteCache { enabled: false, fua: false },
        "LIO's default fileio LU: write-through, FUA not accepted"
    );

    // Our export on the host, on the link no path fault touches.
    let nbd_addr = SocketAddr::from((vm.nic(2).host_addr, 0));
    let server = Server::<Device>::bind(ServerConfig::new(vec![ListenSpec::Tcp(nbd_addr)])).await.unwrap();
    server.add_export(ExportConfig::new("mp0"), Arc::new(dev.clone())).unwrap();
    let ListenAddr::Tcp(at) = server.local_addrs()[0].clone() else { panic!("not TCP") };
    guest(vm, &format!("nbd-client -N mp0 {} {} /dev/nbd0", at.ip(), at.port()), TOOL).await;
    // Whatever happens below, the guest lets go of the device (nbd-client
    // -d also fails over an unmounted fs; the lazy unmount first).
    struct Detach(&'static Vm);
    impl Drop for Detach {
        fn drop(&mut self) {
            let _ = self.0.sh("umount -l /mnt/mp 2>/dev/null; nbd-client -d /dev/nbd0").run();
        }
    }
    let _detach = Detach(vm);

    // Finding 1 as it was seen: an O_DSYNC direct write is a FUA write.
    let dd = guest_outcome(vm, "dd if=/dev/zero of=/dev/nbd0 bs=4k count=1 oflag=direct,dsync status=none", TOOL).await;
    assert!(dd.success(), "a FUA write through the export to a LU without DPOFUA: {dd:?}");
    let through = dev.snapshot().counters.write_through;
    assert!(through >= 1, "the FUA write counted as durable on a write-through LU: {through}");

    guest(vm, "set -e; mkfs.ext4 -q -F /dev/nbd0; mkdir -p /mnt/mp /tmp/src; mount -t ext4 /dev/nbd0 /mnt/mp", TOOL)
        .await;
    write_files(vm, 0, 8).await;

    // Path p2 fails for real: LIO stops listening on its portal and its
    // connection is reset, so it cannot come back during the test.
    let mut events = dev.events();
    let p2 = lu.portals[1];
    lio.remove_portal(1, 1, p2).unwrap();
    let cut = fault::reset_connections(vm, p2).unwrap();
    assert_eq!(cut, 1, "p2's connection");
    let failed = wait_device_event(&mut events, Duration::from_secs(30), "p2 failed", |e| {
        e.kind == EventKind::PathFailed && e.path_name.as_deref() == Some("p2")
    })
    .await;
    let writes = |d: &Device| d.snapshot().paths.iter().map(|p| p.stats.requests_of(Op::Write)).collect::<Vec<_>>();
    let before = writes(&dev);
    write_files(vm, 8, 8).await;
    let after = writes(&dev);
    let snap = dev.snapshot();
    assert_eq!(snap.paths[0].state, "active");
    assert_ne!(snap.paths[1].state, "active", "p2 cannot log in again: {}", failed.reason);
    assert!(after[0] > before[0] && after[1] == before[1], "p1 alone carried the writes: {before:?} -> {after:?}");

    // Unmounted, the filesystem is clean, and every file reads back as
    // written, in the guest and on the host.
    guest(vm, "set -e; umount /mnt/mp; e2fsck -f -n /dev/nbd0", TOOL).await;
    let cmp: String = (0..16).map(|i| format!("cmp /tmp/src/f{i} /mnt/mp/f{i}\n")).collect();
    guest(vm, &format!("set -e; mount -t ext4 -o ro /dev/nbd0 /mnt/mp\n{cmp}"), TOOL).await;
    let got = tokio::task::spawn_blocking(move || vm.read_file("/mnt/mp/f15").unwrap()).await.unwrap();
    mpio_tests::assert_data(&got, &pattern(0, FILE_LEN, 15), "f15 read back to the host");
    guest(vm, "umount /mnt/mp; nbd-client -d /dev/nbd0", TOOL).await;
    let errors: Vec<u64> = dev.snapshot().paths.iter().map(|p| p.stats.errors).collect();
    assert_eq!(errors, [0, 0], "errors that reached the caller, per path");
}
