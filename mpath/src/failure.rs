//! The failure vocabulary of a path: why it failed ([`FailureCause`] with
//! its [`CauseKind`]), and what a probe or a fence reports when it fails.
//! Each kind is an enum variant with its metric label: metrics iterate
//! [`CauseKind::ALL`] (every label shows at zero before it first
//! happens) and events name the kind, so a new cause is counted and
//! named everywhere by adding the variant.

use std::fmt;

/// The kinds of path failure; [`CauseKind::label`] is the `cause` label of
/// `mpio_path_failures_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CauseKind {
    /// The session's connection failed (reset, closed, session closed).
    Connection,
    /// A TCP connect to the portal failed.
    Connect,
    /// The target refused or broke off the login.
    Login,
    /// The target broke the iSCSI protocol.
    Protocol,
    /// A NOP-Out ping got no answer in time.
    NopTimeout,
    /// A command on the path timed out (or its task management did).
    IoTimeout,
    /// A command failed with a path error (SCSI status or sense naming the
    /// path, not the LU).
    PathError,
    /// The target answered a command with an iSCSI failure response.
    TargetFailure,
    /// The target rejected a PDU of the command.
    Rejected,
    /// A probe (TEST UNIT READY) of a path in probation failed.
    Probe,
    /// The periodic verification of a ready path failed.
    Verify,
    /// The identity check or a bring-up step refused the path.
    Claim,
    /// An administrator disabled the path.
    Admin,
}

impl CauseKind {
    /// Every kind, in the order metrics list them.
    pub const ALL: [CauseKind; 13] = [
        CauseKind::Connection,
        CauseKind::Connect,
        CauseKind::Login,
        CauseKind::Protocol,
        CauseKind::NopTimeout,
        CauseKind::IoTimeout,
        CauseKind::PathError,
        CauseKind::TargetFailure,
        CauseKind::Rejected,
        CauseKind::Probe,
        CauseKind::Verify,
        CauseKind::Claim,
        CauseKind::Admin,
    ];

    /// The stable label (metrics, status, events): dashboards and alerts
    /// match these strings.
    pub const fn label(self) -> &'static str {
        match self {
            CauseKind::Connection => "connection",
            CauseKind::Connect => "connect",
            CauseKind::Login => "login",
            CauseKind::Protocol => "protocol",
            CauseKind::NopTimeout => "nop_timeout",
            CauseKind::IoTimeout => "io_timeout",
            CauseKind::PathError => "path_error",
            CauseKind::TargetFailure => "target_failure",
            CauseKind::Rejected => "rejected",
            CauseKind::Probe => "probe",
            CauseKind::Verify => "verify",
            CauseKind::Claim => "claim",
            CauseKind::Admin => "admin",
        }
    }

    /// The seed's event ID for a path failing with this cause (digest
    /// section 11.1), where it has one.
    pub const fn seed_event(self) -> Option<u32> {
        match self {
            CauseKind::Connection => Some(20),
            CauseKind::NopTimeout => Some(48),
            CauseKind::IoTimeout => Some(9),
            CauseKind::Login => Some(10),
            _ => None,
        }
    }
}

impl fmt::Display for CauseKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// Why a path failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailureCause {
    /// What kind of failure (the metrics label).
    pub kind: CauseKind,
    /// Details.
    pub detail: String,
}

impl FailureCause {
    /// A cause.
    pub fn new(kind: CauseKind, detail: impl Into<String>) -> FailureCause {
        FailureCause { kind, detail: detail.into() }
    }
}

impl fmt::Display for FailureCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.detail)
    }
}

/// A probe of a path (TEST UNIT READY) that failed: the path's failure is
/// [`CauseKind::Probe`] in probation, [`CauseKind::Verify`] when ready.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ProbeFailed(pub String);

/// A fence login through a healthy portal that failed; the fence is tried
/// again (or its deadline clears it).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FenceFailed(pub String);

/// A bring-up step ([`crate::BringUp`]) that refused a path: the path is
/// not used ([`crate::ClaimRefusal::BringUp`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BringUpRefused(pub String);

impl From<String> for BringUpRefused {
    fn from(s: String) -> BringUpRefused {
        BringUpRefused(s)
    }
}

impl From<&str> for BringUpRefused {
    fn from(s: &str) -> BringUpRefused {
        BringUpRefused(s.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_the_metric_strings() {
        let labels: Vec<&str> = CauseKind::ALL.iter().map(|k| k.label()).collect();
        assert_eq!(
            labels,
            [
                "connection",
                "connect",
                "login",
                "protocol",
                "nop_timeout",
                "io_timeout",
                "path_error",
                "target_failure",
                "rejected",
                "probe",
                "verify",
                "claim",
                "admin"
            ]
        );
        assert_eq!(FailureCause::new(CauseKind::Login, "refused").to_string(), "login: refused");
    }
}
