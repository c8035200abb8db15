//! The data path of SCSI commands: Data-In (in order, never past the
//! buffer), R2T (answered with Data-Out from the write buffer) and the SCSI
//! Response that ends a command (never before every Data-In the target
//! counts in it has arrived).

use std::time::Instant;

use super::scheduling::push_pdu;
use super::task::{self, Kind};
use super::{Outcome, ScsiResult, Session, TaskError};
use crate::pdu::{DataIn, Opcode, R2t, ScsiResponse};

impl<T> Session<T> {
    pub(super) fn on_scsi_response(&mut self, cid: u16, now: Instant, r: ScsiResponse) {
        self.ack(cid, Some(r.statsn), r.exp_cmdsn, r.max_cmdsn);
        let Some(task) = self.tasks.remove(&r.itt) else { return self.unknown_itt(cid, Opcode::SCSI_RESPONSE, r.itt) };
        if task.cid != cid || !matches!(task.kind, Kind::Scsi(_)) {
            self.tasks.insert(r.itt, task);
            return self.protocol_error(
                cid,
                now,
                format!("SCSI Response for ITT {:#x} on the wrong connection or task", r.itt),
            );
        }
        let mut task = task;
        let Kind::Scsi(s) = &mut task.kind else { return };
        if s.snacked {
            let msg = format!(
                "SCSI Response for ITT {:#x} while its Data-In from DataSN {} are asked for again",
                r.itt, s.next_datasn
            );
            self.tasks.insert(r.itt, task);
            return self.protocol_error(cid, now, msg);
        }
        // A read (not bidirectional: there ExpDataSN counts R2Ts too) for
        // which the target sent more Data-In than arrived lost its last
        // ones, which no later Data-In could reveal: completing it would
        // hand the caller a short buffer. The connection fails instead, and
        // the command is sent again (a Data SNACK is not tried: the target
        // may free the task once this status is acknowledged).
        let lost = r.exp_datasn.wrapping_sub(s.next_datasn);
        if s.req.data_out.is_empty() && s.req.read_len > 0 && lost != 0 && lost < 1 << 31 {
            let msg = format!(
                "SCSI Response for ITT {:#x} counts {} Data-In, {} arrived",
                r.itt, r.exp_datasn, s.next_datasn
            );
            self.tasks.insert(r.itt, task);
            return self.protocol_error(cid, now, msg);
        }
        let result = if r.response != 0 {
            Err(TaskError::TargetFailure(r.response))
        } else {
            Ok(Outcome::Scsi(ScsiResult {
                status: r.status,
                sense: r.sense(),
                data: std::mem::take(&mut s.data),
                residual: r.residual,
            }))
        };
        self.finish(task, result);
    }

    pub(super) fn on_data_in(&mut self, cid: u16, now: Instant, d: DataIn) {
        let within = self.recovers_within_commands();
        let Some(task) = self.tasks.get_mut(&d.itt) else {
            self.ack(cid, d.status.map(|_| d.statsn), d.exp_cmdsn, d.max_cmdsn);
            return self.unknown_itt(cid, Opcode::DATA_IN, d.itt);
        };
        let (Kind::Scsi(s), true) = (&mut task.kind, task.cid == cid) else {
            self.ack(cid, d.status.map(|_| d.statsn), d.exp_cmdsn, d.max_cmdsn);
            return self.protocol_error(
                cid,
                now,
                format!("Data-In for ITT {:#x}, which is not a read on this connection", d.itt),
            );
        };
        if within && !s.snacked && d.datasn != s.next_datasn && d.datasn.wrapping_sub(s.next_datasn) < 1 << 31 {
            // A Data-In before this one never arrived (skipped after a
            // header digest error, or lost): ask for it and what follows.
            s.snacked = true;
            let beg_run = s.next_datasn;
            self.ack(cid, None, d.exp_cmdsn, d.max_cmdsn);
            return self.ask_data_again(cid, d.itt, d.lun, beg_run);
        }
        if s.snacked {
            if d.datasn != s.next_datasn {
                // Sent before our Data SNACK reached the target; it comes
                // again after the one we asked for (`data_recovery`). Its
                // status, if any, too.
                return self.ack(cid, None, d.exp_cmdsn, d.max_cmdsn);
            }
            s.snacked = false;
        }
        self.ack(cid, d.status.map(|_| d.statsn), d.exp_cmdsn, d.max_cmdsn);
        self.ack_data_in(cid, &d);
        let Some(task) = self.tasks.get_mut(&d.itt) else { return };
        let Kind::Scsi(s) = &mut task.kind else { return };
        let expected = s.req.read_len as usize;
        // DataPDUInOrder=Yes and DataSequenceInOrder=Yes (we require both):
        // data arrives in order, without gaps (RFC 7143 section 13.19-20).
        if d.buffer_offset as usize != s.data.len() || d.datasn != s.next_datasn {
            let msg = format!(
                "Data-In out of order for ITT {:#x}: offset {} DataSN {} (expected {} and {})",
                d.itt,
                d.buffer_offset,
                d.datasn,
                s.data.len(),
                s.next_datasn
            );
            return self.protocol_error(cid, now, msg);
        }
        if s.data.len() + d.data.len() > expected {
            // Seed event 26: never let a target write past the buffer.
            let msg = format!(
                "target sent {} bytes for ITT {:#x}, which asked for {expected}",
                s.data.len() + d.data.len(),
                d.itt
            );
            return self.protocol_error(cid, now, msg);
        }
        s.next_datasn = s.next_datasn.wrapping_add(1);
        s.data.push(d.data);
        if let Some(status) = d.status {
            let Some(mut task) = self.tasks.remove(&d.itt) else { return };
            let Kind::Scsi(s) = &mut task.kind else { return };
            let result = Outcome::Scsi(ScsiResult {
                status,
                sense: None,
                data: std::mem::take(&mut s.data),
                residual: d.residual,
            });
            self.finish(task, Ok(result));
        }
    }

    pub(super) fn on_r2t(&mut self, cid: u16, now: Instant, r: R2t) {
        self.ack(cid, None, r.exp_cmdsn, r.max_cmdsn);
        let Some(task) = self.tasks.get_mut(&r.itt) else { return self.unknown_itt(cid, Opcode::R2T, r.itt) };
        let max_burst = self.params.max_burst_length;
        let (Kind::Scsi(s), true) = (&mut task.kind, task.cid == cid) else {
            return self.protocol_error(
                cid,
                now,
                format!("R2T for ITT {:#x}, which is not a write on this connection", r.itt),
            );
        };
        let write_len = s.req.data_out.len() as u64;
        if u64::from(r.buffer_offset) + u64::from(r.desired_len) > write_len || r.desired_len > max_burst {
            let msg = format!(
                "invalid R2T for ITT {:#x}: offset {} length {} (write of {write_len} bytes, MaxBurstLength {max_burst})",
                r.itt, r.buffer_offset, r.desired_len
            );
            // Seed event 28.
            return self.protocol_error(cid, now, msg);
        }
        s.next_r2tsn = r.r2tsn.wrapping_add(1);
        let Some(c) = self.conns.get_mut(usize::from(cid)) else { return };
        let exp_statsn = c.exp_statsn.0;
        let max_xmit = c.params.max_xmit_data_segment_length.max(512);
        let mut pdus = Vec::new();
        task::data_out_pdus(&s.req, r.itt, r.ttt, r.buffer_offset, r.desired_len, exp_statsn, max_xmit, &mut |p| {
            pdus.push(p)
        });
        for p in &pdus {
            push_pdu(c, p);
        }
    }
}
