//! Every SCSI response parser: sense, INQUIRY, VPD pages, capacities,
//! REPORT LUNS, MODE SENSE (header, pages, the Caching mode page).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mpio_dsm::{
    BlockLimits, Capacity, DeviceIdentification, LogicalBlockProvisioning, ModeSense, ModeSenseKind, ReadCapacity10,
    ReportLuns, Sense, StandardInquiry, SupportedPages, UnitSerialNumber,
};

fuzz_target!(|data: &[u8]| {
    let _ = Sense::parse(data).map(|s| s.to_string());
    let _ = Sense::from_iscsi_segment(data);
    let _ = StandardInquiry::parse(data);
    let _ = SupportedPages::parse(data);
    let _ = UnitSerialNumber::parse(data);
    let _ = DeviceIdentification::parse(data).map(|d| d.lu_identity());
    let _ = BlockLimits::parse(data);
    let _ = LogicalBlockProvisioning::parse(data);
    let _ = ReadCapacity10::parse(data).map(|c| c.capacity());
    let _ = Capacity::parse_read_capacity16(data).map(|c| c.capacity_bytes());
    let _ = ReportLuns::parse(data);
    for kind in [ModeSenseKind::Six, ModeSenseKind::Ten] {
        let _ = ModeSense::parse(kind, data).map(|m| m.caching());
    }
});
