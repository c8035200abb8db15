//! `mpio demo`: a local SAN and a guided tour of what mpio does.
//!
//! Starts a private tgtd with one file-backed logical unit reachable
//! through several portals (127.0.0.1, 127.0.0.2, ...), then runs the same
//! code as the CLI commands against it, printing each equivalent command
//! line so they can be repeated by hand, and finally `mpio daemon` with a
//! round-robin device over every portal, its NBD export and /metrics,
//! left running for the administrator to try. Ctrl-C, or the end with
//! `--no-wait`, stops everything it started.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use clap::Args;
use mpio_dsm::vpd::VpdPage;
use mpio_dsm::{Lun, UnitSerialNumber, cdb};
use mpio_lab::tgtd::{LunSpec, TargetSpec, Tgtd};
use mpio_mpath::scsi::LuAccess;
use mpio_transport::portal::Portal;
use mpio_transport::{ConnPick, ConnectionSpec, SessionHandle};

use crate::connect::{ConnectArgs, DigestArg, default_initiator_name};
use crate::{discover, output, perf};

mod daemon;
mod multipath;

/// Demo options.
#[derive(Args, Debug)]
pub(crate) struct DemoArgs {
    /// Portals of the local target (127.0.0.1 .. 127.0.0.N).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u8).range(1..=16))]
    portals: u8,
    /// Size of the logical unit in MiB (at most 1 TiB).
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=1 << 20))]
    size_mib: u64,
    /// Do not wait for Ctrl-C at the end: stop the daemon and the SAN and
    /// exit.
    #[arg(long)]
    no_wait: bool,
    /// Where the demo's daemon serves /metrics.
    #[arg(long, default_value = "127.0.0.1:9464")]
    metrics: std::net::SocketAddr,
}

fn step(n: u32, title: &str, cmd: Option<String>) {
    outln!("\n== {n}. {title}");
    if let Some(cmd) = cmd {
        outln!("$ {cmd}");
    }
}

pub(crate) async fn run(args: DemoArgs) -> Result<()> {
    if std::fs::read_to_string("/proc/self/status")
        .map(|s| !s.lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0")))
        .unwrap_or(true)
    {
        bail!(
            "the demo starts a local iSCSI target (tgtd) and needs root: run it as root, e.g. sudo ./scripts/demo.sh"
        );
    }
    let n = args.portals;
    let tgtd = Tgtd::builder()
        .portals(n)
        .target(
            TargetSpec::new("demo")
                .lun(LunSpec::file(args.size_mib << 20))
                .max_connections(u32::from(n))
                .digests("CRC32C,None"),
        )
        .start()
        .context(
            "cannot start the local target (is the tgt package installed? scripts/install-test-deps.sh installs it)",
        )?;
    let tour = tour(&tgtd, n, args.size_mib);
    tokio::select! {
        r = tour => r?,
        _ = tokio::signal::ctrl_c() => {
            outln!("\ninterrupted: stopping the local SAN");
            return Ok(());
        }
    }
    let mpio = mpio_command();
    step(
        7,
        &format!(
            "The daemon: {} as a round-robin device over {n} portals, exported over NBD, with metrics",
            daemon::DEVICE
        ),
        Some(format!("{mpio} daemon --config /run/mpio-demo/mpio.toml")),
    );
    let d = daemon::start(&tgtd, &args.metrics.to_string()).await?;
    let uri = format!("nbd+unix:///{}?socket={}", daemon::DEVICE, crate::config::DEFAULT_NBD_SOCKET);
    let shown = async {
        outln!("configuration: {} (log: {})", d.config.display(), d.log.display());
        // Ready means one usable path per device; the tour shows them all.
        outln!("\n$ {mpio} device wait {} --all-paths", daemon::DEVICE);
        daemon::show(&["device", "wait", daemon::DEVICE, "--all-paths"]).await?;
        outln!("\n$ {mpio} status");
        daemon::show(&["status"]).await?;
        outln!("\n$ qemu-io -f raw -c 'write -P 0xa5 1M 1M' -c 'read -P 0xa5 1M 1M' '{uri}'");
        daemon::nbd_round_trip(&uri).await?;
        outln!("\n$ curl -s {} | grep mpio_path_requests_total", d.metrics);
        for line in daemon::metrics_excerpt(&d.metrics).await? {
            outln!("{line}");
        }
        anyhow::Ok(())
    };
    if let Err(e) = shown.await {
        d.stop().await?;
        return Err(e);
    }
    let dev = daemon::DEVICE;
    outln!("\n== What to try next (in another terminal, while this runs)");
    let weights = (1..=n).map(|i| format!("p{i}={i}")).collect::<Vec<_>>().join(",");
    let tries = [
        (format!("{mpio} status"), "the daemon and its devices"),
        (format!("{mpio} path list {dev}"), "per-path state, queue depth, latency"),
        (format!("{mpio} events --follow"), "failures, failovers, failbacks as they happen"),
        (format!("{mpio} policy set {dev} fail-over-only --primary p2"), "I/O continues while it changes"),
        (format!("{mpio} policy set {dev} weighted --weights {weights}"), ""),
        (format!("{mpio} path fail {dev} p1"), "then: path reinstate"),
        (format!("tgtadm -C {} --lld iscsi --mode conn --op show --tid 1", tgtd.control_port()), "the target's view"),
        (format!("nbdinfo '{uri}'"), ""),
        (
            format!(
                "fio --name=t --ioengine=nbd --uri='{uri}' --rw=randrw --bs=4k --iodepth=32 --time_based --runtime=30"
            ),
            "",
        ),
        (format!("curl -s {} | grep mpio_path", d.metrics), "dashboards/ has Grafana JSON and alert rules"),
        (format!("{mpio} reload"), "after editing the configuration"),
        (format!("{mpio} timers explain"), "what the failover timers mean in seconds"),
    ];
    let width = tries.iter().filter(|(_, why)| !why.is_empty()).map(|(c, _)| c.len()).max().unwrap_or(0).min(64);
    for (cmd, why) in &tries {
        if why.is_empty() {
            outln!("  {cmd}");
        } else {
            outln!("  {cmd:<width$}  # {why}");
        }
    }
    if args.no_wait {
        return d.stop().await;
    }
    outln!("\nThe local SAN and the daemon run until Ctrl-C.");
    let mut d = d;
    // Ctrl-C in the terminal reaches the daemon too (same process group);
    // stop() also covers a SIGINT sent to this process alone.
    let exited = tokio::select! {
        _ = tokio::signal::ctrl_c() => None,
        r = d.exited() => Some(r),
    };
    match exited {
        None => {
            outln!("stopping the daemon and the local SAN");
            d.stop().await
        }
        Some(r) => r,
    }
}

/// How to call this binary again: `mpio` when that is what the PATH
/// finds, else the path of this executable.
fn mpio_command() -> String {
    let me = std::env::current_exe().ok();
    let on_path = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p).map(|d| d.join("mpio")).any(|c| Some(c.canonicalize().ok()) == Some(me.clone()))
        })
        .unwrap_or(false);
    match me {
        Some(path) if !on_path => {
            let cwd = std::env::current_dir().unwrap_or_default();
            path.strip_prefix(&cwd).map_or(path.clone(), |p| p.to_path_buf()).display().to_string()
        }
        _ => "mpio".into(),
    }
}

fn conn_args(portal: Portal) -> ConnectArgs {
    ConnectArgs {
        portal,
        initiator: None,
        header_digest: DigestArg::None,
        data_digest: DigestArg::None,
        chap_user: None,
        chap_secret_file: None,
        chap_target_user: None,
        chap_target_secret_file: None,
        login_timeout: 10,
        max_recv_data_segment_length: None,
        first_burst_length: None,
        max_burst_length: None,
    }
}

async fn tour(tgtd: &Tgtd, n: u8, size_mib: u64) -> Result<()> {
    let iqn = tgtd.iqn(1).to_string();
    let target = iqn.parse().context("target name")?;
    let portals: Vec<Portal> = tgtd.portals().into_iter().map(Portal::from).collect();
    let list: Vec<String> = portals.iter().map(ToString::to_string).collect();
    outln!("Local SAN: tgtd (pid {}, control port {})", tgtd.pid(), tgtd.control_port());
    outln!("  target {iqn}, LUN 1: {size_mib} MiB file {}", tgtd.backing_file(1, 1).display());
    outln!("  portals {}", list.join(", "));
    outln!("  initiator name {}", default_initiator_name()?);

    let mpio = mpio_command();
    step(1, "Discovery (SendTargets)", Some(format!("{mpio} discover -p {}", portals[0])));
    discover::run(discover::DiscoverArgs { conn: conn_args(portals[0].clone()), json: false }).await?;

    step(
        2,
        "The logical unit: identity and capacity",
        Some(format!("{mpio} scsi inquiry -p {} -t {iqn} -l 1 --vpd 0x83", portals[0])),
    );
    let session = conn_args(portals[0].clone()).connect(Some(target)).await?;
    let lu = LuAccess::new(session.clone(), Lun::from_number(1)?);
    let inquiry = lu.inquiry().await?;
    let serial = lu.vpd(VpdPage::UNIT_SERIAL_NUMBER).await.ok().and_then(|b| UnitSerialNumber::parse(&b).ok());
    let page83 = lu.device_identification().await?;
    let identity = mpio_dsm::identity::lu_identity(Some(&page83), serial.as_ref(), &inquiry)
        .map(|i| i.to_string())
        .unwrap_or_default();
    let cap = lu.capacity().await?;
    output::fields(&[
        ("vendor/product", format!("{} {} {}", inquiry.vendor, inquiry.product, inquiry.revision)),
        ("identity (VPD 0x83)", identity.clone()),
        ("capacity", format!("{} blocks of {} bytes", cap.blocks().unwrap_or(0), cap.block_len)),
    ]);

    step(3, "Write 8 MiB and read it back over one session", None);
    let data: Bytes = (0..8u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect::<Vec<u8>>().into();
    let (blocks, block) = ((data.len() / 512) as u32, 512);
    lu.run("WRITE(16)", &cdb::write16(0, blocks, block, false)?, data.clone()).await?;
    let back = lu.run("READ(16)", &cdb::read16(0, blocks, block, false)?, Bytes::new()).await?;
    let same = back.data.to_bytes() == data;
    outln!(
        "wrote {} bytes, read {} back: {}",
        data.len(),
        back.data.len(),
        if same { "identical" } else { "DIFFERENT" }
    );
    if !same {
        bail!("the data read back differs from what was written");
    }
    session.logout().await?;

    step(4, &format!("One session, {n} connections (MCS), one per portal"), None);
    let mut cfg = conn_args(portals[0].clone()).session_config(Some(iqn.parse()?))?;
    cfg.connections = portals.iter().map(|p| ConnectionSpec::to(p.clone())).collect();
    cfg.offer.header_digest = DigestArg::Prefer.pref();
    let mcs = SessionHandle::spawn(cfg)?;
    let mut events = mcs.events();
    mcs.wait_up(Duration::from_secs(10)).await?;
    let want = usize::from(n);
    let mut up = 1;
    while up < want {
        match tokio::time::timeout(Duration::from_secs(10), events.recv()).await {
            Ok(Ok(mpio_transport::SessionEvent::ConnectionUp { .. })) => up += 1,
            Ok(Ok(mpio_transport::SessionEvent::ConnectionDown { cid, reason })) => bail!("connection {cid}: {reason}"),
            Ok(Ok(_)) => {}
            _ => bail!("only {up} of {want} connections came up"),
        }
    }
    let mcs_lu = LuAccess::new(mcs.clone(), Lun::from_number(1)?);
    mcs_lu.test_unit_ready().await?;
    for cid in 0..u16::from(n) {
        let cmd = cdb::read16(u64::from(cid) * 2048, 2048, 512, false)?;
        mcs.execute_on(mpio_mpath::scsi::request(Lun::from_number(1)?, &cmd, Bytes::new()), ConnPick::Cid(cid)).await?;
    }
    let snap = mcs.snapshot().await?;
    let mut rows =
        vec![vec!["CID".to_string(), "PORTAL".into(), "LOCAL".into(), "HEADER DIGEST".into(), "READ BYTES".into()]];
    for c in &snap.connections {
        rows.push(vec![
            c.cid.to_string(),
            c.portal.clone(),
            c.local_addr.map_or("-".into(), |a| a.to_string()),
            c.params.as_ref().map_or("-".into(), |p| format!("{:?}", p.header_digest)),
            c.stats.data_bytes_received.to_string(),
        ]);
    }
    output::table(&rows);
    outln!("TSIH {:#06x}; the target sees one session with {} connections", snap.tsih, snap.connections.len());
    mcs.logout().await?;

    step(5, &format!("The multipath device: {n} sessions (MPIO), one logical unit"), None);
    multipath::tour(tgtd, &portals, &identity).await?;

    step(
        6,
        "Performance: 4 KiB random reads, 32 in flight, 2 s",
        Some(format!("{mpio} perf -p {} -t {iqn} -l 1 --qd 32 --seconds 2", portals[0])),
    );
    perf::run(perf::PerfArgs {
        conn: conn_args(portals[0].clone()),
        target: iqn.parse()?,
        lun: 1,
        rw: perf::Pattern::Randread,
        bs: 4096,
        qd: 32,
        seconds: 2,
        size: None,
        json: false,
        multipath: perf::MultipathArgs::default(),
        at: Vec::new(),
    })
    .await?;
    Ok(())
}
