//! Why a policy request was refused, with the seed's status codes.

use crate::spec::{PathRole, PolicyKind, SwitchEvery};

/// A refused policy request or path change (CLI/API error). Each carries the Microsoft
/// iSCSI initiator status code of the same meaning (its `ISDSC_*`
/// error codes) as [`PolicyError::code`] / [`PolicyError::symbol`], and its message
/// names the problem and the fix. The running policy is left unchanged.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The policy name is not one of [`PolicyKind::ALL`] (ISDSC_INVALID_LOAD_BALANCE_POLICY).
    #[error("unknown load-balance policy {name:?}; use one of: {}", PolicyKind::names())]
    UnknownPolicy {
        /// The name as given.
        name: String,
    },
    /// A path is named twice in one list (ISDSC_DUPLICATE_PATH_SPECIFIED).
    #[error("path {name:?} is named more than once in {param}; name each path once")]
    DuplicatePath {
        /// The parameter (`--weights`, `--active`, `--primary`).
        param: &'static str,
        /// The path named twice.
        name: String,
    },
    /// The list does not name every path of the device exactly once (ISDSC_PATH_COUNT_MISMATCH).
    #[error(
        "{param} names {given} of the device's {expected} paths (missing: {missing}); give every path exactly once"
    )]
    PathCountMismatch {
        /// The parameter.
        param: &'static str,
        /// How many entries were given.
        given: usize,
        /// How many paths the device has.
        expected: usize,
        /// The paths not named, comma-separated.
        missing: String,
    },
    /// A path name (or id) the device does not have (ISDSC_INVALID_PATH_ID).
    #[error("{param}: the device has no path {name:?}; use one of its paths: {known}")]
    InvalidPath {
        /// The parameter.
        param: &'static str,
        /// The name as given.
        name: String,
        /// The device's path names, comma-separated.
        known: String,
    },
    /// fail-over-only was given several primaries (ISDSC_MULTIPLE_PRIMARY_PATHS_SPECIFIED).
    #[error("fail-over-only takes exactly one primary path, {} given ({}); name one with --primary <path>", names.len(), names.join(", "))]
    MultiplePrimaries {
        /// The paths given as primary.
        names: Vec<String>,
    },
    /// fail-over-only without a primary, and none to keep (ISDSC_NO_PRIMARY_PATH_SPECIFIED).
    #[error("fail-over-only needs a primary path; name it with --primary <path>")]
    NoPrimary,
    /// round-robin-subset without an active path. Same code as [`PolicyError::NoPrimary`]:
    /// the seed's subset calls its active paths "primary" (ISDSC_NO_PRIMARY_PATH_SPECIFIED: "No primary path
    /// specified when at least one is expected").
    #[error("round-robin-subset needs at least one active path; name them with --active <path>[,<path>...]")]
    EmptyActiveSet,
    /// A round-robin switch threshold of zero (ISDSC_INVALID_PARAMETER).
    #[error("round-robin cannot switch paths every {switch}; give --switch at least 1 (e.g. 1ios, 1000ios, 10MiB)")]
    ZeroSwitch {
        /// The threshold as given.
        switch: SwitchEvery,
    },
    /// A switch threshold that does not parse (ISDSC_INVALID_PARAMETER).
    #[error(
        "cannot read switch threshold {given:?}; write <n>ios or <n> followed by b, k, m or g (bytes), e.g. 1000ios or 10m"
    )]
    InvalidSwitch {
        /// The text as given.
        given: String,
    },
    /// A parameter the chosen policy does not take (ISDSC_INVALID_PARAMETER).
    #[error("{param} is not a parameter of {policy}; remove it, or use {takes}, which takes it")]
    ParameterNotTaken {
        /// The parameter.
        param: &'static str,
        /// The chosen policy.
        policy: PolicyKind,
        /// The policy that takes the parameter.
        takes: PolicyKind,
    },
    /// Removing the device's last path (Microsoft's initiator refuses it too: the session
    /// should be logged out instead).
    #[error("cannot remove path {name:?}: it is the device's last path; remove the device instead")]
    LastPath {
        /// The path.
        name: String,
    },
    /// Removing or demoting the path the policy prefers: the primary of
    /// fail-over-only, the only active path of round-robin-subset (refused for
    /// removal as for a demotion, which would leave no primary:
    /// ISDSC_NO_PRIMARY_PATH_SPECIFIED).
    #[error(
        "cannot {} path {name:?}: it is the {} of {policy}; make another path {} first (mpio path set-active <path>), or change the policy",
        if *removing { "remove" } else { "make a standby of" },
        preferred_role(*policy),
        if *policy == PolicyKind::FailOverOnly { "primary" } else { "active" }
    )]
    PreferredPath {
        /// The path.
        name: String,
        /// The running policy.
        policy: PolicyKind,
        /// Removal (else a demotion to standby).
        removing: bool,
    },
    /// A per-path role the running policy does not have (ISDSC_INVALID_PARAMETER).
    #[error(
        "{policy} has no per-path {}; {} take{} it: change the policy first (mpio policy set)",
        role_kind(*role),
        role.policies().iter().map(|k| k.name()).collect::<Vec<_>>().join(" and "),
        if role.policies().len() == 1 { "s" } else { "" }
    )]
    RoleNotTaken {
        /// The role asked for.
        role: PathRole,
        /// The running policy.
        policy: PolicyKind,
    },
}

/// What the policy's preferred path is called, for messages.
fn preferred_role(policy: PolicyKind) -> &'static str {
    match policy {
        PolicyKind::FailOverOnly => "primary path",
        _ => "only active path",
    }
}

/// The kind of role, for messages.
fn role_kind(role: PathRole) -> &'static str {
    match role {
        PathRole::Weight(_) => "weight",
        PathRole::Active | PathRole::Standby => "active/standby role",
    }
}

impl PolicyError {
    /// The seed status code (`ISDSC_*` of the Microsoft iSCSI initiator).
    pub fn code(&self) -> u32 {
        self.status().0
    }

    /// The seed's symbolic name of [`PolicyError::code`].
    pub fn symbol(&self) -> &'static str {
        self.status().1
    }

    fn status(&self) -> (u32, &'static str) {
        match self {
            PolicyError::UnknownPolicy { .. } => (0xEFFF_0055, "ISDSC_INVALID_LOAD_BALANCE_POLICY"),
            PolicyError::ZeroSwitch { .. }
            | PolicyError::InvalidSwitch { .. }
            | PolicyError::ParameterNotTaken { .. }
            | PolicyError::RoleNotTaken { .. } => (0xEFFF_0056, "ISDSC_INVALID_PARAMETER"),
            PolicyError::DuplicatePath { .. } => (0xEFFF_0057, "ISDSC_DUPLICATE_PATH_SPECIFIED"),
            PolicyError::PathCountMismatch { .. } => (0xEFFF_0058, "ISDSC_PATH_COUNT_MISMATCH"),
            PolicyError::InvalidPath { .. } => (0xEFFF_0059, "ISDSC_INVALID_PATH_ID"),
            PolicyError::MultiplePrimaries { .. } => (0xEFFF_005A, "ISDSC_MULTIPLE_PRIMARY_PATHS_SPECIFIED"),
            PolicyError::NoPrimary
            | PolicyError::EmptyActiveSet
            | PolicyError::PreferredPath { removing: false, .. } => (0xEFFF_005B, "ISDSC_NO_PRIMARY_PATH_SPECIFIED"),
            PolicyError::LastPath { .. } => (0xEFFF_003D, "ISDSC_CANT_REMOVE_LAST_CONNECTION"),
            PolicyError::PreferredPath { removing: true, .. } => (0xEFFF_0065, "ISDSC_CANNOT_REMOVE_ACTIVE_CONNECTION"),
        }
    }
}
