//! `mpio scsi ...`: one SCSI command on one logical unit, for diagnosis.

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use clap::{Args, Subcommand};
use mpio_dsm::vpd::VpdPage;
use mpio_dsm::{BlockLimits, DeviceIdentification, LogicalBlockProvisioning, Lun, SupportedPages, UnitSerialNumber};
use mpio_mpath::WriteCache;
use mpio_mpath::scsi::LuAccess;
use mpio_transport::name::IscsiName;
use serde::Serialize;
use serde_json::{Value, json};

use crate::connect::ConnectArgs;
use crate::output;

/// The logical unit to talk to.
#[derive(Args, Debug)]
pub(crate) struct LuArgs {
    #[command(flatten)]
    conn: ConnectArgs,
    /// Target name (see `mpio discover`).
    #[arg(long, short = 't')]
    target: IscsiName,
    /// Logical unit number.
    #[arg(long, short = 'l', default_value_t = 0)]
    lun: u64,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// SCSI diagnostics.
#[derive(Subcommand, Debug)]
pub(crate) enum ScsiCommand {
    /// INQUIRY: standard data, or a VPD page with --vpd.
    Inquiry {
        #[command(flatten)]
        lu: LuArgs,
        /// VPD page code (0x00, 0x80, 0x83, 0xb0, 0xb2, ...; decimal or 0x hex).
        #[arg(long, value_parser = parse_page)]
        vpd: Option<u8>,
    },
    /// READ CAPACITY(16), with (10) as fallback.
    Readcap {
        #[command(flatten)]
        lu: LuArgs,
    },
    /// MODE SENSE: write protection (WP), FUA support (DPOFUA), the write
    /// cache (WCE) and what mpio makes of them for FUA writes and flushes.
    ModeSense {
        #[command(flatten)]
        lu: LuArgs,
    },
    /// REPORT LUNS.
    ReportLuns {
        #[command(flatten)]
        lu: LuArgs,
    },
    /// TEST UNIT READY.
    Tur {
        #[command(flatten)]
        lu: LuArgs,
    },
}

fn parse_page(s: &str) -> Result<u8, String> {
    let (digits, radix) = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => (h, 16),
        None => (s, 10),
    };
    u8::from_str_radix(digits, radix).map_err(|_| format!("{s:?} is not a page code from 0 to 255 (0x83 or 131)"))
}

async fn open(lu: &LuArgs) -> Result<(mpio_transport::SessionHandle, LuAccess)> {
    let lun = Lun::from_number(lu.lun).with_context(|| format!("LUN {} cannot be addressed", lu.lun))?;
    let session = lu.conn.connect(Some(lu.target.clone())).await?;
    Ok((session.clone(), LuAccess::new(session, lun)))
}

pub(crate) async fn run(cmd: ScsiCommand) -> Result<()> {
    let (lu, result) = match cmd {
        ScsiCommand::Inquiry { lu, vpd } => {
            let (s, access) = open(&lu).await?;
            let r = match vpd {
                None => inquiry(&access, lu.json).await,
                Some(page) => vpd_page(&access, VpdPage(page), lu.json).await,
            };
            ((s, lu.json), r)
        }
        ScsiCommand::Readcap { lu } => {
            let (s, access) = open(&lu).await?;
            ((s, lu.json), readcap(&access, lu.json).await)
        }
        ScsiCommand::ModeSense { lu } => {
            let (s, access) = open(&lu).await?;
            ((s, lu.json), mode_sense(&access, lu.json).await)
        }
        ScsiCommand::ReportLuns { lu } => {
            let (s, access) = open(&lu).await?;
            ((s, lu.json), report_luns(&access, lu.json).await)
        }
        ScsiCommand::Tur { lu } => {
            let (s, access) = open(&lu).await?;
            let r = access.test_unit_ready().await.map_err(anyhow::Error::from);
            if r.is_ok() {
                if lu.json {
                    output::json(&json!({ "ready": true, "login": login_json(&s).await }))?;
                } else {
                    outln!("ready");
                }
            }
            ((s, lu.json), r)
        }
    };
    let (session, _) = lu;
    let _ = session.logout().await;
    result
}

/// What the login negotiated on the session's connection: which digests
/// protect it, and the segment sizes (`null` if the session no longer
/// answers).
async fn login_json(session: &mpio_transport::SessionHandle) -> Value {
    let Ok(snap) = session.snapshot().await else { return Value::Null };
    let Some((c, p)) = snap.connections.iter().find_map(|c| Some((c, c.params.as_ref()?))) else {
        return Value::Null;
    };
    json!({
        "portal": c.portal,
        "header_digest": p.header_digest.as_str(),
        "data_digest": p.data_digest.as_str(),
        "max_recv_data_segment_length": p.max_recv_data_segment_length,
        "max_xmit_data_segment_length": p.max_xmit_data_segment_length,
    })
}

async fn inquiry(lu: &LuAccess, as_json: bool) -> Result<()> {
    let i = lu.inquiry().await?;
    let device_type = i.device_type.name().map_or_else(|| format!("{:#04x}", i.device_type.0), str::to_string);
    let qualifier = i.qualifier.name().map_or_else(|| format!("{:#x}", i.qualifier.0), str::to_string);
    if as_json {
        return output::json(&json!({
            "vendor": i.vendor, "product": i.product, "revision": i.revision,
            "device_type": device_type, "peripheral_qualifier": qualifier,
            "version": i.version, "removable": i.removable, "tpgs": i.tpgs.0,
            "protect": i.protect, "cmdque": i.cmdque, "hisup": i.hisup, "multip": i.multip,
        }));
    }
    output::fields(&[
        ("vendor", i.vendor.clone()),
        ("product", i.product.clone()),
        ("revision", i.revision.clone()),
        ("device type", device_type),
        ("qualifier", qualifier),
        ("version", format!("{:#04x}", i.version)),
        ("removable", yes(i.removable)),
        ("ALUA (TPGS)", i.tpgs.to_string()),
        ("protection", yes(i.protect)),
        ("command queuing", yes(i.cmdque)),
    ]);
    Ok(())
}

/// The caching mode page and the header bits, read as the multipath
/// device reads them at every claim.
async fn mode_sense(lu: &LuAccess, as_json: bool) -> Result<()> {
    let (header, page) = lu.caching().await?;
    let cache = WriteCache::from_mode_sense(&header, page.as_ref());
    let (fua_write, flush) = match (cache.write(true), cache.flush_needed()) {
        (p, _) if p.fua_bit => ("WRITE with FUA", "SYNCHRONIZE CACHE"),
        (p, _) if p.flush_after => ("WRITE, then SYNCHRONIZE CACHE", "SYNCHRONIZE CACHE"),
        (_, true) => ("WRITE", "SYNCHRONIZE CACHE"),
        (_, false) => ("WRITE (durable when it completes)", "nothing (completes at once)"),
    };
    if as_json {
        return output::json(&json!({
            "write_protected": header.write_protected(),
            "dpofua": header.dpofua(),
            "caching_page": page.is_some(),
            "write_cache": page.map(|p| p.write_cache),
            "read_cache_disabled": page.map(|p| p.read_cache_disabled),
            "mpio": { "cache": cache.describe(), "fua_write": fua_write, "flush": flush },
        }));
    }
    let reported = |b: Option<bool>| b.map_or_else(|| "not reported (no caching mode page)".to_string(), yes);
    output::fields(&[
        ("write-protected (WP)", yes(header.write_protected())),
        ("FUA supported (DPOFUA)", yes(header.dpofua())),
        ("write cache (WCE)", reported(page.map(|p| p.write_cache))),
        ("read cache disabled (RCD)", reported(page.map(|p| p.read_cache_disabled))),
        ("mpio takes it as", cache.describe().to_string()),
        ("a FUA write is sent as", fua_write.to_string()),
        ("a flush is sent as", flush.to_string()),
    ]);
    Ok(())
}

fn yes(b: bool) -> String {
    if b { "yes".into() } else { "no".into() }
}

#[derive(Serialize)]
struct DesignatorOut {
    association: String,
    #[serde(rename = "type")]
    kind: String,
    code_set: String,
    identity: Option<String>,
    value_hex: String,
}

async fn vpd_page(lu: &LuAccess, page: VpdPage, as_json: bool) -> Result<()> {
    let data = lu.vpd(page).await?;
    let parsed = |e: mpio_dsm::ParseError| anyhow::anyhow!("VPD page {:#04x}: {e}", page.0);
    match page {
        VpdPage::SUPPORTED_PAGES => {
            let p = SupportedPages::parse(&data).map_err(parsed)?;
            if as_json {
                let pages: Vec<_> = p
                    .pages
                    .iter()
                    .map(|c| json!({ "code": format!("{:#04x}", c.0), "name": c.description() }))
                    .collect();
                output::json(&json!({ "pages": pages }))
            } else {
                for c in &p.pages {
                    outln!("{:#04x} {}", c.0, c.description().unwrap_or("(reserved)"));
                }
                Ok(())
            }
        }
        VpdPage::UNIT_SERIAL_NUMBER => {
            let s = UnitSerialNumber::parse(&data).map_err(parsed)?;
            if as_json {
                output::json(&json!({ "serial": s.serial }))
            } else {
                outln!("{}", s.serial);
                Ok(())
            }
        }
        VpdPage::DEVICE_IDENTIFICATION => {
            let d = DeviceIdentification::parse(&data).map_err(parsed)?;
            // What the multipath device merges paths by: this page, else
            // the unit serial with vendor and product (mpio_dsm::identity).
            let serial = lu.vpd(VpdPage::UNIT_SERIAL_NUMBER).await.ok().and_then(|b| UnitSerialNumber::parse(&b).ok());
            let identity =
                mpio_dsm::identity::lu_identity(Some(&d), serial.as_ref(), &lu.inquiry().await?).map(|i| i.to_string());
            let list: Vec<DesignatorOut> = d
                .designators
                .iter()
                .map(|x| DesignatorOut {
                    association: x.association.to_string(),
                    kind: x.designator_type.to_string(),
                    code_set: x.code_set.to_string(),
                    identity: x.identity().map(|i| i.to_string()),
                    value_hex: x.value.iter().map(|b| format!("{b:02x}")).collect(),
                })
                .collect();
            if as_json {
                return output::json(&json!({ "lu_identity": identity, "designators": list }));
            }
            outln!(
                "LU identity: {}",
                identity.as_deref().unwrap_or(
                    "(none: nothing names this LU, so mpio does not use it; give it a unit serial on the target, or pin `identity` for one path)"
                )
            );
            let mut rows = vec![vec!["ASSOCIATION".into(), "TYPE".into(), "CODE SET".into(), "VALUE".into()]];
            for x in &list {
                rows.push(vec![
                    x.association.clone(),
                    x.kind.clone(),
                    x.code_set.clone(),
                    x.identity.clone().unwrap_or_else(|| x.value_hex.clone()),
                ]);
            }
            output::table(&rows);
            Ok(())
        }
        VpdPage::BLOCK_LIMITS => {
            let b = BlockLimits::parse(&data).map_err(parsed)?;
            let v = json!({
                "max_transfer_blocks": b.max_transfer_blocks(),
                "optimal_transfer_blocks": b.optimal_transfer_blocks(),
                "optimal_transfer_granularity": b.optimal_transfer_granularity,
                "max_unmap_lba_count": b.max_unmap_lba_count,
                "max_unmap_descriptor_count": b.max_unmap_descriptor_count,
                "optimal_unmap_granularity": b.optimal_unmap_granularity,
                "max_write_same_blocks": b.max_write_same_blocks(),
                "max_compare_and_write_len": b.max_compare_and_write_len,
            });
            print_object(v, as_json)
        }
        VpdPage::LOGICAL_BLOCK_PROVISIONING => {
            let p = LogicalBlockProvisioning::parse(&data).map_err(parsed)?;
            let v = json!({
                "provisioning_type": p.provisioning_type.to_string(),
                "unmap": p.lbpu,
                "write_same_16_unmap": p.lbpws,
                "write_same_10_unmap": p.lbpws10,
                "unmapped_reads_zero": p.unmapped_reads_zero(),
                "threshold_exponent": p.threshold_exponent,
            });
            print_object(v, as_json)
        }
        _ => {
            let hex: String = data.iter().map(|b| format!("{b:02x}")).collect();
            if as_json {
                output::json(&json!({ "page": page.0, "hex": hex }))
            } else {
                hexdump(&data);
                Ok(())
            }
        }
    }
}

fn print_object(v: Value, as_json: bool) -> Result<()> {
    if as_json {
        return output::json(&v);
    }
    if let Value::Object(map) = v {
        let pairs: Vec<(&str, String)> = map
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str(),
                    if v.is_null() { "not reported".to_string() } else { v.to_string().trim_matches('"').to_string() },
                )
            })
            .collect();
        output::fields(&pairs);
    }
    Ok(())
}

fn hexdump(data: &Bytes) {
    for (i, chunk) in data.chunks(16).enumerate() {
        let hex: Vec<String> = chunk.iter().map(|b| format!("{b:02x}")).collect();
        outln!("{:04x}  {}", i * 16, hex.join(" "));
    }
}

async fn readcap(lu: &LuAccess, as_json: bool) -> Result<()> {
    let c = lu.capacity().await?;
    let Some(bytes) = c.capacity_bytes() else { bail!("the reported capacity overflows 64 bits") };
    let v = json!({
        "blocks": c.blocks(),
        "block_size": c.block_len,
        "capacity_bytes": bytes,
        "physical_block_size": c.physical_block_len(),
        "thin_provisioned": c.lbpme,
        "unmapped_reads_zero": c.lbprz,
        "protection_type": c.protection_type(),
    });
    if as_json {
        return output::json(&v);
    }
    output::fields(&[
        ("blocks", c.blocks().map_or("?".into(), |b| b.to_string())),
        ("block size", format!("{} bytes", c.block_len)),
        ("capacity", format!("{bytes} bytes ({})", human(bytes))),
        ("physical block", c.physical_block_len().map_or("?".into(), |p| format!("{p} bytes"))),
        ("thin provisioned", yes(c.lbpme)),
        ("protection", c.protection_type().map_or("none".into(), |t| format!("type {t}"))),
    ]);
    Ok(())
}

fn human(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.1} {}", UNITS[u])
}

async fn report_luns(lu: &LuAccess, as_json: bool) -> Result<()> {
    let r = lu.report_luns().await?;
    let luns: Vec<Value> =
        r.luns.iter().map(|l| json!({ "lun": l.number(), "address": format!("{:016x}", l.as_u64_be()) })).collect();
    if as_json {
        return output::json(&luns);
    }
    let mut rows = vec![vec!["LUN".to_string(), "ADDRESS".into()]];
    for l in &r.luns {
        rows.push(vec![l.number().map_or("-".into(), |n| n.to_string()), format!("{:016x}", l.as_u64_be())]);
    }
    output::table(&rows);
    Ok(())
}
