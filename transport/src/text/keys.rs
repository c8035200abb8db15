//! Operational text keys (RFC 7143 section 13): what we offer, and what the
//! negotiation produced.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic))]

use std::fmt;

use super::negotiate::NegotiationError;

/// `HeaderDigest` (RFC 7143 section 13.1).
pub const HEADER_DIGEST: &str = "HeaderDigest";
/// `DataDigest` (RFC 7143 section 13.1).
pub const DATA_DIGEST: &str = "DataDigest";
/// `MaxConnections` (RFC 7143 section 13.2).
pub const MAX_CONNECTIONS: &str = "MaxConnections";
/// `SendTargets` (RFC 7143 section 13.3).
pub const SEND_TARGETS: &str = "SendTargets";
/// `TargetName` (RFC 7143 section 13.4).
pub const TARGET_NAME: &str = "TargetName";
/// `InitiatorName` (RFC 7143 section 13.5).
pub const INITIATOR_NAME: &str = "InitiatorName";
/// `TargetAlias` (RFC 7143 section 13.6).
pub const TARGET_ALIAS: &str = "TargetAlias";
/// `InitiatorAlias` (RFC 7143 section 13.7).
pub const INITIATOR_ALIAS: &str = "InitiatorAlias";
/// `TargetAddress` (RFC 7143 section 13.8).
pub const TARGET_ADDRESS: &str = "TargetAddress";
/// `TargetPortalGroupTag` (RFC 7143 section 13.9).
pub const TARGET_PORTAL_GROUP_TAG: &str = "TargetPortalGroupTag";
/// `InitialR2T` (RFC 7143 section 13.10).
pub const INITIAL_R2T: &str = "InitialR2T";
/// `ImmediateData` (RFC 7143 section 13.11).
pub const IMMEDIATE_DATA: &str = "ImmediateData";
/// `MaxRecvDataSegmentLength` (RFC 7143 section 13.12).
pub const MAX_RECV_DATA_SEGMENT_LENGTH: &str = "MaxRecvDataSegmentLength";
/// `MaxBurstLength` (RFC 7143 section 13.13).
pub const MAX_BURST_LENGTH: &str = "MaxBurstLength";
/// `FirstBurstLength` (RFC 7143 section 13.14).
pub const FIRST_BURST_LENGTH: &str = "FirstBurstLength";
/// `DefaultTime2Wait` (RFC 7143 section 13.15).
pub const DEFAULT_TIME2WAIT: &str = "DefaultTime2Wait";
/// `DefaultTime2Retain` (RFC 7143 section 13.16).
pub const DEFAULT_TIME2RETAIN: &str = "DefaultTime2Retain";
/// `MaxOutstandingR2T` (RFC 7143 section 13.17).
pub const MAX_OUTSTANDING_R2T: &str = "MaxOutstandingR2T";
/// `DataPDUInOrder` (RFC 7143 section 13.18).
pub const DATA_PDU_IN_ORDER: &str = "DataPDUInOrder";
/// `DataSequenceInOrder` (RFC 7143 section 13.19).
pub const DATA_SEQUENCE_IN_ORDER: &str = "DataSequenceInOrder";
/// `ErrorRecoveryLevel` (RFC 7143 section 13.20).
pub const ERROR_RECOVERY_LEVEL: &str = "ErrorRecoveryLevel";
/// `SessionType` (RFC 7143 section 13.21).
pub const SESSION_TYPE: &str = "SessionType";
/// `TaskReporting` (RFC 7143 section 13.23).
pub const TASK_REPORTING: &str = "TaskReporting";
/// `iSCSIProtocolLevel` (RFC 7143 section 13.24, defined in RFC 7144).
pub const ISCSI_PROTOCOL_LEVEL: &str = "iSCSIProtocolLevel";
/// `X#NodeArchitecture` (RFC 7143 section 13.26).
pub const NODE_ARCHITECTURE: &str = "X#NodeArchitecture";

/// Largest MaxRecvDataSegmentLength, MaxBurstLength and FirstBurstLength:
/// `<numerical-value-512-to-(2**24 - 1)>` (RFC 7143 sections 13.12-13.14).
pub const MAX_DATA_LENGTH: u32 = (1 << 24) - 1;
/// Smallest MaxRecvDataSegmentLength, MaxBurstLength and FirstBurstLength.
pub const MIN_DATA_LENGTH: u32 = 512;
/// MaxRecvDataSegmentLength when a side declares none (RFC 7143 section
/// 13.12: "Default is 8192 bytes."), and the limit during login.
pub const DEFAULT_MAX_RECV_DATA_SEGMENT_LENGTH: u32 = 8192;

/// A digest in use on a connection (RFC 7143 section 13.1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Digest {
    /// No digest.
    #[default]
    None,
    /// CRC32C (Castagnoli).
    Crc32c,
}

impl Digest {
    /// The wire spelling: `None` or `CRC32C`.
    pub fn as_str(self) -> &'static str {
        match self {
            Digest::None => "None",
            Digest::Crc32c => "CRC32C",
        }
    }

    /// Parses the wire spelling (case sensitive, RFC 7143 section 6.1).
    pub fn parse(value: &str) -> Option<Digest> {
        match value {
            "None" => Some(Digest::None),
            "CRC32C" => Some(Digest::Crc32c),
            _ => None,
        }
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the configuration asks for one digest.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum DigestPref {
    /// Offer `None` only.
    #[default]
    None,
    /// Offer `CRC32C` only: the login fails if the target refuses
    /// (seed events 18 and 19).
    Crc32c,
    /// Offer `CRC32C,None`: use CRC32C when the target agrees.
    PreferCrc32c,
    /// Offer `None,CRC32C`: use CRC32C only when the target insists.
    PreferNone,
}

impl DigestPref {
    /// The list we offer, in our order of preference (RFC 7143 section
    /// 6.2.1: "the originator sends a list of values ... in its order of
    /// preference").
    pub fn offer(self) -> &'static str {
        match self {
            DigestPref::None => "None",
            DigestPref::Crc32c => "CRC32C",
            DigestPref::PreferCrc32c => "CRC32C,None",
            DigestPref::PreferNone => "None,CRC32C",
        }
    }

    /// Whether `digest` is acceptable to us.
    pub fn accepts(self, digest: Digest) -> bool {
        match self {
            DigestPref::None => digest == Digest::None,
            DigestPref::Crc32c => digest == Digest::Crc32c,
            DigestPref::PreferCrc32c | DigestPref::PreferNone => true,
        }
    }

    /// Whether CRC32C is mandatory.
    pub fn is_required(self) -> bool {
        self == DigestPref::Crc32c
    }
}

/// Where a negotiation takes place; decides which keys we offer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NegotiationScope {
    /// The first connection of a Normal session: every key.
    LeadingConnection,
    /// A further connection joining an existing session (MCS): only
    /// connection-scoped keys; session-wide keys are "LO" (leading only,
    /// RFC 7143 section 13 introduction).
    AddedConnection,
    /// A Discovery session: digests and MaxRecvDataSegmentLength; the session
    /// keys marked "Irrelevant when: SessionType=Discovery" are not offered.
    Discovery,
}

/// The operational values we offer, filled from configuration.
///
/// Defaults are the Microsoft initiator's: MaxRecvDataSegmentLength
/// and FirstBurstLength 64 KiB, MaxBurstLength 256 KiB, InitialR2T No,
/// ImmediateData Yes. open-iscsi and libiscsi declare 256 KiB segments and
/// first bursts; raise them in the configuration for large transfers.
/// DataPDUInOrder and DataSequenceInOrder are not configurable: mpio only
/// supports in-order data and always offers Yes (seed events 61/62).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct OperationalOffer {
    /// HeaderDigest offer.
    pub header_digest: DigestPref,
    /// DataDigest offer.
    pub data_digest: DigestPref,
    /// What we declare we can receive per PDU (512..=2^24-1).
    pub max_recv_data_segment_length: u32,
    /// MaxBurstLength (512..=2^24-1, result Minimum).
    pub max_burst_length: u32,
    /// FirstBurstLength (512..=2^24-1, result Minimum, at most
    /// max_burst_length).
    pub first_burst_length: u32,
    /// InitialR2T (result OR).
    pub initial_r2t: bool,
    /// ImmediateData (result AND).
    pub immediate_data: bool,
    /// MaxConnections (1..=65535, result Minimum). The session layer raises
    /// it for MCS.
    pub max_connections: u16,
    /// DefaultTime2Wait in seconds (0..=3600, result Maximum).
    pub default_time2wait: u16,
    /// DefaultTime2Retain in seconds (0..=3600, result Minimum).
    pub default_time2retain: u16,
    /// MaxOutstandingR2T (1..=65535, result Minimum).
    pub max_outstanding_r2t: u16,
    /// ErrorRecoveryLevel (0..=2, result Minimum). v1 implements level 0.
    pub error_recovery_level: u8,
}

impl Default for OperationalOffer {
    fn default() -> Self {
        OperationalOffer {
            header_digest: DigestPref::None,
            data_digest: DigestPref::None,
            max_recv_data_segment_length: 65_536,
            max_burst_length: 262_144,
            first_burst_length: 65_536,
            initial_r2t: false,
            immediate_data: true,
            max_connections: 1,
            default_time2wait: 2,
            default_time2retain: 20,
            max_outstanding_r2t: 1,
            error_recovery_level: 0,
        }
    }
}

impl OperationalOffer {
    /// Checks every value against its RFC 7143 section 13 range and the
    /// rules that tie keys together.
    pub fn validate(&self) -> Result<(), NegotiationError> {
        let checks: [(Key, u64); 8] = [
            (Key::MaxRecvDataSegmentLength, u64::from(self.max_recv_data_segment_length)),
            (Key::MaxBurstLength, u64::from(self.max_burst_length)),
            (Key::FirstBurstLength, u64::from(self.first_burst_length)),
            (Key::MaxConnections, u64::from(self.max_connections)),
            (Key::DefaultTime2Wait, u64::from(self.default_time2wait)),
            (Key::DefaultTime2Retain, u64::from(self.default_time2retain)),
            (Key::MaxOutstandingR2T, u64::from(self.max_outstanding_r2t)),
            (Key::ErrorRecoveryLevel, u64::from(self.error_recovery_level)),
        ];
        for (key, value) in checks {
            if let Some((min, max)) = key.range()
                && (value < min || value > max)
            {
                return Err(NegotiationError::InvalidOffer {
                    key: key.name(),
                    value: value.to_string(),
                    reason: format!("must be within {min}..={max} (RFC 7143 section {})", key.section()),
                });
            }
        }
        // RFC 7143 section 13.14: "FirstBurstLength MUST NOT exceed
        // MaxBurstLength."
        if self.first_burst_length > self.max_burst_length {
            return Err(NegotiationError::InvalidOffer {
                key: FIRST_BURST_LENGTH,
                value: self.first_burst_length.to_string(),
                reason: format!(
                    "must not exceed max_burst_length = {} (RFC 7143 section 13.14)",
                    self.max_burst_length
                ),
            });
        }
        // RFC 7143 section 13.19: "if ErrorRecoveryLevel is not 0 and
        // DataSequenceInOrder is set to Yes, then MaxOutstandingR2T MUST be
        // set to 1." We always offer DataSequenceInOrder=Yes.
        if self.error_recovery_level > 0 && self.max_outstanding_r2t != 1 {
            return Err(NegotiationError::InvalidOffer {
                key: MAX_OUTSTANDING_R2T,
                value: self.max_outstanding_r2t.to_string(),
                reason: "must be 1 when error_recovery_level > 0 with in-order data (RFC 7143 section 13.19)".into(),
            });
        }
        Ok(())
    }
}

/// Session-wide values in force after login. `Default` is the RFC 7143
/// section 13 defaults, which apply to every key nobody negotiated.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionParams {
    /// MaxConnections (default 1).
    pub max_connections: u16,
    /// InitialR2T (default Yes).
    pub initial_r2t: bool,
    /// ImmediateData (default Yes).
    pub immediate_data: bool,
    /// MaxBurstLength (default 262144).
    pub max_burst_length: u32,
    /// FirstBurstLength (default 65536).
    pub first_burst_length: u32,
    /// DefaultTime2Wait in seconds (default 2).
    pub default_time2wait: u16,
    /// DefaultTime2Retain in seconds (default 20).
    pub default_time2retain: u16,
    /// MaxOutstandingR2T (default 1).
    pub max_outstanding_r2t: u16,
    /// DataPDUInOrder (default Yes).
    pub data_pdu_in_order: bool,
    /// DataSequenceInOrder (default Yes).
    pub data_sequence_in_order: bool,
    /// ErrorRecoveryLevel (default 0).
    pub error_recovery_level: u8,
}

impl Default for SessionParams {
    fn default() -> Self {
        SessionParams {
            max_connections: 1,
            initial_r2t: true,
            immediate_data: true,
            max_burst_length: 262_144,
            first_burst_length: 65_536,
            default_time2wait: 2,
            default_time2retain: 20,
            max_outstanding_r2t: 1,
            data_pdu_in_order: true,
            data_sequence_in_order: true,
            error_recovery_level: 0,
        }
    }
}

/// Per-connection values in force after login.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectionParams {
    /// HeaderDigest in both directions.
    pub header_digest: Digest,
    /// DataDigest in both directions.
    pub data_digest: Digest,
    /// What we declared: the largest data segment the target may send us.
    pub max_recv_data_segment_length: u32,
    /// What the target declared: the largest data segment we may send it
    /// (8192 when it declared nothing).
    pub max_xmit_data_segment_length: u32,
}

impl Default for ConnectionParams {
    fn default() -> Self {
        ConnectionParams {
            header_digest: Digest::None,
            data_digest: Digest::None,
            max_recv_data_segment_length: DEFAULT_MAX_RECV_DATA_SEGMENT_LENGTH,
            max_xmit_data_segment_length: DEFAULT_MAX_RECV_DATA_SEGMENT_LENGTH,
        }
    }
}

/// What the target declared about itself during login.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TargetDeclarations {
    /// TargetAlias: a human-readable name, not an identifier (RFC 7143
    /// section 13.6).
    pub target_alias: Option<String>,
    /// TargetPortalGroupTag of the portal group serving this login (RFC 7143
    /// section 13.9).
    pub target_portal_group_tag: Option<u16>,
    /// TargetAddress values as received, for redirection (RFC 7143 section
    /// 13.8); parse them with [`crate::portal::TargetAddress`].
    pub target_address: Vec<String>,
}

/// The outcome of an operational negotiation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Negotiated {
    /// Session-wide values. For [`NegotiationScope::AddedConnection`] these
    /// are the RFC defaults: the session keeps the leading connection's.
    pub session: SessionParams,
    /// This connection's values.
    pub connection: ConnectionParams,
    /// The target's declarations.
    pub target: TargetDeclarations,
}

/// The keys the negotiator knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Key {
    HeaderDigest,
    DataDigest,
    MaxConnections,
    SendTargets,
    TargetName,
    InitiatorName,
    TargetAlias,
    InitiatorAlias,
    TargetAddress,
    TargetPortalGroupTag,
    InitialR2T,
    ImmediateData,
    MaxRecvDataSegmentLength,
    MaxBurstLength,
    FirstBurstLength,
    DefaultTime2Wait,
    DefaultTime2Retain,
    MaxOutstandingR2T,
    DataPduInOrder,
    DataSequenceInOrder,
    ErrorRecoveryLevel,
    SessionType,
    TaskReporting,
    ProtocolLevel,
    NodeArchitecture,
    /// OFMarker, IFMarker (obsoleted by RFC 7143 section 13.25).
    Marker,
    /// OFMarkInt, IFMarkInt (obsoleted by RFC 7143 section 13.25).
    MarkInt,
    /// AuthMethod and the keys of the authentication methods (RFC 7143
    /// section 12): they belong to the security stage.
    Security,
}

/// How a key's value is settled (RFC 7143 sections 6.2.1 and 6.2.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Rule {
    /// The responder picks one value of the originator's list.
    List,
    /// Boolean, result function AND.
    And,
    /// Boolean, result function OR.
    Or,
    /// Numerical, result function Minimum.
    Min,
    /// Numerical, result function Maximum.
    Max,
    /// Each side states its own value; no answer.
    Declarative,
    /// Anything else (markers, security keys).
    Other,
}

impl Key {
    pub(crate) fn from_name(name: &str) -> Option<Key> {
        Some(match name {
            HEADER_DIGEST => Key::HeaderDigest,
            DATA_DIGEST => Key::DataDigest,
            MAX_CONNECTIONS => Key::MaxConnections,
            SEND_TARGETS => Key::SendTargets,
            TARGET_NAME => Key::TargetName,
            INITIATOR_NAME => Key::InitiatorName,
            TARGET_ALIAS => Key::TargetAlias,
            INITIATOR_ALIAS => Key::InitiatorAlias,
            TARGET_ADDRESS => Key::TargetAddress,
            TARGET_PORTAL_GROUP_TAG => Key::TargetPortalGroupTag,
            INITIAL_R2T => Key::InitialR2T,
            IMMEDIATE_DATA => Key::ImmediateData,
            MAX_RECV_DATA_SEGMENT_LENGTH => Key::MaxRecvDataSegmentLength,
            MAX_BURST_LENGTH => Key::MaxBurstLength,
            FIRST_BURST_LENGTH => Key::FirstBurstLength,
            DEFAULT_TIME2WAIT => Key::DefaultTime2Wait,
            DEFAULT_TIME2RETAIN => Key::DefaultTime2Retain,
            MAX_OUTSTANDING_R2T => Key::MaxOutstandingR2T,
            DATA_PDU_IN_ORDER => Key::DataPduInOrder,
            DATA_SEQUENCE_IN_ORDER => Key::DataSequenceInOrder,
            ERROR_RECOVERY_LEVEL => Key::ErrorRecoveryLevel,
            SESSION_TYPE => Key::SessionType,
            TASK_REPORTING => Key::TaskReporting,
            ISCSI_PROTOCOL_LEVEL => Key::ProtocolLevel,
            NODE_ARCHITECTURE => Key::NodeArchitecture,
            "OFMarker" | "IFMarker" => Key::Marker,
            "OFMarkInt" | "IFMarkInt" => Key::MarkInt,
            "AuthMethod" | "TargetAuth" => Key::Security,
            _ if ["CHAP_", "SRP_", "KRB_", "SPKM_"].iter().any(|p| name.starts_with(p)) => Key::Security,
            _ => return None,
        })
    }

    /// The key name; the families (markers, security) give a representative.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Key::HeaderDigest => HEADER_DIGEST,
            Key::DataDigest => DATA_DIGEST,
            Key::MaxConnections => MAX_CONNECTIONS,
            Key::SendTargets => SEND_TARGETS,
            Key::TargetName => TARGET_NAME,
            Key::InitiatorName => INITIATOR_NAME,
            Key::TargetAlias => TARGET_ALIAS,
            Key::InitiatorAlias => INITIATOR_ALIAS,
            Key::TargetAddress => TARGET_ADDRESS,
            Key::TargetPortalGroupTag => TARGET_PORTAL_GROUP_TAG,
            Key::InitialR2T => INITIAL_R2T,
            Key::ImmediateData => IMMEDIATE_DATA,
            Key::MaxRecvDataSegmentLength => MAX_RECV_DATA_SEGMENT_LENGTH,
            Key::MaxBurstLength => MAX_BURST_LENGTH,
            Key::FirstBurstLength => FIRST_BURST_LENGTH,
            Key::DefaultTime2Wait => DEFAULT_TIME2WAIT,
            Key::DefaultTime2Retain => DEFAULT_TIME2RETAIN,
            Key::MaxOutstandingR2T => MAX_OUTSTANDING_R2T,
            Key::DataPduInOrder => DATA_PDU_IN_ORDER,
            Key::DataSequenceInOrder => DATA_SEQUENCE_IN_ORDER,
            Key::ErrorRecoveryLevel => ERROR_RECOVERY_LEVEL,
            Key::SessionType => SESSION_TYPE,
            Key::TaskReporting => TASK_REPORTING,
            Key::ProtocolLevel => ISCSI_PROTOCOL_LEVEL,
            Key::NodeArchitecture => NODE_ARCHITECTURE,
            Key::Marker => "OFMarker",
            Key::MarkInt => "OFMarkInt",
            Key::Security => "AuthMethod",
        }
    }

    /// The RFC 7143 section defining the key.
    pub(crate) fn section(self) -> &'static str {
        match self {
            Key::HeaderDigest | Key::DataDigest => "13.1",
            Key::MaxConnections => "13.2",
            Key::SendTargets => "13.3",
            Key::TargetName => "13.4",
            Key::InitiatorName => "13.5",
            Key::TargetAlias => "13.6",
            Key::InitiatorAlias => "13.7",
            Key::TargetAddress => "13.8",
            Key::TargetPortalGroupTag => "13.9",
            Key::InitialR2T => "13.10",
            Key::ImmediateData => "13.11",
            Key::MaxRecvDataSegmentLength => "13.12",
            Key::MaxBurstLength => "13.13",
            Key::FirstBurstLength => "13.14",
            Key::DefaultTime2Wait => "13.15",
            Key::DefaultTime2Retain => "13.16",
            Key::MaxOutstandingR2T => "13.17",
            Key::DataPduInOrder => "13.18",
            Key::DataSequenceInOrder => "13.19",
            Key::ErrorRecoveryLevel => "13.20",
            Key::SessionType => "13.21",
            Key::TaskReporting => "13.23",
            Key::ProtocolLevel => "13.24",
            Key::NodeArchitecture => "13.26",
            Key::Marker | Key::MarkInt => "13.25",
            Key::Security => "12",
        }
    }

    pub(crate) fn rule(self) -> Rule {
        match self {
            Key::HeaderDigest | Key::DataDigest | Key::TaskReporting => Rule::List,
            Key::ImmediateData => Rule::And,
            // RFC 7143 sections 13.10, 13.18, 13.19: "Result function is OR."
            Key::InitialR2T | Key::DataPduInOrder | Key::DataSequenceInOrder => Rule::Or,
            Key::MaxConnections
            | Key::MaxBurstLength
            | Key::FirstBurstLength
            | Key::DefaultTime2Retain
            | Key::MaxOutstandingR2T
            | Key::ErrorRecoveryLevel
            | Key::ProtocolLevel => Rule::Min,
            Key::DefaultTime2Wait => Rule::Max,
            Key::MaxRecvDataSegmentLength
            | Key::SendTargets
            | Key::TargetName
            | Key::InitiatorName
            | Key::TargetAlias
            | Key::InitiatorAlias
            | Key::TargetAddress
            | Key::TargetPortalGroupTag
            | Key::SessionType
            | Key::NodeArchitecture => Rule::Declarative,
            Key::Marker | Key::MarkInt | Key::Security => Rule::Other,
        }
    }

    /// The admissible range of a numerical key (RFC 7143 section 13).
    pub(crate) fn range(self) -> Option<(u64, u64)> {
        let data = (u64::from(MIN_DATA_LENGTH), u64::from(MAX_DATA_LENGTH));
        match self {
            Key::MaxConnections | Key::MaxOutstandingR2T => Some((1, 65_535)),
            Key::MaxRecvDataSegmentLength | Key::MaxBurstLength | Key::FirstBurstLength => Some(data),
            Key::DefaultTime2Wait | Key::DefaultTime2Retain => Some((0, 3600)),
            Key::ErrorRecoveryLevel => Some((0, 2)),
            Key::ProtocolLevel => Some((0, 31)),
            Key::TargetPortalGroupTag => Some((0, 65_535)),
            _ => None,
        }
    }

    /// "LO" keys: session-wide, negotiated on the leading connection only.
    pub(crate) fn leading_only(self) -> bool {
        matches!(
            self,
            Key::MaxConnections
                | Key::InitialR2T
                | Key::ImmediateData
                | Key::MaxBurstLength
                | Key::FirstBurstLength
                | Key::DefaultTime2Wait
                | Key::DefaultTime2Retain
                | Key::MaxOutstandingR2T
                | Key::DataPduInOrder
                | Key::DataSequenceInOrder
                | Key::ErrorRecoveryLevel
                | Key::TaskReporting
                | Key::ProtocolLevel
        )
    }

    /// Keys marked "Irrelevant when: SessionType=Discovery" in RFC 7143
    /// section 13 (and RFC 7144 for iSCSIProtocolLevel).
    pub(crate) fn irrelevant_in_discovery(self) -> bool {
        matches!(
            self,
            Key::MaxConnections
                | Key::InitialR2T
                | Key::ImmediateData
                | Key::MaxBurstLength
                | Key::FirstBurstLength
                | Key::MaxOutstandingR2T
                | Key::DataPduInOrder
                | Key::DataSequenceInOrder
                | Key::TaskReporting
                | Key::ProtocolLevel
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offer_defaults_follow_the_seeds_rfc7143_13() {
        let o = OperationalOffer::default();
        assert_eq!(o.max_recv_data_segment_length, 65_536);
        assert_eq!(o.max_burst_length, 262_144);
        assert_eq!(o.first_burst_length, 65_536);
        assert!(!o.initial_r2t);
        assert!(o.immediate_data);
        assert_eq!((o.max_connections, o.default_time2wait, o.default_time2retain), (1, 2, 20));
        assert_eq!((o.max_outstanding_r2t, o.error_recovery_level), (1, 0));
        assert_eq!((o.header_digest, o.data_digest), (DigestPref::None, DigestPref::None));
        assert_eq!(o.validate(), Ok(()));
    }

    #[test]
    fn session_defaults_are_the_rfc_defaults_rfc7143_13() {
        let s = SessionParams::default();
        assert_eq!(s.max_connections, 1);
        assert!(s.initial_r2t && s.immediate_data && s.data_pdu_in_order && s.data_sequence_in_order);
        assert_eq!((s.max_burst_length, s.first_burst_length), (262_144, 65_536));
        assert_eq!((s.default_time2wait, s.default_time2retain), (2, 20));
        assert_eq!((s.max_outstanding_r2t, s.error_recovery_level), (1, 0));
        let c = ConnectionParams::default();
        assert_eq!((c.max_recv_data_segment_length, c.max_xmit_data_segment_length), (8192, 8192));
    }

    #[test]
    fn offer_validation_rfc7143_13() {
        type Edit = fn(&mut OperationalOffer);
        let bad: &[(&str, Edit)] = &[
            ("MaxRecvDataSegmentLength", |o| o.max_recv_data_segment_length = 511),
            ("MaxRecvDataSegmentLength", |o| o.max_recv_data_segment_length = 1 << 24),
            ("MaxBurstLength", |o| o.max_burst_length = 100),
            ("FirstBurstLength", |o| o.first_burst_length = 511),
            ("FirstBurstLength", |o| o.first_burst_length = 262_145),
            ("MaxConnections", |o| o.max_connections = 0),
            ("DefaultTime2Wait", |o| o.default_time2wait = 3601),
            ("DefaultTime2Retain", |o| o.default_time2retain = 3601),
            ("MaxOutstandingR2T", |o| o.max_outstanding_r2t = 0),
            ("ErrorRecoveryLevel", |o| o.error_recovery_level = 3),
            ("MaxOutstandingR2T", |o| {
                o.error_recovery_level = 1;
                o.max_outstanding_r2t = 2;
            }),
        ];
        for (key, edit) in bad {
            let mut o = OperationalOffer::default();
            edit(&mut o);
            match o.validate() {
                Err(NegotiationError::InvalidOffer { key: k, .. }) => assert_eq!(k, *key),
                other => panic!("{key}: {other:?}"),
            }
        }
    }

    #[test]
    fn result_functions_rfc7143_13() {
        let cases = [
            (Key::HeaderDigest, Rule::List),
            (Key::MaxConnections, Rule::Min),
            (Key::InitialR2T, Rule::Or),
            (Key::ImmediateData, Rule::And),
            (Key::MaxRecvDataSegmentLength, Rule::Declarative),
            (Key::MaxBurstLength, Rule::Min),
            (Key::FirstBurstLength, Rule::Min),
            (Key::DefaultTime2Wait, Rule::Max),
            (Key::DefaultTime2Retain, Rule::Min),
            (Key::MaxOutstandingR2T, Rule::Min),
            (Key::DataPduInOrder, Rule::Or),
            (Key::DataSequenceInOrder, Rule::Or),
            (Key::ErrorRecoveryLevel, Rule::Min),
        ];
        for (key, rule) in cases {
            assert_eq!(key.rule(), rule, "{}", key.name());
            assert_eq!(Key::from_name(key.name()), Some(key));
        }
        assert_eq!(Key::from_name("CHAP_C"), Some(Key::Security));
        assert_eq!(Key::from_name("IFMarkInt"), Some(Key::MarkInt));
        assert_eq!(Key::from_name("X-com.example.foo"), None);
    }

    #[test]
    fn digest_prefs_rfc7143_13_1() {
        assert_eq!(DigestPref::PreferCrc32c.offer(), "CRC32C,None");
        assert_eq!(DigestPref::PreferNone.offer(), "None,CRC32C");
        assert!(DigestPref::Crc32c.is_required());
        assert!(!DigestPref::Crc32c.accepts(Digest::None));
        assert!(!DigestPref::None.accepts(Digest::Crc32c));
        assert_eq!(Digest::parse("CRC32C"), Some(Digest::Crc32c));
        assert_eq!(Digest::parse("crc32c"), None);
    }
}
