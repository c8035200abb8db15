//! A reservation held by another initiator on LIO: the scenario tgtd runs
//! too (`mpio_tests::pr`), here with LIO's SPC-3 reservations.

use mpio_tests::pr::{OTHER_INITIATOR, SharedLu, conflict_reaches_the_caller_without_failover};

use super::*;

const PORT: u16 = 3272;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reservation_conflict_reaches_the_caller_without_failover() {
    let Some(vm) = VM.get_or_skip() else { return };
    let _log = KernelLogOnPanic(vm);
    let lio = one_lu(vm, "pr", PORT, LunSpec::fileio(16 * MIB));
    let lu = SharedLu::lio(&lio, 1, 1, 0);
    let report = conflict_reaches_the_caller_without_failover(&lu, None).await;
    assert_eq!(report.metric_errors.len(), 2);
    // Released at the end of the scenario: LIO holds no reservation.
    let holder = lio.pr_holder(1, 1, 0).unwrap();
    assert!(!holder.contains(OTHER_INITIATOR), "{holder}");
}
