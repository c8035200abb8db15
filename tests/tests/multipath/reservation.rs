//! Another initiator holds a persistent reservation: our writes fail with
//! EBADE to the caller, without failover (`mpio_tests::pr`, which a second
//! target fixture reuses). tgtd adds what only it can show: the target
//! saw each conflicting write exactly once.

use mpio_tests::pr::{OTHER_INITIATOR, SharedLu, conflict_reaches_the_caller_without_failover};

use super::*;

/// Errors tgtd counted on LUN 1 for our initiator's sessions.
fn target_errors(tgtd: &Tgtd) -> u64 {
    let sessions = tgtd.sessions(1).unwrap();
    let ours = sessions.iter().filter(|s| s.initiator != OTHER_INITIATOR);
    ours.map(|s| {
        tgtd.session_stats(1, s.sid).unwrap().luns.iter().filter(|l| l.lun == 1).map(|l| l.errors).sum::<u64>()
    })
    .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reservation_conflict_reaches_the_caller_without_failover() {
    require_root!();
    let tgtd = Tgtd::builder().portals(2).target(TargetSpec::new("pr").lun(LunSpec::file(16 * MIB))).start().unwrap();
    let lu = SharedLu::tgtd(&tgtd, 1, 1);
    // No retries behind the device's back either: the target failed each
    // write once (tgtd counts the commands of each session that ended
    // with an error status).
    let report = conflict_reaches_the_caller_without_failover(&lu, Some(&|| target_errors(&tgtd))).await;
    assert_eq!(report.metric_errors.len(), 2);
}
