//! A kernel block device over the export: nbdfuse exposes it as a file,
//! a loop device makes that a block device, ext4 goes on it, and a path
//! of the multipath device fails while files are written. (This host has
//! no nbd.ko; nbdfuse + loop is the kernel client available.)

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use mpio_mpath::EventKind;
use mpio_testbed::require_root;
use mpio_tests::mp::{reset_path, wait_device_event};
use mpio_tests::nbd::{run, run_status};
use mpio_tests::{assert_data, pattern};

use super::device::{Fixture, TOOL};
use super::*;

/// Unmounts and detaches whatever the test set up, also when it panics,
/// so no mount or loop device outlives it.
#[derive(Default)]
struct Cleanup {
    mounts: Vec<PathBuf>,
    loop_dev: Option<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let quiet = |args: &[&str]| {
            let _ = std::process::Command::new(args[0]).args(&args[1..]).output();
        };
        for m in self.mounts.iter().rev() {
            quiet(&["umount", "-l", m.to_str().unwrap_or_default()]);
        }
        if let Some(l) = &self.loop_dev {
            quiet(&["losetup", "-d", l]);
        }
    }
}

const FILES: usize = 24;
const FILE_LEN: usize = 1 << 20;

/// Writes the test files with fsync, counting them in `done`.
fn write_files(dir: &Path, done: &AtomicUsize) {
    use std::io::Write;
    for i in 0..FILES {
        let mut f = std::fs::File::create(dir.join(format!("f{i}"))).expect("create");
        f.write_all(&pattern(0, FILE_LEN, i as u64)).expect("write");
        f.sync_all().expect("fsync");
        done.fetch_add(1, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ext4_over_nbdfuse_and_loop_survives_a_path_failure() {
    require_root!();
    assert!(
        Path::new("/dev/fuse").exists(),
        "this test needs /dev/fuse (FUSE in the kernel) for nbdfuse; load the fuse module or run where it exists"
    );
    let f = Fixture::start(2, 128 * MIB).await;
    let dir = f.nbd.dir.path();
    let (fuse_dir, mnt) = (dir.join("fuse"), dir.join("mnt"));
    std::fs::create_dir(&fuse_dir).unwrap();
    std::fs::create_dir(&mnt).unwrap();
    let mut cleanup = Cleanup::default();

    // nbdfuse serves the export as fuse/disk until unmounted; -P writes its
    // pid once the file is ready.
    let pidfile = dir.join("nbdfuse.pid");
    let disk = fuse_dir.join("disk");
    let mut nbdfuse = tokio::process::Command::new("nbdfuse")
        .args(["-P", pidfile.to_str().unwrap(), disk.to_str().unwrap(), &f.unix_uri()])
        .kill_on_drop(true)
        .spawn()
        .expect("nbdfuse runs (package libnbd-bin)");
    cleanup.mounts.push(fuse_dir.clone());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !pidfile.exists() {
        if let Some(status) = nbdfuse.try_wait().unwrap() {
            panic!("nbdfuse exited with {status} before serving");
        }
        assert!(tokio::time::Instant::now() < deadline, "nbdfuse not ready within 10 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(std::fs::metadata(&disk).unwrap().len(), 128 * MIB);

    let loop_dev = run("losetup", &["-f", "--show", disk.to_str().unwrap()], TOOL).await.trim().to_string();
    cleanup.loop_dev = Some(loop_dev.clone());
    run("mkfs.ext4", &["-q", "-F", &loop_dev], TOOL).await;
    run("mount", &[&loop_dev, mnt.to_str().unwrap()], TOOL).await;
    cleanup.mounts.push(mnt.clone());

    // Files written with fsync; p1's connection is reset on the target
    // after a third of them.
    let mut events = f.dev.events();
    let done = Arc::new(AtomicUsize::new(0));
    let writer = tokio::task::spawn_blocking({
        let (mnt, done) = (mnt.clone(), done.clone());
        move || write_files(&mnt, &done)
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while done.load(Ordering::SeqCst) < FILES / 3 {
        assert!(tokio::time::Instant::now() < deadline, "file writes stalled before the fault");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    reset_path(&f.tgtd, 1, 0).await;
    wait_device_event(&mut events, Duration::from_secs(10), "p1 failed", |e| {
        e.kind == EventKind::PathFailed && e.path == Some(0)
    })
    .await;
    assert!(done.load(Ordering::SeqCst) < FILES, "the fault came after the writes");
    tokio::time::timeout(Duration::from_secs(60), writer).await.expect("writes finish").expect("writer");
    let written: u64 = f.dev.snapshot().paths.iter().map(|p| p.stats.bytes_of(mpio_mpath::Op::Write)).sum();
    assert!(written >= (FILES * FILE_LEN) as u64, "only {written} bytes reached the device");
    run("umount", &[mnt.to_str().unwrap()], TOOL).await;
    cleanup.mounts.pop();

    // A clean filesystem, and every file as written, read back through a
    // fresh mount (the page cache of the first one is gone).
    let fsck = run_status("fsck.ext4", &["-n", "-f", &loop_dev], TOOL).await;
    assert!(
        fsck.status.success(),
        "fsck.ext4 -n found problems ({}):\n{}{}",
        fsck.status,
        String::from_utf8_lossy(&fsck.stdout),
        String::from_utf8_lossy(&fsck.stderr)
    );
    run("mount", &["-o", "ro", &loop_dev, mnt.to_str().unwrap()], TOOL).await;
    cleanup.mounts.push(mnt.clone());
    let check = tokio::task::spawn_blocking({
        let mnt = mnt.clone();
        move || {
            for i in 0..FILES {
                let got = std::fs::read(mnt.join(format!("f{i}"))).expect("read back");
                assert_data(&got, &pattern(0, FILE_LEN, i as u64), &format!("file f{i}"));
            }
        }
    });
    check.await.expect("files intact");
    drop(cleanup);
    tokio::time::timeout(Duration::from_secs(10), nbdfuse.wait()).await.expect("nbdfuse exits on unmount").unwrap();
}
