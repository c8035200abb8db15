//! Error classes: what the multipath layer does with a completed SCSI
//! command — done, fail the path and re-drive elsewhere, retry, or return
//! the device's answer to the caller.
//!
//! This is the analogue of Windows' `DsmInterpretError` ("identifies
//! conditions requiring a request to be retried or when a fail-over is
//! warranted", in the Microsoft iSCSI Software Initiator Users Guide; its MPIO timers
//! RetryCount 3 and RetryInterval 1 s) and of Linux's `scsi_decide_disposition` / `scsi_check_sense`
//! feeding `blk_path_error`. DESIGN.md "Error classes, not error codes":
//! the multipath layer matches on an [`ErrorClass`], never on raw sense.
//!
//! Two rules drive every choice below:
//! - never return an error while a good path exists: anything that can be
//!   a property of one I_T nexus (ALUA state of its target port group, a LUN
//!   no longer mapped on that port) is a [`ErrorClass::PathFailure`];
//! - never fail over on the device's own answer: a reservation conflict, a
//!   medium error or an invalid request comes back the same on every path,
//!   so failing over would only walk all paths and then fail anyway (the
//!   same guide on clusters and persistent reservations).
//!
//! What is *not* here: transport failures (connection lost, command
//! timeout, digest errors detected by the initiator, iSCSI Response "Target
//! Failure") never reach [`classify`]; the transport reports them to the
//! multipath layer as path failures itself. Residual counts (underflow /
//! overflow) are the transport's to check as well.
//!
//! # Decision table (CHECK CONDITION rows are by sense key, then ASC/ASCQ)
//!
//! | status / sense | class | errno |
//! |---|---|---|
//! | GOOD, CONDITION MET, INTERMEDIATE(-CONDITION MET) (sense ignored) | Success | 0 |
//! | RESERVATION CONFLICT | Fatal(ReservationConflict) | EBADE |
//! | BUSY / TASK SET FULL | Retry(Busy / TaskSetFull), wait | EIO when exhausted |
//! | TASK ABORTED | Retry(TaskAborted), at once | EIO |
//! | ACA ACTIVE, COMMAND TERMINATED, unknown | Fatal(UnexpectedStatus) | EIO |
//! | CHECK CONDITION, no sense | Retry(MissingSense), wait | EIO |
//! | any key, deferred (71h/73h) | Retry(DeferredError), at once | EIO |
//! | NO SENSE | Retry(NoSense), wait | EIO |
//! | RECOVERED ERROR | Success | 0 |
//! | NOT READY 04/01 | Retry(NotReadyBecomingReady), wait | EIO |
//! | NOT READY 04/0A, 04/0B, 04/0C, 04/12 | PathFailure(AluaTransitioning, AluaStandby, AluaUnavailable, TargetPortOffline) | EIO if no path |
//! | NOT READY 04/02 | Fatal(ManualIntervention) | EIO |
//! | NOT READY 3A/xx | Fatal(MediumNotPresent) | EIO |
//! | NOT READY other (04/03, 04/04-09, 04/14, ...) | Retry(NotReady), wait | EIO |
//! | MEDIUM ERROR | Fatal(MediumError) | ENODATA |
//! | HARDWARE ERROR 08/03 | Retry(TransportError), at once | EIO |
//! | HARDWARE ERROR other (44/00 included) | Fatal(HardwareError) | EREMOTEIO |
//! | ILLEGAL REQUEST 25/00 | PathFailure(LunNotSupported) | EIO if no path |
//! | ILLEGAL REQUEST 10/xx | Fatal(ProtectionInformation) | EILSEQ |
//! | ILLEGAL REQUEST other | Fatal(IllegalRequest) | EREMOTEIO |
//! | UNIT ATTENTION 29/xx | Retry(Reset), at once | EIO |
//! | UNIT ATTENTION 2A/03-05 | Retry(ReservationsChanged), at once | EIO |
//! | UNIT ATTENTION 2A/06, 2A/07 | Retry(AluaStateChanged), at once | EIO |
//! | UNIT ATTENTION 2A/09 | Retry(CapacityChanged), at once | EIO |
//! | UNIT ATTENTION 3F/03, 3F/05 | Retry(InquiryDataChanged), at once | EIO |
//! | UNIT ATTENTION 3F/0E | Retry(ReportedLunsChanged), at once | EIO |
//! | UNIT ATTENTION other | Retry(UnitAttention), at once | EIO |
//! | DATA PROTECT 27/07 | Fatal(SpaceAllocationFailed) | ENOSPC |
//! | DATA PROTECT 27/xx other | Fatal(WriteProtected) | EROFS |
//! | DATA PROTECT other | Fatal(DataProtect) | EREMOTEIO |
//! | ABORTED COMMAND 10/xx | Fatal(ProtectionInformation) | EILSEQ |
//! | ABORTED COMMAND 08/03, 0C/0C, 0C/0D, 11/13, 47/xx, 4B/xx | Retry(TransportError), at once | EIO |
//! | ABORTED COMMAND other | Retry(AbortedCommand), wait | EIO |
//! | MISCOMPARE | Fatal(Miscompare) | EREMOTEIO |
//! | COPY ABORTED, BLANK CHECK, VOLUME OVERFLOW, VENDOR SPECIFIC, COMPLETED, reserved | Fatal(Other) | EREMOTEIO |
//!
//! # Errno values
//!
//! [`FatalKind::errno`] returns the errno Linux's block layer itself uses
//! for the same condition (`blk_errors[]` in `block/blk-core.c`, reached from
//! `scsi_result_to_blk_status` in `drivers/scsi/scsi_lib.c`):
//! EBADE = `BLK_STS_RESV_CONFLICT`, ENOSPC = `BLK_STS_NOSPC`, ENODATA =
//! `BLK_STS_MEDIUM`, EREMOTEIO = `BLK_STS_TARGET` (Linux sets it for
//! HARDWARE ERROR, invalid opcode/field/LBA, MISCOMPARE, COPY ABORTED),
//! EILSEQ = `BLK_STS_PROTECTION`, EIO = `BLK_STS_IOERR`. This is not only
//! faithful to what a native `sd` disk returns: ublk completes a request
//! with `errno_to_blk_status(-errno)`, so exactly these values survive the
//! trip into the kernel as the matching `blk_status_t` (and keep a
//! dm-multipath stacked above `/dev/ublkbN` from failing over on them),
//! while any other errno (EROFS, EACCES, EINVAL on older kernels) collapses
//! into a plain EIO. That is why ILLEGAL REQUEST is EREMOTEIO, not EINVAL.
//!
//! The one exception is write protect (DATA PROTECT 27/xx but 27/07):
//! EROFS, where Linux's sd says `BLK_STS_TARGET`. The condition has a
//! meaning every frontend can name: NBD has `EPERM` for "the export is
//! read-only" and no `EREMOTEIO`, so EREMOTEIO would reach an NBD client as
//! a plain I/O error. A ublk frontend must map EROFS back to EREMOTEIO
//! (`BLK_STS_TARGET`) before completing, or the kernel turns it into
//! `BLK_STS_IOERR`, a path error for a dm-multipath stacked above.
//!
//! The values are Linux's generic ones (`asm-generic/errno.h`: x86, arm,
//! arm64, riscv, powerpc, s390, loongarch); alpha, mips, parisc and sparc
//! number EBADE, ENODATA, EREMOTEIO and EILSEQ differently.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic))]

use core::fmt;

use crate::cdb::Opcode;
use crate::sense::{Sense, SenseKey};
use crate::status::ScsiStatus;

/// The error a request completes with: the one errno of the block layer
/// for each error class (what [`FatalKind::errno`] and
/// [`ErrorClass::errno`] return), plus the few the multipath device itself
/// gives (a request it cannot take, a device closing). Frontends map it to
/// their protocol (NBD's error values, a ublk completion's `-errno`); the
/// enum is exhaustive so that a new value cannot be forgotten by one.
/// [`Errno::code`] is Linux's generic (`asm-generic/errno*.h`) number,
/// positive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Errno {
    /// EIO, I/O error (`BLK_STS_IOERR`): no usable path within the hold
    /// time, a transient condition that outlasted its retries, a condition
    /// with no better name.
    Io,
    /// EINVAL: the request is invalid (unaligned, past the end); nothing
    /// was sent.
    Invalid,
    /// EOPNOTSUPP (`BLK_STS_NOTSUPP`): the LU does not support the
    /// operation (UNMAP).
    NotSupported,
    /// EBADE, invalid exchange (`BLK_STS_RESV_CONFLICT`): another initiator
    /// holds a reservation.
    ReservationConflict,
    /// ENODATA, no data available (`BLK_STS_MEDIUM`): a medium error.
    Medium,
    /// ENOSPC, no space left (`BLK_STS_NOSPC`): a thin LU out of space.
    NoSpace,
    /// EROFS, read-only: the LU is write-protected (no `blk_status_t` of
    /// its own; see the module docs).
    ReadOnly,
    /// EILSEQ, illegal byte sequence (`BLK_STS_PROTECTION`): protection
    /// information check failed.
    Protection,
    /// EREMOTEIO, remote I/O error (`BLK_STS_TARGET`): the target's own
    /// failure (hardware error, a command or field it refuses).
    Target,
    /// ESHUTDOWN: the device is closing.
    Shutdown,
}

impl Errno {
    /// Every value.
    pub const ALL: [Errno; 10] = [
        Errno::Io,
        Errno::Invalid,
        Errno::NotSupported,
        Errno::ReservationConflict,
        Errno::Medium,
        Errno::NoSpace,
        Errno::ReadOnly,
        Errno::Protection,
        Errno::Target,
        Errno::Shutdown,
    ];

    /// Linux's generic errno number, positive (a ublk completion wants it
    /// negated).
    pub const fn code(self) -> i32 {
        match self {
            Errno::Io => 5,
            Errno::Invalid => 22,
            Errno::NoSpace => 28,
            Errno::ReadOnly => 30,
            Errno::ReservationConflict => 52,
            Errno::Medium => 61,
            Errno::Protection => 84,
            Errno::NotSupported => 95,
            Errno::Shutdown => 108,
            Errno::Target => 121,
        }
    }

    /// The symbol: `EIO`, `EBADE`, ...
    pub const fn name(self) -> &'static str {
        match self {
            Errno::Io => "EIO",
            Errno::Invalid => "EINVAL",
            Errno::NotSupported => "EOPNOTSUPP",
            Errno::ReservationConflict => "EBADE",
            Errno::Medium => "ENODATA",
            Errno::NoSpace => "ENOSPC",
            Errno::ReadOnly => "EROFS",
            Errno::Protection => "EILSEQ",
            Errno::Target => "EREMOTEIO",
            Errno::Shutdown => "ESHUTDOWN",
        }
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl From<FatalKind> for Errno {
    fn from(kind: FatalKind) -> Errno {
        kind.errno()
    }
}

/// What the multipath layer does with a completed SCSI command. Not
/// `non_exhaustive`: a new class must be handled by every caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// GOOD or CONDITION MET (or RECOVERED ERROR): done.
    Success,
    /// The path (nexus) is at fault: fail the path and re-drive the command
    /// on another one.
    ///
    /// Every fault [`classify`] reports comes from a target that answered:
    /// the session works, the logical unit is just not accessible through
    /// this target port now. Keep the session, take the path out of the
    /// policy, and let the path checker (TEST UNIT READY / REPORT TARGET
    /// PORT GROUPS) put it back; do not reconnect. The command was
    /// terminated with CHECK CONDITION before it was processed (NOT READY,
    /// LOGICAL UNIT NOT SUPPORTED), so re-driving it needs no fencing.
    PathFailure(PathFault),
    /// A transient condition of the logical unit: retry (bounded by
    /// RetryCount), on any path, after [`RetryKind::immediate`] says when.
    /// The command was not executed (UNIT ATTENTION, NOT READY, BUSY, TASK
    /// SET FULL, TASK ABORTED, deferred error) or is finished with an
    /// unknown result (NO SENSE, ABORTED COMMAND), so no copy of it is
    /// still pending at the target and re-sending it is safe.
    Retry(RetryKind),
    /// The device's own answer: return it to the caller as is, no failover,
    /// no retry.
    Fatal(FatalKind),
}

impl ErrorClass {
    /// The errno to complete the I/O with when this class is final: none
    /// for [`Success`](ErrorClass::Success), [`FatalKind::errno`] for
    /// [`Fatal`](ErrorClass::Fatal), and EIO for a retry whose budget ran
    /// out or a path failure with no path left (what Linux's SCSI layer and
    /// dm-multipath return in those cases: `BLK_STS_IOERR`).
    pub const fn errno(&self) -> Option<Errno> {
        match self {
            ErrorClass::Success => None,
            ErrorClass::PathFailure(_) | ErrorClass::Retry(_) => Some(Errno::Io),
            ErrorClass::Fatal(kind) => Some(kind.errno()),
        }
    }

    /// A stable snake_case label for logs and metrics: `success`,
    /// `path_failure`, `retry`, `fatal`.
    pub const fn as_str(&self) -> &'static str {
        match self {
            ErrorClass::Success => "success",
            ErrorClass::PathFailure(_) => "path_failure",
            ErrorClass::Retry(_) => "retry",
            ErrorClass::Fatal(_) => "fatal",
        }
    }
}

impl fmt::Display for ErrorClass {
    /// `success`, or the class and its reason: `path_failure (alua_standby)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let why = match self {
            ErrorClass::Success => return f.write_str("success"),
            ErrorClass::PathFailure(p) => p.as_str(),
            ErrorClass::Retry(r) => r.as_str(),
            ErrorClass::Fatal(k) => k.as_str(),
        };
        write!(f, "{} ({why})", self.as_str())
    }
}

/// Why a path failed (see [`ErrorClass::PathFailure`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PathFault {
    /// NOT READY 04/0A: the target port group is changing ALUA state.
    /// Another group may already be (or stay) active; the path checker puts
    /// this one back when the transition ends.
    AluaTransitioning,
    /// NOT READY 04/0B: the target port is in standby (active/passive
    /// array, seeds-digest 13.27).
    AluaStandby,
    /// NOT READY 04/0C: the target port is unavailable (seeds-digest 13.27).
    AluaUnavailable,
    /// NOT READY 04/12 "LOGICAL UNIT NOT READY, OFFLINE": what the Linux
    /// target (LIO) returns for a target port group in the ALUA Offline
    /// state or a port marked offline, i.e. a property of this port.
    TargetPortOffline,
    /// ILLEGAL REQUEST 25/00: the LU is not mapped on this I_T nexus any
    /// more, although the path proved at bring-up that it leads to this LU
    /// (LUN masking or mapping changed on that port).
    LunNotSupported,
}

impl PathFault {
    /// A stable snake_case label for logs and metrics.
    pub const fn as_str(&self) -> &'static str {
        match self {
            PathFault::AluaTransitioning => "alua_transitioning",
            PathFault::AluaStandby => "alua_standby",
            PathFault::AluaUnavailable => "alua_unavailable",
            PathFault::TargetPortOffline => "target_port_offline",
            PathFault::LunNotSupported => "lun_not_supported",
        }
    }
}

impl fmt::Display for PathFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a command is retried (see [`ErrorClass::Retry`]). Several unit
/// attentions ask the caller for a follow-up besides the retry; their docs
/// say which.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RetryKind {
    /// A UNIT ATTENTION not named by another kind (mode parameters changed,
    /// commands cleared by another initiator, microcode changed, thin
    /// provisioning soft threshold 38/07, ...). Worth a log line.
    UnitAttention,
    /// UNIT ATTENTION 29/xx: power on, reset, or I_T nexus loss. The LU may
    /// also have changed ALUA state (Linux's ALUA handler re-checks on
    /// 29/00); SPC-2 reservations are gone, persistent reservations stay.
    Reset,
    /// UNIT ATTENTION 2A/03-05: reservations preempted or released,
    /// registrations preempted. If this initiator was fenced, the retry
    /// returns RESERVATION CONFLICT and that becomes the answer; never
    /// re-register in reaction (that would undo the cluster's fencing).
    ReservationsChanged,
    /// UNIT ATTENTION 2A/06 (asymmetric access state changed) or 2A/07
    /// (implicit transition failed): re-read the port groups' states
    /// (REPORT TARGET PORT GROUPS) when ALUA is supported.
    AluaStateChanged,
    /// UNIT ATTENTION 2A/09: re-read the capacity (READ CAPACITY(16)) and
    /// resize the device.
    CapacityChanged,
    /// UNIT ATTENTION 3F/03 (inquiry data changed) or 3F/05 (device
    /// identifier changed): re-verify the LU identity (VPD 83h) of this path
    /// before trusting it; the sense alone cannot tell whether another LU
    /// now answers at this LUN.
    InquiryDataChanged,
    /// UNIT ATTENTION 3F/0E: the target's LUN inventory changed; rescan
    /// REPORT LUNS on this session.
    ReportedLunsChanged,
    /// Deferred sense (response code 71h/73h): an earlier command (a cached
    /// write that had completed GOOD) failed later; the current command was
    /// not executed (SPC-4 "Deferred errors"; Linux `scsi_check_sense`
    /// retries). The lost earlier write deserves an error-level log line.
    DeferredError,
    /// TASK ABORTED status: another I_T nexus aborted the command (TAS = 1,
    /// e.g. PREEMPT AND ABORT or a LU reset); it is terminated, not
    /// executing, so re-driving it is safe.
    TaskAborted,
    /// ABORTED COMMAND for a transport problem on the path: 47/xx CRC and
    /// parity, 4B/xx data phase, and the iSCSI conditions of RFC 7143
    /// section 11.4.7.2 (0C/0C, 0C/0D unsolicited data, 11/13 SNACK
    /// rejected); also 08/03 LU communication CRC error (Windows' classpnp
    /// retries it even under HARDWARE ERROR). Worth counting per path for
    /// marginal path detection.
    TransportError,
    /// ABORTED COMMAND for another reason (44/00 internal target failure,
    /// 4E/00 overlapped commands, ...). Windows' classpnp retries after 1 s,
    /// Linux `scsi_check_sense` retries.
    AbortedCommand,
    /// BUSY status: the LU cannot accept the command now.
    Busy,
    /// TASK SET FULL status: the LU's queue is full; the caller may also
    /// lower this path's queue depth.
    TaskSetFull,
    /// NOT READY 04/01: the LU is becoming ready.
    NotReadyBecomingReady,
    /// NOT READY with another cause that may clear by itself: 04/00, 04/03
    /// (manual intervention: MSDSM retries it because a controller firmware
    /// upgrade reports it on one controller only), format, rebuild,
    /// self-test, sanitize or space allocation in progress (04/04-09, 04/14,
    /// 04/1B), and unknown NOT READY codes.
    NotReady,
    /// CHECK CONDITION with sense key NO SENSE: nothing reported, and an
    /// unknown amount of data moved. Windows' classpnp retries; Linux's `sd`
    /// requeues the command.
    NoSense,
    /// CHECK CONDITION without sense data, or with sense that did not parse.
    /// iSCSI targets must return autosense (RFC 7143 section 11.4.7), so
    /// this is a target fault or a damaged response; nothing says the
    /// command failed for a reason of the device, and a bounded retry costs
    /// at most RetryCount x RetryInterval, while failing the I/O might fail
    /// it while good paths exist. Linux likewise does not complete such a
    /// command as an error at once: it runs error handling and retries.
    MissingSense,
}

impl RetryKind {
    /// True when the retry should be sent at once: the condition was a
    /// report (UNIT ATTENTION, deferred error, an abort by someone else, a
    /// damaged transfer), not a state that takes time to clear. False when
    /// the retry should wait RetryInterval (1 s by default, as in
    /// Microsoft's MPIO timers): BUSY, TASK SET FULL, NOT READY, and the conditions of unknown
    /// cause.
    pub const fn immediate(&self) -> bool {
        match self {
            RetryKind::UnitAttention
            | RetryKind::Reset
            | RetryKind::ReservationsChanged
            | RetryKind::AluaStateChanged
            | RetryKind::CapacityChanged
            | RetryKind::InquiryDataChanged
            | RetryKind::ReportedLunsChanged
            | RetryKind::DeferredError
            | RetryKind::TaskAborted
            | RetryKind::TransportError => true,
            RetryKind::AbortedCommand
            | RetryKind::Busy
            | RetryKind::TaskSetFull
            | RetryKind::NotReadyBecomingReady
            | RetryKind::NotReady
            | RetryKind::NoSense
            | RetryKind::MissingSense => false,
        }
    }

    /// A stable snake_case label for logs and metrics.
    pub const fn as_str(&self) -> &'static str {
        match self {
            RetryKind::UnitAttention => "unit_attention",
            RetryKind::Reset => "reset",
            RetryKind::ReservationsChanged => "reservations_changed",
            RetryKind::AluaStateChanged => "alua_state_changed",
            RetryKind::CapacityChanged => "capacity_changed",
            RetryKind::InquiryDataChanged => "inquiry_data_changed",
            RetryKind::ReportedLunsChanged => "reported_luns_changed",
            RetryKind::DeferredError => "deferred_error",
            RetryKind::TaskAborted => "task_aborted",
            RetryKind::TransportError => "transport_error",
            RetryKind::AbortedCommand => "aborted_command",
            RetryKind::Busy => "busy",
            RetryKind::TaskSetFull => "task_set_full",
            RetryKind::NotReadyBecomingReady => "not_ready_becoming_ready",
            RetryKind::NotReady => "not_ready",
            RetryKind::NoSense => "no_sense",
            RetryKind::MissingSense => "missing_sense",
        }
    }
}

impl fmt::Display for RetryKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why the device's answer is final (see [`ErrorClass::Fatal`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FatalKind {
    /// RESERVATION CONFLICT status: another initiator holds the LU. Never a
    /// failover: every path of this initiator would get the same answer and
    /// the I/O would loop over all paths (the Microsoft iSCSI Software
    /// Initiator Users Guide on clusters and persistent reservations). If only one path conflicts, its key
    /// registration is missing, which the multipath layer's register-
    /// before-use rule fixes, not a failover.
    ReservationConflict,
    /// MEDIUM ERROR: unrecovered read or write error. Every path leads to
    /// the same medium, and the target already retried.
    MediumError,
    /// HARDWARE ERROR, including 44/00 INTERNAL TARGET FAILURE: Linux marks
    /// it a target failure (`BLK_STS_TARGET`, not a path error for
    /// `blk_path_error`) and Windows' classpnp fails it without retry.
    HardwareError,
    /// ILLEGAL REQUEST: the command or its parameters are invalid (bad
    /// opcode, field, LBA out of range); the same on every path.
    IllegalRequest,
    /// DATA PROTECT 27/xx WRITE PROTECTED (hardware, software, associated
    /// or persistent write protect; 27/07 excepted): the LU refuses writes
    /// on every path. MODE SENSE reports it beforehand as the WP bit
    /// ([`crate::mode::ModeParameterHeader::write_protected`]).
    WriteProtected,
    /// DATA PROTECT other than write protect: access denied, security
    /// conditions (SPC-4 20/02 ACCESS DENIED - NO ACCESS RIGHTS, 74/xx).
    DataProtect,
    /// DATA PROTECT 27/07 SPACE ALLOCATION FAILED WRITE PROTECT: a thin LU's
    /// pool is out of space (Linux `SCSIML_STAT_NOSPC`, Windows
    /// `STATUS_DISK_RESOURCES_EXHAUSTED`).
    SpaceAllocationFailed,
    /// NOT READY 3A/xx: no medium in the LU.
    MediumNotPresent,
    /// NOT READY 04/02 INITIALIZING COMMAND REQUIRED: the LU is stopped and
    /// needs START STOP UNIT, which mpio does not send on its own; the
    /// condition is the LU's, so every path reports it.
    ManualIntervention,
    /// ILLEGAL REQUEST or ABORTED COMMAND 10/xx: protection information
    /// check failed (Linux `BLK_STS_PROTECTION`).
    ProtectionInformation,
    /// MISCOMPARE: VERIFY or COMPARE AND WRITE data did not match.
    Miscompare,
    /// Another sense key that is the device's answer: COPY ABORTED, BLANK
    /// CHECK, VOLUME OVERFLOW, VENDOR SPECIFIC, COMPLETED, reserved keys.
    Other,
    /// A status that is neither success nor a known condition: ACA ACTIVE
    /// (mpio never sets NACA, so the ACA belongs to another initiator and is
    /// LU-wide), the obsolete COMMAND TERMINATED, unknown values.
    UnexpectedStatus,
}

impl FatalKind {
    /// The errno to complete the I/O with: the one Linux's block layer
    /// uses for the same condition (see the module docs).
    pub const fn errno(&self) -> Errno {
        match self {
            FatalKind::ReservationConflict => Errno::ReservationConflict,
            FatalKind::MediumError => Errno::Medium,
            FatalKind::SpaceAllocationFailed => Errno::NoSpace,
            FatalKind::WriteProtected => Errno::ReadOnly,
            FatalKind::ProtectionInformation => Errno::Protection,
            FatalKind::HardwareError
            | FatalKind::IllegalRequest
            | FatalKind::DataProtect
            | FatalKind::Miscompare
            | FatalKind::Other => Errno::Target,
            FatalKind::MediumNotPresent | FatalKind::ManualIntervention | FatalKind::UnexpectedStatus => Errno::Io,
        }
    }

    /// A stable snake_case label for logs and metrics.
    pub const fn as_str(&self) -> &'static str {
        match self {
            FatalKind::ReservationConflict => "reservation_conflict",
            FatalKind::MediumError => "medium_error",
            FatalKind::HardwareError => "hardware_error",
            FatalKind::IllegalRequest => "illegal_request",
            FatalKind::WriteProtected => "write_protected",
            FatalKind::DataProtect => "data_protect",
            FatalKind::SpaceAllocationFailed => "space_allocation_failed",
            FatalKind::MediumNotPresent => "medium_not_present",
            FatalKind::ManualIntervention => "manual_intervention",
            FatalKind::ProtectionInformation => "protection_information",
            FatalKind::Miscompare => "miscompare",
            FatalKind::Other => "other",
            FatalKind::UnexpectedStatus => "unexpected_status",
        }
    }
}

impl fmt::Display for FatalKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Classifies a completed SCSI command by its status and, for CHECK
/// CONDITION, its sense data (SAM-5 "Status codes", SPC-4 "Sense key and
/// sense code definitions"). Pass `None` when the response carried no sense
/// or the sense did not parse ([`Sense::parse`] failed).
///
/// Sense that comes with any other status is ignored: tgtd attaches stale
/// sense to a GOOD UNMAP, and SAM-5 defines sense data only for CHECK
/// CONDITION.
pub fn classify(status: ScsiStatus, sense: Option<&Sense>) -> ErrorClass {
    match status {
        // SAM-5: GOOD and CONDITION MET complete the command. INTERMEDIATE
        // and INTERMEDIATE-CONDITION MET (obsolete, linked commands, which
        // mpio never sends) also mean success; Linux's
        // `scsi_status_is_good` treats all four alike.
        ScsiStatus::GOOD
        | ScsiStatus::CONDITION_MET
        | ScsiStatus::INTERMEDIATE
        | ScsiStatus::INTERMEDIATE_CONDITION_MET => ErrorClass::Success,
        ScsiStatus::CHECK_CONDITION => match sense {
            Some(s) => classify_sense(s),
            None => ErrorClass::Retry(RetryKind::MissingSense),
        },
        // DESIGN.md, "Error classes, not error codes": never a failover.
        ScsiStatus::RESERVATION_CONFLICT => ErrorClass::Fatal(FatalKind::ReservationConflict),
        // SAM-5: BUSY and TASK SET FULL are load conditions of the LU; wait.
        ScsiStatus::BUSY => ErrorClass::Retry(RetryKind::Busy),
        ScsiStatus::TASK_SET_FULL => ErrorClass::Retry(RetryKind::TaskSetFull),
        // SAM-5: another nexus aborted the task (TAS = 1); not executed.
        ScsiStatus::TASK_ABORTED => ErrorClass::Retry(RetryKind::TaskAborted),
        _ => ErrorClass::Fatal(FatalKind::UnexpectedStatus),
    }
}

/// CHECK CONDITION with sense data: by sense key, then ASC/ASCQ.
fn classify_sense(s: &Sense) -> ErrorClass {
    use ErrorClass::{Fatal, PathFailure, Retry, Success};

    // SPC-4 "Deferred errors": the current command was not processed; the
    // error belongs to an earlier one. Linux's `scsi_check_sense` retries
    // before looking at the key.
    if s.deferred {
        return Retry(RetryKind::DeferredError);
    }
    let (asc, ascq) = (s.asc, s.ascq);
    match s.key {
        // SPC-4: NO SENSE "no specific sense key information"; on a CHECK
        // CONDITION an unknown amount of data moved. Retry (Windows
        // classpnp; Linux `sd_done` requeues).
        SenseKey::NO_SENSE => Retry(RetryKind::NoSense),
        // SPC-4: "the command completed successfully, with some recovery
        // action"; Linux and Windows both complete it as success.
        SenseKey::RECOVERED_ERROR => Success,
        SenseKey::NOT_READY => match (asc, ascq) {
            (0x04, 0x01) => Retry(RetryKind::NotReadyBecomingReady),
            // ALUA (SPC-4 "Asymmetric logical unit access"): the state of
            // this target port group, not of the LU. Seeds-digest 13.27: fail
            // over instead of failing the I/O. Linux returns BLK_STS_IOERR
            // for 04/0B and 04/0C, which `blk_path_error` treats as a path
            // error; MSDSM retries them after re-reading the port groups.
            (0x04, 0x0a) => PathFailure(PathFault::AluaTransitioning),
            (0x04, 0x0b) => PathFailure(PathFault::AluaStandby),
            (0x04, 0x0c) => PathFailure(PathFault::AluaUnavailable),
            // LIO's ALUA Offline state and per-port "secondary offline".
            (0x04, 0x12) => PathFailure(PathFault::TargetPortOffline),
            // The LU is stopped; START STOP UNIT is needed on every path.
            (0x04, 0x02) => Fatal(FatalKind::ManualIntervention),
            // SPC-4 3A/xx MEDIUM NOT PRESENT: a property of the LU.
            (0x3a, _) => Fatal(FatalKind::MediumNotPresent),
            // Everything else may clear by itself, 04/03 included (MSDSM:
            // "may be caused by NDU of controller firmware. It does not
            // necessarily indicate that the device won't be ready via other
            // path(s)").
            _ => Retry(RetryKind::NotReady),
        },
        SenseKey::MEDIUM_ERROR => Fatal(FatalKind::MediumError),
        SenseKey::HARDWARE_ERROR => match (asc, ascq) {
            // LU COMMUNICATION CRC ERROR (ULTRA-DMA/32): a damaged transfer;
            // Windows' classpnp retries it after 1 s.
            (0x08, 0x03) => Retry(RetryKind::TransportError),
            _ => Fatal(FatalKind::HardwareError),
        },
        SenseKey::ILLEGAL_REQUEST => match (asc, ascq) {
            // The path was claimed for this LU after an identity check, so
            // LOGICAL UNIT NOT SUPPORTED on this nexus means the mapping
            // changed on this port; other ports may still map the LU. Linux
            // gives BLK_STS_IOERR, a path error for dm-multipath.
            (0x25, 0x00) => PathFailure(PathFault::LunNotSupported),
            (0x10, _) => Fatal(FatalKind::ProtectionInformation),
            _ => Fatal(FatalKind::IllegalRequest),
        },
        SenseKey::UNIT_ATTENTION => Retry(unit_attention(asc, ascq)),
        SenseKey::DATA_PROTECT => match (asc, ascq) {
            // SBC-3 thin provisioning: the hard threshold was reached.
            (0x27, 0x07) => Fatal(FatalKind::SpaceAllocationFailed),
            // SPC-4 27/00-06: write protected, in whatever way. Not a path
            // fault: the protection is the LU's (tgtd `readonly=1`, a
            // snapshot, a replication target).
            (0x27, _) => Fatal(FatalKind::WriteProtected),
            _ => Fatal(FatalKind::DataProtect),
        },
        SenseKey::ABORTED_COMMAND => match (asc, ascq) {
            // Protection information: Linux fails it (BLK_STS_PROTECTION).
            (0x10, _) => Fatal(FatalKind::ProtectionInformation),
            // RFC 7143 section 11.4.7.2 iSCSI conditions, SPC-4 CRC,
            // parity and data phase errors: the transfer on this path was
            // damaged.
            (0x08, 0x03) | (0x0c, 0x0c) | (0x0c, 0x0d) | (0x11, 0x13) | (0x47, _) | (0x4b, _) => {
                Retry(RetryKind::TransportError)
            }
            // SPC-4: "the device server aborted the command. The application
            // client may be able to recover by trying the command again."
            _ => Retry(RetryKind::AbortedCommand),
        },
        SenseKey::MISCOMPARE => Fatal(FatalKind::Miscompare),
        // COPY ABORTED, BLANK CHECK, VOLUME OVERFLOW: Linux's
        // `scsi_check_sense` marks them target failures; VENDOR SPECIFIC,
        // COMPLETED (0Fh, information about a completed command, never seen
        // on block I/O; Linux fails it) and reserved keys likewise.
        _ => Fatal(FatalKind::Other),
    }
}

/// The kind of a UNIT ATTENTION (SPC-4 "Unit attention conditions": the
/// command that reports it was not executed). All are retried at once;
/// the kind tells the caller what else to refresh.
fn unit_attention(asc: u8, ascq: u8) -> RetryKind {
    match (asc, ascq) {
        (0x29, _) => RetryKind::Reset,
        (0x2a, 0x03..=0x05) => RetryKind::ReservationsChanged,
        (0x2a, 0x06 | 0x07) => RetryKind::AluaStateChanged,
        (0x2a, 0x09) => RetryKind::CapacityChanged,
        (0x3f, 0x03 | 0x05) => RetryKind::InquiryDataChanged,
        (0x3f, 0x0e) => RetryKind::ReportedLunsChanged,
        _ => RetryKind::UnitAttention,
    }
}

/// True for a command that may change the medium or the LU's persistent
/// state, so a copy still queued on a dead path must be fenced before the
/// command is re-driven on another one (DESIGN.md "Write safety on
/// failover"): a stale WRITE landing after a newer one would silently undo
/// it.
///
/// The list is of commands known to be read-only; every other opcode is
/// treated as modifying, conservatively (WRITE(6/10/12/16), WRITE AND
/// VERIFY, WRITE SAME, UNMAP, COMPARE AND WRITE, FORMAT UNIT, XDWRITE,
/// PERSISTENT RESERVE OUT, RESERVE/RELEASE, START STOP UNIT, MODE SELECT,
/// LOG SENSE (its SP bit saves parameters), variable-length CDBs, vendor
/// and unknown opcodes).
///
/// Read-only: READ(6/10/12/16), VERIFY(10/12/16), PRE-FETCH(10/16),
/// SYNCHRONIZE CACHE(10/16) (it makes earlier writes durable but changes no
/// data, and it applies to the whole LU on whichever path it runs), TEST
/// UNIT READY, REQUEST SENSE, INQUIRY, MODE SENSE(6/10), READ CAPACITY(10),
/// SERVICE ACTION IN(16) (READ CAPACITY(16), GET LBA STATUS, READ LONG(16):
/// all data-in), REPORT LUNS, MAINTENANCE IN (REPORT TARGET PORT GROUPS and
/// other reports), PERSISTENT RESERVE IN, RECEIVE DIAGNOSTIC RESULTS, READ
/// BUFFER(10), READ DEFECT DATA(10/12), READ LONG(10).
pub const fn is_data_modifying(opcode: Opcode) -> bool {
    !matches!(
        opcode.0,
        0x00 // TEST UNIT READY
        | 0x03 // REQUEST SENSE
        | 0x08 // READ(6)
        | 0x12 // INQUIRY
        | 0x1a // MODE SENSE(6)
        | 0x1c // RECEIVE DIAGNOSTIC RESULTS
        | 0x25 // READ CAPACITY(10)
        | 0x28 // READ(10)
        | 0x2f // VERIFY(10)
        | 0x34 // PRE-FETCH(10)
        | 0x35 // SYNCHRONIZE CACHE(10)
        | 0x37 // READ DEFECT DATA(10)
        | 0x3c // READ BUFFER(10)
        | 0x3e // READ LONG(10)
        | 0x5a // MODE SENSE(10)
        | 0x5e // PERSISTENT RESERVE IN
        | 0x88 // READ(16)
        | 0x8f // VERIFY(16)
        | 0x90 // PRE-FETCH(16)
        | 0x91 // SYNCHRONIZE CACHE(16)
        | 0x9e // SERVICE ACTION IN(16)
        | 0xa0 // REPORT LUNS
        | 0xa3 // MAINTENANCE IN
        | 0xa8 // READ(12)
        | 0xaf // VERIFY(12)
        | 0xb7 // READ DEFECT DATA(12)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    // The tables below give each class's errno as its number.
    const EIO: i32 = Errno::Io.code();
    const ENOSPC: i32 = Errno::NoSpace.code();
    const EROFS: i32 = Errno::ReadOnly.code();
    const EBADE: i32 = Errno::ReservationConflict.code();
    const ENODATA: i32 = Errno::Medium.code();
    const EILSEQ: i32 = Errno::Protection.code();
    const EREMOTEIO: i32 = Errno::Target.code();

    /// A class's errno as its number, 0 for success.
    fn code(c: ErrorClass) -> i32 {
        c.errno().map_or(0, Errno::code)
    }
    use crate::sense::SenseFormat;
    use crate::testutil::hex;
    use proptest::prelude::*;

    use ErrorClass::{Fatal, PathFailure, Retry, Success};

    const CC: ScsiStatus = ScsiStatus::CHECK_CONDITION;

    /// One row per sense key / ASC class: (key, asc, ascq, class, errno).
    #[rustfmt::skip]
    const SENSE_TABLE: &[(SenseKey, u8, u8, ErrorClass, i32)] = &[
        (SenseKey::NO_SENSE, 0x00, 0x00, Retry(RetryKind::NoSense), EIO),
        (SenseKey::NO_SENSE, 0x5d, 0x00, Retry(RetryKind::NoSense), EIO),
        (SenseKey::RECOVERED_ERROR, 0x17, 0x01, Success, 0),
        (SenseKey::RECOVERED_ERROR, 0x5d, 0x00, Success, 0),
        (SenseKey::NOT_READY, 0x04, 0x01, Retry(RetryKind::NotReadyBecomingReady), EIO),
        (SenseKey::NOT_READY, 0x04, 0x0a, PathFailure(PathFault::AluaTransitioning), EIO),
        (SenseKey::NOT_READY, 0x04, 0x0b, PathFailure(PathFault::AluaStandby), EIO),
        (SenseKey::NOT_READY, 0x04, 0x0c, PathFailure(PathFault::AluaUnavailable), EIO),
        (SenseKey::NOT_READY, 0x04, 0x12, PathFailure(PathFault::TargetPortOffline), EIO),
        (SenseKey::NOT_READY, 0x04, 0x02, Fatal(FatalKind::ManualIntervention), EIO),
        (SenseKey::NOT_READY, 0x04, 0x03, Retry(RetryKind::NotReady), EIO),
        (SenseKey::NOT_READY, 0x04, 0x00, Retry(RetryKind::NotReady), EIO),
        (SenseKey::NOT_READY, 0x04, 0x04, Retry(RetryKind::NotReady), EIO),
        (SenseKey::NOT_READY, 0x04, 0x14, Retry(RetryKind::NotReady), EIO),
        (SenseKey::NOT_READY, 0x04, 0x1b, Retry(RetryKind::NotReady), EIO),
        (SenseKey::NOT_READY, 0x3a, 0x00, Fatal(FatalKind::MediumNotPresent), EIO),
        (SenseKey::NOT_READY, 0x3a, 0x02, Fatal(FatalKind::MediumNotPresent), EIO),
        (SenseKey::NOT_READY, 0x08, 0x00, Retry(RetryKind::NotReady), EIO),
        (SenseKey::MEDIUM_ERROR, 0x11, 0x00, Fatal(FatalKind::MediumError), ENODATA),
        (SenseKey::MEDIUM_ERROR, 0x0c, 0x00, Fatal(FatalKind::MediumError), ENODATA),
        (SenseKey::MEDIUM_ERROR, 0x10, 0x01, Fatal(FatalKind::MediumError), ENODATA),
        (SenseKey::HARDWARE_ERROR, 0x44, 0x00, Fatal(FatalKind::HardwareError), EREMOTEIO),
        (SenseKey::HARDWARE_ERROR, 0x3e, 0x01, Fatal(FatalKind::HardwareError), EREMOTEIO),
        (SenseKey::HARDWARE_ERROR, 0x08, 0x03, Retry(RetryKind::TransportError), EIO),
        (SenseKey::ILLEGAL_REQUEST, 0x20, 0x00, Fatal(FatalKind::IllegalRequest), EREMOTEIO),
        (SenseKey::ILLEGAL_REQUEST, 0x21, 0x00, Fatal(FatalKind::IllegalRequest), EREMOTEIO),
        (SenseKey::ILLEGAL_REQUEST, 0x24, 0x00, Fatal(FatalKind::IllegalRequest), EREMOTEIO),
        (SenseKey::ILLEGAL_REQUEST, 0x1a, 0x00, Fatal(FatalKind::IllegalRequest), EREMOTEIO),
        (SenseKey::ILLEGAL_REQUEST, 0x25, 0x00, PathFailure(PathFault::LunNotSupported), EIO),
        (SenseKey::ILLEGAL_REQUEST, 0x10, 0x01, Fatal(FatalKind::ProtectionInformation), EILSEQ),
        (SenseKey::UNIT_ATTENTION, 0x29, 0x00, Retry(RetryKind::Reset), EIO),
        (SenseKey::UNIT_ATTENTION, 0x29, 0x07, Retry(RetryKind::Reset), EIO),
        (SenseKey::UNIT_ATTENTION, 0x2a, 0x01, Retry(RetryKind::UnitAttention), EIO),
        (SenseKey::UNIT_ATTENTION, 0x2a, 0x03, Retry(RetryKind::ReservationsChanged), EIO),
        (SenseKey::UNIT_ATTENTION, 0x2a, 0x04, Retry(RetryKind::ReservationsChanged), EIO),
        (SenseKey::UNIT_ATTENTION, 0x2a, 0x05, Retry(RetryKind::ReservationsChanged), EIO),
        (SenseKey::UNIT_ATTENTION, 0x2a, 0x06, Retry(RetryKind::AluaStateChanged), EIO),
        (SenseKey::UNIT_ATTENTION, 0x2a, 0x07, Retry(RetryKind::AluaStateChanged), EIO),
        (SenseKey::UNIT_ATTENTION, 0x2a, 0x09, Retry(RetryKind::CapacityChanged), EIO),
        (SenseKey::UNIT_ATTENTION, 0x2f, 0x00, Retry(RetryKind::UnitAttention), EIO),
        (SenseKey::UNIT_ATTENTION, 0x38, 0x07, Retry(RetryKind::UnitAttention), EIO),
        (SenseKey::UNIT_ATTENTION, 0x3f, 0x01, Retry(RetryKind::UnitAttention), EIO),
        (SenseKey::UNIT_ATTENTION, 0x3f, 0x03, Retry(RetryKind::InquiryDataChanged), EIO),
        (SenseKey::UNIT_ATTENTION, 0x3f, 0x05, Retry(RetryKind::InquiryDataChanged), EIO),
        (SenseKey::UNIT_ATTENTION, 0x3f, 0x0e, Retry(RetryKind::ReportedLunsChanged), EIO),
        (SenseKey::DATA_PROTECT, 0x27, 0x00, Fatal(FatalKind::WriteProtected), EROFS),
        (SenseKey::DATA_PROTECT, 0x27, 0x01, Fatal(FatalKind::WriteProtected), EROFS),
        (SenseKey::DATA_PROTECT, 0x27, 0x02, Fatal(FatalKind::WriteProtected), EROFS),
        (SenseKey::DATA_PROTECT, 0x27, 0x06, Fatal(FatalKind::WriteProtected), EROFS),
        (SenseKey::DATA_PROTECT, 0x27, 0x07, Fatal(FatalKind::SpaceAllocationFailed), ENOSPC),
        (SenseKey::DATA_PROTECT, 0x20, 0x02, Fatal(FatalKind::DataProtect), EREMOTEIO),
        (SenseKey::DATA_PROTECT, 0x74, 0x71, Fatal(FatalKind::DataProtect), EREMOTEIO),
        (SenseKey::BLANK_CHECK, 0x00, 0x00, Fatal(FatalKind::Other), EREMOTEIO),
        (SenseKey::VENDOR_SPECIFIC, 0x80, 0x00, Fatal(FatalKind::Other), EREMOTEIO),
        (SenseKey::COPY_ABORTED, 0x0d, 0x00, Fatal(FatalKind::Other), EREMOTEIO),
        (SenseKey::ABORTED_COMMAND, 0x47, 0x01, Retry(RetryKind::TransportError), EIO),
        (SenseKey::ABORTED_COMMAND, 0x47, 0x05, Retry(RetryKind::TransportError), EIO),
        (SenseKey::ABORTED_COMMAND, 0x4b, 0x00, Retry(RetryKind::TransportError), EIO),
        (SenseKey::ABORTED_COMMAND, 0x0c, 0x0c, Retry(RetryKind::TransportError), EIO),
        (SenseKey::ABORTED_COMMAND, 0x0c, 0x0d, Retry(RetryKind::TransportError), EIO),
        (SenseKey::ABORTED_COMMAND, 0x11, 0x13, Retry(RetryKind::TransportError), EIO),
        (SenseKey::ABORTED_COMMAND, 0x08, 0x03, Retry(RetryKind::TransportError), EIO),
        (SenseKey::ABORTED_COMMAND, 0x00, 0x00, Retry(RetryKind::AbortedCommand), EIO),
        (SenseKey::ABORTED_COMMAND, 0x44, 0x00, Retry(RetryKind::AbortedCommand), EIO),
        (SenseKey::ABORTED_COMMAND, 0x3f, 0x0f, Retry(RetryKind::AbortedCommand), EIO),
        (SenseKey::ABORTED_COMMAND, 0x10, 0x03, Fatal(FatalKind::ProtectionInformation), EILSEQ),
        (SenseKey::VOLUME_OVERFLOW, 0x00, 0x02, Fatal(FatalKind::Other), EREMOTEIO),
        (SenseKey::MISCOMPARE, 0x1d, 0x00, Fatal(FatalKind::Miscompare), EREMOTEIO),
        (SenseKey::COMPLETED, 0x00, 0x00, Fatal(FatalKind::Other), EREMOTEIO),
        (SenseKey(0x0c), 0x00, 0x00, Fatal(FatalKind::Other), EREMOTEIO),
    ];

    #[test]
    fn check_condition_by_sense_key() {
        for &(key, asc, ascq, want, errno) in SENSE_TABLE {
            let s = Sense::new(key, asc, ascq);
            let got = classify(CC, Some(&s));
            assert_eq!(got, want, "{s}");
            assert_eq!(code(got), errno, "{s}");
            // The descriptor format classifies alike.
            let mut d = s.clone();
            d.format = SenseFormat::Descriptor;
            assert_eq!(classify(CC, Some(&d)), want, "{d}");
        }
        // Every sense key has at least one row.
        for key in 0..16u8 {
            assert!(SENSE_TABLE.iter().any(|r| r.0 == SenseKey(key)), "{:?}", SenseKey(key));
        }
    }

    #[test]
    fn by_status() {
        #[rustfmt::skip]
        let table = [
            (ScsiStatus::GOOD, Success, 0),
            (ScsiStatus::CONDITION_MET, Success, 0),
            (ScsiStatus::INTERMEDIATE, Success, 0),
            (ScsiStatus::INTERMEDIATE_CONDITION_MET, Success, 0),
            (ScsiStatus::CHECK_CONDITION, Retry(RetryKind::MissingSense), EIO),
            (ScsiStatus::RESERVATION_CONFLICT, Fatal(FatalKind::ReservationConflict), EBADE),
            (ScsiStatus::BUSY, Retry(RetryKind::Busy), EIO),
            (ScsiStatus::TASK_SET_FULL, Retry(RetryKind::TaskSetFull), EIO),
            (ScsiStatus::TASK_ABORTED, Retry(RetryKind::TaskAborted), EIO),
            (ScsiStatus::ACA_ACTIVE, Fatal(FatalKind::UnexpectedStatus), EIO),
            (ScsiStatus::COMMAND_TERMINATED, Fatal(FatalKind::UnexpectedStatus), EIO),
            (ScsiStatus(0x1c), Fatal(FatalKind::UnexpectedStatus), EIO),
            (ScsiStatus(0xff), Fatal(FatalKind::UnexpectedStatus), EIO),
        ];
        for (status, want, errno) in table {
            assert_eq!(classify(status, None), want, "{status}");
            assert_eq!(code(want), errno, "{status}");
        }
    }

    #[test]
    fn sense_is_ignored_unless_check_condition() {
        // tgtd returns GOOD for UNMAP with stale sense attached.
        let stale = Sense::new(SenseKey::ILLEGAL_REQUEST, 0x24, 0x00);
        assert_eq!(classify(ScsiStatus::GOOD, Some(&stale)), Success);
        assert_eq!(classify(ScsiStatus::CONDITION_MET, Some(&stale)), Success);
        let ua = Sense::new(SenseKey::UNIT_ATTENTION, 0x29, 0x00);
        assert_eq!(classify(ScsiStatus::RESERVATION_CONFLICT, Some(&ua)), Fatal(FatalKind::ReservationConflict));
        assert_eq!(classify(ScsiStatus::BUSY, Some(&stale)), Retry(RetryKind::Busy));
    }

    #[test]
    fn deferred_errors_retry_the_current_command() {
        let mut s = Sense::new(SenseKey::MEDIUM_ERROR, 0x0c, 0x00);
        s.deferred = true;
        assert_eq!(classify(CC, Some(&s)), Retry(RetryKind::DeferredError));
        // The vector of sense.rs: deferred MEDIUM ERROR 11/00, fixed format.
        let b = [0xf1, 0, 0x23, 0x12, 0x34, 0x56, 0x78, 10, 0, 0, 0, 9, 0x11, 0x00, 0x42, 0x80, 0, 3];
        let s = Sense::parse(&b).unwrap();
        assert_eq!(classify(CC, Some(&s)), Retry(RetryKind::DeferredError));
        // Descriptor format: deferred NOT READY 04/0A with a broken descriptor.
        let b = [0x73, 0x02, 0x04, 0x0a, 0, 0, 0, 6, 0x00, 40, 0x80, 0, 0, 0];
        let s = Sense::parse(&b).unwrap();
        assert_eq!(classify(CC, Some(&s)), Retry(RetryKind::DeferredError));
    }

    #[test]
    fn real_sense_bytes() {
        // Captured from tgtd 1.0.85 (the vectors of sense.rs).
        #[rustfmt::skip]
        let table = [
            ("700006000000000a00000000290000000000", Retry(RetryKind::Reset)), // first TUR of a nexus
            ("700002000000000a00000000040100000000", Retry(RetryKind::NotReadyBecomingReady)), // LU online=0
            ("700005000000000a00000000200000000000", Fatal(FatalKind::IllegalRequest)), // READ CAPACITY to LUN 0
            ("700005000000000a00000000210000000000", Fatal(FatalKind::IllegalRequest)), // READ(16) past end
            ("700005000000000a00000000250000000000", PathFailure(PathFault::LunNotSupported)), // TUR to LUN 5
            ("700006000000000a000000002a0300000000", Retry(RetryKind::ReservationsChanged)), // after PREEMPT
        ];
        for (h, want) in table {
            let s = Sense::parse(&hex(h)).unwrap();
            assert_eq!(classify(CC, Some(&s)), want, "{s}");
        }
        // Through the iSCSI data segment, as the transport sees it.
        let mut seg = vec![0, 18];
        seg.extend(hex("700002000000000a00000000040100000000"));
        let s = Sense::from_iscsi_segment(&seg).unwrap();
        assert_eq!(classify(CC, s.as_ref()), Retry(RetryKind::NotReadyBecomingReady));
        // Descriptor format MEDIUM ERROR 11/00 of sense.rs.
        let s = Sense::parse(&crate::sense::DESCRIPTOR_MEDIUM_ERROR).unwrap();
        assert_eq!(classify(CC, Some(&s)), Fatal(FatalKind::MediumError));
        assert_eq!(code(classify(CC, Some(&s))), ENODATA);
        // Sense cut short after the key: classified by the key alone.
        let s = Sense::parse(&[0x70, 0, 2]).unwrap();
        assert_eq!(classify(CC, Some(&s)), Retry(RetryKind::NotReady));
        let s = Sense::parse(&[0x72, 0x06]).unwrap();
        assert_eq!(classify(CC, Some(&s)), Retry(RetryKind::UnitAttention));
    }

    #[test]
    fn immediate_retries() {
        let now = [
            RetryKind::UnitAttention,
            RetryKind::Reset,
            RetryKind::ReservationsChanged,
            RetryKind::AluaStateChanged,
            RetryKind::CapacityChanged,
            RetryKind::InquiryDataChanged,
            RetryKind::ReportedLunsChanged,
            RetryKind::DeferredError,
            RetryKind::TaskAborted,
            RetryKind::TransportError,
        ];
        let wait = [
            RetryKind::AbortedCommand,
            RetryKind::Busy,
            RetryKind::TaskSetFull,
            RetryKind::NotReadyBecomingReady,
            RetryKind::NotReady,
            RetryKind::NoSense,
            RetryKind::MissingSense,
        ];
        assert!(now.iter().all(RetryKind::immediate));
        assert!(!wait.iter().any(RetryKind::immediate));
    }

    #[test]
    fn labels_and_errno_values() {
        assert_eq!(Success.to_string(), "success");
        assert_eq!(PathFailure(PathFault::AluaStandby).to_string(), "path_failure (alua_standby)");
        assert_eq!(Retry(RetryKind::CapacityChanged).to_string(), "retry (capacity_changed)");
        assert_eq!(Fatal(FatalKind::SpaceAllocationFailed).to_string(), "fatal (space_allocation_failed)");
        // asm-generic/errno-base.h and errno.h.
        let codes: Vec<(&str, i32)> = Errno::ALL.iter().map(|e| (e.name(), e.code())).collect();
        assert_eq!(
            codes,
            [
                ("EIO", 5),
                ("EINVAL", 22),
                ("EOPNOTSUPP", 95),
                ("EBADE", 52),
                ("ENODATA", 61),
                ("ENOSPC", 28),
                ("EROFS", 30),
                ("EILSEQ", 84),
                ("EREMOTEIO", 121),
                ("ESHUTDOWN", 108)
            ]
        );
        assert_eq!(Errno::from(FatalKind::MediumError), Errno::Medium);
    }

    #[test]
    fn data_modifying_opcode_constants() {
        #[rustfmt::skip]
        let table = [
            (Opcode::TEST_UNIT_READY, false),
            (Opcode::REQUEST_SENSE, false),
            (Opcode::INQUIRY, false),
            (Opcode::RESERVE_6, true),
            (Opcode::RELEASE_6, true),
            (Opcode::MODE_SENSE_6, false),
            (Opcode::START_STOP_UNIT, true),
            (Opcode::READ_CAPACITY_10, false),
            (Opcode::READ_10, false),
            (Opcode::WRITE_10, true),
            (Opcode::VERIFY_10, false),
            (Opcode::SYNCHRONIZE_CACHE_10, false),
            (Opcode::WRITE_SAME_10, true),
            (Opcode::UNMAP, true),
            (Opcode::MODE_SENSE_10, false),
            (Opcode::PERSISTENT_RESERVE_IN, false),
            (Opcode::PERSISTENT_RESERVE_OUT, true),
            (Opcode::READ_16, false),
            (Opcode::COMPARE_AND_WRITE, true),
            (Opcode::WRITE_16, true),
            (Opcode::VERIFY_16, false),
            (Opcode::SYNCHRONIZE_CACHE_16, false),
            (Opcode::WRITE_SAME_16, true),
            (Opcode::SERVICE_ACTION_IN_16, false),
            (Opcode::REPORT_LUNS, false),
            (Opcode::MAINTENANCE_IN, false),
        ];
        for (op, want) in table {
            assert_eq!(is_data_modifying(op), want, "{op}");
        }
        // Every named constant is in the table, so a new one needs a decision here.
        for v in 0..=u8::MAX {
            if Opcode(v).name().is_some() {
                assert!(table.iter().any(|(op, _)| op.0 == v), "{:?} missing from the table", Opcode(v));
            }
        }
    }

    #[test]
    fn data_modifying_unnamed_opcodes() {
        #[rustfmt::skip]
        let table = [
            (0x04, true),  // FORMAT UNIT
            (0x0a, true),  // WRITE(6)
            (0xaa, true),  // WRITE(12)
            (0x2e, true),  // WRITE AND VERIFY(10)
            (0x8e, true),  // WRITE AND VERIFY(16)
            (0xae, true),  // WRITE AND VERIFY(12)
            (0x50, true),  // XDWRITE(10)
            (0x15, true),  // MODE SELECT(6)
            (0x55, true),  // MODE SELECT(10)
            (0x4d, true),  // LOG SENSE (SP saves parameters)
            (0xa4, true),  // MAINTENANCE OUT (SET TARGET PORT GROUPS)
            (0x83, true),  // EXTENDED COPY
            (0x7f, true),  // variable length (READ(32) and WRITE(32) alike)
            (0xc0, true),  // vendor specific
            (0x08, false), // READ(6)
            (0xa8, false), // READ(12)
            (0xaf, false), // VERIFY(12)
            (0x34, false), // PRE-FETCH(10)
            (0x90, false), // PRE-FETCH(16)
            (0x1c, false), // RECEIVE DIAGNOSTIC RESULTS
            (0x3c, false), // READ BUFFER(10)
            (0x37, false), // READ DEFECT DATA(10)
            (0xb7, false), // READ DEFECT DATA(12)
            (0x3e, false), // READ LONG(10)
        ];
        for (v, want) in table {
            assert_eq!(is_data_modifying(Opcode(v)), want, "{v:#04x}");
        }
        let read_only = (0..=u8::MAX).filter(|v| !is_data_modifying(Opcode(*v))).count();
        assert_eq!(read_only, 26, "the read-only list changed: update the docs and tests");
    }

    fn any_sense() -> impl Strategy<Value = Sense> {
        (0u8..16, any::<u8>(), any::<u8>(), any::<bool>(), any::<bool>()).prop_map(
            |(key, asc, ascq, deferred, descriptor)| {
                let mut s = Sense::new(SenseKey(key), asc, ascq);
                s.deferred = deferred;
                if descriptor {
                    s.format = SenseFormat::Descriptor;
                }
                s
            },
        )
    }

    proptest! {
        #[test]
        fn never_panics(status: u8, sense in proptest::option::of(any_sense())) {
            let class = classify(ScsiStatus(status), sense.as_ref());
            let _ = class.to_string();
            prop_assert_eq!(class.errno().is_none(), class == Success);
            if let Retry(kind) = class {
                let _ = kind.immediate();
            }
        }

        #[test]
        fn good_is_always_success(sense in proptest::option::of(any_sense())) {
            prop_assert_eq!(classify(ScsiStatus::GOOD, sense.as_ref()), Success);
        }

        #[test]
        fn parsed_bytes_never_panic(status: u8, b in proptest::collection::vec(any::<u8>(), 0..64)) {
            let sense = Sense::parse(&b).ok();
            let _ = classify(ScsiStatus(status), sense.as_ref());
        }

        #[test]
        fn reservation_conflict_never_fails_over(sense in proptest::option::of(any_sense())) {
            prop_assert_eq!(
                classify(ScsiStatus::RESERVATION_CONFLICT, sense.as_ref()),
                Fatal(FatalKind::ReservationConflict)
            );
        }
    }
}
