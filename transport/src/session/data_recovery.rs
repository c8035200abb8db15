//! Within-command recovery of Data-In at ErrorRecoveryLevel 1 and above
//! (RFC 7143 sections 7.2.1, 7.8, 11.16).
//!
//! A Data-In whose data digest fails has a sound header (its own digest,
//! or none negotiated), so the stream is still framed: the PDU is dropped
//! and a Data SNACK asks the target for every Data-In of the task from that
//! DataSN on (RunLength 0). Until the first of them arrives again, the
//! task takes no other Data-In: those that were already on the wire are
//! sent again after it, and with DataPDUInOrder=Yes the data then stays
//! in order with nothing to merge. A status that rode on a dropped PDU
//! arrives again on its retransmission (with the same StatSN), so the
//! task completes only once its data is whole. A SCSI Response that
//! arrives while data is still asked for again cannot be matched to the
//! data it ends, and fails the connection (ERL 0's recovery then sends
//! the command again). A retransmission that comes bad again is asked for
//! again; one that never comes is the command timeout's, as any lost
//! answer.
//!
//! A Data-In whose DataSN is past the one expected means those between
//! never arrived; they are asked for the same way.
//!
//! A header digest error puts the PDU's own lengths in doubt, so the next
//! PDU cannot be found from them alone (section 7.8; the sync-and-steering
//! markers that would find it are not part of RFC 7143). At ERL 1 the
//! receive loop waits for the header those lengths point at: if its digest
//! matches, the boundary is proven and the bad PDU is skipped
//! (`frame::boundary_after_bad_header`); if not, the connection fails, as
//! at ERL 0. What the skipped PDU carried is then recovered as a lost PDU
//! is: a Data-In by the DataSN gap the next one shows (above); a status,
//! a status by the StatSN gap the next status shows (a Status SNACK asks
//! for it: `ack_status_erl1`); an R2T or a NOP-In by the command or NOP
//! timeout, which ends in the connection's failure and ERL 0's recovery
//! (no R2T SNACK is sent).
//!
//! A Data-In with the A bit set gets a DataACK SNACK: the target may then
//! free what it kept for retransmission.
//!
//! The other way round, a target that finds a data digest error in what we
//! sent answers with a Reject (reason data digest error, section 7.8) and
//! drops the PDU. For a Data-Out it then asks for the data again with a
//! recovery R2T, which the write's buffer serves as any R2T, or ends the
//! task with CHECK CONDITION: either way the task waits. A command whose
//! immediate data was bad never reached the target, so it is sent again as
//! a retry (the same ITT and CmdSN, section 6.2.1), which fills the hole it
//! left in the target's CmdSN order.

use tracing::{debug, warn};

use super::Session;
use super::scheduling::{push_command, push_pdu};
use super::task::Kind;
use crate::pdu::{Bhs, DataIn, Opcode, Pdu, RESERVED_TAG, Snack, SnackType};
use crate::serial::Sn;

impl<T> Session<T> {
    /// Whether the session recovers within a command (ERL 1 or 2).
    pub(super) fn recovers_within_commands(&self) -> bool {
        self.params.error_recovery_level >= 1
    }

    /// A Data-In arrived with a bad data digest on `cid`. Returns false when
    /// it cannot be recovered here (not a Data-In, ERL 0, not a read on this
    /// connection): the caller then fails the connection.
    pub(super) fn recover_data_in(&mut self, cid: u16, bhs: &Bhs) -> bool {
        if !self.recovers_within_commands() || bhs.opcode() != Opcode::DATA_IN {
            return false;
        }
        let (itt, datasn) = (bhs.itt(), bhs.u32(36));
        // The header is sound: its window update stands; its StatSN (if it
        // carried status) comes again with the retransmission.
        self.ack(cid, None, bhs.u32(28), bhs.u32(32));
        let Some(task) = self.tasks.get_mut(&itt) else {
            // A late answer for a task already gone (seed event 27).
            return true;
        };
        let (Kind::Scsi(s), true) = (&mut task.kind, task.cid == cid) else { return false };
        if s.snacked && datasn != s.next_datasn {
            debug!(cid, itt, datasn, "Data-In with a bad digest while already asked again; dropped");
            return true;
        }
        // Not asked yet, or the one asked for came bad again: ask (again).
        // A link that corrupts every copy ends at the command timeout.
        s.snacked = true;
        let beg_run = s.next_datasn;
        warn!(cid, itt, datasn, beg_run, "data digest error on Data-In: asking the target again (Data SNACK)");
        self.ask_data_again(cid, itt, bhs.u64(8), beg_run);
        true
    }

    /// A Data SNACK for every Data-In of `itt` from DataSN `beg_run` on.
    pub(super) fn ask_data_again(&mut self, cid: u16, itt: u32, lun: u64, beg_run: u32) {
        debug!(cid, itt, beg_run, "Data SNACK");
        let snack =
            Snack { kind: SnackType::DATA_R2T, lun, itt, ttt: RESERVED_TAG, exp_statsn: 0, beg_run, run_length: 0 };
        self.send_snack(cid, snack);
        if let Some(c) = self.conns.get_mut(usize::from(cid)) {
            c.stats.data_snacks += 1;
        }
    }

    /// StatSN bookkeeping at ERL 1: a status past the one expected means
    /// those between never arrived (their PDU was skipped after a header
    /// digest error, or lost). A Status SNACK asks for them, and ExpStatSN
    /// stays at the first missing one, so the target keeps them until they
    /// arrive; statuses received meanwhile are remembered and acknowledged
    /// once the hole before them is filled. A hole that grows past
    /// `MAX_AHEAD` statuses is given up (ExpStatSN jumps past it, as at
    /// ERL 0): its commands end by their timeout.
    pub(super) fn ack_status_erl1(&mut self, cid: u16, sn: Sn) {
        const MAX_AHEAD: usize = 256;
        let Some(c) = self.conns.get_mut(usize::from(cid)) else { return };
        if sn == c.exp_statsn {
            c.exp_statsn = sn.next();
            while c.statsn_ahead.remove(&c.exp_statsn.0) {
                c.exp_statsn = c.exp_statsn.next();
            }
            return;
        }
        if !sn.gt(c.exp_statsn) || c.statsn_ahead.contains(&sn.0) {
            return; // a status sent again that already arrived
        }
        c.stats.statsn_gaps += 1;
        // The highest status seen so far: a gap opens only past it.
        let last = c
            .statsn_ahead
            .iter()
            .copied()
            .map(Sn)
            .fold(Sn(c.exp_statsn.0.wrapping_sub(1)), |a, b| if b.gt(a) { b } else { a });
        c.statsn_ahead.insert(sn.0);
        if !sn.gt(last) {
            return; // inside the hole already asked for
        }
        if c.statsn_ahead.len() > MAX_AHEAD {
            warn!(cid, "StatSN hole not filled after {MAX_AHEAD} later statuses: given up");
            c.exp_statsn = sn.next();
            c.statsn_ahead.clear();
            return;
        }
        let beg_run = last.next();
        if sn == beg_run {
            return; // right after the last one: no new hole
        }
        let run_length = sn.0.wrapping_sub(beg_run.0);
        warn!(cid, beg_run = beg_run.0, run_length, "StatSN gap: asking the target again (Status SNACK)");
        c.stats.status_snacks += 1;
        let snack = Snack {
            kind: SnackType::STATUS,
            lun: 0,
            itt: RESERVED_TAG,
            ttt: RESERVED_TAG,
            exp_statsn: 0,
            beg_run: beg_run.0,
            run_length,
        };
        self.send_snack(cid, snack);
    }

    /// Answers a Data-In's A bit with a DataACK SNACK for everything up to
    /// it (RFC 7143 section 11.16.1: BegRun is the next DataSN expected).
    pub(super) fn ack_data_in(&mut self, cid: u16, d: &DataIn) {
        if !d.ack || !self.recovers_within_commands() {
            return;
        }
        let snack = Snack {
            kind: SnackType::DATA_ACK,
            lun: d.lun,
            itt: RESERVED_TAG,
            ttt: d.ttt,
            exp_statsn: 0,
            beg_run: d.datasn.wrapping_add(1),
            run_length: 0,
        };
        self.send_snack(cid, snack);
    }

    /// The target rejected `hdr`'s PDU for a data digest error. Returns
    /// false where ERL 0 applies (the caller then fails the task or the
    /// connection as before).
    pub(super) fn recover_rejected_data(&mut self, cid: u16, hdr: &Bhs) -> bool {
        if !self.recovers_within_commands() {
            return false;
        }
        let itt = hdr.itt();
        match hdr.opcode() {
            Opcode::DATA_OUT => {
                debug!(cid, itt, "Data-Out rejected for its digest: waiting for the target's recovery R2T");
                if let Some(c) = self.conns.get_mut(usize::from(cid)) {
                    c.stats.data_out_rejects += 1;
                }
                true
            }
            Opcode::SCSI_COMMAND => self.retry_command(cid, itt),
            _ => false,
        }
    }

    /// Sends a SCSI command again as it was first sent (RFC 7143 section
    /// 6.2.1: same ITT, CmdSN and data), on the connection it belongs to.
    fn retry_command(&mut self, cid: u16, itt: u32) -> bool {
        let params = self.params.clone();
        let Some(task) = self.tasks.get(&itt) else { return false };
        let (Kind::Scsi(s), true) = (&task.kind, task.cid == cid) else { return false };
        let Some(c) = self.conns.get_mut(usize::from(cid)) else { return false };
        warn!(cid, itt, cmdsn = task.cmdsn, "command rejected for its immediate data's digest: retrying it");
        push_command(c, &params, s, itt, task.cmdsn);
        c.stats.command_retries += 1;
        true
    }

    fn send_snack(&mut self, cid: u16, mut snack: Snack) {
        let Some(c) = self.conns.get_mut(usize::from(cid)) else { return };
        snack.exp_statsn = c.exp_statsn.0;
        push_pdu(c, &Pdu::Snack(snack));
    }
}
