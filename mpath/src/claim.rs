//! Claiming a path: what the logical unit behind it is, and whether it is
//! the device's. Every login of a path is claimed before the path may
//! carry I/O (a new session is a new I_T nexus, and the target may have
//! been reconfigured meanwhile).
//!
//! A claim reads the LU ([`Reading::read`]: TEST UNIT READY, INQUIRY, VPD
//! pages 83h, 80h, B0h, B2h, READ CAPACITY, MODE SENSE) and then decides
//! without I/O ([`decide`]):
//!
//! - the LU's identity comes from [`mpio_dsm::identity::lu_identity`],
//!   unique by construction (a designator that names the LU, else the unit
//!   serial with vendor and product), or there is none;
//! - a LU without an identity cannot be told apart from another LU, so its
//!   paths are never merged with any: the claim is refused, with the fix
//!   (give the LU a unit serial on the target, or pin `identity`). A pin
//!   vouches for such a LU over the device's first path only (the first in
//!   the configuration, the same one at every start): nothing could prove
//!   that a second path reaches the same LU;
//! - a pinned identity must be the LU's own;
//! - the first path claimed defines the device's LU; every later claim must
//!   reach the same LU ([`LuInfo::same_lu`]: identity, serial and size, as
//!   tgtd can give two LUs the same NAA), and the properties that may change
//!   between claims (write protection, write cache, and the size of a LU
//!   with a serial: it was resized) take the newest reading.

use std::sync::Arc;

use mpio_dsm::identity::lu_identity;
use mpio_dsm::vpd::VpdPage;
use mpio_dsm::{
    BlockDeviceCharacteristics, BlockLimits, Capacity, DeviceIdentification, LogicalBlockProvisioning, StandardInquiry,
    UnitSerialNumber,
};
use mpio_policies::PathId;
use tracing::{debug, info};

use crate::device::{Inner, LuInfo};
use crate::durability::WriteCache;
use crate::scsi::LuAccess;

/// Why a path was refused at its claim: it stays out (failed) until an
/// administrator reinstates it or its session logs in again.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClaimRefusal {
    /// A command of the claim failed.
    #[error("{path}: {error}")]
    Unreadable {
        /// The path.
        path: String,
        /// The command and why.
        error: String,
    },
    /// The LU reports nothing that identifies it, and no pin vouches for it.
    #[error(
        "path {path} reaches a logical unit that reports no identity ({lu}: no designator in VPD 0x83 names it, no unit serial in VPD 0x80), so its paths cannot be told apart from another LU's and it is not used: give the LU a unit serial on the target, or pin `identity = \"...\"` in the device's configuration to use it over the device's first path"
    )]
    NoIdentity {
        /// The path.
        path: String,
        /// What the LU is otherwise ([`LuInfo`] described).
        lu: String,
    },
    /// The LU has no identity and the pin vouches for it over the device's
    /// first path only.
    #[error(
        "path {path}: the logical unit reports no identity, so nothing proves that this path reaches the same LU as {first}, the device's first path, which alone may use it under the pinned identity: give the LU a unit serial on the target to use every path"
    )]
    NoIdentityNotFirst {
        /// The path.
        path: String,
        /// The device's first path.
        first: String,
    },
    /// The LU is not the one the configuration pins.
    #[error("path {path} reaches {found} but the device is configured for {pinned}: refused")]
    NotPinned {
        /// The path.
        path: String,
        /// The LU found, described.
        found: String,
        /// The pinned identity.
        pinned: String,
    },
    /// The path reaches another LU than the device's.
    #[error("path {path} reaches {found}, not the device's logical unit {known}: refused")]
    OtherLu {
        /// The path.
        path: String,
        /// The LU found, described.
        found: String,
        /// The device's LU, described.
        known: String,
    },
    /// A bring-up step refused the path.
    #[error("path {path}: bring-up step {step} failed: {error}")]
    BringUp {
        /// The path.
        path: String,
        /// The step (its `Debug` form).
        step: String,
        /// What it said.
        error: String,
    },
}

/// What a claim read from the LU through one path.
#[derive(Clone, Debug)]
pub(crate) struct Reading {
    pub(crate) inquiry: StandardInquiry,
    /// VPD 83h, parsed; `None` when the LU did not answer it.
    pub(crate) identification: Option<DeviceIdentification>,
    /// VPD 80h; `None` when the LU has none.
    pub(crate) serial: Option<UnitSerialNumber>,
    pub(crate) capacity: Capacity,
    pub(crate) limits: Option<BlockLimits>,
    pub(crate) provisioning: Option<LogicalBlockProvisioning>,
    pub(crate) characteristics: Option<BlockDeviceCharacteristics>,
    pub(crate) write_protected: bool,
    pub(crate) write_cache: WriteCache,
}

impl Reading {
    /// Reads what a claim needs. The unit must be ready, answer INQUIRY
    /// and READ CAPACITY; the rest is optional (a LU without a page has
    /// no limit, no serial, ... and MODE SENSE is optional for a disk:
    /// writable, write-through without FUA, as Linux's sd takes it).
    pub(crate) async fn read(lu: &LuAccess, device: &str, path: &str) -> Result<Reading, ClaimRefusal> {
        let unreadable =
            |e: crate::scsi::ScsiError| ClaimRefusal::Unreadable { path: path.to_owned(), error: e.to_string() };
        lu.test_unit_ready().await.map_err(unreadable)?;
        let inquiry = lu.inquiry().await.map_err(unreadable)?;
        let identification = match lu.device_identification().await {
            Ok(d) => Some(d),
            Err(e) => {
                debug!(device, path, error = %e, "no device identification page");
                None
            }
        };
        let serial = lu.vpd(VpdPage::UNIT_SERIAL_NUMBER).await.ok().and_then(|b| UnitSerialNumber::parse(&b).ok());
        let capacity = lu.capacity().await.map_err(unreadable)?;
        let limits = lu.vpd(VpdPage::BLOCK_LIMITS).await.ok().and_then(|b| BlockLimits::parse(&b).ok());
        let provisioning = lu
            .vpd(VpdPage::LOGICAL_BLOCK_PROVISIONING)
            .await
            .ok()
            .and_then(|b| LogicalBlockProvisioning::parse(&b).ok());
        let characteristics = lu
            .vpd(VpdPage::BLOCK_DEVICE_CHARACTERISTICS)
            .await
            .ok()
            .and_then(|b| BlockDeviceCharacteristics::parse(&b).ok());
        let write_protected = lu.write_protected().await.unwrap_or_else(|e| {
            // MODE SENSE is optional for a disk (SBC-4); a LU without it is
            // taken as writable, and a protected one still refuses writes.
            debug!(device, path, error = %e, "no write-protect flag: taken as writable");
            false
        });
        let write_cache = match lu.caching().await {
            Ok((header, page)) => WriteCache::from_mode_sense(&header, page.as_ref()),
            Err(e) => {
                // As Linux's sd: a LU that does not say is taken as
                // write-through, and FUA is never sent to it.
                debug!(device, path, error = %e, "no caching mode page: taken as write-through without FUA");
                WriteCache::ASSUMED
            }
        };
        Ok(Reading {
            inquiry,
            identification,
            serial,
            capacity,
            limits,
            provisioning,
            characteristics,
            write_protected,
            write_cache,
        })
    }

    /// The LU's own identity, if anything it reports names it.
    pub(crate) fn identity(&self) -> Option<String> {
        lu_identity(self.identification.as_ref(), self.serial.as_ref(), &self.inquiry).map(String::from)
    }

    /// The LU as the device describes it, under `identity`.
    pub(crate) fn lu_info(&self, identity: String) -> LuInfo {
        let cap = &self.capacity;
        let limits = self.limits.as_ref();
        LuInfo {
            identity,
            serial: self.serial.as_ref().map(|s| s.serial.clone()).filter(|s| !s.is_empty()),
            block_len: cap.block_len,
            blocks: cap.blocks().unwrap_or(0),
            physical_block_len: cap.physical_block_len().unwrap_or(cap.block_len),
            max_transfer: limits
                .and_then(BlockLimits::max_transfer_blocks)
                .map(|b| u64::from(b) * u64::from(cap.block_len)),
            // A MAXIMUM UNMAP LBA COUNT of 0 means no UNMAP (SBC-4 6.6.4);
            // all ones means no limit.
            unmap: cap.lbpme
                && self.provisioning.as_ref().is_some_and(|l| l.lbpu)
                && limits.is_none_or(|l| l.max_unmap_lba_count != 0),
            max_unmap_blocks: limits.map(|l| l.max_unmap_lba_count).filter(|&n| n != 0 && n != u32::MAX),
            unmap_granularity: limits.map_or(0, |l| l.optimal_unmap_granularity),
            unmap_alignment: limits.and_then(|l| l.unmap_granularity_alignment),
            write_same: self.provisioning.as_ref().is_some_and(|l| l.lbpws) || cap.lbpme,
            max_write_same_blocks: limits.map(|l| l.max_write_same_len).filter(|&n| n != 0),
            write_protected: self.write_protected,
            write_cache: self.write_cache,
            rotational: self.characteristics.as_ref().and_then(BlockDeviceCharacteristics::rotational),
        }
    }
}

/// What a claim that passed does to the device's LU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Joined {
    /// The first claim: this is the device's LU.
    Defines(LuInfo),
    /// The device's LU, as known.
    Same,
    /// The device's LU, whose write protection, write cache or size
    /// changed.
    Changed(LuInfo),
}

/// Where the claiming path stands in the device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Claimant<'a> {
    /// Its name.
    pub(crate) path: &'a str,
    /// The device's first path (the first in the table still in the
    /// device): the one a pin lets use a LU without identity.
    pub(crate) first: &'a str,
}

/// The claim decision (see the module docs): `known` is the device's LU
/// once a path was claimed, `pin` the configured identity.
pub(crate) fn decide(
    reading: &Reading,
    who: &Claimant<'_>,
    pin: Option<&str>,
    known: Option<&LuInfo>,
) -> Result<Joined, ClaimRefusal> {
    let path = who.path.to_owned();
    let found = match (reading.identity(), pin) {
        (Some(id), Some(pin)) if id != pin => {
            let found = reading.lu_info(id).describe();
            return Err(ClaimRefusal::NotPinned { path, found, pinned: pin.to_owned() });
        }
        (Some(id), _) => reading.lu_info(id),
        (None, Some(pin)) if who.path == who.first => reading.lu_info(pin.to_owned()),
        (None, Some(_)) => return Err(ClaimRefusal::NoIdentityNotFirst { path, first: who.first.to_owned() }),
        (None, None) => {
            return Err(ClaimRefusal::NoIdentity { path, lu: reading.lu_info("(no identity)".into()).describe() });
        }
    };
    match known {
        None => Ok(Joined::Defines(found)),
        Some(k) if !k.same_lu(&found) => {
            Err(ClaimRefusal::OtherLu { path, found: found.describe(), known: k.describe() })
        }
        Some(k)
            if k.write_protected != found.write_protected
                || k.write_cache != found.write_cache
                || k.blocks != found.blocks =>
        {
            Ok(Joined::Changed(found))
        }
        Some(_) => Ok(Joined::Same),
    }
}

/// Claims path `id`: reads the LU, decides, records the device's LU, runs
/// the bring-up steps. Returns the path's portal group: configured, or
/// the target name and the TargetPortalGroupTag the target declared.
pub(crate) async fn claim(inner: &Arc<Inner>, id: PathId) -> Result<Option<String>, ClaimRefusal> {
    let name = inner.path_name(id);
    let path = inner
        .path_io(id)
        .ok_or_else(|| ClaimRefusal::Unreadable { path: name.clone(), error: "the path is gone".into() })?;
    let lu = &path.lu;
    let reading = Reading::read(lu, &inner.name, &name).await?;
    let first = inner.core().first_path().unwrap_or_default();
    let who = Claimant { path: &name, first: &first };
    {
        let mut info = inner.info.lock().unwrap_or_else(|e| e.into_inner());
        match decide(&reading, &who, inner.template.expect_identity.as_deref(), info.as_ref())? {
            Joined::Defines(lu) => {
                info!(device = %inner.name, path = %name, lu = %lu.describe(), "device logical unit");
                *info = Some(lu);
            }
            Joined::Changed(lu) => {
                info!(
                    device = %inner.name,
                    path = %name,
                    write_protected = lu.write_protected,
                    write_cache = lu.write_cache.describe(),
                    blocks = lu.blocks,
                    "logical unit write protection, write cache or size changed"
                );
                let old = info.replace(lu).map(|old| old.capacity());
                drop(info);
                if let Some(old) = old {
                    inner.capacity_read(id, old);
                }
            }
            Joined::Same => {}
        }
    }
    let group = match &path.config.group {
        Some(g) => Some(g.clone()),
        None => path.session.snapshot().await.ok().and_then(|s| {
            let tpgt = s.connections.iter().find_map(|c| c.tpgt)?;
            Some(format!("{} tpgt {tpgt}", path.session_config.target_name.as_ref().map_or("", |n| n.as_str())))
        }),
    };
    for step in &inner.template.bring_up {
        step.before_io(&name, lu).await.map_err(|error| ClaimRefusal::BringUp {
            path: name.clone(),
            step: format!("{step:?}"),
            error: error.0,
        })?;
    }
    Ok(group)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Standard INQUIRY of a LIO fileio LU (target_core_spc.c,
    /// `spc_emulate_inquiry_std`: vendor `LIO-ORG`, product `FILEIO`).
    fn lio_inquiry() -> StandardInquiry {
        let mut b = vec![0x00, 0x00, 0x06, 0x12, 31, 0x00, 0x00, 0x02];
        b.extend(b"LIO-ORG FILEIO          4.0 ");
        StandardInquiry::parse(&b).unwrap()
    }

    /// A VPD page 83h of these designators (code set byte, association and
    /// type byte, value).
    fn page83(ds: &[(u8, u8, &[u8])]) -> DeviceIdentification {
        let mut p = vec![0, 0x83, 0, 0];
        for (cs, at, v) in ds {
            p.extend([*cs, *at, 0, v.len() as u8]);
            p.extend(*v);
        }
        let len = (p.len() - 4) as u16;
        p[2..4].copy_from_slice(&len.to_be_bytes());
        DeviceIdentification::parse(&p).unwrap()
    }

    /// A SCSI name string value: NUL-terminated, padded to 4 bytes.
    fn name(s: &str) -> Vec<u8> {
        let mut v = s.as_bytes().to_vec();
        v.resize((s.len() + 1).div_ceil(4) * 4, 0);
        v
    }

    /// VPD 83h of a LIO LU made through configfs without a unit serial
    /// (`spc_emulate_evpd_83` without DF_EMULATED_VPD_UNIT_SERIAL), reached
    /// through TPG 1 of iqn.2003-01.org.linux-iscsi.vm:lio: the T10 vendor
    /// ID designator `LIO-ORG ` with its NUL and nothing else of the LU,
    /// then the relative target port, the target port group, the LU group
    /// and the SCSI name strings of the port and of the target device.
    fn lio_vpd83(lu: &[(u8, u8, &[u8])]) -> DeviceIdentification {
        let port = name("iqn.2003-01.org.linux-iscsi.vm:lio,t,0x0001");
        let device = name("iqn.2003-01.org.linux-iscsi.vm:lio");
        let mut ds = lu.to_vec();
        ds.extend([
            (0x51, 0x94, &[0, 0, 0, 1][..]),
            (0x51, 0x95, &[0, 0, 0, 0][..]),
            (0x01, 0x06, &[0, 0, 0, 0][..]),
            (0x53, 0x98, &port[..]),
            (0x53, 0xa8, &device[..]),
        ]);
        page83(&ds)
    }

    /// What a claim reads from a LIO LU of `blocks` 512-byte blocks
    /// without a unit serial: VPD 80h is empty (`spc_emulate_evpd_80`).
    fn lio_without_serial(blocks: u64) -> Reading {
        let mut cap = vec![0u8; 32];
        cap[..8].copy_from_slice(&(blocks - 1).to_be_bytes());
        cap[8..12].copy_from_slice(&512u32.to_be_bytes());
        Reading {
            inquiry: lio_inquiry(),
            identification: Some(lio_vpd83(&[(0x02, 0x01, b"LIO-ORG \0")])),
            serial: UnitSerialNumber::parse(&[0, 0x80, 0, 0]).ok(),
            capacity: Capacity::parse_read_capacity16(&cap).unwrap(),
            limits: None,
            provisioning: None,
            characteristics: None,
            write_protected: false,
            write_cache: WriteCache::ASSUMED,
        }
    }

    /// A LIO LU with unit serial `serial`: NAA 6 of LIO's company id and
    /// the serial's hex digits (`spc_gen_naa_6h_vendor_specific`), T10
    /// `LIO-ORG FILEIO:serial`, VPD 80h the serial with its NUL.
    fn lio_with_serial(serial: &str) -> Reading {
        let mut nibbles = vec![6, 0, 0, 1, 4, 0, 5];
        nibbles.extend(serial.chars().filter_map(|c| c.to_digit(16)).map(|d| d as u8).take(25));
        nibbles.resize(32, 0);
        let naa: Vec<u8> = nibbles.chunks(2).map(|c| c[0] << 4 | c[1]).collect();
        let t10 = format!("LIO-ORG FILEIO:{serial}\0");
        let mut r = lio_without_serial(0x8000);
        r.identification = Some(lio_vpd83(&[(0x01, 0x03, &naa), (0x02, 0x01, t10.as_bytes())]));
        let mut p80 = vec![0, 0x80, 0, serial.len() as u8 + 1];
        p80.extend(serial.bytes());
        p80.push(0);
        r.serial = Some(UnitSerialNumber::parse(&p80).unwrap());
        r
    }

    /// VPD B0h with these limits, in blocks: MAXIMUM TRANSFER LENGTH,
    /// MAXIMUM UNMAP LBA COUNT, OPTIMAL UNMAP GRANULARITY, UNMAP
    /// GRANULARITY ALIGNMENT (UGAVALID set), MAXIMUM WRITE SAME LENGTH.
    fn block_limits(
        max_transfer: u32,
        max_unmap: u32,
        granularity: u32,
        alignment: u32,
        write_same: u64,
    ) -> BlockLimits {
        let mut b = vec![0, 0xb0, 0, 0x3c];
        b.resize(64, 0);
        b[8..12].copy_from_slice(&max_transfer.to_be_bytes());
        b[20..24].copy_from_slice(&max_unmap.to_be_bytes());
        b[28..32].copy_from_slice(&granularity.to_be_bytes());
        b[32..36].copy_from_slice(&(alignment | 0x8000_0000).to_be_bytes());
        b[36..44].copy_from_slice(&write_same.to_be_bytes());
        BlockLimits::parse(&b).unwrap()
    }

    /// VPD B2h with LBPU (UNMAP) and LBPWS (WRITE SAME with UNMAP).
    fn provisioning(lbpu: bool, lbpws: bool) -> LogicalBlockProvisioning {
        let b5 = u8::from(lbpu) << 7 | u8::from(lbpws) << 6;
        LogicalBlockProvisioning::parse(&[0, 0xb2, 0, 4, 0, b5, 0, 0]).unwrap()
    }

    #[test]
    fn lu_info_is_what_the_lu_reports() {
        // Nothing but READ CAPACITY(16): no limits, no UNMAP, WRITE SAME
        // only as plain zeroing (LBPME off), physical = logical.
        let bare = lio_without_serial(2048).lu_info("id".into());
        assert_eq!((bare.blocks, bare.block_len, bare.physical_block_len), (2048, 512, 512));
        assert_eq!((bare.max_transfer, bare.unmap, bare.max_unmap_blocks, bare.write_same), (None, false, None, false));
        assert_eq!(bare.serial, None, "an empty unit serial is none");
        assert_eq!(bare.capacity(), 2048 * 512);

        // A thin LU (LBPME) with UNMAP, limits, 4 KiB physical blocks
        // (LOGICAL BLOCKS PER PHYSICAL BLOCK EXPONENT 3).
        let mut r = lio_with_serial("0123abcd");
        let mut cap = vec![0u8; 32];
        cap[..8].copy_from_slice(&(0x8000u64 - 1).to_be_bytes());
        cap[8..12].copy_from_slice(&512u32.to_be_bytes());
        cap[13] = 3;
        cap[14] = 0x80;
        r.capacity = Capacity::parse_read_capacity16(&cap).unwrap();
        r.limits = Some(block_limits(2048, 8192, 8, 1, 65535));
        r.provisioning = Some(provisioning(true, false));
        let thin = r.lu_info("id".into());
        assert_eq!(thin.serial.as_deref(), Some("0123abcd"));
        assert_eq!(thin.physical_block_len, 4096);
        assert_eq!(thin.max_transfer, Some(2048 * 512), "in bytes");
        assert!(thin.unmap && thin.write_same, "LBPME with LBPU; WRITE SAME with LBPME");
        assert_eq!((thin.max_unmap_blocks, thin.unmap_granularity, thin.unmap_alignment), (Some(8192), 8, Some(1)));
        assert_eq!(thin.max_write_same_blocks, Some(65535));
        let g = thin.geometry();
        let discard = g.discard.unwrap();
        assert_eq!((discard.granularity, discard.alignment, discard.max_bytes), (4096, 512, Some(8192 * 512)));
        assert_eq!(
            (g.capacity, g.logical_block, g.physical_block, g.max_transfer),
            (0x8000 * 512, 512, 4096, Some(2048 * 512))
        );

        // MAXIMUM UNMAP LBA COUNT 0: no UNMAP (SBC-4); all ones: no limit.
        r.limits = Some(block_limits(0, 0, 0, 0, 0));
        let none = r.lu_info("id".into());
        assert!(!none.unmap && none.geometry().discard.is_none());
        assert_eq!((none.max_transfer, none.max_write_same_blocks), (None, None), "0 states no limit");
        r.limits = Some(block_limits(0, u32::MAX, 0, 0, 0));
        let unlimited = r.lu_info("id".into());
        assert!(unlimited.unmap);
        assert_eq!(unlimited.max_unmap_blocks, None);
        // Without LBPU, no UNMAP however the limits read.
        r.provisioning = Some(provisioning(false, true));
        assert!(!r.lu_info("id".into()).unmap);
    }

    const P1: Claimant<'static> = Claimant { path: "p1", first: "p1" };
    const P2: Claimant<'static> = Claimant { path: "p2", first: "p1" };

    #[test]
    fn two_lio_lus_without_serial_are_never_one_device() {
        let a = lio_without_serial(0x8000);
        let b = lio_without_serial(0x8000);
        assert_eq!(a.identity(), None);
        // Neither path may define the device, so neither can join it.
        for (r, who) in [(&a, &P1), (&b, &P2)] {
            let e = decide(r, who, None, None).unwrap_err();
            assert!(matches!(e, ClaimRefusal::NoIdentity { .. }), "{e}");
            let text = e.to_string();
            assert!(text.contains("give the LU a unit serial on the target") && text.contains("identity = "), "{text}");
        }
    }

    #[test]
    fn a_pin_vouches_for_an_lu_without_identity_over_the_first_path_only() {
        let pin = Some("lio-disk0");
        let r = lio_without_serial(0x8000);
        let Joined::Defines(lu) = decide(&r, &P1, pin, None).unwrap() else { panic!("the first path defines") };
        assert_eq!(lu.identity, "lio-disk0");
        // Its reconnections are claimed again.
        assert_eq!(decide(&r, &P1, pin, Some(&lu)).unwrap(), Joined::Same);
        // Another path to an identical-looking LU might reach another LU.
        let e = decide(&lio_without_serial(0x8000), &P2, pin, Some(&lu)).unwrap_err();
        assert!(matches!(&e, ClaimRefusal::NoIdentityNotFirst { first, .. } if first == "p1"), "{e}");
    }

    #[test]
    fn lio_lus_with_serials_are_told_apart() {
        let a = lio_with_serial("0a1b2c3d-0001");
        let b = lio_with_serial("0a1b2c3d-0002");
        assert_eq!(a.identity().unwrap(), "naa.60014050a1b2c3d00010000000000000");
        let Joined::Defines(lu) = decide(&a, &P1, None, None).unwrap() else { panic!() };
        assert_eq!(decide(&a, &P2, None, Some(&lu)).unwrap(), Joined::Same);
        let e = decide(&b, &P2, None, Some(&lu)).unwrap_err();
        assert!(matches!(e, ClaimRefusal::OtherLu { .. }), "{e}");
        // A serial without hex digits gives LIO's NAA no identifier: the
        // T10 designator with the product and serial names the LU.
        let c = lio_with_serial("xyz-only");
        assert_eq!(c.identity().unwrap(), "t10.LIO-ORG FILEIO:xyz-only");
        // A pin must be the LU's own identity.
        let e = decide(&b, &P1, Some("naa.60014050a1b2c3d00010000000000000"), None).unwrap_err();
        assert!(e.to_string().contains("configured for naa.60014050a1b2c3d0001000000000000"), "{e}");
    }

    #[test]
    fn the_serial_tells_apart_lus_with_one_identity_and_a_resize_is_followed() {
        // tgtd can give two LUs the same NAA: the serial decides.
        let a = lio_with_serial("0a1b2c3d-0001");
        let Joined::Defines(lu) = decide(&a, &P1, None, None).unwrap() else { panic!() };
        // The same LU (identity and serial) with another size: resized on
        // the target; the newer reading is its size.
        let mut grown = a.clone();
        grown.capacity = lio_without_serial(0x10000).capacity;
        let Joined::Changed(newer) = decide(&grown, &P2, None, Some(&lu)).unwrap() else { panic!("resized") };
        assert_eq!((lu.blocks, newer.blocks), (0x8000, 0x10000));
        // Without a serial the size is all that tells two LUs apart.
        let pin = Some("lio-disk0");
        let Joined::Defines(bare) = decide(&lio_without_serial(0x8000), &P1, pin, None).unwrap() else { panic!() };
        let e = decide(&lio_without_serial(0x10000), &P1, pin, Some(&bare)).unwrap_err();
        assert!(matches!(e, ClaimRefusal::OtherLu { .. }), "{e}");
        // Another logical block is another LU.
        let mut reblocked = a.clone();
        reblocked.capacity.block_len = 4096;
        assert!(matches!(decide(&reblocked, &P2, None, Some(&lu)), Err(ClaimRefusal::OtherLu { .. })));
        let mut other_serial = a.clone();
        other_serial.serial = lio_with_serial("0a1b2c3d-0009").serial;
        assert!(matches!(decide(&other_serial, &P2, None, Some(&lu)), Err(ClaimRefusal::OtherLu { .. })));
        // Write protection and write cache may change between claims.
        let mut wb = a.clone();
        wb.write_cache = WriteCache { enabled: true, fua: false };
        let Joined::Changed(newer) = decide(&wb, &P2, None, Some(&lu)).unwrap() else { panic!("changed") };
        assert_eq!(newer.write_cache, wb.write_cache);
    }
}
