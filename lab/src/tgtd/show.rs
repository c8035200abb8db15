//! Parsers for the text `tgtadm` prints (tgt 1.0.85). Formats are quoted in
//! the docs of each type; the unit tests hold real captured output.

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::error::{Error, Result};

/// One line of indented `tgtadm` output with the lines indented below it.
#[derive(Debug)]
struct Node<'a> {
    text: &'a str,
    children: Vec<Node<'a>>,
}

/// Builds the indentation tree of `text` (any indentation width).
fn tree(text: &str) -> Vec<Node<'_>> {
    fn build<'a>(lines: &[(usize, &'a str)], i: &mut usize, indent: usize) -> Vec<Node<'a>> {
        let mut out = Vec::new();
        while let Some(&(level, text)) = lines.get(*i) {
            if level < indent {
                break;
            }
            *i += 1;
            let children = match lines.get(*i) {
                Some(&(next, _)) if next > level => build(lines, i, next),
                _ => Vec::new(),
            };
            out.push(Node { text, children });
        }
        out
    }
    let lines: Vec<(usize, &str)> =
        text.lines().filter(|l| !l.trim().is_empty()).map(|l| (l.len() - l.trim_start().len(), l.trim())).collect();
    build(&lines, &mut 0, 0)
}

impl<'a> Node<'a> {
    /// The value of `key: value` if this line has that key.
    fn value(&self, key: &str) -> Option<&'a str> {
        let rest = self.text.strip_prefix(key)?.strip_prefix(':')?;
        Some(rest.trim())
    }

    /// The value of the first child line with `key`.
    fn child(&self, key: &str) -> Option<&'a str> {
        self.children.iter().find_map(|c| c.value(key))
    }

    fn section(&self, title: &str) -> Option<&Node<'a>> {
        self.children.iter().find(|c| c.text == title)
    }
}

fn number<T: std::str::FromStr>(what: &str, field: &str, s: &str, text: &str) -> Result<T> {
    s.trim().parse().map_err(|_| Error::parse(what, format!("bad {field} {s:?}"), text))
}

fn required<'a>(what: &str, field: &str, v: Option<&'a str>, text: &str) -> Result<&'a str> {
    v.ok_or_else(|| Error::parse(what, format!("missing {field}"), text))
}

/// One connection of `tgtadm --mode conn --op show --tid T`, which prints
/// (every session of the target, every connection, nothing else):
///
/// ```text
/// Session: 6
///     Connection: 1
///         Initiator: iqn.2026-11.test.mpio:py
///         IP Address: 127.0.0.1
/// ```
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnectionInfo {
    /// tgtd's session id: the session's TSIH as a number (see the module
    /// docs of [`crate::tgtd`] about its byte order on the wire).
    pub sid: u32,
    /// The connection's CID as sent by the initiator.
    pub cid: u32,
    /// The initiator's iSCSI name.
    pub initiator: String,
    /// The initiator's (peer) IP address, not the portal.
    pub address: IpAddr,
}

/// A session with its connections, grouped from [`ConnectionInfo`]s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// tgtd's session id (TSIH).
    pub sid: u32,
    /// The initiator's iSCSI name.
    pub initiator: String,
    /// `(cid, peer address)` of each connection, sorted by CID.
    pub connections: Vec<(u32, IpAddr)>,
}

pub(crate) fn parse_connections(text: &str) -> Result<Vec<ConnectionInfo>> {
    const WHAT: &str = "tgtadm --mode conn --op show";
    let mut out = Vec::new();
    for session in tree(text) {
        let sid = required(WHAT, "Session", session.value("Session"), text)?;
        let sid = number(WHAT, "session id", sid, text)?;
        for conn in &session.children {
            let cid = required(WHAT, "Connection", conn.value("Connection"), text)?;
            let initiator = required(WHAT, "Initiator", conn.child("Initiator"), text)?;
            let address = required(WHAT, "IP Address", conn.child("IP Address"), text)?;
            out.push(ConnectionInfo {
                sid,
                cid: number(WHAT, "cid", cid, text)?,
                initiator: initiator.to_owned(),
                address: number(WHAT, "IP address", address, text)?,
            });
        }
    }
    out.sort();
    Ok(out)
}

pub(crate) fn group_sessions(conns: &[ConnectionInfo]) -> Vec<SessionInfo> {
    let mut out: Vec<SessionInfo> = Vec::new();
    for c in conns {
        match out.iter_mut().find(|s| s.sid == c.sid) {
            Some(s) => s.connections.push((c.cid, c.address)),
            None => out.push(SessionInfo {
                sid: c.sid,
                initiator: c.initiator.clone(),
                connections: vec![(c.cid, c.address)],
            }),
        }
    }
    for s in &mut out {
        s.connections.sort();
    }
    out.sort_by_key(|s| s.sid);
    out
}

/// One target of `tgtadm --mode target --op show`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetStatus {
    /// Target id.
    pub tid: u32,
    /// Target IQN.
    pub iqn: String,
    /// `ready` or `offline` (the `State:` line).
    pub state: String,
    /// The `I_T nexus information:` section: one entry per session, showing
    /// only the connection that logged in first (MC/S connections added
    /// later are not listed here; use [`ConnectionInfo`]).
    pub nexuses: Vec<NexusInfo>,
    /// Logical units, LUN 0 (tgt's controller LUN) included.
    pub luns: Vec<LunStatus>,
    /// Bound CHAP accounts; outgoing ones end in ` (outgoing)`.
    pub accounts: Vec<String>,
    /// ACL entries (`ALL`, addresses, initiator names).
    pub acl: Vec<String>,
}

/// An `I_T nexus:` entry of [`TargetStatus`]:
///
/// ```text
///         I_T nexus: 4
///             Initiator: iqn.2026-11.test.mpio:init alias: none
///             Connection: 0
///                 IP Address: 127.0.0.1
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NexusInfo {
    /// Session id (TSIH).
    pub sid: u32,
    /// Initiator name.
    pub initiator: String,
    /// InitiatorAlias, `None` when tgtd prints `none`.
    pub alias: Option<String>,
    /// CID of the connection that created the session.
    pub cid: u32,
    /// Peer address of that connection.
    pub address: IpAddr,
}

/// A `LUN:` entry of [`TargetStatus`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LunStatus {
    /// LUN number.
    pub lun: u32,
    /// Device type (`disk`, `controller`, ...).
    pub device_type: String,
    /// Size in decimal megabytes as printed (`Size: 67 MB`), rounded by tgtd.
    pub size_mb: u64,
    /// Logical block size in bytes.
    pub block_size: u32,
    /// `Online: Yes|No` (set with `--params online=0|1`).
    pub online: bool,
    /// Backing store type (`rdwr`, `null`, ...).
    pub backing_type: String,
    /// Backing store path, `None` when tgtd prints `None`.
    pub backing_path: Option<String>,
}

pub(crate) fn parse_targets(text: &str) -> Result<Vec<TargetStatus>> {
    const WHAT: &str = "tgtadm --mode target --op show";
    let mut out = Vec::new();
    for node in tree(text) {
        let Some(rest) = node.text.strip_prefix("Target ") else {
            return Err(Error::parse(WHAT, format!("unexpected line {:?}", node.text), text));
        };
        let (tid, iqn) =
            rest.split_once(':').ok_or_else(|| Error::parse(WHAT, format!("bad target line {:?}", node.text), text))?;
        let system = node.section("System information:");
        let state = required(WHAT, "State", system.and_then(|s| s.child("State")), text)?;
        let mut nexuses = Vec::new();
        for n in node.section("I_T nexus information:").map_or(&[][..], |s| &s.children) {
            let sid = required(WHAT, "I_T nexus", n.value("I_T nexus"), text)?;
            let who = required(WHAT, "Initiator", n.child("Initiator"), text)?;
            let (initiator, alias) = match who.rsplit_once(" alias: ") {
                Some((i, "none")) => (i, None),
                Some((i, a)) => (i, Some(a.to_owned())),
                None => (who, None),
            };
            let conn = n
                .children
                .iter()
                .find(|c| c.value("Connection").is_some())
                .ok_or_else(|| Error::parse(WHAT, "nexus without Connection", text))?;
            let cid = conn.value("Connection").unwrap_or_default();
            let address = required(WHAT, "IP Address", conn.child("IP Address"), text)?;
            nexuses.push(NexusInfo {
                sid: number(WHAT, "sid", sid, text)?,
                initiator: initiator.to_owned(),
                alias,
                cid: number(WHAT, "cid", cid, text)?,
                address: number(WHAT, "IP address", address, text)?,
            });
        }
        let mut luns = Vec::new();
        for l in node.section("LUN information:").map_or(&[][..], |s| &s.children) {
            let lun = required(WHAT, "LUN", l.value("LUN"), text)?;
            // "Size: 67 MB, Block size: 512"
            let size = required(WHAT, "Size", l.child("Size"), text)?;
            let (mb, bs) = size
                .split_once(" MB, Block size: ")
                .ok_or_else(|| Error::parse(WHAT, format!("bad Size line {size:?}"), text))?;
            let path = required(WHAT, "Backing store path", l.child("Backing store path"), text)?;
            luns.push(LunStatus {
                lun: number(WHAT, "LUN", lun, text)?,
                device_type: required(WHAT, "Type", l.child("Type"), text)?.to_owned(),
                size_mb: number(WHAT, "size", mb, text)?,
                block_size: number(WHAT, "block size", bs, text)?,
                online: required(WHAT, "Online", l.child("Online"), text)? == "Yes",
                backing_type: l.child("Backing store type").unwrap_or_default().to_owned(),
                backing_path: (path != "None").then(|| path.to_owned()),
            });
        }
        let list = |title: &str| -> Vec<String> {
            node.section(title).map(|s| s.children.iter().map(|c| c.text.to_owned()).collect()).unwrap_or_default()
        };
        out.push(TargetStatus {
            tid: number(WHAT, "tid", tid, text)?,
            iqn: iqn.trim().to_owned(),
            state: state.to_owned(),
            nexuses,
            luns,
            accounts: list("Account information:"),
            acl: list("ACL information:"),
        });
    }
    Ok(out)
}

/// `key=value` lines, as printed by `--mode target --op show --tid T`
/// (target parameters) and `--mode session --op show --tid T --sid S`
/// (the session's negotiated parameters).
pub(crate) fn parse_params(what: &str, text: &str) -> Result<BTreeMap<String, String>> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            l.split_once('=')
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                .ok_or_else(|| Error::parse(what, format!("line without '=': {l:?}"), text))
        })
        .collect()
}

/// Counters of one connection, from `--mode session --op stat --tid T --sid S`:
///
/// ```text
/// sid cid rxdata_octets txdata_octets dataout_pdus datain_pdus cmd_pdus rsp_pdus
///   6   1           276           172            0           0        0        0
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnStats {
    /// Session id.
    pub sid: u32,
    /// Connection id.
    pub cid: u32,
    /// Bytes received by tgtd on this connection (all PDUs).
    pub rx_octets: u64,
    /// Bytes sent by tgtd on this connection.
    pub tx_octets: u64,
    /// Data-Out PDUs received.
    pub dataout_pdus: u64,
    /// Data-In PDUs sent.
    pub datain_pdus: u64,
    /// SCSI Command PDUs received (also those dropped while offline).
    pub cmd_pdus: u64,
    /// SCSI Response PDUs sent.
    pub rsp_pdus: u64,
}

/// Per-LU counters of one session (same `stat` output, first table):
///
/// ```text
/// tgt lun sid rd_subm(bytes,cmds) rd_done(bytes,cmds) wr_subm(bytes,cmds) wr_done(bytes,cmds) errs
///   1   1  17    860356640  26257    860356640  26257            0      0            0      0    1
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LunStats {
    /// Target id.
    pub tid: u32,
    /// LUN.
    pub lun: u32,
    /// Session id.
    pub sid: u32,
    /// Bytes read, completed.
    pub read_bytes: u64,
    /// READ commands completed.
    pub read_cmds: u64,
    /// Bytes written, completed.
    pub write_bytes: u64,
    /// WRITE commands completed.
    pub write_cmds: u64,
    /// Commands that ended in an error status.
    pub errors: u64,
}

/// Both tables of `--mode session --op stat`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionStats {
    /// One entry per LU of the target.
    pub luns: Vec<LunStats>,
    /// One entry per connection of the session.
    pub connections: Vec<ConnStats>,
}

pub(crate) fn parse_session_stats(text: &str) -> Result<SessionStats> {
    const WHAT: &str = "tgtadm --mode session --op stat";
    let mut stats = SessionStats::default();
    let mut table = "";
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if line.starts_with("tgt lun sid") || line.starts_with("sid cid") {
            table = if line.starts_with("tgt") { "lun" } else { "conn" };
            continue;
        }
        let f: Vec<u64> = line.split_whitespace().map(|w| number(WHAT, "counter", w, text)).collect::<Result<_>>()?;
        let id = |i: usize| u32::try_from(f[i]).unwrap_or(u32::MAX);
        match (table, f.len()) {
            ("lun", 12) => stats.luns.push(LunStats {
                tid: id(0),
                lun: id(1),
                sid: id(2),
                read_bytes: f[5],
                read_cmds: f[6],
                write_bytes: f[9],
                write_cmds: f[10],
                errors: f[11],
            }),
            ("conn", 8) => stats.connections.push(ConnStats {
                sid: id(0),
                cid: id(1),
                rx_octets: f[2],
                tx_octets: f[3],
                dataout_pdus: f[4],
                datain_pdus: f[5],
                cmd_pdus: f[6],
                rsp_pdus: f[7],
            }),
            _ => {
                return Err(Error::parse(WHAT, format!("unexpected line {line:?}"), text));
            }
        }
    }
    stats.luns.sort_by_key(|l| l.lun);
    stats.connections.sort_by_key(|c| c.cid);
    Ok(stats)
}

/// `Portal: 127.0.0.2:3260,1` lines of `--mode portal --op show` as
/// `(address:port, tpgt)`.
pub(crate) fn parse_portals(text: &str) -> Result<Vec<(String, u32)>> {
    const WHAT: &str = "tgtadm --mode portal --op show";
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let p = l
                .trim()
                .strip_prefix("Portal: ")
                .and_then(|p| p.rsplit_once(','))
                .ok_or_else(|| Error::parse(WHAT, format!("bad line {l:?}"), text))?;
            Ok((p.0.to_owned(), number(WHAT, "tpgt", p.1, text)?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONN_SHOW: &str = "\
Session: 6
    Connection: 1
        Initiator: iqn.2026-11.test.mpio:py
        IP Address: 127.0.0.1
Session: 6
    Connection: 0
        Initiator: iqn.2026-11.test.mpio:py
        IP Address: 127.0.0.1
Session: 9
    Connection: 0
        Initiator: iqn.2026-11.test.mpio:init
        IP Address: 127.0.0.3
";

    #[test]
    fn connections_and_sessions() {
        let conns = parse_connections(CONN_SHOW).unwrap();
        assert_eq!(conns.len(), 3);
        assert_eq!(
            conns[0],
            ConnectionInfo {
                sid: 6,
                cid: 0,
                initiator: "iqn.2026-11.test.mpio:py".into(),
                address: "127.0.0.1".parse().unwrap(),
            }
        );
        let sessions = group_sessions(&conns);
        assert_eq!(sessions.len(), 2);
        assert_eq!(sessions[0].connections.len(), 2);
        assert_eq!(sessions[1].initiator, "iqn.2026-11.test.mpio:init");
        assert!(parse_connections("").unwrap().is_empty());
        assert!(parse_connections("Session: x\n").is_err());
    }

    const TARGET_SHOW: &str = "\
Target 1: iqn.2026-11.test.mpio:exp1
    System information:
        Driver: iscsi
        State: offline
    I_T nexus information:
        I_T nexus: 4
            Initiator: iqn.2026-11.test.mpio:init alias: none
            Connection: 0
                IP Address: 127.0.0.1
    LUN information:
        LUN: 0
            Type: controller
            SCSI ID: IET     00010000
            SCSI SN: beaf10
            Size: 0 MB, Block size: 1
            Online: Yes
            Removable media: No
            Prevent removal: No
            Readonly: No
            SWP: No
            Thin-provisioning: No
            Backing store type: null
            Backing store path: None
            Backing store flags:
        LUN: 1
            Type: disk
            SCSI ID: IET     00010001
            SCSI SN: beaf11
            Size: 67 MB, Block size: 4096
            Online: No
            Removable media: No
            Prevent removal: No
            Readonly: No
            SWP: No
            Thin-provisioning: No
            Backing store type: rdwr
            Backing store path: /tmp/exp/lun1.img
            Backing store flags:
    Account information:
        u1
        t1 (outgoing)
    ACL information:
        ALL
Target 2: iqn.2026-11.test.mpio:empty
    System information:
        Driver: iscsi
        State: ready
    I_T nexus information:
    LUN information:
        LUN: 0
            Type: controller
            SCSI ID: IET     00020000
            SCSI SN: beaf20
            Size: 0 MB, Block size: 1
            Online: Yes
            Removable media: No
            Prevent removal: No
            Readonly: No
            SWP: No
            Thin-provisioning: No
            Backing store type: null
            Backing store path: None
            Backing store flags:
    Account information:
    ACL information:
";

    #[test]
    fn targets() {
        let t = parse_targets(TARGET_SHOW).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].tid, 1);
        assert_eq!(t[0].iqn, "iqn.2026-11.test.mpio:exp1");
        assert_eq!(t[0].state, "offline");
        assert_eq!(
            t[0].nexuses,
            vec![NexusInfo {
                sid: 4,
                initiator: "iqn.2026-11.test.mpio:init".into(),
                alias: None,
                cid: 0,
                address: "127.0.0.1".parse().unwrap(),
            }]
        );
        let lun1 = &t[0].luns[1];
        assert_eq!((lun1.lun, lun1.size_mb, lun1.block_size), (1, 67, 4096));
        assert!(!lun1.online);
        assert_eq!(lun1.backing_path.as_deref(), Some("/tmp/exp/lun1.img"));
        assert_eq!(t[0].luns[0].backing_path, None);
        assert_eq!(t[0].accounts, ["u1", "t1 (outgoing)"]);
        assert_eq!(t[0].acl, ["ALL"]);
        assert_eq!(t[1].state, "ready");
        assert!(t[1].nexuses.is_empty() && t[1].acl.is_empty());
    }

    #[test]
    fn session_stats() {
        let text = "\
tgt lun sid rd_subm(bytes,cmds) rd_done(bytes,cmds) wr_subm(bytes,cmds) wr_done(bytes,cmds) errs
  1   2  17            0      0            0      0            0      0            0      0    0
  1   1  17    860356640  26257    860356640  26257         4096      1         4096      1    1

sid cid rxdata_octets txdata_octets dataout_pdus datain_pdus cmd_pdus rsp_pdus
  6   1           276           172            0           0        0        0
  6   0           496           392            0           3        2        1
";
        let s = parse_session_stats(text).unwrap();
        assert_eq!(s.luns.len(), 2);
        assert_eq!(s.luns[0].lun, 1);
        assert_eq!((s.luns[0].read_cmds, s.luns[0].write_bytes, s.luns[0].errors), (26257, 4096, 1));
        assert_eq!(s.connections[0].cid, 0);
        assert_eq!(s.connections[0].datain_pdus, 3);
        assert_eq!(s.connections[1].rx_octets, 276);
    }

    #[test]
    fn params_and_portals() {
        let p = parse_params("x", "nop_interval=0\nHeaderDigest=CRC32C\n").unwrap();
        assert_eq!(p["HeaderDigest"], "CRC32C");
        assert!(parse_params("x", "oops\n").is_err());
        let portals = parse_portals("Portal: 127.0.0.2:13260,1\nPortal: [::1]:3260,1\n").unwrap();
        assert_eq!(portals, [("127.0.0.2:13260".to_owned(), 1), ("[::1]:3260".to_owned(), 1)]);
    }
}
