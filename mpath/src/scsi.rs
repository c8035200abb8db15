//! SCSI commands on one logical unit through one iSCSI session: the
//! `dsm` builders and parsers joined to the transport, with the retries
//! every caller needs (a UNIT ATTENTION after login, an allocation length
//! that was too small).

use bytes::Bytes;
use mpio_dsm::cdb::ReportLunsSelect;
use mpio_dsm::{
    CachingPage, Capacity, Command, DataDirection, DeviceIdentification, Lun, ModeParameterHeader, ModeSense,
    ModeSenseKind, ParseError, ReadCapacity10, ReportLuns, ScsiStatus, Sense, SenseKey, StandardInquiry, cdb,
    vpd::VpdPage,
};
use mpio_transport::{ScsiRequest, ScsiResult, SessionHandle, TaskError};

/// How many UNIT ATTENTIONs in a row a command is retried for: a new
/// nexus gets one per pending condition (power on, parameters changed,
/// ...), each reported once (SPC-4 section 5.14).
const UNIT_ATTENTION_RETRIES: usize = 4;

/// Why a SCSI command did not give the expected data. The message
/// includes the cause's text, so the cause is not also its `source()`
/// (the fields are not named `source`): an error chain prints it once.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScsiError {
    /// The transport could not deliver the command or its answer.
    #[error("{op}: {error}")]
    Transport {
        /// The command.
        op: &'static str,
        /// The transport error.
        error: TaskError,
    },
    /// CHECK CONDITION.
    #[error("{op}: {}", sense.as_ref().map_or_else(|| "CHECK CONDITION without sense data".to_string(), ToString::to_string))]
    CheckCondition {
        /// The command.
        op: &'static str,
        /// The parsed sense data.
        sense: Option<Sense>,
    },
    /// Another non-GOOD status (BUSY, RESERVATION CONFLICT, ...).
    #[error("{op}: status {status}")]
    Status {
        /// The command.
        op: &'static str,
        /// The status.
        status: ScsiStatus,
    },
    /// A CDB could not be built (a value out of its field's range).
    #[error("{op}: {error}")]
    Cdb {
        /// The command.
        op: &'static str,
        /// The builder's complaint.
        error: mpio_dsm::CdbError,
    },
    /// The data did not parse.
    #[error("{op}: {error}")]
    Parse {
        /// The command.
        op: &'static str,
        /// The parser's complaint.
        error: ParseError,
    },
}

impl ScsiError {
    /// The sense data, for a CHECK CONDITION.
    pub fn sense(&self) -> Option<&Sense> {
        match self {
            ScsiError::CheckCondition { sense, .. } => sense.as_ref(),
            _ => None,
        }
    }
}

/// Builds the transport request for a `dsm` command.
pub fn request(lun: Lun, cmd: &Command, data_out: Bytes) -> ScsiRequest {
    let req = ScsiRequest::new(lun.as_u64_be(), cmd.cdb.as_bytes());
    match cmd.data {
        DataDirection::None => req,
        DataDirection::Read { len } => req.read(len),
        DataDirection::Write { .. } => req.write(data_out),
    }
}

/// One logical unit behind one session.
#[derive(Clone, Debug)]
pub struct LuAccess {
    session: SessionHandle,
    lun: Lun,
}

impl LuAccess {
    /// Access to `lun` through `session`.
    pub fn new(session: SessionHandle, lun: Lun) -> LuAccess {
        LuAccess { session, lun }
    }

    /// The LUN.
    pub fn lun(&self) -> Lun {
        self.lun
    }

    /// Runs `cmd` and checks for GOOD status, retrying UNIT ATTENTIONs.
    pub async fn run(&self, op: &'static str, cmd: &Command, data_out: Bytes) -> Result<ScsiResult, ScsiError> {
        let mut attempts = 0;
        loop {
            let r = self
                .session
                .execute(request(self.lun, cmd, data_out.clone()))
                .await
                .map_err(|error| ScsiError::Transport { op, error })?;
            match ScsiStatus(r.status) {
                ScsiStatus::GOOD | ScsiStatus::CONDITION_MET => return Ok(r),
                ScsiStatus::CHECK_CONDITION => {
                    let sense = r.sense.as_deref().and_then(|s| Sense::parse(s).ok());
                    let unit_attention = sense.as_ref().is_some_and(|s| s.key == SenseKey::UNIT_ATTENTION);
                    if unit_attention && attempts < UNIT_ATTENTION_RETRIES {
                        attempts += 1;
                        continue;
                    }
                    return Err(ScsiError::CheckCondition { op, sense });
                }
                status => return Err(ScsiError::Status { op, status }),
            }
        }
    }

    /// Runs a command that returns a length-prefixed structure, growing the
    /// allocation length once if the answer says it was too small.
    async fn read_structure<T>(
        &self,
        op: &'static str,
        build: impl Fn(u32) -> Result<Command, mpio_dsm::CdbError>,
        first_alloc: u32,
        parse: impl Fn(&[u8]) -> Result<T, ParseError>,
    ) -> Result<T, ScsiError> {
        let build = |n| build(n).map_err(|error| ScsiError::Cdb { op, error });
        let r = self.run(op, &build(first_alloc)?, Bytes::new()).await?;
        let data = r.data.to_bytes();
        match parse(&data) {
            Err(e @ ParseError::Truncated { .. }) => {
                let need = e.required_len().unwrap_or(first_alloc as usize).min(u32::MAX as usize) as u32;
                if need <= first_alloc {
                    return Err(ScsiError::Parse { op, error: e });
                }
                let r = self.run(op, &build(need)?, Bytes::new()).await?;
                parse(&r.data.to_bytes()).map_err(|error| ScsiError::Parse { op, error })
            }
            other => other.map_err(|error| ScsiError::Parse { op, error }),
        }
    }

    /// TEST UNIT READY.
    pub async fn test_unit_ready(&self) -> Result<(), ScsiError> {
        self.run("TEST UNIT READY", &cdb::test_unit_ready(), Bytes::new()).await.map(|_| ())
    }

    /// Standard INQUIRY data.
    pub async fn inquiry(&self) -> Result<StandardInquiry, ScsiError> {
        let op = "INQUIRY";
        let r = self.run(op, &cdb::inquiry(255), Bytes::new()).await?;
        StandardInquiry::parse(&r.data.to_bytes()).map_err(|error| ScsiError::Parse { op, error })
    }

    /// The raw bytes of a VPD page, whole.
    pub async fn vpd(&self, page: VpdPage) -> Result<Bytes, ScsiError> {
        let alloc = |n: u32| Ok(cdb::inquiry_vpd(page, n.min(u32::from(u16::MAX)) as u16));
        self.read_structure("INQUIRY VPD", alloc, 255, |b| match mpio_dsm::vpd::required_len(b) {
            Some(need) if need > b.len() => Err(ParseError::Truncated { what: "VPD page", need, have: b.len() }),
            _ => Ok(Bytes::copy_from_slice(b)),
        })
        .await
    }

    /// VPD page 0x83, parsed.
    pub async fn device_identification(&self) -> Result<DeviceIdentification, ScsiError> {
        let b = self.vpd(VpdPage::DEVICE_IDENTIFICATION).await?;
        DeviceIdentification::parse(&b).map_err(|error| ScsiError::Parse { op: "INQUIRY VPD 0x83", error })
    }

    /// READ CAPACITY(16), falling back to (10) for targets without it, and
    /// back to (16) when (10) cannot express the size (SBC-3 5.16).
    pub async fn capacity(&self) -> Result<Capacity, ScsiError> {
        let op = "READ CAPACITY(16)";
        match self.run(op, &cdb::read_capacity16(32), Bytes::new()).await {
            Ok(r) => {
                Capacity::parse_read_capacity16(&r.data.to_bytes()).map_err(|error| ScsiError::Parse { op, error })
            }
            Err(ScsiError::CheckCondition { sense: Some(s), .. }) if s.key == SenseKey::ILLEGAL_REQUEST => {
                let op = "READ CAPACITY(10)";
                let r = self.run(op, &cdb::read_capacity10(), Bytes::new()).await?;
                let rc10 = ReadCapacity10::parse(&r.data.to_bytes()).map_err(|error| ScsiError::Parse { op, error })?;
                rc10.capacity().ok_or(ScsiError::Parse {
                    op,
                    error: ParseError::Invalid {
                        what: "READ CAPACITY(10)",
                        field: "RETURNED LOGICAL BLOCK ADDRESS",
                        value: 0xffff_ffff,
                        problem: "needs READ CAPACITY(16), which the target refused",
                    },
                })
            }
            Err(e) => Err(e),
        }
    }

    /// The WP bit of the mode parameter header: the LU refuses writes.
    ///
    /// As Linux's sd (`sd_read_write_protect_flag`): MODE SENSE for all
    /// pages (3Fh) with room for the header only, (10) first and (6) when
    /// the LU refuses (10) with ILLEGAL REQUEST (SPC-2 era devices).
    pub async fn write_protected(&self) -> Result<bool, ScsiError> {
        let op = "MODE SENSE(10)";
        let cmd = cdb::mode_sense10(cdb::MODE_PAGE_ALL, 0, 8).map_err(|error| ScsiError::Cdb { op, error })?;
        let header = match self.run(op, &cmd, Bytes::new()).await {
            Ok(r) => ModeParameterHeader::parse10(&r.data.to_bytes()).map_err(|error| ScsiError::Parse { op, error }),
            Err(ScsiError::CheckCondition { sense: Some(s), .. }) if s.key == SenseKey::ILLEGAL_REQUEST => {
                let op = "MODE SENSE(6)";
                let cmd = cdb::mode_sense6(cdb::MODE_PAGE_ALL, 0, 4).map_err(|error| ScsiError::Cdb { op, error })?;
                let r = self.run(op, &cmd, Bytes::new()).await?;
                ModeParameterHeader::parse6(&r.data.to_bytes()).map_err(|error| ScsiError::Parse { op, error })
            }
            Err(e) => Err(e),
        }?;
        Ok(header.write_protected())
    }

    /// MODE SENSE for one page (current values), whole: (10) first, (6)
    /// when the LU refuses (10) with ILLEGAL REQUEST, as Linux's
    /// `scsi_mode_sense` does. Each asks for the header first and then
    /// for the length it announces (`sd_read_cache_type`: "cautiously
    /// ask").
    pub async fn mode_sense(&self, page: u8) -> Result<ModeSense, ScsiError> {
        let ten = |alloc: u32| cdb::mode_sense10(page, 0, alloc.min(u32::from(u16::MAX)) as u16);
        let parse10 = |b: &[u8]| ModeSense::parse(ModeSenseKind::Ten, b);
        match self.read_structure("MODE SENSE(10)", ten, 8, parse10).await {
            Err(ScsiError::CheckCondition { sense: Some(s), .. }) if s.key == SenseKey::ILLEGAL_REQUEST => {
                let six = |alloc: u32| cdb::mode_sense6(page, 0, alloc.min(u32::from(u8::MAX)) as u8);
                let parse6 = |b: &[u8]| ModeSense::parse(ModeSenseKind::Six, b);
                self.read_structure("MODE SENSE(6)", six, 4, parse6).await
            }
            other => other,
        }
    }

    /// The LU's write cache as Linux's sd reads it (`sd_read_cache_type`):
    /// MODE SENSE for the Caching mode page; DPOFUA from the header, WCE
    /// from the page. An answer without the page is what sd calls "No
    /// Caching mode page found" and reads as write-through without FUA;
    /// the header is returned as well, for its WP bit.
    pub async fn caching(&self) -> Result<(ModeParameterHeader, Option<CachingPage>), ScsiError> {
        let op = "MODE SENSE caching page";
        let m = self.mode_sense(CachingPage::CODE).await?;
        let page = m.caching().transpose().map_err(|error| ScsiError::Parse { op, error })?;
        Ok((m.header, page))
    }

    /// REPORT LUNS (sent to this LU; any LU of the target answers it).
    pub async fn report_luns(&self) -> Result<ReportLuns, ScsiError> {
        let build = |n: u32| cdb::report_luns(ReportLunsSelect::ALL, n);
        self.read_structure("REPORT LUNS", build, 4096, ReportLuns::parse).await
    }
}
