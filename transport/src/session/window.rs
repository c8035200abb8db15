//! The session's command window (RFC 7143 section 4.2.2.1).

use crate::serial::Sn;

/// CmdSN numbering and the target's ExpCmdSN/MaxCmdSN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Window {
    /// The CmdSN the next non-immediate command gets.
    pub(crate) cmdsn: Sn,
    /// The next CmdSN the target expects.
    pub(crate) exp_cmdsn: Sn,
    /// The highest CmdSN the target accepts.
    pub(crate) max_cmdsn: Sn,
}

impl Window {
    /// The window after a login response.
    pub(crate) fn new(cmdsn: u32, exp_cmdsn: u32, max_cmdsn: u32) -> Window {
        let mut w = Window { cmdsn: Sn(cmdsn), exp_cmdsn: Sn(exp_cmdsn), max_cmdsn: Sn(exp_cmdsn.wrapping_sub(1)) };
        w.update(exp_cmdsn, max_cmdsn);
        w
    }

    /// True when a non-immediate command may be sent now: "the initiator
    /// MUST NOT transmit a command with CmdSN greater than MaxCmdSN".
    pub(crate) fn is_open(&self) -> bool {
        self.cmdsn.le(self.max_cmdsn)
    }

    /// Takes the CmdSN for a non-immediate command.
    pub(crate) fn take(&mut self) -> u32 {
        let sn = self.cmdsn.0;
        self.cmdsn = self.cmdsn.next();
        sn
    }

    /// Applies ExpCmdSN and MaxCmdSN from a target PDU. Section 4.2.2.1:
    /// "If the PDU MaxCmdSN is less than the PDU ExpCmdSN-1 (in serial
    /// arithmetic sense), the PDU MaxCmdSN and ExpCmdSN MUST be ignored";
    /// otherwise each field is taken only when it moves forward, since PDUs
    /// on different connections of one session can arrive out of order.
    pub(crate) fn update(&mut self, exp_cmdsn: u32, max_cmdsn: u32) {
        let (exp, max) = (Sn(exp_cmdsn), Sn(max_cmdsn));
        if max.lt(Sn(exp_cmdsn.wrapping_sub(1))) {
            return;
        }
        if exp.gt(self.exp_cmdsn) {
            self.exp_cmdsn = exp;
        }
        if max.gt(self.max_cmdsn) {
            self.max_cmdsn = max;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_and_closes() {
        let mut w = Window::new(10, 10, 11);
        assert_eq!(w.take(), 10);
        assert_eq!(w.take(), 11);
        assert!(!w.is_open());
        w.update(12, 20);
        assert!(w.is_open());
    }

    #[test]
    fn zero_window_at_login() {
        // MaxCmdSN = ExpCmdSN - 1: the target accepts nothing yet.
        let w = Window::new(5, 5, 4);
        assert!(!w.is_open());
    }

    #[test]
    fn stale_and_invalid_updates_are_ignored() {
        let mut w = Window::new(1, 1, 32);
        w.update(1, 16); // older MaxCmdSN from another connection
        assert_eq!(w.max_cmdsn.0, 32);
        w.update(40, 20); // MaxCmdSN < ExpCmdSN - 1: ignored whole
        assert_eq!((w.exp_cmdsn.0, w.max_cmdsn.0), (1, 32));
    }

    #[test]
    fn wraps() {
        let mut w = Window::new(u32::MAX, u32::MAX, 1);
        assert_eq!(w.take(), u32::MAX);
        assert_eq!(w.take(), 0);
        assert!(w.is_open());
    }
}
