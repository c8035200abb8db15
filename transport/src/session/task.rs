//! Tasks in flight: what each one is waiting for, and the PDUs a SCSI
//! command produces (immediate data, unsolicited Data-Out, R2T answers).

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::request::{ReadData, ScsiRequest};
use super::timer::SessionTimer;
use crate::pdu::{DataOut, LogoutReason, Pdu, RESERVED_TAG, ScsiCommand, TmfFunction};
use crate::text::{ConnectionParams, SessionParams};

/// Which connection a task must use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnPick {
    /// Any connection in the full feature phase; the one with the fewest
    /// tasks in flight is used.
    Any,
    /// This connection (CID). The task waits while it is down.
    Cid(u16),
}

/// Who is waiting for a task.
#[derive(Debug)]
pub(crate) enum Owner<T> {
    /// A caller; its token comes back in [`super::Event::TaskDone`].
    User(T),
    /// The session's own NOP-Out keepalive on a connection.
    Keepalive,
    /// ABORT TASK sent because task `itt` timed out.
    TimeoutAbort { itt: u32 },
    /// Logout of a failed connection, sent on another one, to terminate
    /// the failed connection's tasks at the target.
    CleanupLogout { cid: u16 },
    /// Logout of a connection the target asked us to log out.
    AsyncLogout,
    /// The empty Text Request that answers a renegotiation request.
    Renegotiate,
}

/// What kind of task, with its progress.
#[derive(Debug)]
pub(crate) enum Kind {
    Scsi(ScsiTask),
    TaskMgmt {
        function: TmfFunction,
        lun: u64,
        referenced_itt: u32,
        ref_cmdsn: u32,
    },
    /// `ttt` is the target's tag while a long response continues.
    Text {
        request: Bytes,
        acc: Vec<u8>,
        ttt: u32,
    },
    Nop {
        data: Bytes,
    },
    Logout {
        reason: LogoutReason,
        cid: u16,
    },
}

impl Kind {
    /// Immediate tasks bypass the CmdSN window (RFC 7143 section 3.2.2.1).
    pub(crate) fn is_immediate(&self) -> bool {
        matches!(self, Kind::TaskMgmt { .. } | Kind::Nop { .. } | Kind::Logout { .. })
    }

    /// The session timer that watches its deadline.
    pub(crate) fn timer(&self) -> SessionTimer {
        match self {
            Kind::Scsi(_) | Kind::Text { .. } | Kind::Nop { .. } => SessionTimer::Command,
            Kind::TaskMgmt { .. } => SessionTimer::TaskMgmt,
            Kind::Logout { .. } => SessionTimer::Logout,
        }
    }
}

/// A SCSI command's state.
#[derive(Debug)]
pub(crate) struct ScsiTask {
    pub(crate) req: ScsiRequest,
    pub(crate) data: ReadData,
    pub(crate) next_datasn: u32,
    pub(crate) next_r2tsn: u32,
    /// Set once an ABORT TASK for it is in flight.
    pub(crate) aborting: bool,
    /// A Data SNACK asked for its Data-In again from `next_datasn` on
    /// (ERL 1; see `data_recovery`).
    pub(crate) snacked: bool,
}

/// One task.
#[derive(Debug)]
pub(crate) struct Task<T> {
    pub(crate) id: super::TaskId,
    pub(crate) owner: Owner<T>,
    pub(crate) kind: Kind,
    pub(crate) pick: ConnPick,
    /// Set when sent.
    pub(crate) cid: u16,
    pub(crate) itt: u32,
    pub(crate) cmdsn: u32,
    pub(crate) sent_at: Option<Instant>,
    pub(crate) deadline: Option<Instant>,
    /// When a connection failure parked it: since when, and which CID's
    /// cleanup clears it.
    pub(crate) parked: Option<(Instant, u16, super::ConnectionFailure)>,
}

impl<T> Task<T> {
    pub(crate) fn new(owner: Owner<T>, kind: Kind, pick: ConnPick) -> Task<T> {
        Task {
            id: super::TaskId(0),
            owner,
            kind,
            pick,
            cid: 0,
            itt: RESERVED_TAG,
            cmdsn: 0,
            sent_at: None,
            deadline: None,
            parked: None,
        }
    }

    pub(crate) fn timeout(&self, default: Duration, task_mgmt: Duration, logout: Duration) -> Option<Duration> {
        match &self.kind {
            Kind::Scsi(s) => Some(s.req.timeout.unwrap_or(default)),
            Kind::Text { .. } => Some(default),
            Kind::TaskMgmt { .. } => Some(task_mgmt),
            Kind::Logout { .. } => Some(logout),
            // Keepalive pings are timed by the connection's NOP timer.
            Kind::Nop { .. } => None,
        }
    }

    /// The LUN the task addresses.
    pub(crate) fn lun(&self) -> u64 {
        match &self.kind {
            Kind::Scsi(s) => s.req.lun,
            Kind::TaskMgmt { lun, .. } => *lun,
            _ => 0,
        }
    }
}

/// The parts of the negotiated parameters that shape Data-Out.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Burst {
    pub(crate) immediate_data: bool,
    pub(crate) initial_r2t: bool,
    pub(crate) first_burst: u32,
    /// The target's MaxRecvDataSegmentLength on this connection.
    pub(crate) max_xmit: u32,
}

impl Burst {
    pub(crate) fn new(s: &SessionParams, c: &ConnectionParams) -> Burst {
        Burst {
            immediate_data: s.immediate_data,
            initial_r2t: s.initial_r2t,
            first_burst: s.first_burst_length,
            max_xmit: c.max_xmit_data_segment_length.max(512),
        }
    }
}

/// Builds the SCSI Command PDU and the unsolicited Data-Out PDUs that
/// follow it (RFC 7143 sections 4.2.5.2 and 13.13-13.14):
/// - with ImmediateData=Yes, up to min(FirstBurstLength, MaxRecvDataSegmentLength)
///   bytes ride in the command itself;
/// - with InitialR2T=No, Data-Out PDUs continue the unsolicited burst up to
///   FirstBurstLength in total;
/// - the rest waits for R2Ts.
pub(crate) fn command_pdus(
    task: &ScsiTask,
    itt: u32,
    cmdsn: u32,
    exp_statsn: u32,
    burst: Burst,
    mut emit: impl FnMut(Pdu),
) {
    let req = &task.req;
    let write_len = req.data_out.len() as u32;
    let read_len = req.read_len;
    let imm =
        if write_len > 0 && burst.immediate_data { write_len.min(burst.first_burst).min(burst.max_xmit) } else { 0 };
    let unsolicited = if write_len > 0 && !burst.initial_r2t { write_len.min(burst.first_burst) } else { imm };
    let (edtl, bidi_read_len) = match (write_len > 0, read_len > 0) {
        (true, true) => (write_len, Some(read_len)),
        (true, false) => (write_len, None),
        (false, _) => (read_len, None),
    };
    emit(Pdu::ScsiCommand(ScsiCommand {
        immediate: false,
        final_pdu: unsolicited == imm,
        read: read_len > 0,
        write: write_len > 0,
        attr: req.attr,
        lun: req.lun,
        itt,
        expected_data_len: edtl,
        cmdsn,
        exp_statsn,
        cdb: req.cdb,
        ext_cdb: req.ext_cdb.clone(),
        bidi_read_len,
        data: req.data_out.slice(..imm as usize),
    }));
    if unsolicited > imm {
        data_out_pdus(req, itt, RESERVED_TAG, imm, unsolicited - imm, exp_statsn, burst.max_xmit, &mut emit);
    }
}

/// Data-Out PDUs for `[offset, offset + len)` of the write buffer, each at
/// most `max_xmit` bytes, DataSN from 0, F on the last (RFC 7143 section
/// 11.7). The payload is sliced, not copied.
#[allow(clippy::too_many_arguments)]
pub(crate) fn data_out_pdus(
    req: &ScsiRequest,
    itt: u32,
    ttt: u32,
    offset: u32,
    len: u32,
    exp_statsn: u32,
    max_xmit: u32,
    emit: &mut impl FnMut(Pdu),
) {
    let end = offset + len;
    let mut at = offset;
    let mut datasn = 0;
    while at < end {
        let n = (end - at).min(max_xmit);
        emit(Pdu::DataOut(DataOut {
            final_pdu: at + n == end,
            lun: req.lun,
            itt,
            ttt,
            exp_statsn,
            datasn,
            buffer_offset: at,
            data: req.data_out.slice(at as usize..(at + n) as usize),
        }));
        at += n;
        datasn += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_task(len: usize) -> ScsiTask {
        ScsiTask {
            req: ScsiRequest::new(0, &[0x8a]).write(Bytes::from(vec![7u8; len])),
            data: ReadData::default(),
            next_datasn: 0,
            snacked: false,
            next_r2tsn: 0,
            aborting: false,
        }
    }

    fn burst(immediate_data: bool, initial_r2t: bool) -> Burst {
        Burst { immediate_data, initial_r2t, first_burst: 65536, max_xmit: 8192 }
    }

    fn plan(task: &ScsiTask, b: Burst) -> Vec<Pdu> {
        let mut v = Vec::new();
        command_pdus(task, 1, 10, 20, b, |p| v.push(p));
        v
    }

    /// (offset, length, final, DataSN) of one Data-Out.
    type Out = (u32, usize, bool, u32);

    /// (immediate bytes, F bit of the command, unsolicited Data-Out)
    fn shape(pdus: &[Pdu]) -> (usize, bool, Vec<Out>) {
        let Pdu::ScsiCommand(cmd) = &pdus[0] else { panic!() };
        let outs = pdus[1..]
            .iter()
            .map(|p| match p {
                Pdu::DataOut(d) => (d.buffer_offset, d.data.len(), d.final_pdu, d.datasn),
                _ => panic!(),
            })
            .collect();
        (cmd.data.len(), cmd.final_pdu, outs)
    }

    #[test]
    fn immediate_data_only() {
        // ImmediateData=Yes, InitialR2T=Yes: 8192 in the command, rest by R2T.
        let (imm, f, outs) = shape(&plan(&write_task(100_000), burst(true, true)));
        assert_eq!((imm, f), (8192, true));
        assert!(outs.is_empty());
    }

    #[test]
    fn unsolicited_burst_up_to_first_burst_length() {
        // ImmediateData=Yes, InitialR2T=No: 8192 immediate + Data-Out to 64 KiB.
        let (imm, f, outs) = shape(&plan(&write_task(100_000), burst(true, false)));
        assert_eq!((imm, f), (8192, false));
        assert_eq!(outs.len(), 7);
        assert_eq!(outs[0], (8192, 8192, false, 0));
        assert_eq!(outs[6], (57344, 8192, true, 6));
    }

    #[test]
    fn small_write_fits_in_the_command() {
        let (imm, f, outs) = shape(&plan(&write_task(512), burst(true, false)));
        assert_eq!((imm, f), (512, true));
        assert!(outs.is_empty());
    }

    #[test]
    fn no_immediate_data() {
        let (imm, f, outs) = shape(&plan(&write_task(10_000), burst(false, false)));
        assert_eq!((imm, f), (0, false));
        assert_eq!(outs, vec![(0, 8192, false, 0), (8192, 1808, true, 1)]);
        let (imm, f, outs) = shape(&plan(&write_task(10_000), burst(false, true)));
        assert_eq!((imm, f), (0, true));
        assert!(outs.is_empty());
    }

    #[test]
    fn read_sets_edtl_and_r_bit() {
        let t = ScsiTask {
            req: ScsiRequest::new(0, &[0x88]).read(4096),
            data: ReadData::default(),
            next_datasn: 0,
            snacked: false,
            next_r2tsn: 0,
            aborting: false,
        };
        let pdus = plan(&t, burst(true, false));
        let Pdu::ScsiCommand(cmd) = &pdus[0] else { panic!() };
        assert!(cmd.read && !cmd.write && cmd.final_pdu);
        assert_eq!(cmd.expected_data_len, 4096);
        assert!(cmd.data.is_empty());
    }

    #[test]
    fn data_out_slices_share_the_buffer() {
        let t = write_task(20_000);
        let mut v = Vec::new();
        data_out_pdus(&t.req, 1, 99, 4096, 15_904, 0, 8192, &mut |p| v.push(p));
        let Pdu::DataOut(first) = &v[0] else { panic!() };
        assert_eq!(first.ttt, 99);
        assert_eq!(first.data.as_ptr(), t.req.data_out[4096..].as_ptr());
        assert_eq!(v.len(), 2);
    }
}
