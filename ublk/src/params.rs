//! The ublk device parameters (`struct ublk_params`, sent with
//! `UBLK_U_CMD_SET_PARAMS` before the device starts) for a
//! [`Geometry`], checked here against what the driver accepts so that a
//! geometry it would refuse fails with a sentence instead of `EINVAL`.
//!
//! What the driver does with them (`ublk_ctrl_start_dev` and
//! `ublk_validate_params` in `drivers/block/ublk_drv.c`, 6.12): the
//! logical block is `1 << logical_bs_shift`, between 512 bytes and the
//! page size, at most the physical block; `max_sectors` (512-byte units)
//! may not exceed the per-tag I/O buffer; discard limits are bytes for
//! granularity and alignment and sectors for the maxima, with one segment
//! per discard; `max_write_zeroes_sectors` lives in the discard part, so a
//! LU that zeroes but does not unmap still sends that part with no
//! discard sectors. The attributes become the disk's features: volatile
//! write cache (the block layer then sends flushes), FUA, rotational,
//! read-only.

use libublk::sys;
use mpio_mpath::Geometry;

/// Sectors of the block layer: ublk counts in them whatever the logical
/// block.
const SECTOR: u64 = 512;

/// The page size the driver bounds the logical block by (x86-64 and the
/// default arm64 configuration).
const PAGE: u32 = 4096;

/// A geometry the ublk driver cannot serve.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamError {
    /// The logical block is not a power of two between 512 bytes and a
    /// page.
    #[error(
        "the LU's {0}-byte logical block cannot be a ublk device (ublk takes 512 to 4096 bytes, a power of two); \
         export it over NBD instead (frontend = \"nbd\")"
    )]
    LogicalBlock(u32),
    /// The capacity is not a whole number of logical blocks.
    #[error("the LU's size {capacity} is not a multiple of its {block}-byte block")]
    Capacity {
        /// Bytes.
        capacity: u64,
        /// The logical block.
        block: u32,
    },
    /// The per-tag buffer is smaller than a page or not a multiple of one.
    #[error("an I/O buffer of {0} bytes: ublk needs a multiple of 4096")]
    Buffer(u32),
}

/// The parameters for `g`, with `buffer` bytes of I/O buffer per tag
/// (the largest request the kernel sends).
pub fn for_geometry(g: &Geometry, buffer: u32) -> Result<sys::ublk_params, ParamError> {
    let logical = g.logical_block;
    if !logical.is_power_of_two() || !(512..=PAGE).contains(&logical) {
        return Err(ParamError::LogicalBlock(logical));
    }
    if !g.capacity.is_multiple_of(u64::from(logical)) {
        return Err(ParamError::Capacity { capacity: g.capacity, block: logical });
    }
    if buffer < PAGE || !buffer.is_multiple_of(PAGE) {
        return Err(ParamError::Buffer(buffer));
    }
    // A physical block the LU states oddly (not a power of two, or below
    // the logical one) is only advice: fall back to the logical block.
    let physical = if g.physical_block.is_power_of_two() { g.physical_block.max(logical) } else { logical };
    // The device splits what is larger than the LU takes, so a small
    // max_transfer only lowers what is asked; a whole number of logical
    // blocks, and never below a page (the block layer's floor).
    let transfer = g.max_transfer.map_or(buffer, |m| m.clamp(PAGE, buffer));
    let transfer = transfer - transfer % logical;

    let mut attrs = 0;
    if g.read_only {
        attrs |= sys::UBLK_ATTR_READ_ONLY;
    }
    if g.rotational == Some(true) {
        attrs |= sys::UBLK_ATTR_ROTATIONAL;
    }
    // As Linux's sd: a write-back LU gets a volatile cache (flushes sent)
    // and FUA, which the device keeps whatever the LU takes (the FUA bit
    // on a DPOFUA LU, else SYNCHRONIZE CACHE after the write), cheaper
    // than the block layer's flush-write-flush emulation. A write-through
    // LU gets neither: every completed write is already durable, and the
    // block layer then drops flushes and FUA before they reach us.
    if g.write_cache.enabled {
        attrs |= sys::UBLK_ATTR_VOLATILE_CACHE | sys::UBLK_ATTR_FUA;
    }

    let mut params = sys::ublk_params {
        types: sys::UBLK_PARAM_TYPE_BASIC,
        basic: sys::ublk_param_basic {
            attrs,
            logical_bs_shift: shift(logical),
            physical_bs_shift: shift(physical),
            io_min_shift: shift(physical),
            io_opt_shift: shift(physical),
            max_sectors: transfer / SECTOR as u32,
            dev_sectors: g.capacity / SECTOR,
            ..Default::default()
        },
        ..Default::default()
    };
    if g.discard.is_some() || g.write_zeroes {
        params.types |= sys::UBLK_PARAM_TYPE_DISCARD;
        // The driver refuses a zero granularity even with discard off.
        params.discard.discard_granularity = logical;
        if let Some(d) = g.discard {
            params.discard.discard_granularity = d.granularity.max(logical);
            params.discard.discard_alignment = d.alignment;
            // UINT_MAX sectors when the LU states no maximum; the device
            // splits a discard into UNMAPs the LU takes.
            let most = d.max_bytes.unwrap_or(u64::MAX) / SECTOR;
            params.discard.max_discard_sectors = u32::try_from(most).unwrap_or(u32::MAX);
            params.discard.max_discard_segments = 1;
        }
        if g.write_zeroes {
            params.discard.max_write_zeroes_sectors = u32::MAX;
        }
    }
    Ok(params)
}

/// log2 of a power of two up to 2^31 (fits the driver's `__u8` shifts).
fn shift(v: u32) -> u8 {
    v.trailing_zeros() as u8
}

#[cfg(test)]
mod tests {
    use mpio_mpath::{Discard, WriteCache};

    use super::*;

    fn geometry(logical: u32) -> Geometry {
        Geometry {
            capacity: 64 << 20,
            logical_block: logical,
            physical_block: logical,
            max_transfer: None,
            read_only: false,
            discard: None,
            write_zeroes: false,
            write_cache: WriteCache { enabled: false, fua: false },
            shared_flush: true,
            rotational: None,
        }
    }

    #[test]
    fn blocks_capacity_and_transfer() {
        for (logical, physical, shifts) in [(512, 512, (9, 9)), (512, 4096, (9, 12)), (4096, 4096, (12, 12))] {
            let g = Geometry { physical_block: physical, ..geometry(logical) };
            let p = for_geometry(&g, 512 << 10).unwrap();
            assert_eq!((p.basic.logical_bs_shift, p.basic.physical_bs_shift), shifts, "{logical}/{physical}");
            assert_eq!(p.basic.dev_sectors, (64 << 20) / 512);
            assert_eq!(p.basic.max_sectors, 1024, "the whole buffer without a LU limit");
            assert_eq!(p.types, sys::UBLK_PARAM_TYPE_BASIC);
            assert_eq!(p.basic.attrs, 0);
        }
        // The LU's limit, as long as it is a page or more.
        let p = for_geometry(&Geometry { max_transfer: Some(256 << 10), ..geometry(512) }, 512 << 10).unwrap();
        assert_eq!(p.basic.max_sectors, 512);
        let p = for_geometry(&Geometry { max_transfer: Some(1024), ..geometry(512) }, 512 << 10).unwrap();
        assert_eq!(p.basic.max_sectors, 8);
        // An odd physical block is ignored.
        let p = for_geometry(&Geometry { physical_block: 3000, ..geometry(512) }, 512 << 10).unwrap();
        assert_eq!(p.basic.physical_bs_shift, 9);
    }

    #[test]
    fn attributes_follow_the_lu() {
        let wb = Geometry { write_cache: WriteCache { enabled: true, fua: false }, ..geometry(512) };
        let p = for_geometry(&wb, 4096).unwrap();
        assert_eq!(p.basic.attrs, sys::UBLK_ATTR_VOLATILE_CACHE | sys::UBLK_ATTR_FUA);
        let ro = Geometry { read_only: true, rotational: Some(true), ..geometry(512) };
        assert_eq!(for_geometry(&ro, 4096).unwrap().basic.attrs, sys::UBLK_ATTR_READ_ONLY | sys::UBLK_ATTR_ROTATIONAL);
        let ssd = Geometry { rotational: Some(false), ..geometry(512) };
        assert_eq!(for_geometry(&ssd, 4096).unwrap().basic.attrs, 0);
    }

    #[test]
    fn discard_and_write_zeroes() {
        let d = Discard { granularity: 1 << 20, alignment: 4096, max_bytes: Some(32 << 20) };
        let g = Geometry { discard: Some(d), ..geometry(512) };
        let p = for_geometry(&g, 4096).unwrap();
        assert_eq!(p.types, sys::UBLK_PARAM_TYPE_BASIC | sys::UBLK_PARAM_TYPE_DISCARD);
        let got = &p.discard;
        assert_eq!(
            (got.discard_granularity, got.discard_alignment, got.max_discard_sectors, got.max_discard_segments),
            (1 << 20, 4096, 65536, 1)
        );
        assert_eq!(got.max_write_zeroes_sectors, 0);
        let unbounded = Geometry { discard: Some(Discard { max_bytes: None, ..d }), ..geometry(512) };
        assert_eq!(for_geometry(&unbounded, 4096).unwrap().discard.max_discard_sectors, u32::MAX);
        // Zeroing without unmapping: the discard part, no discard sectors.
        let p = for_geometry(&Geometry { write_zeroes: true, ..geometry(4096) }, 4096).unwrap();
        assert_eq!(p.types, sys::UBLK_PARAM_TYPE_BASIC | sys::UBLK_PARAM_TYPE_DISCARD);
        assert_eq!((p.discard.max_discard_sectors, p.discard.max_discard_segments), (0, 0));
        assert_eq!((p.discard.discard_granularity, p.discard.max_write_zeroes_sectors), (4096, u32::MAX));
    }

    #[test]
    fn refusals_name_the_problem() {
        for bad in [256, 520, 8192] {
            let e = for_geometry(&geometry(bad), 4096).unwrap_err();
            assert_eq!(e, ParamError::LogicalBlock(bad));
            assert!(e.to_string().contains("frontend = \"nbd\""), "{e}");
        }
        let e = for_geometry(&Geometry { capacity: 4097, ..geometry(512) }, 4096).unwrap_err();
        assert_eq!(e, ParamError::Capacity { capacity: 4097, block: 512 });
        assert_eq!(for_geometry(&geometry(512), 6000).unwrap_err(), ParamError::Buffer(6000));
    }
}
