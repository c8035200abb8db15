//! The fault-injecting proxy between mpio's initiator and a real tgtd:
//! the scenarios of `mpio_tests::proxied` (which LIO runs too, in
//! `tests/tests/lio/proxy.rs`).

use mpio_testbed::proxy::Digests;
use mpio_testbed::require_root;
use mpio_testbed::tgtd::{LunSpec, TargetSpec, Tgtd};
use mpio_tests::pr::SharedLu;
use mpio_tests::proxied;
use mpio_transport::text::DigestPref;

/// A tgtd with one 16 MiB LU and digests `digests` ("None", "CRC32C").
fn target(digests: &str) -> (Tgtd, SharedLu) {
    let tgtd = Tgtd::builder()
        .target(TargetSpec::new("proxied").lun(LunSpec::file(16 << 20)).digests(digests))
        .start()
        .expect("tgtd");
    let lu = SharedLu::tgtd(&tgtd, 1, 1);
    (tgtd, lu)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pdus_are_framed_with_the_digests_the_login_negotiated() {
    require_root!();
    let (_tgtd, lu) = target("CRC32C");
    proxied::pdus_are_framed_with_the_digests_the_login_negotiated(
        &lu,
        DigestPref::Crc32c,
        Digests { header: true, data: true },
    )
    .await;
    let (_tgtd, lu) = target("None");
    proxied::pdus_are_framed_with_the_digests_the_login_negotiated(&lu, DigestPref::None, Digests::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_in_corrupted_under_data_digests_is_a_digest_error_and_the_read_is_sent_again() {
    require_root!();
    let (_tgtd, lu) = target("CRC32C");
    proxied::a_data_in_corrupted_under_data_digests_is_a_digest_error_and_the_read_is_sent_again(&lu).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_corrupted_under_header_digests_is_a_digest_error_and_the_write_is_sent_again() {
    require_root!();
    let (_tgtd, lu) = target("CRC32C");
    proxied::a_header_corrupted_under_header_digests_is_a_digest_error_and_the_write_is_sent_again(&lu).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_digests_the_flipped_byte_reaches_the_reader_where_it_was_aimed() {
    require_root!();
    let (_tgtd, lu) = target("None");
    proxied::without_digests_the_flipped_byte_reaches_the_reader_where_it_was_aimed(&lu).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_data_in_fails_the_connection_and_the_read_is_sent_again() {
    require_root!();
    let (_tgtd, lu) = target("None");
    proxied::a_lost_data_in_fails_the_connection_and_the_read_is_sent_again(&lu).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_pdu_resets_the_connection_and_the_write_is_sent_again() {
    require_root!();
    let (_tgtd, lu) = target("None");
    proxied::a_truncated_pdu_resets_the_connection_and_the_write_is_sent_again(&lu).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_sends_a_rst_and_the_session_is_reinstated() {
    require_root!();
    let (_tgtd, lu) = target("None");
    proxied::reset_sends_a_rst_and_the_session_is_reinstated(&lu).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delay_delays_each_pdu_and_a_blackhole_holds_them_until_it_is_lifted() {
    require_root!();
    let (_tgtd, lu) = target("None");
    proxied::a_delay_delays_each_pdu_and_a_blackhole_holds_them_until_it_is_lifted(&lu).await;
}
