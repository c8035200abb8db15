//! Portal addresses: where a target listens (RFC 7143 sections 4.4.1 and
//! 13.8).
//!
//! Accepted forms: `HOST`, `HOST:PORT`, `[IPv6]`, `[IPv6]:PORT`, and a bare
//! IPv6 address without port. HOST is an IPv4 address or a DNS name. The
//! port defaults to 3260. [`TargetAddress`] adds the `,tpgt` suffix of
//! SendTargets responses and login redirections.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic))]

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use crate::text::value;

/// The IANA port for iSCSI. RFC 7143 section 13.8: "If the TCP port is not
/// specified, it is assumed to be the IANA-assigned default port for iSCSI".
pub const DEFAULT_PORT: u16 = 3260;

/// The host part of a portal.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Host {
    /// An IP address (never unspecified, multicast or broadcast).
    Ip(IpAddr),
    /// A DNS name in lower case, resolved at each connect (seed scenario G8).
    Dns(String),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Ip(IpAddr::V6(a)) => write!(f, "[{a}]"),
            Host::Ip(IpAddr::V4(a)) => write!(f, "{a}"),
            Host::Dns(name) => f.write_str(name),
        }
    }
}

/// A network portal: host and TCP port.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Portal {
    host: Host,
    port: u16,
}

impl Portal {
    /// Builds a portal, refusing addresses no target can listen on and port 0.
    pub fn new(host: Host, port: u16) -> Result<Portal, PortalError> {
        if port == 0 {
            return Err(PortalError::InvalidPort { input: "0".into() });
        }
        match &host {
            Host::Ip(ip) => check_ip(*ip)?,
            Host::Dns(name) => check_dns(name)?,
        }
        let host = match host {
            Host::Dns(name) => Host::Dns(name.to_ascii_lowercase()),
            ip => ip,
        };
        Ok(Portal { host, port })
    }

    /// The host.
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The socket address when the host is an IP address (DNS names are
    /// resolved by the caller, at connect time).
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        match self.host {
            Host::Ip(ip) => Some(SocketAddr::new(ip, self.port)),
            Host::Dns(_) => None,
        }
    }
}

impl From<SocketAddr> for Portal {
    /// Note: no check is made; use [`Portal::new`] for untrusted addresses.
    fn from(addr: SocketAddr) -> Self {
        Portal { host: Host::Ip(addr.ip()), port: addr.port() }
    }
}

/// Always prints the port, so the output parses back to the same portal.
impl fmt::Display for Portal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

impl FromStr for Portal {
    type Err = PortalError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(PortalError::Empty);
        }
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            // RFC 7143 section 13.8: the address may be "a bracketed IPv6
            // address as specified in RFC 3986".
            let (inside, after) = rest
                .split_once(']')
                .ok_or_else(|| PortalError::InvalidHost { input: s.to_owned(), reason: "'[' without ']'" })?;
            let ip: Ipv6Addr = inside.parse().map_err(|_| PortalError::InvalidHost {
                input: s.to_owned(),
                reason: "not an IPv6 address inside the brackets",
            })?;
            let port = match after {
                "" => DEFAULT_PORT,
                _ => match after.strip_prefix(':') {
                    Some(p) => parse_port(p)?,
                    None => {
                        return Err(PortalError::InvalidHost {
                            input: s.to_owned(),
                            reason: "only ':PORT' may follow ']'",
                        });
                    }
                },
            };
            (Host::Ip(IpAddr::V6(ip)), port)
        } else if s.bytes().filter(|&b| b == b':').count() >= 2 {
            // A bare IPv6 address: its colons leave no room for a port.
            let ip: Ipv6Addr = s.parse().map_err(|_| PortalError::InvalidHost {
                input: s.to_owned(),
                reason: "not an IPv6 address (write [IPv6]:PORT to give a port)",
            })?;
            (Host::Ip(IpAddr::V6(ip)), DEFAULT_PORT)
        } else {
            let (host, port) = match s.split_once(':') {
                Some((h, p)) => (h, parse_port(p)?),
                None => (s, DEFAULT_PORT),
            };
            (parse_host(host)?, port)
        };
        Portal::new(host, port)
    }
}

fn parse_host(host: &str) -> Result<Host, PortalError> {
    if host.is_empty() {
        return Err(PortalError::Empty);
    }
    if let Ok(v4) = host.parse::<Ipv4Addr>() {
        return Ok(Host::Ip(IpAddr::V4(v4)));
    }
    check_dns(host)?;
    Ok(Host::Dns(host.to_ascii_lowercase()))
}

fn parse_port(p: &str) -> Result<u16, PortalError> {
    let invalid = || PortalError::InvalidPort { input: p.to_owned() };
    // `u16::from_str` accepts a leading '+'; a port is digits only.
    if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    match p.parse::<u16>() {
        Ok(0) | Err(_) => Err(invalid()),
        Ok(port) => Ok(port),
    }
}

fn check_ip(ip: IpAddr) -> Result<(), PortalError> {
    let reason = if ip.is_unspecified() {
        Some("the unspecified address (0.0.0.0 or ::) cannot be a portal")
    } else if ip.is_multicast() {
        Some("a multicast address cannot be a TCP portal")
    } else if ip == IpAddr::V4(Ipv4Addr::BROADCAST) {
        Some("the broadcast address cannot be a TCP portal")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(PortalError::InvalidHost { input: ip.to_string(), reason }),
        None => Ok(()),
    }
}

/// Host name syntax (RFC 1123 section 2.1): labels of letters, digits and
/// inner hyphens, at most 63 bytes each, 253 in all. A name whose last label
/// is all digits is a mistyped IPv4 address, not a name.
fn check_dns(name: &str) -> Result<(), PortalError> {
    let bad = |reason| PortalError::InvalidHost { input: name.to_owned(), reason };
    if name.is_empty() {
        return Err(PortalError::Empty);
    }
    if name.len() > 253 {
        return Err(bad("a DNS name has at most 253 characters"));
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err(bad("empty DNS label (two dots, or a dot at the start or end)"));
        }
        if label.len() > 63 {
            return Err(bad("a DNS label has at most 63 characters"));
        }
        if !label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(bad("a DNS name has only letters, digits, '-' and '.'"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(bad("a DNS label cannot start or end with '-'"));
        }
    }
    if name.rsplit('.').next().is_some_and(|last| last.bytes().all(|b| b.is_ascii_digit())) {
        return Err(bad("not a valid IPv4 address"));
    }
    Ok(())
}

/// A TargetAddress value: `domainname[:port][,portal-group-tag]`
/// (RFC 7143 section 13.8).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TargetAddress {
    portal: Portal,
    tpgt: Option<u16>,
}

impl TargetAddress {
    /// Builds a target address.
    pub fn new(portal: Portal, tpgt: Option<u16>) -> TargetAddress {
        TargetAddress { portal, tpgt }
    }

    /// The portal.
    pub fn portal(&self) -> &Portal {
        &self.portal
    }

    /// The target portal group tag. RFC 7143 section 13.8: "If the
    /// TargetAddress is returned as the result of a redirect status in a
    /// Login Response, the comma and portal-group-tag MUST be omitted. If
    /// the TargetAddress is returned within a SendTargets response, the
    /// portal-group-tag MUST be included."
    pub fn tpgt(&self) -> Option<u16> {
        self.tpgt
    }
}

impl FromStr for TargetAddress {
    type Err = PortalError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // Neither a host nor a port contains a comma, so the last one starts
        // the tag.
        let (addr, tpgt) = match s.rsplit_once(',') {
            Some((addr, tag)) => {
                // RFC 7143 section 13.8: "The formats for the port and
                // portal-group-tag are the same as the one specified in
                // TargetPortalGroupTag" (a 16-bit binary-value).
                let tpgt = value::parse_number(tag)
                    .ok()
                    .and_then(|n| u16::try_from(n).ok())
                    .ok_or_else(|| PortalError::InvalidTpgt { input: tag.to_owned() })?;
                (addr, Some(tpgt))
            }
            None => (s, None),
        };
        Ok(TargetAddress { portal: addr.parse()?, tpgt })
    }
}

impl fmt::Display for TargetAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.tpgt {
            Some(tag) => write!(f, "{},{tag}", self.portal),
            None => write!(f, "{}", self.portal),
        }
    }
}

/// An invalid portal or target address.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PortalError {
    /// Nothing to parse.
    #[error("the portal address is empty (expected HOST, HOST:PORT or [IPv6]:PORT)")]
    Empty,
    /// The host part is wrong.
    #[error("invalid portal host in {input:?}: {reason}")]
    InvalidHost {
        /// The input.
        input: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// The port is not 1..=65535.
    #[error("invalid port {input:?}: expected a decimal number from 1 to 65535")]
    InvalidPort {
        /// The port text.
        input: String,
    },
    /// The portal group tag is not a 16-bit number.
    #[error("invalid portal group tag {input:?}: expected a number from 0 to 65535 (RFC 7143 section 13.9)")]
    InvalidTpgt {
        /// The tag text.
        input: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ip(s: &str) -> Host {
        Host::Ip(s.parse().unwrap())
    }

    #[test]
    fn parses_portals_rfc7143_13_8() {
        let cases: &[(&str, Host, u16, &str)] = &[
            ("192.0.2.10", ip("192.0.2.10"), 3260, "192.0.2.10:3260"),
            ("192.0.2.10:3261", ip("192.0.2.10"), 3261, "192.0.2.10:3261"),
            ("[2001:db8::10]", ip("2001:db8::10"), 3260, "[2001:db8::10]:3260"),
            ("[2001:db8::10]:860", ip("2001:db8::10"), 860, "[2001:db8::10]:860"),
            ("2001:db8::10", ip("2001:db8::10"), 3260, "[2001:db8::10]:3260"),
            ("::1", ip("::1"), 3260, "[::1]:3260"),
            ("[::ffff:192.0.2.1]", ip("::ffff:192.0.2.1"), 3260, "[::ffff:192.0.2.1]:3260"),
            ("san.example.com", Host::Dns("san.example.com".into()), 3260, "san.example.com:3260"),
            ("SAN-1.Example.COM:3260", Host::Dns("san-1.example.com".into()), 3260, "san-1.example.com:3260"),
            ("localhost:65535", Host::Dns("localhost".into()), 65535, "localhost:65535"),
            ("1a.example", Host::Dns("1a.example".into()), 3260, "1a.example:3260"),
        ];
        for (s, host, port, shown) in cases {
            let p: Portal = s.parse().unwrap_or_else(|e| panic!("{s}: {e}"));
            assert_eq!((p.host(), p.port()), (host, *port), "{s}");
            assert_eq!(p.to_string(), *shown);
            assert_eq!(shown.parse::<Portal>().unwrap(), p, "round trip of {s}");
        }
        assert_eq!("192.0.2.10:1".parse::<Portal>().unwrap().socket_addr(), Some("192.0.2.10:1".parse().unwrap()));
    }

    #[test]
    fn rejects_bad_portals() {
        let cases: &[(&str, &str)] = &[
            ("", "empty"),
            (":3260", "empty"),
            ("0.0.0.0", "unspecified"),
            ("0.0.0.0:3260", "unspecified"),
            ("[::]", "unspecified"),
            ("::", "unspecified"),
            ("224.0.0.1", "multicast"),
            ("[ff02::1]:3260", "multicast"),
            ("255.255.255.255", "broadcast"),
            ("192.0.2.1:0", "invalid port"),
            ("192.0.2.1:65536", "invalid port"),
            ("192.0.2.1:+80", "invalid port"),
            ("192.0.2.1:", "invalid port"),
            ("192.0.2.1:80:81", "not an IPv6"),
            ("192.0.2.256", "not a valid IPv4"),
            ("1.2.3", "not a valid IPv4"),
            ("[2001:db8::1", "without ']'"),
            ("[192.0.2.1]", "inside the brackets"),
            ("[::1]x", "only ':PORT'"),
            ("2001:db8::1:3260x", "not an IPv6"),
            ("host_name", "only letters"),
            ("host name", "only letters"),
            ("-host.example", "start or end"),
            ("host..example", "empty DNS label"),
            ("example.com.", "empty DNS label"),
        ];
        for (s, msg) in cases {
            let e = s.parse::<Portal>().unwrap_err();
            assert!(e.to_string().contains(msg), "{s:?}: {e}");
        }
        let long_label = format!("{}.example", "a".repeat(64));
        assert!(long_label.parse::<Portal>().is_err());
        let long_name = vec!["a".repeat(60); 5].join(".");
        assert!(long_name.parse::<Portal>().unwrap_err().to_string().contains("253"));
    }

    #[test]
    fn target_addresses_rfc7143_13_8() {
        // The RFC's own examples, plus the seeds' G7 form.
        let cases: &[(&str, &str, Option<u16>)] = &[
            ("10.0.0.1:5003,1", "10.0.0.1:5003", Some(1)),
            ("[1080:0:0:0:8:800:200C:417A],65", "[1080::8:800:200c:417a]:3260", Some(65)),
            ("[1080::8:800:200C:417A]:5003,1", "[1080::8:800:200c:417a]:5003", Some(1)),
            ("computingcenter.example.com,23", "computingcenter.example.com:3260", Some(23)),
            ("[2001:db8::10]:3260,1", "[2001:db8::10]:3260", Some(1)),
            ("192.0.2.7", "192.0.2.7:3260", None),
            ("192.0.2.7:3260,0x10", "192.0.2.7:3260", Some(16)),
            ("192.0.2.7:3260,65535", "192.0.2.7:3260", Some(65535)),
        ];
        for (s, portal, tpgt) in cases {
            let a: TargetAddress = s.parse().unwrap_or_else(|e| panic!("{s}: {e}"));
            assert_eq!(a.portal().to_string(), *portal, "{s}");
            assert_eq!(a.tpgt(), *tpgt, "{s}");
            assert_eq!(a.to_string().parse::<TargetAddress>().unwrap(), a, "round trip of {s}");
        }
        for bad in ["192.0.2.7,65536", "192.0.2.7,", "192.0.2.7,x", ",1", "0.0.0.0:3260,1"] {
            assert!(bad.parse::<TargetAddress>().is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn portal_parse_never_panics(s in ".{0,80}") {
            let _ = s.parse::<Portal>();
            let _ = s.parse::<TargetAddress>();
        }

        #[test]
        fn display_round_trips(
            v4 in any::<[u8; 4]>(),
            v6 in any::<[u16; 8]>(),
            port in 1u16..,
            tag in proptest::option::of(any::<u16>()),
            dns in "[a-z][a-z0-9-]{0,10}[a-z0-9](\\.[a-z][a-z0-9]{0,8}){0,3}",
        ) {
            let hosts = [Host::Ip(IpAddr::from(v4)), Host::Ip(IpAddr::from(v6)), Host::Dns(dns)];
            for host in hosts {
                if let Ok(p) = Portal::new(host, port) {
                    prop_assert_eq!(p.to_string().parse::<Portal>().unwrap(), p.clone());
                    let a = TargetAddress::new(p, tag);
                    prop_assert_eq!(a.to_string().parse::<TargetAddress>().unwrap(), a);
                }
            }
        }
    }
}
