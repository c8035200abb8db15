//! The multipath device over tgtd, exported on a unix socket and TCP, used
//! by real NBD clients; a write-protected LU as a read-only export.

use std::time::Duration;

use mpio_mpath::Device;
use mpio_nbd::consts::*;
use mpio_testbed::require_root;
use mpio_testbed::tgtd::{LunSpec, TargetSpec, Tgtd};
use mpio_tests::mp::{device_config, open_all, reset_path, wait_until};
use mpio_tests::nbd::*;
use mpio_tests::{assert_data, pattern};

use super::*;

/// tgtd with `portals` portals and a thin-provisioned LU of `size` bytes,
/// a multipath device over every portal, exported as `mp0`.
pub(crate) struct Fixture {
    pub(crate) tgtd: Tgtd,
    pub(crate) dev: Device,
    pub(crate) nbd: Listening<Device>,
}

impl Fixture {
    /// Call `require_root!()` first: the fixture needs tgtd.
    pub(crate) async fn start(portals: u8, size: u64) -> Fixture {
        let tgtd = Tgtd::builder()
            .portals(portals)
            .target(TargetSpec::new("nbd").lun(LunSpec::file(size).param("thin_provisioning=1")))
            .start()
            .expect("tgtd starts");
        let dev = open_all(device_config(&tgtd, 1, usize::from(portals))).await;
        let nbd = Listening::start(|_| {}).await;
        nbd.server
            .add_export(
                ExportConfig { description: "multipath test LU".into(), ..ExportConfig::new("mp0") },
                Arc::new(dev.clone()),
            )
            .expect("export added");
        Fixture { tgtd, dev, nbd }
    }

    pub(crate) fn unix_uri(&self) -> String {
        self.nbd.server.local_addrs()[0].uri("mp0")
    }

    fn tcp_uri(&self) -> String {
        self.nbd.server.local_addrs()[1].uri("mp0")
    }

    /// The target's copy of the LU, after a flush through the device.
    async fn disk(&self) -> Vec<u8> {
        self.dev.flush().await.expect("flush");
        std::fs::read(self.tgtd.backing_file(1, 1)).expect("backing file")
    }
}

pub(crate) const TOOL: Duration = Duration::from_secs(30);

/// Fields of `nbdinfo --json` for the one export.
async fn nbdinfo(uri: &str) -> serde_json::Value {
    let out = run("nbdinfo", &["--json", uri], TOOL).await;
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("nbdinfo JSON: {e}: {out}"));
    v["exports"][0].clone()
}

/// Runs qemu-io commands on `uri`; fails on any command error (qemu-io
/// prints them and may still exit 0).
async fn qemu_io(uri: &str, cmds: &[&str]) -> String {
    let mut args = vec!["-f", "raw"];
    for c in cmds {
        args.extend(["-c", c]);
    }
    args.push(uri);
    let out = run("qemu-io", &args, TOOL).await;
    for bad in ["failed", "error", "Error", "Pattern verification"] {
        assert!(!out.contains(bad), "qemu-io {cmds:?}: {out}");
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nbdinfo_qemu_and_nbdcopy_over_unix_and_tcp() {
    require_root!();
    let f = Fixture::start(2, 64 * MIB).await;
    let lu = f.dev.info().unwrap();

    // What clients are told, on both sockets.
    for uri in [f.unix_uri(), f.tcp_uri()] {
        let e = nbdinfo(&uri).await;
        assert_eq!(e["export-size"], 64 * MIB, "{e}");
        assert_eq!(e["block_size_minimum"], lu.block_len, "{e}");
        assert_eq!(e["block_size_preferred"], lu.physical_block_len.max(512), "{e}");
        let max = lu.max_transfer.map_or(32 * MIB, |m| m.min(32 * MIB));
        assert_eq!(e["block_size_maximum"], max, "{e}");
        for (flag, want) in [
            ("can_trim", true),
            ("can_fua", true),
            ("can_flush", true),
            ("can_multi_conn", true),
            ("can_zero", true),
            ("is_read_only", false),
        ] {
            assert_eq!(e[flag], want, "{flag}: {e}");
        }
        assert_eq!(e["description"], "multipath test LU");
    }

    // qemu-io: synchronous and asynchronous writes verified on read,
    // zeroing, discard, flush (qemu-io writes with FUA by default).
    let uri = f.unix_uri();
    qemu_io(
        &uri,
        &[
            "write -P 0xab 0 1M",
            "read -P 0xab 0 1M",
            "aio_write -P 0xcd 1M 512k",
            "aio_write -P 0xce 1536k 512k",
            "aio_flush",
            "read -P 0xcd 1M 512k",
            "read -P 0xce 1536k 512k",
            "write -z 2M 1M",
            "read -P 0 2M 1M",
            "discard 3M 1M",
            "read -P 0 3M 1M",
            "flush",
        ],
    )
    .await;
    let disk = f.disk().await;
    assert_data(&disk[..MIB as usize], &[0xab; MIB as usize], "qemu-io write on the target");
    assert_data(&disk[MIB as usize..1536 << 10], &[0xcd; 512 << 10], "aio_write on the target");
    assert_data(&disk[2 * MIB as usize..4 * MIB as usize], &vec![0; 2 * MIB as usize], "zeroed and discarded");

    // qemu-img convert in, compare; nbdcopy out over TCP, in over unix.
    let dir = f.nbd.dir.path();
    let src = dir.join("src.img");
    let image = pattern(0, 64 * MIB as usize, 0x1234);
    std::fs::write(&src, &image).unwrap();
    let src_s = src.to_str().unwrap();
    run("qemu-img", &["convert", "-n", "-f", "raw", "-O", "raw", src_s, &f.tcp_uri()], TOOL).await;
    run("qemu-img", &["compare", "-f", "raw", "-F", "raw", src_s, &f.unix_uri()], TOOL).await;
    assert_data(&f.disk().await, &image, "qemu-img convert on the target");

    let out = dir.join("out.img");
    run("nbdcopy", &[&f.tcp_uri(), out.to_str().unwrap()], TOOL).await;
    assert_data(&std::fs::read(&out).unwrap(), &image, "nbdcopy out");
    let image2 = pattern(0, 64 * MIB as usize, 0x9876);
    std::fs::write(&src, &image2).unwrap();
    run("nbdcopy", &[src_s, &f.unix_uri()], TOOL).await;
    assert_data(&f.disk().await, &image2, "nbdcopy in, on the target");
    run("nbdcopy", &[&f.unix_uri(), out.to_str().unwrap()], TOOL).await;
    assert_data(&std::fs::read(&out).unwrap(), &image2, "nbdcopy out again");

    // The requests went over both paths.
    let per_path: Vec<u64> = f.dev.snapshot().paths.iter().map(|p| p.stats.total_requests()).collect();
    assert!(per_path.iter().all(|n| *n > 0), "requests per path: {per_path:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fio_verified_random_io_on_several_connections() {
    require_root!();
    let f = Fixture::start(4, 64 * MIB).await;
    for (uri, rw) in [(f.unix_uri(), "randrw"), (f.tcp_uri(), "randwrite")] {
        let uri_arg = format!("--uri={uri}");
        let report = f.nbd.dir.path().join(format!("fio-{rw}.json"));
        let output_arg = format!("--output={}", report.display());
        run(
            "fio",
            &[
                "--name=nbd",
                "--ioengine=nbd",
                &uri_arg,
                &format!("--rw={rw}"),
                "--bs=4k",
                "--iodepth=32",
                "--numjobs=4",
                "--size=8M",
                "--offset_increment=8M",
                "--verify=crc32c",
                "--verify_fatal=1",
                // No verify state files in the working directory.
                "--verify_state_save=0",
                "--group_reporting",
                "--output-format=json",
                &output_arg,
            ],
            Duration::from_secs(60),
        )
        .await;
        let out = std::fs::read_to_string(&report).expect("fio report");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("fio JSON: {e}: {out}"));
        let job = &v["jobs"][0];
        assert_eq!(job["error"], 0, "{job}");
        // Every job wrote its 8 MiB region (randrw: about half of the
        // I/O) and read it back for verification.
        let written = job["write"]["io_bytes"].as_u64().unwrap();
        let read = job["read"]["io_bytes"].as_u64().unwrap();
        assert!(written >= 4 * MIB, "{rw}: {written} bytes written");
        assert!(read >= written, "{rw}: {read} bytes read for {written} written: not verified");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misbehaving_clients_get_errors_or_closed_and_the_device_keeps_serving() {
    require_root!();
    let f = Fixture::start(2, 16 * MIB).await;
    let data = pattern(4096, 8192, 77);
    f.dev.write(4096, data.clone(), false).await.unwrap();
    let end = 16 * MIB;

    // Errors by the spec on one connection, which stays usable.
    let mut c = RawClient::tcp(f.nbd.tcp()).await;
    c.open("mp0", false).await;
    let refusals = [
        (request(NBD_CMD_READ, 0, 1, end, 512), NbdError::Inval),
        (request(NBD_CMD_WRITE, 0, 2, end - 512, 1024), NbdError::NoSpc),
        (request(NBD_CMD_READ, 0, 3, 0, (32 << 20) + 512), NbdError::Inval),
        (request(NBD_CMD_READ, 0, 4, 100, 512), NbdError::Inval),
        (request(0x77, 0, 5, 0, 512), NbdError::Inval),
        (request(NBD_CMD_READ, 0x4000, 6, 0, 512), NbdError::Inval),
    ];
    for (req, error) in refusals {
        let payload = vec![0xee; if req.typ == NBD_CMD_WRITE { req.length as usize } else { 0 }];
        assert_eq!(c.call(req, &payload).await.error, error.code(), "{req:?}");
    }
    let r = c.call(request(NBD_CMD_READ, 0, 7, 4096, 8192), &[]).await;
    assert_eq!(r.error, 0);
    assert_data(&r.data, &data, "read after refusals");

    // Bad magic, and a write announcing 1 GiB: closed.
    let mut bad = RawClient::unix(&f.nbd.socket()).await;
    bad.open("mp0", true).await;
    bad.send_raw(b"this is not an NBD request at all").await;
    bad.expect_closed().await;
    let mut big = RawClient::unix(&f.nbd.socket()).await;
    big.open("mp0", false).await;
    big.send(request(NBD_CMD_WRITE, 0, 1, 0, 1 << 30), &[]).await;
    big.expect_closed().await;

    // The next client and the first one are served, the data intact.
    let mut next = RawClient::unix(&f.nbd.socket()).await;
    next.open("mp0", true).await;
    let r = next.call(request(NBD_CMD_READ, 0, 1, 4096, 8192), &[]).await;
    assert_data(&r.data, &data, "read by the next client");
    assert_eq!(c.call(request(NBD_CMD_FLUSH, 0, 8, 0, 0), &[]).await.error, 0);
    assert_data(&f.disk().await[4096..12288], &data, "the target's disk");
}

/// Write commands tgtd received for the LU, over every session; refused
/// ones count too.
fn target_writes(tgtd: &Tgtd) -> u64 {
    let sessions = tgtd.sessions(1).expect("tgtadm session show");
    sessions
        .iter()
        .flat_map(|s| tgtd.session_stats(1, s.sid).expect("tgtadm session stat").luns)
        .filter(|l| l.lun == 1)
        .map(|l| l.write_cmds)
        .sum()
}

/// qemu-io commands (on an image opened read-only with `-r`) whose output
/// is returned, errors included.
async fn qemu_io_output(uri: &str, read_only: bool, cmds: &[&str]) -> String {
    let mut args = vec!["-f", "raw"];
    if read_only {
        args.push("-r");
    }
    for c in cmds {
        args.extend(["-c", c]);
    }
    args.push(uri);
    let out = run_status("qemu-io", &args, TOOL).await;
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_protected_lu_is_a_read_only_export() {
    require_root!();
    let f = Fixture::start(2, 16 * MIB).await;
    let uri = f.unix_uri();
    qemu_io(&uri, &["write -P 0x5a 0 64k"]).await;

    // Protected on the target after the device claimed its paths: the
    // export still says writable, the LU refuses the write itself (DATA
    // PROTECT, EROFS) and the client gets EPERM.
    f.tgtd.lun_params(1, 1, "readonly=1").unwrap();
    let out = qemu_io_output(&uri, false, &["write -P 0xab 0 64k"]).await;
    assert!(out.contains("write failed: Operation not permitted"), "qemu-io write: {out}");
    qemu_io(&uri, &["read -P 0x5a 0 64k"]).await;

    // A claim reads the WP bit: the export becomes read-only for the
    // next client.
    reset_path(&f.tgtd, 1, 0).await;
    wait_until(&f.dev, Duration::from_secs(15), "the WP bit read", |d| d.info().unwrap().write_protected).await;
    let e = nbdinfo(&uri).await;
    assert_eq!(e["is_read_only"], true, "{e}");
    // qemu sees the flag and will not open the image for writing (its
    // EACCES for a read-only node); read-only it reads.
    let out = qemu_io_output(&uri, false, &["write -P 0xab 0 64k"]).await;
    assert!(out.contains("Could not open image: Permission denied"), "qemu-io write: {out}");
    let out = qemu_io_output(&uri, true, &["read -P 0x5a 0 64k"]).await;
    assert!(out.contains("read 65536/65536 bytes") && !out.contains("fail"), "qemu-io -r read: {out}");

    // A client writing anyway is refused by the server: EPERM, and nothing
    // reaches the target.
    let writes = target_writes(&f.tgtd);
    let mut c = RawClient::unix(&f.nbd.socket()).await;
    let export = c.open("mp0", true).await;
    assert_ne!(export.flags & NBD_FLAG_READ_ONLY, 0);
    for req in [
        request(NBD_CMD_WRITE, 0, 1, 0, 4096),
        request(NBD_CMD_TRIM, 0, 2, 0, 4096),
        request(NBD_CMD_WRITE_ZEROES, 0, 3, 0, 4096),
    ] {
        let payload = vec![0xab; if req.typ == NBD_CMD_WRITE { req.length as usize } else { 0 }];
        assert_eq!(c.call(req, &payload).await.error, NbdError::Perm.code(), "{req:?}");
    }
    let r = c.call(request(NBD_CMD_READ, 0, 4, 0, 4096), &[]).await;
    assert_data(&r.data, &[0x5a; 4096], "read on the read-only export");
    assert_eq!(target_writes(&f.tgtd), writes, "a refused NBD write reached the target");
    // The counter does see a write that is sent (and refused by the LU).
    assert_eq!(f.dev.write(0, vec![0xab; 4096].into(), false).await.unwrap_err().errno, mpio_mpath::Errno::ReadOnly);
    assert_eq!(target_writes(&f.tgtd), writes + 1);
    assert_data(&f.disk().await[..64 << 10], &[0x5a; 64 << 10], "the target's disk");
}
