//! LIO answers a login to an unknown target name with 0x0301 ("service
//! unavailable", a retry-later class): the path retries, and repeated
//! identical refusals raise one event that names the likely cause.

use mpio_tests::mp::refused_again_and_again_is_reported_once;
use mpio_tests::pr::SharedLu;

use super::*;

const PORT: u16 = 3273;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_target_name_is_reported_once_as_repeating_with_the_fix() {
    let Some(vm) = VM.get_or_skip() else { return };
    let _log = KernelLogOnPanic(vm);
    let [a, b] = two_portals(vm, PORT);
    let lio = one_lu(vm, "login-known", PORT, LunSpec::fileio(4 * MIB));
    let name = format!("{}-typo", lio.iqn(1));
    let mut lu = SharedLu::lio(&lio, 1, 1, 0);
    lu.target = name.clone();
    lu.portals.truncate(1);
    let dev = refused_again_and_again_is_reported_once(lu.device_config(), "0x0301", Some("mpio discover")).await;
    // The name comes to exist: the path logs in and the streak ends.
    let _now_known = Lio::builder()
        .target(TargetSpec::new(&name).tpg(TpgSpec::new().portal(a).portal(b).lun(LunSpec::fileio(4 * MIB))))
        .start(vm)
        .unwrap();
    dev.wait_ready(Duration::from_secs(30)).await.unwrap();
    assert_eq!(dev.snapshot().paths[0].stats.login_refusals_in_a_row, 0);
}
