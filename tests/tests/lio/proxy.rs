//! The fault-injecting proxy on the host in front of LIO in the VM: the
//! scenarios of `mpio_tests::proxied`, as tgtd runs them
//! (`tests/tests/proxy.rs`). One target with LIO's default digests
//! (`CRC32C,None`: the initiator's offer decides), each scenario with a
//! proxy and a session of its own; they run one after the other (one
//! test), which under TCG is quicker than booting the LU four times.

use mpio_testbed::lio::{Lio, LunSpec, TargetSpec, TpgSpec};
use mpio_testbed::proxy::Digests;
use mpio_tests::pr::SharedLu;
use mpio_tests::proxied;
use mpio_transport::text::DigestPref;

use super::{KernelLogOnPanic, MIB, VM, one_lu, two_portals};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_proxy_fault_is_seen_and_recovered_against_lio() {
    let Some(vm) = VM.get_or_skip() else { return };
    let _log = KernelLogOnPanic(vm);
    let lio = one_lu(vm, "proxied", 3288, LunSpec::fileio(16 * MIB));
    let lu = SharedLu::lio(&lio, 1, 1, 0);
    proxied::pdus_are_framed_with_the_digests_the_login_negotiated(
        &lu,
        DigestPref::Crc32c,
        Digests { header: true, data: true },
    )
    .await;
    proxied::pdus_are_framed_with_the_digests_the_login_negotiated(&lu, DigestPref::None, Digests::default()).await;
    proxied::a_data_in_corrupted_under_data_digests_is_a_digest_error_and_the_read_is_sent_again(&lu).await;
    proxied::a_header_corrupted_under_header_digests_is_a_digest_error_and_the_write_is_sent_again(&lu).await;
    proxied::without_digests_the_flipped_byte_reaches_the_reader_where_it_was_aimed(&lu).await;
    proxied::a_lost_data_in_fails_the_connection_and_the_read_is_sent_again(&lu).await;
    proxied::a_truncated_pdu_resets_the_connection_and_the_write_is_sent_again(&lu).await;
    proxied::reset_sends_a_rst_and_the_session_is_reinstated(&lu).await;
    proxied::a_delay_delays_each_pdu_and_a_blackhole_holds_them_until_it_is_lifted(&lu).await;
}

/// LIO with ErrorRecoveryLevel 2 allowed on its TPG; the initiator offers 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_erl_1_data_in_digest_errors_are_recovered_with_a_data_snack_against_lio() {
    let Some(vm) = VM.get_or_skip() else { return };
    let _log = KernelLogOnPanic(vm);
    let [a, _] = two_portals(vm, 3289);
    let lio = Lio::builder()
        .target(
            TargetSpec::new("erl").tpg(TpgSpec::new().portal(a).lun(LunSpec::fileio(16 * MIB)).error_recovery_level(2)),
        )
        .start(vm)
        .expect("LIO starts");
    let lu = SharedLu::lio(&lio, 1, 1, 0);
    proxied::at_erl_1_a_data_in_with_a_bad_digest_is_asked_for_again_on_the_same_connection(&lu).await;
    proxied::at_erl_1_a_data_out_with_a_bad_digest_is_sent_again_for_the_target_s_recovery_r2t(&lu).await;
    proxied::at_erl_1_a_data_in_with_a_bad_header_or_lost_is_asked_for_again(&lu).await;
    proxied::at_erl_1_a_lost_status_is_asked_for_with_a_status_snack(&lu).await;
}
