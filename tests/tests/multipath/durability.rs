//! Durability follows the logical unit (Linux sd): FUA writes and flushes
//! become what the LU's write cache (WCE) and FUA support (DPOFUA) need.
//! tgtd reports DPOFUA on every LU and a write cache unless its Caching
//! mode page says otherwise, so it shows two of the three cases; the
//! third (write-back without DPOFUA, where a FUA write is followed by
//! SYNCHRONIZE CACHE) needs LIO.

use mpio_mpath::{Op, WriteCache};
use mpio_tests::assert_data;

use super::*;

/// tgtd's Caching mode page with WCE cleared (byte 2 0x10 instead of its
/// default 0x14): a write-through LU.
const WRITE_THROUGH: &str = "mode_page=8:0:18:0x10:0:0xff:0xff:0:0:0xff:0xff:0xff:0xff:0x80:0x14:0:0:0:0:0:0";

fn flushes_sent(dev: &Device) -> u64 {
    dev.snapshot().paths.iter().map(|p| p.stats.requests_of(Op::Flush)).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fua_writes_and_flushes_follow_the_write_cache_of_the_lu() {
    require_root!();
    let tgtd = Tgtd::builder()
        .portals(2)
        .target(TargetSpec::new("write-back").lun(LunSpec::file(16 * MIB)))
        .target(TargetSpec::new("write-through").lun(LunSpec::file(16 * MIB).param(WRITE_THROUGH)))
        .start()
        .unwrap();

    // Write-back with FUA: the FUA bit does it, flushes are sent.
    let dev = open_all(device_config(&tgtd, 1, 2)).await;
    assert_eq!(dev.info().unwrap().write_cache, WriteCache { enabled: true, fua: true });
    dev.write(0, pattern(0, 64 << 10, 1), true).await.unwrap();
    assert_eq!(flushes_sent(&dev), 0, "a FUA write on a LU with DPOFUA needs no flush");
    dev.flush().await.unwrap();
    assert_eq!(flushes_sent(&dev), 1);
    let c = dev.snapshot().counters;
    assert_eq!((c.fua_flushes, c.write_through), (0, 0));
    let disk = std::fs::read(tgtd.backing_file(1, 1)).unwrap();
    assert_data(&disk[..64 << 10], &pattern(0, 64 << 10, 1), "write-back LU's backing file");
    drop(dev);

    // Write-through: neither FUA nor flush needs a command.
    let dev = open_all(device_config(&tgtd, 2, 2)).await;
    assert_eq!(dev.info().unwrap().write_cache, WriteCache { enabled: false, fua: true });
    dev.write(0, pattern(0, 64 << 10, 2), true).await.unwrap();
    dev.write(64 << 10, pattern(64 << 10, 64 << 10, 2), false).await.unwrap();
    dev.flush().await.unwrap();
    assert_eq!(flushes_sent(&dev), 0, "nothing to flush on a write-through LU");
    let c = dev.snapshot().counters;
    assert_eq!((c.fua_flushes, c.write_through), (0, 2), "the FUA write and the flush");
    let disk = std::fs::read(tgtd.backing_file(2, 1)).unwrap();
    assert_data(&disk[..128 << 10], &pattern(0, 128 << 10, 2), "write-through LU's backing file");
}
