//! LUs without a unit serial: LIO gives each only a T10 vendor ID
//! designator "LIO-ORG" with an empty vendor-specific part, the same for
//! every such LU. Two of them behind two TPGs of one target are two LUs,
//! never one device.

use mpio_mpath::{CauseKind, Device, DeviceError, PathConfig, PathPhase};
use mpio_transport::ConnectionSpec;

use super::*;

const PORT: u16 = 3271;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_lio_lus_without_serials_are_never_one_device() {
    let Some(vm) = VM.get_or_skip() else { return };
    let _log = KernelLogOnPanic(vm);
    let [a, b] = two_portals(vm, PORT);
    let lio = Lio::builder()
        .target(
            TargetSpec::new("noserial")
                .tpg(TpgSpec::new().portal(a).lun(LunSpec::fileio(16 * MIB).no_serial()))
                .tpg(TpgSpec::new().portal(b).lun(LunSpec::fileio(16 * MIB).no_serial())),
        )
        .start(vm)
        .unwrap();
    // p1 reaches TPG 1's LU, p2 TPG 2's: two LUs that look the same.
    let mut cfg = mpio_tests::pr::SharedLu { target: lio.iqn(1), portals: vec![a, b], lun: lun0() }.device_config();
    cfg.startup_timeout = Duration::from_secs(5);

    // Without identity neither path is used, and the refusal names the fix.
    let refused = match Device::open(cfg.clone()).await {
        Err(e) => e.to_string(),
        Ok(dev) => match dev.wait_all_ready(Duration::from_secs(60)).await {
            Err(DeviceError::PathFailed { reason, .. }) => reason,
            other => panic!("two serial-less LUs were claimed: {other:?}, {:?}", mpio_tests::mp::states(&dev)),
        },
    };
    assert!(refused.contains("reports no identity"), "{refused}");
    assert!(refused.contains("unit serial") && refused.contains("identity ="), "names both fixes: {refused}");

    // Pinned, the identity vouches for the first path only: p2 (the other
    // LU) is refused, and what is written lands in TPG 1's file alone.
    cfg.expect_identity = Some("pinned.lio-noserial".into());
    cfg.paths =
        vec![PathConfig::new("p1", ConnectionSpec::to(a.into())), PathConfig::new("p2", ConnectionSpec::to(b.into()))];
    let dev = Device::open(cfg).await.expect("the pinned device opens over p1");
    mpio_tests::mp::wait_until(&dev, Duration::from_secs(30), "p2 refused", |d| {
        d.snapshot().paths[1].last_cause.as_ref().is_some_and(|c| c.kind == CauseKind::Claim)
    })
    .await;
    let snap = dev.snapshot();
    assert_eq!((snap.paths[0].state, snap.paths[1].state), (PathPhase::Active, PathPhase::Failed));
    let why = snap.paths[1].last_cause.clone().unwrap().detail;
    assert!(why.contains("nothing proves") && why.contains("p1"), "{why}");
    let data = mpio_tests::pattern(0, 64 << 10, 9);
    for i in 0..8u64 {
        dev.write(i * (64 << 10), mpio_tests::pattern(i * (64 << 10), 64 << 10, 9), false).await.unwrap();
    }
    dev.flush().await.unwrap();
    let read = |tag| {
        let file = lio.backing_file(1, tag, 0).unwrap();
        vm.command(["dd", &format!("if={file}"), "bs=64k", "count=1", "status=none"]).run_ok_bytes().unwrap()
    };
    mpio_tests::assert_data(&read(1), &data, "TPG 1's LU");
    assert!(read(2).iter().all(|b| *b == 0), "TPG 2's LU got writes meant for TPG 1's");
}

fn lun0() -> mpio_dsm::Lun {
    mpio_dsm::Lun::from_number(0).unwrap()
}
