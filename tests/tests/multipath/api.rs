//! The device's data API against tgtd: read, write with FUA, flush,
//! discard and write-zeroes at byte offsets, counted per op; bad ranges
//! are refused with EINVAL before anything is sent; a write-protected LU
//! refuses writes with EROFS, without failover.

use std::os::unix::fs::MetadataExt;

use mpio_mpath::{Errno, EventKind, IoErrorKind, Op, ZeroFlags};
use mpio_tests::assert_data;

use super::*;

fn totals(dev: &Device, op: Op) -> (u64, u64) {
    let s = dev.snapshot();
    (s.paths.iter().map(|p| p.stats.requests_of(op)).sum(), s.paths.iter().map(|p| p.stats.bytes_of(op)).sum())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_data_operation_works_across_the_paths() {
    require_root!();
    let tgtd = Tgtd::builder()
        .portals(2)
        .target(TargetSpec::new("thin").lun(LunSpec::file(64 * MIB).param("thin_provisioning=1")))
        .target(TargetSpec::new("thick").lun(LunSpec::file(16 * MIB)))
        .start()
        .unwrap();
    let dev = open_all(device_config(&tgtd, 1, 2)).await;
    let lu = dev.info().unwrap();
    assert!(lu.unmap, "tgtd's thin LU reports UNMAP: {lu:?}");
    let file = tgtd.backing_file(1, 1);

    // 24 MiB with FUA: split into commands (8 MiB at most), round robin
    // over both paths.
    let data = pattern(0, 24 << 20, 42);
    dev.write(0, data.clone(), true).await.unwrap();
    assert_eq!(totals(&dev, Op::Write), (3, 24 << 20));
    assert_data(&dev.read(0, 24 << 20).await.unwrap().to_bytes(), &data, "read back");
    assert!(dev.snapshot().paths.iter().all(|p| p.stats.requests_of(Op::Write) > 0), "both paths wrote");

    // Zeroes in the middle, a hole at the start; the rest is untouched.
    dev.write_zeroes(3 << 20, 2 << 20, ZeroFlags::default()).await.unwrap();
    let allocated = std::fs::metadata(file).unwrap().blocks();
    dev.discard(0, 2 << 20, false).await.unwrap();
    dev.flush().await.unwrap();
    assert!(std::fs::metadata(file).unwrap().blocks() < allocated, "the discarded range is deallocated");
    let got = dev.read(0, 24 << 20).await.unwrap().to_bytes();
    let zero = vec![0u8; 2 << 20];
    assert_data(&got[..2 << 20], &zero, "discarded range");
    assert_data(&got[2 << 20..3 << 20], &data[2 << 20..3 << 20], "between");
    assert_data(&got[3 << 20..5 << 20], &zero, "zeroed range");
    assert_data(&got[5 << 20..], &data[5 << 20..], "after");
    let disk = std::fs::read(file).unwrap();
    assert_data(&disk[..24 << 20], &got, "the target's disk");
    for (op, bytes) in [(Op::Discard, 2 << 20), (Op::WriteZeroes, 2 << 20)] {
        let (n, b) = totals(&dev, op);
        assert!(n >= 1 && b == bytes, "{}: {n} requests, {b} bytes", op.name());
    }
    assert!(totals(&dev, Op::Flush).0 >= 1);

    // Bad ranges: EINVAL naming the problem; an empty one is a no-op.
    let end = lu.capacity();
    let e = dev.read(end - 4096, 8192).await.unwrap_err();
    assert!(e.errno == Errno::Invalid && e.message.contains("past the end"), "{e}");
    let e = dev.write(100, pattern(100, 512, 1), false).await.unwrap_err();
    assert!(e.errno == Errno::Invalid && e.message.contains("multiples"), "{e}");
    let e = dev.discard(end, 4096, false).await.unwrap_err();
    assert_eq!(e.errno, Errno::Invalid, "{e}");
    let writes = totals(&dev, Op::Write).0;
    dev.write(4096, bytes::Bytes::new(), false).await.unwrap();
    dev.write_zeroes(4096, 0, ZeroFlags::default()).await.unwrap();
    assert_eq!(totals(&dev, Op::Write).0, writes, "nothing sent for an empty range");
    drop(dev);

    // A LU without thin provisioning: discard says so, zeroing still works.
    let mut cfg = device_config(&tgtd, 2, 2);
    cfg.name = "thick".into();
    let dev = open_all(cfg).await;
    let e = dev.discard(0, 4096, false).await.unwrap_err();
    assert!(e.errno == Errno::NotSupported && e.message.contains("UNMAP"), "{e}");
    dev.write(0, pattern(0, 1 << 20, 7), false).await.unwrap();
    dev.write_zeroes(0, 1 << 20, ZeroFlags::default()).await.unwrap();
    assert_data(&dev.read(0, 1 << 20).await.unwrap().to_bytes(), &vec![0u8; 1 << 20], "zeroed without UNMAP");
}

/// Re-drives and retries over all paths.
fn redriven_and_retried(dev: &Device) -> (u64, u64) {
    let s = dev.snapshot();
    (s.paths.iter().map(|p| p.stats.redriven).sum(), s.paths.iter().map(|p| p.stats.retries).sum())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_protected_lu_refuses_writes_with_erofs_on_one_path() {
    require_root!();
    let tgtd = Tgtd::builder()
        .portals(2)
        .target(TargetSpec::new("ro").lun(LunSpec::file(16 * MIB).param("thin_provisioning=1").param("readonly=1")))
        .start()
        .unwrap();
    // Known data on the target's disk, put there behind the LU's back.
    let file = tgtd.backing_file(1, 1).to_owned();
    let data = pattern(0, 1 << 20, 5);
    std::fs::write(&file, &data).unwrap();
    std::fs::File::options().write(true).open(&file).unwrap().set_len(16 * MIB).unwrap();

    let dev = open_all(device_config(&tgtd, 1, 2)).await;
    assert!(dev.info().unwrap().write_protected, "the claim read MODE SENSE's WP bit: {:?}", dev.info());
    assert_data(&dev.read(0, 1 << 20).await.unwrap().to_bytes(), &data, "reads work");

    // Bypassing any read-only export: every modifying op reaches the LU,
    // which answers DATA PROTECT 27/00. That is the device's own answer:
    // EROFS to the caller, sent once, no path failed, nothing re-driven
    // or retried.
    let mut events = dev.events();
    let writes = totals(&dev, Op::Write).0;
    let e = dev.write(0, pattern(0, 4096, 6), true).await.unwrap_err();
    assert_eq!((e.kind, e.errno), (IoErrorKind::Device, Errno::ReadOnly), "{e}");
    assert!(e.message.contains("DATA PROTECT") && e.message.contains("WRITE PROTECTED"), "{e}");
    let e = dev.write_zeroes(8192, 4096, ZeroFlags::default()).await.unwrap_err();
    assert_eq!((e.kind, e.errno), (IoErrorKind::Device, Errno::ReadOnly), "write zeroes: {e}");
    let e = dev.discard(1 << 20, 1 << 20, false).await.unwrap_err();
    assert_eq!((e.kind, e.errno), (IoErrorKind::Device, Errno::ReadOnly), "discard: {e}");
    assert_eq!(redriven_and_retried(&dev), (0, 0));
    assert_eq!(totals(&dev, Op::Write).0, writes, "a refused write is not counted as done");
    let evs = drain(&mut events);
    assert!(!evs.iter().any(|ev| matches!(ev.kind, EventKind::PathFailed | EventKind::Failover { .. })), "{evs:?}");
    assert_eq!(usable(&dev), 2, "{:?}", states(&dev));
    dev.flush().await.unwrap();
    assert_data(&std::fs::read(&file).unwrap()[..1 << 20], &data, "the target's disk is untouched");

    // Protection lifted on the target: writes go through at once; the flag
    // follows at the next claim of a path (here: p1 reconnects).
    tgtd.lun_params(1, 1, "readonly=0").unwrap();
    dev.write(0, pattern(0, 4096, 7), true).await.unwrap();
    assert!(dev.info().unwrap().write_protected, "not re-read without a claim");
    reset_path(&tgtd, 1, 0).await;
    wait_until(&dev, Duration::from_secs(15), "the WP bit re-read", |d| !d.info().unwrap().write_protected).await;
    wait_ready(&dev, 2, Duration::from_secs(15)).await;
    // And back on: a reclaim sees that too.
    tgtd.lun_params(1, 1, "readonly=1").unwrap();
    reset_path(&tgtd, 1, 1).await;
    wait_until(&dev, Duration::from_secs(15), "the WP bit re-read", |d| d.info().unwrap().write_protected).await;
    assert_data(&dev.read(0, 4096).await.unwrap().to_bytes(), &pattern(0, 4096, 7), "the write that went through");
}
