//! The device's data API against tgtd: read, write with FUA, flush,
//! discard and write-zeroes at byte offsets, counted per op; bad ranges
//! are refused with EINVAL before anything is sent.

use std::os::unix::fs::MetadataExt;

use mpio_mpath::Op;
use mpio_tests::assert_data;

use super::*;

fn totals(dev: &Device, op: Op) -> (u64, u64) {
    let s = dev.snapshot();
    (s.paths.iter().map(|p| p.stats.requests_of(op)).sum(), s.paths.iter().map(|p| p.stats.bytes_of(op)).sum())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_data_operation_works_across_the_paths() {
    require_root();
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
    dev.write_zeroes(3 << 20, 2 << 20).await.unwrap();
    let allocated = std::fs::metadata(file).unwrap().blocks();
    dev.discard(0, 2 << 20).await.unwrap();
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
    assert!(e.errno == 22 && e.message.contains("past the end"), "{e}");
    let e = dev.write(100, pattern(100, 512, 1), false).await.unwrap_err();
    assert!(e.errno == 22 && e.message.contains("multiples"), "{e}");
    let e = dev.discard(end, 4096).await.unwrap_err();
    assert_eq!(e.errno, 22, "{e}");
    let writes = totals(&dev, Op::Write).0;
    dev.write(4096, bytes::Bytes::new(), false).await.unwrap();
    dev.write_zeroes(4096, 0).await.unwrap();
    assert_eq!(totals(&dev, Op::Write).0, writes, "nothing sent for an empty range");
    drop(dev);

    // A LU without thin provisioning: discard says so, zeroing still works.
    let mut cfg = device_config(&tgtd, 2, 2);
    cfg.name = "thick".into();
    let dev = open_all(cfg).await;
    let e = dev.discard(0, 4096).await.unwrap_err();
    assert!(e.errno == 95 && e.message.contains("UNMAP"), "{e}");
    dev.write(0, pattern(0, 1 << 20, 7), false).await.unwrap();
    dev.write_zeroes(0, 1 << 20).await.unwrap();
    assert_data(&dev.read(0, 1 << 20).await.unwrap().to_bytes(), &vec![0u8; 1 << 20], "zeroed without UNMAP");
}
