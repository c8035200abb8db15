//! SendTargets discovery, sans-I/O (RFC 7143 section 13.3 and appendix C,
//! "SendTargets Operation"; appendix D in RFC 3720).
//!
//! The caller logs in with SessionType=Discovery, sends the pair of a
//! [`SendTargetsRequest`] in a Text Request, accumulates the Text Responses
//! (C bit and Target Transfer Tag continuation) into one text data segment,
//! decodes it with [`crate::text::decode_pairs`] and hands the pairs to
//! [`parse_send_targets`].
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic))]

use std::fmt;

use crate::name::{IscsiName, NameError};
use crate::portal::{PortalError, TargetAddress};
use crate::text::KeyValue;
use crate::text::keys::{SEND_TARGETS, TARGET_ADDRESS, TARGET_NAME};

/// What to ask for in a SendTargets Text Request.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum SendTargetsRequest {
    /// `SendTargets=All`: every target this initiator may access. Only in a
    /// Discovery session.
    All,
    /// `SendTargets=<iSCSI-target-name>`: the addresses of one target.
    Target(IscsiName),
    /// `SendTargets=` (empty value): the addresses of the session's own
    /// target, in a Normal session.
    SessionTarget,
}

impl SendTargetsRequest {
    /// The key=value pair to send.
    pub fn to_pair(&self) -> KeyValue {
        let value = match self {
            SendTargetsRequest::All => "All",
            SendTargetsRequest::Target(name) => name.as_str(),
            SendTargetsRequest::SessionTarget => "",
        };
        KeyValue::new(SEND_TARGETS, value)
    }
}

/// One target found by discovery.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DiscoveredTarget {
    /// The target's name, normalised.
    pub name: IscsiName,
    /// Its portals with their portal group tags. May be empty: then the
    /// target is reachable through the portal the discovery session used.
    pub addresses: Vec<TargetAddress>,
}

/// Something in a SendTargets response that was skipped.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SendTargetsWarning {
    /// A TargetAddress before any TargetName.
    AddressWithoutTarget {
        /// The address as received.
        address: String,
    },
    /// A TargetName that is not a valid iSCSI name; the record (with its
    /// addresses) is skipped.
    InvalidTargetName {
        /// The name as received.
        name: String,
        /// Why it is invalid.
        error: NameError,
    },
    /// A TargetAddress that does not parse; the target keeps its other
    /// addresses.
    InvalidAddress {
        /// The target it belongs to.
        target: IscsiName,
        /// The address as received.
        address: String,
        /// Why it is invalid.
        error: PortalError,
    },
    /// A key other than TargetName and TargetAddress.
    UnexpectedKey {
        /// The key.
        key: String,
    },
}

impl fmt::Display for SendTargetsWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendTargetsWarning::AddressWithoutTarget { address } => {
                write!(f, "SendTargets response: TargetAddress={address:?} before any TargetName, ignored")
            }
            SendTargetsWarning::InvalidTargetName { name, error } => {
                write!(f, "SendTargets response: skipping target {name:?}: {error}")
            }
            SendTargetsWarning::InvalidAddress { target, address, error } => {
                write!(f, "SendTargets response: skipping address {address:?} of target {target}: {error}")
            }
            SendTargetsWarning::UnexpectedKey { key } => {
                write!(
                    f,
                    "SendTargets response: unexpected key {key:?} ignored (only TargetName and TargetAddress are allowed)"
                )
            }
        }
    }
}

/// The targets of a SendTargets response, and what was skipped.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SendTargetsResult {
    /// Targets in the order of the response; a name given twice is merged
    /// into its first record.
    pub targets: Vec<DiscoveredTarget>,
    /// Skipped items, for the log and the discovery metrics.
    pub warnings: Vec<SendTargetsWarning>,
}

/// Parses the pairs of a complete SendTargets response.
///
/// RFC 7143 appendix C: "A target record begins with the TargetName text
/// key, followed by a list of TargetAddress text keys, and bounded by the end
/// of the Text Response or the next TargetName key, which begins a new
/// record. No text keys other than TargetName and TargetAddress are
/// permitted within a SendTargets response."
///
/// Never fails: a bad record is skipped with a warning naming it, and the
/// others are still listed (seed scenario G6; the seed's initiator drops the
/// whole response, we are more tolerant on purpose).
pub fn parse_send_targets(pairs: &[KeyValue]) -> SendTargetsResult {
    let mut result = SendTargetsResult::default();
    // Index into `result.targets` of the current record; `Skipped` when the
    // current record's name was invalid (its addresses go with it).
    enum Current {
        None,
        Target(usize),
        Skipped,
    }
    let mut current = Current::None;
    for pair in pairs {
        match pair.key.as_str() {
            TARGET_NAME => match IscsiName::parse(&pair.value) {
                Ok(name) => {
                    let idx = match result.targets.iter().position(|t| t.name == name) {
                        Some(idx) => idx,
                        None => {
                            result.targets.push(DiscoveredTarget { name, addresses: Vec::new() });
                            result.targets.len() - 1
                        }
                    };
                    current = Current::Target(idx);
                }
                Err(error) => {
                    result.warnings.push(SendTargetsWarning::InvalidTargetName { name: pair.value.clone(), error });
                    current = Current::Skipped;
                }
            },
            TARGET_ADDRESS => match current {
                Current::None => {
                    result.warnings.push(SendTargetsWarning::AddressWithoutTarget { address: pair.value.clone() })
                }
                Current::Skipped => {}
                Current::Target(idx) => {
                    let Some(target) = result.targets.get_mut(idx) else {
                        continue;
                    };
                    match pair.value.parse::<TargetAddress>() {
                        Ok(address) => {
                            if !target.addresses.contains(&address) {
                                target.addresses.push(address);
                            }
                        }
                        Err(error) => result.warnings.push(SendTargetsWarning::InvalidAddress {
                            target: target.name.clone(),
                            address: pair.value.clone(),
                            error,
                        }),
                    }
                }
            },
            other => result.warnings.push(SendTargetsWarning::UnexpectedKey { key: other.to_owned() }),
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::portal::{Host, Portal};
    use crate::text::decode_pairs;
    use proptest::prelude::*;

    fn kv(k: &str, v: &str) -> KeyValue {
        KeyValue::new(k, v)
    }

    #[test]
    fn request_pairs_rfc7143_13_3() {
        assert_eq!(SendTargetsRequest::All.to_pair(), kv("SendTargets", "All"));
        let name = IscsiName::parse("iqn.2024-01.com.example:t1").unwrap();
        assert_eq!(SendTargetsRequest::Target(name).to_pair(), kv("SendTargets", "iqn.2024-01.com.example:t1"));
        assert_eq!(SendTargetsRequest::SessionTarget.to_pair(), kv("SendTargets", ""));
    }

    #[test]
    fn records_appendix_c() {
        // A response as it arrives on the wire (LIO style), decoded first.
        let wire = b"TargetName=iqn.2003-01.org.linux-iscsi.a:t1\0\
            TargetAddress=192.0.2.10:3260,1\0\
            TargetAddress=[2001:db8::10]:3260,1\0\
            TargetName=iqn.2003-01.org.linux-iscsi.a:t2\0\
            TargetAddress=san.example.com,2\0\
            TargetName=iqn.2003-01.org.linux-iscsi.a:t3\0";
        let r = parse_send_targets(&decode_pairs(wire).unwrap());
        assert!(r.warnings.is_empty(), "{:?}", r.warnings);
        let names: Vec<&str> = r.targets.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "iqn.2003-01.org.linux-iscsi.a:t1",
                "iqn.2003-01.org.linux-iscsi.a:t2",
                "iqn.2003-01.org.linux-iscsi.a:t3"
            ]
        );
        let t1 = &r.targets[0].addresses;
        assert_eq!(t1.len(), 2);
        // G7: IPv6 in brackets.
        assert_eq!(t1[1].portal().host(), &Host::Ip("2001:db8::10".parse().unwrap()));
        assert_eq!(t1[1].tpgt(), Some(1));
        // G8: a DNS name, default port.
        let t2 = &r.targets[1].addresses[0];
        assert_eq!(t2.portal(), &"san.example.com:3260".parse::<Portal>().unwrap());
        assert_eq!(t2.tpgt(), Some(2));
        // A record without addresses is kept.
        assert!(r.targets[2].addresses.is_empty());
    }

    #[test]
    fn bad_records_are_skipped_with_warnings_seed_g6() {
        let pairs = vec![
            kv("TargetAddress", "192.0.2.1:3260,1"),
            kv("TargetName", "IQN.2024-01.COM.EXAMPLE:UPPER"),
            kv("TargetAddress", "192.0.2.2:3260,1"),
            kv("TargetName", "iqn.2024-01.com.example:bad_name"),
            kv("TargetAddress", "192.0.2.3:3260,1"),
            kv("TargetName", "iqn.2024-01.com.example:good"),
            kv("TargetAddress", "0.0.0.0:3260,1"),
            kv("TargetAddress", "192.0.2.4:3260,1"),
            kv("TargetAlias", "x"),
        ];
        let r = parse_send_targets(&pairs);
        // Upper case is lowered; the illegal name is skipped with its address.
        let names: Vec<&str> = r.targets.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["iqn.2024-01.com.example:upper", "iqn.2024-01.com.example:good"]);
        assert_eq!(r.targets[0].addresses.len(), 1);
        assert_eq!(r.targets[1].addresses.len(), 1);
        assert_eq!(r.warnings.len(), 4);
        assert!(
            matches!(&r.warnings[0], SendTargetsWarning::AddressWithoutTarget { address } if address == "192.0.2.1:3260,1")
        );
        let w = r.warnings[1].to_string();
        assert!(w.contains("iqn.2024-01.com.example:bad_name") && w.contains("'_'"), "{w}");
        assert!(
            matches!(&r.warnings[2], SendTargetsWarning::InvalidAddress { address, .. } if address == "0.0.0.0:3260,1")
        );
        assert!(matches!(&r.warnings[3], SendTargetsWarning::UnexpectedKey { key } if key == "TargetAlias"));
    }

    #[test]
    fn repeated_names_merge() {
        let pairs = vec![
            kv("TargetName", "iqn.2024-01.com.example:t"),
            kv("TargetAddress", "192.0.2.1,1"),
            kv("TargetName", "iqn.2024-01.com.example:T"),
            kv("TargetAddress", "192.0.2.1,1"),
            kv("TargetAddress", "192.0.2.2,1"),
        ];
        let r = parse_send_targets(&pairs);
        assert_eq!(r.targets.len(), 1);
        assert_eq!(r.targets[0].addresses.len(), 2);
    }

    #[test]
    fn empty_response_means_no_targets_appendix_c() {
        assert_eq!(parse_send_targets(&[]), SendTargetsResult::default());
    }

    proptest! {
        #[test]
        fn parse_send_targets_never_panics(
            raw in proptest::collection::vec(
                (prop_oneof![Just("TargetName".to_string()), Just("TargetAddress".to_string()), "[A-Za-z]{1,8}"], ".{0,40}"),
                0..30),
        ) {
            let pairs: Vec<KeyValue> = raw.into_iter().map(|(k, v)| KeyValue::new(k, v)).collect();
            let r = parse_send_targets(&pairs);
            prop_assert!(r.targets.len() + r.warnings.len() <= pairs.len());
        }
    }
}
