//! Network faults on loopback as RAII guards: [`Blackhole`] (iptables DROP)
//! and [`RateLimit`] (tc htb). Each guard touches only traffic to and from
//! one `address:port` (a tgtd portal), so parallel tests do not disturb each
//! other, and undoes itself on Drop, also while a test panics.
//!
//! A guard's rules carry its slot number ([`crate::slot`]): the iptables
//! comment `mpio-test-blackhole-<n>`, the tc class `6d70:<n>` and filter
//! priority `<n>`. Rules whose slot is no longer locked belong to a test
//! process that died without unwinding (SIGKILL, `panic = "abort"`) and are
//! removed by the next guard that is created.
//!
//! # What a blackhole does to a loopback connection (verified, kernel 6.18)
//!
//! All loopback packets pass the `OUTPUT` chain, so [`Blackhole`] inserts
//! two `OUTPUT` rules: `-d ADDR --dport PORT -j DROP` (initiator to target)
//! and `-s ADDR --sport PORT -j DROP` (target to initiator: ACKs, responses,
//! target NOP-Ins). A third rule, `INPUT -s ADDR --sport PORT -j DROP`, does
//! the same for a target on another machine (a test VM behind a TAP
//! device, [`crate::vm`]), whose packets to us pass `INPUT` only. With
//! these, an *established* connection goes completely silent:
//! * the initiator's `send` succeeds (data is queued), nothing is received,
//!   and **no error surfaces**: nothing within 30 s observed; the kernel
//!   keeps retransmitting with exponential backoff (`tcp_retries2` = 15,
//!   about 15 minutes). The initiator needs its own timeouts (NOP-Out,
//!   command timeout). `TCP_USER_TIMEOUT` = 3 s ends the connection after
//!   about 3.2 s, but only while unacknowledged data is outstanding; an idle
//!   connection stays up forever.
//! * a new `connect` to the portal hangs (SYNs dropped) until the client's
//!   connect timeout.
//! * after the guard drops, new connections work at once; an old connection
//!   resumes only at its next retransmission, which after a long blackhole
//!   can be tens of seconds away.
//!
//! Dropping only the initiator-to-target direction also silences an
//! established connection (requests never arrive), but target-sent NOP-Ins
//! and ACKs would still get through.

use std::net::{SocketAddr, SocketAddrV4};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use crate::cmd::{self, run};
use crate::error::{Error, Result};
use crate::slot::{self, Slot};

const CMD_TIMEOUT: Duration = Duration::from_secs(30);
const SLOTS: std::ops::RangeInclusive<u32> = 1..=0xfff;
const BLACKHOLE_KIND: &str = "blackhole";
const COMMENT_PREFIX: &str = "mpio-test-blackhole-";
const RATELIMIT_KIND: &str = "ratelimit";
/// Major number of the htb root qdisc on `lo` ("mp").
pub const TC_HANDLE: &str = "6d70";

fn v4(addr: SocketAddr) -> Result<SocketAddrV4> {
    match addr {
        SocketAddr::V4(a) => Ok(a),
        SocketAddr::V6(_) => Err(Error::Environment(format!("netfault supports IPv4 only, got {addr}"))),
    }
}

/// The iptables binary that works here (`iptables`, else `iptables-nft`,
/// else `iptables-legacy`), checked once per process with `-S OUTPUT`.
/// Fails with an error naming the package or the kernel problem.
pub fn iptables() -> Result<&'static str> {
    static FOUND: OnceLock<std::result::Result<&'static str, String>> = OnceLock::new();
    let found = FOUND.get_or_init(|| {
        let mut problems = Vec::new();
        for bin in ["iptables", "iptables-nft", "iptables-legacy"] {
            match run(Command::new(bin).args(["-w", "-S", "OUTPUT"]), CMD_TIMEOUT) {
                Ok(out) if out.success() => return Ok(bin),
                Ok(out) => problems.push(format!("`{bin} -S OUTPUT`: {}", out.stderr.trim())),
                Err(Error::MissingTool { .. }) => {}
                Err(e) => problems.push(e.to_string()),
            }
        }
        Err(if problems.is_empty() {
            "iptables not found: install the Debian package `iptables` \
             (scripts/install-test-deps.sh)"
                .to_owned()
        } else {
            format!("iptables does not work here (root? kernel nf_tables/ip_tables?): {}", problems.join("; "))
        })
    });
    found.clone().map_err(Error::Environment)
}

/// Checks that `tc` runs and can read `lo`'s qdiscs; errors name the
/// package (`iproute2`) or tc's complaint.
pub fn check_tc() -> Result<()> {
    static FOUND: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    FOUND
        .get_or_init(|| {
            cmd::run_ok(Command::new("tc").args(["qdisc", "show", "dev", "lo"]), CMD_TIMEOUT)
                .map(drop)
                .map_err(|e| e.to_string())
        })
        .clone()
        .map_err(Error::Environment)
}

fn run_ok(program: &str, args: &[String]) -> Result<String> {
    cmd::run_ok(Command::new(program).args(args), CMD_TIMEOUT)
}

/// Drops every TCP packet to and from one `address:port` on this host;
/// see the [module docs](self) for what the peers see. Undone on Drop.
#[derive(Debug)]
pub struct Blackhole {
    addr: SocketAddrV4,
    iptables: &'static str,
    rules: Vec<Vec<String>>,
    slot: Option<Slot>,
}

impl Blackhole {
    /// Inserts the DROP rules at the top of `OUTPUT` and `INPUT`.
    pub fn new(addr: SocketAddr) -> Result<Blackhole> {
        let addr = v4(addr)?;
        let iptables = iptables()?;
        let _lock = slot::lock_global("iptables")?;
        sweep_stale_blackholes(iptables);
        let slot = slot::acquire(BLACKHOLE_KIND, SLOTS, &[])?;
        let comment = format!("{COMMENT_PREFIX}{}", slot.number());
        let (ip, port) = (addr.ip().to_string(), addr.port().to_string());
        let rule = |chain: &str, host: &str, port_opt: &str| -> Vec<String> {
            let words =
                [chain, "-p", "tcp", host, &ip, port_opt, &port, "-m", "comment", "--comment", &comment, "-j", "DROP"];
            words.iter().map(|w| w.to_string()).collect()
        };
        let mut guard = Blackhole { addr, iptables, rules: Vec::new(), slot: Some(slot) };
        for r in [rule("OUTPUT", "-d", "--dport"), rule("OUTPUT", "-s", "--sport"), rule("INPUT", "-s", "--sport")] {
            let mut args = vec!["-w".to_owned(), "-I".to_owned()];
            args.extend(r.iter().cloned());
            run_ok(iptables, &args)?; // on error, Drop removes the rules made so far
            guard.rules.push(r);
        }
        Ok(guard)
    }

    /// The blackholed address.
    pub fn addr(&self) -> SocketAddr {
        self.addr.into()
    }

    /// Packets the rules dropped so far: `(to the address, from it)`, from
    /// the rules' counters (`iptables -S -v`).
    pub fn dropped_packets(&self) -> Result<(u64, u64)> {
        let text = run_ok(self.iptables, &["-w".into(), "-S".into(), "-v".into()])?;
        let comment = self.rules.first().and_then(|r| r.iter().skip_while(|w| *w != "--comment").nth(1).cloned());
        let comment = comment.unwrap_or_default();
        count_dropped(&text, &comment).map_err(|detail| Error::parse("iptables -S -v", detail, &text))
    }

    /// Removes the rules now, reporting errors (Drop only prints them).
    pub fn remove(mut self) -> Result<()> {
        self.remove_rules()
    }

    fn remove_rules(&mut self) -> Result<()> {
        let mut first_error = None;
        for r in self.rules.drain(..) {
            let mut args = vec!["-w".to_owned(), "-D".to_owned()];
            args.extend(r);
            if let Err(e) = run_ok(self.iptables, &args) {
                first_error.get_or_insert(e);
            }
        }
        self.slot = None;
        first_error.map_or(Ok(()), Err)
    }
}

impl Drop for Blackhole {
    fn drop(&mut self) {
        if let Err(e) = self.remove_rules() {
            eprintln!("warning: removing blackhole of {}: {e}", self.addr);
        }
    }
}

/// The `iptables -S` lines (any chain) of live or leftover [`Blackhole`]s
/// that match `addr` (to check that nothing is left behind).
pub fn blackhole_rules(addr: SocketAddr) -> Result<Vec<String>> {
    let addr = v4(addr)?;
    let text = run_ok(iptables()?, &["-w".into(), "-S".into()])?;
    let host = format!("{}/32", addr.ip());
    let port = addr.port().to_string();
    Ok(text
        .lines()
        .filter(|l| l.contains(COMMENT_PREFIX))
        .filter(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            w.contains(&host.as_str()) && w.contains(&port.as_str())
        })
        .map(str::to_owned)
        .collect())
}

/// Sums the `-c PACKETS BYTES` counters of the rules with `comment`:
/// `(--dport rules, --sport rules)`.
fn count_dropped(text: &str, comment: &str) -> std::result::Result<(u64, u64), String> {
    let (mut to, mut from) = (0, 0);
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().map(|w| w.trim_matches('"')).collect();
        if !words.windows(2).any(|w| w[0] == "--comment" && w[1] == comment) {
            continue;
        }
        let packets = words
            .iter()
            .position(|w| *w == "-c")
            .and_then(|i| words.get(i + 1))
            .and_then(|n| n.parse::<u64>().ok())
            .ok_or_else(|| format!("no packet counter in {line:?}"))?;
        if words.contains(&"--dport") {
            to += packets;
        } else {
            from += packets;
        }
    }
    Ok((to, from))
}

/// Deletes blackhole rules whose slot nobody holds (best effort: a rule
/// another process deletes at the same time is not an error).
fn sweep_stale_blackholes(iptables: &str) {
    let Ok(text) = run_ok(iptables, &["-w".into(), "-S".into()]) else {
        return;
    };
    for line in text.lines() {
        let words: Vec<String> = line.split_whitespace().map(|w| w.trim_matches('"').to_owned()).collect();
        let slot = words.iter().find_map(|w| w.strip_prefix(COMMENT_PREFIX)).and_then(|n| n.parse::<u32>().ok());
        let Some(n) = slot else { continue };
        if words.first().map(String::as_str) != Some("-A") || slot::is_held(BLACKHOLE_KIND, n).unwrap_or(true) {
            continue;
        }
        let mut args = vec!["-w".to_owned(), "-D".to_owned()];
        args.extend(words.into_iter().skip(1));
        if run_ok(iptables, &args).is_ok() {
            eprintln!("removed leftover iptables rule: {line}");
        }
    }
}

/// Limits TCP traffic to and from one `address:port` to a rate, in both
/// directions together, with an htb class on `lo`. Undone on Drop.
///
/// While any `RateLimit` exists, `lo` has an htb root qdisc (`6d70:`) whose
/// unclassified traffic passes unshaped (htb `default 0`); the last guard
/// removes it. Measured here: a limit of 10 MB/s gives 10.0 MB/s for a bulk
/// TCP transfer, while another port on the same address ran at 2 GB/s.
#[derive(Debug)]
pub struct RateLimit {
    addr: SocketAddrV4,
    bytes_per_sec: u64,
    slot: Option<Slot>,
}

impl RateLimit {
    /// Installs the limit (`bytes_per_sec`, bytes per second).
    pub fn new(addr: SocketAddr, bytes_per_sec: u64) -> Result<RateLimit> {
        let addr = v4(addr)?;
        check_tc()?;
        if bytes_per_sec == 0 {
            return Err(Error::Environment("RateLimit of 0 bytes/s: use a Blackhole".into()));
        }
        let lock = slot::lock_global("tc")?;
        ensure_root_qdisc()?;
        sweep_stale_classes();
        let slot = slot::acquire(RATELIMIT_KIND, SLOTS, &[])?;
        let n = slot.number();
        if let Err(e) = add_class(n, addr, bytes_per_sec) {
            let _ = remove_class(n);
            if class_minors().is_ok_and(|c| c.is_empty()) {
                let _ = tc(&["qdisc", "del", "dev", "lo", "root"]);
            }
            return Err(e);
        }
        drop(lock);
        Ok(RateLimit { addr, bytes_per_sec, slot: Some(slot) })
    }

    /// The limited address.
    pub fn addr(&self) -> SocketAddr {
        self.addr.into()
    }

    /// The limit in bytes per second.
    pub fn bytes_per_sec(&self) -> u64 {
        self.bytes_per_sec
    }

    /// The tc class id, e.g. `6d70:1`.
    pub fn class_id(&self) -> String {
        format!("{TC_HANDLE}:{:x}", self.slot.as_ref().map_or(0, Slot::number))
    }

    /// Changes the rate. What the class has queued stays queued and
    /// leaves at the new rate (removing the limit instead drops it): a
    /// crawl followed by a high rate delivers packets that left their
    /// socket long ago, as a congested network does.
    pub fn set_rate(&mut self, bytes_per_sec: u64) -> Result<()> {
        if bytes_per_sec == 0 {
            return Err(Error::Environment("RateLimit of 0 bytes/s: use a Blackhole".into()));
        }
        let bits = format!("{}bit", bytes_per_sec.saturating_mul(8));
        let class = self.class_id();
        let _lock = slot::lock_global("tc")?;
        tc(&[
            "class",
            "change",
            "dev",
            "lo",
            "parent",
            &root(),
            "classid",
            &class,
            "htb",
            "rate",
            &bits,
            "ceil",
            &bits,
        ])?;
        self.bytes_per_sec = bytes_per_sec;
        Ok(())
    }

    /// Packets the class holds now, waiting for their turn.
    pub fn backlog_packets(&self) -> Result<u64> {
        let text = tc(&["-s", "class", "show", "dev", "lo", "classid", &self.class_id()])?;
        parse_backlog_packets(&text).ok_or_else(|| {
            Error::Environment(format!("no backlog in `tc -s class show` of {}: {text:?}", self.class_id()))
        })
    }

    /// Removes the limit now, reporting errors (Drop only prints them).
    pub fn remove(mut self) -> Result<()> {
        self.uninstall()
    }

    fn uninstall(&mut self) -> Result<()> {
        let Some(slot) = self.slot.take() else {
            return Ok(());
        };
        let _lock = slot::lock_global("tc")?;
        let result = remove_class(slot.number());
        if class_minors()?.is_empty() {
            tc(&["qdisc", "del", "dev", "lo", "root"])?;
        }
        drop(slot);
        result
    }
}

impl Drop for RateLimit {
    fn drop(&mut self) {
        if let Err(e) = self.uninstall() {
            eprintln!("warning: removing rate limit of {}: {e}", self.addr);
        }
    }
}

/// Class `6d70:<n>` with the rate, and two u32 filters (prio `n`) sending
/// the packets to and from `addr` into it.
fn add_class(n: u32, addr: SocketAddrV4, bytes_per_sec: u64) -> Result<()> {
    let bits = format!("{}bit", bytes_per_sec.saturating_mul(8));
    let class = format!("{TC_HANDLE}:{n:x}");
    tc(&[
        "class",
        "add",
        "dev",
        "lo",
        "parent",
        &root(),
        "classid",
        &class,
        "htb",
        "rate",
        &bits,
        "ceil",
        &bits,
        "quantum",
        "65536",
    ])?;
    let (ip, port) = (format!("{}/32", addr.ip()), addr.port().to_string());
    for (host, port_sel) in [("dst", "dport"), ("src", "sport")] {
        tc(&[
            "filter",
            "add",
            "dev",
            "lo",
            "parent",
            &root(),
            "protocol",
            "ip",
            "prio",
            &n.to_string(),
            "u32",
            "match",
            "ip",
            host,
            &ip,
            "match",
            "ip",
            port_sel,
            &port,
            "0xffff",
            "flowid",
            &class,
        ])?;
    }
    Ok(())
}

fn root() -> String {
    format!("{TC_HANDLE}:")
}

fn tc(args: &[&str]) -> Result<String> {
    cmd::run_ok(Command::new("tc").args(args), CMD_TIMEOUT)
}

/// Class ids (`6d70:1f`) of live or leftover [`RateLimit`]s.
pub fn tc_classes() -> Result<Vec<String>> {
    Ok(class_minors()?.into_iter().map(|n| format!("{TC_HANDLE}:{n:x}")).collect())
}

/// How many tc filters on `lo` select traffic to or from `addr` (2 per
/// live [`RateLimit`]; 0 means nothing is left behind).
pub fn rate_limit_filters(addr: SocketAddr) -> Result<usize> {
    let addr = v4(addr)?;
    if !tc_root_installed()? {
        return Ok(0);
    }
    let text = tc(&["filter", "show", "dev", "lo", "parent", &root()])?;
    Ok(count_filters(&text, addr))
}

/// Counts the u32 filters in `tc filter show` output that match both the
/// address and the port of `addr`, as destination or as source.
fn count_filters(text: &str, addr: SocketAddrV4) -> usize {
    let ip = u32::from(*addr.ip());
    let port = u32::from(addr.port());
    let wanted = [
        [format!("{ip:08x}/ffffffff at 16"), format!("{port:08x}/0000ffff at 20")],
        [format!("{ip:08x}/ffffffff at 12"), format!("{:08x}/ffff0000 at 20", port << 16)],
    ];
    // Each filter is a "filter ... fh ..." line followed by its "match" lines.
    let mut filters: Vec<Vec<&str>> = Vec::new();
    for line in text.lines() {
        if let Some(m) = line.trim().strip_prefix("match ") {
            if let Some(f) = filters.last_mut() {
                f.push(m);
            }
        } else if line.starts_with("filter ") {
            filters.push(Vec::new());
        }
    }
    filters.iter().filter(|f| wanted.iter().any(|w| w.iter().all(|m| f.contains(&m.as_str())))).count()
}

/// The packet count of the first ` backlog <bytes>b <packets>p` line of
/// `tc -s class show` output.
fn parse_backlog_packets(text: &str) -> Option<u64> {
    let line = text.lines().map(str::trim).find(|l| l.starts_with("backlog "))?;
    let packets = line.split_whitespace().nth(2)?;
    packets.strip_suffix('p')?.parse().ok()
}

/// Minor numbers of the classes under our root qdisc.
fn class_minors() -> Result<Vec<u32>> {
    let text = tc(&["class", "show", "dev", "lo"])?;
    let prefix = format!("class htb {TC_HANDLE}:");
    Ok(text
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .filter_map(|r| r.split_whitespace().next())
        .filter_map(|minor| u32::from_str_radix(minor, 16).ok())
        .collect())
}

/// Whether `lo` has our htb root qdisc.
pub fn tc_root_installed() -> Result<bool> {
    let text = tc(&["qdisc", "show", "dev", "lo", "root"])?;
    Ok(text.starts_with(&format!("qdisc htb {TC_HANDLE}: root")))
}

fn ensure_root_qdisc() -> Result<()> {
    let text = tc(&["qdisc", "show", "dev", "lo", "root"])?;
    let first = text.lines().next().unwrap_or_default();
    if first.starts_with(&format!("qdisc htb {TC_HANDLE}: root")) {
        return Ok(());
    }
    if !first.starts_with("qdisc noqueue ") && !first.is_empty() {
        return Err(Error::Environment(format!(
            "lo already has a root qdisc that is not ours ({first:?}); \
             RateLimit needs `tc qdisc add dev lo root handle {TC_HANDLE}: htb`"
        )));
    }
    tc(&["qdisc", "add", "dev", "lo", "root", "handle", &root(), "htb"]).map(drop)
}

fn remove_class(n: u32) -> Result<()> {
    let filters = tc(&["filter", "del", "dev", "lo", "parent", &root(), "protocol", "ip", "prio", &n.to_string()]);
    let class = tc(&["class", "del", "dev", "lo", "classid", &format!("{TC_HANDLE}:{n:x}")]);
    filters.and(class).map(drop)
}

/// Removes classes (and their filters) whose slot nobody holds.
fn sweep_stale_classes() {
    for n in class_minors().unwrap_or_default() {
        if !slot::is_held(RATELIMIT_KIND, n).unwrap_or(true) && remove_class(n).is_ok() {
            eprintln!("removed leftover tc class {TC_HANDLE}:{n:x} on lo");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_dropped_packets_per_direction() {
        let text = "\
-P INPUT ACCEPT -c 10 20
-A INPUT -s 10.241.1.2/32 -p tcp -m tcp --sport 3264 -m comment --comment mpio-test-blackhole-2 -c 7 420 -j DROP
-A OUTPUT -s 10.241.1.2/32 -p tcp -m tcp --sport 3264 -m comment --comment mpio-test-blackhole-2 -c 0 0 -j DROP
-A OUTPUT -d 10.241.1.2/32 -p tcp -m tcp --dport 3264 -m comment --comment mpio-test-blackhole-2 -c 3 180 -j DROP
-A OUTPUT -d 10.241.1.2/32 -p tcp -m tcp --dport 3264 -m comment --comment mpio-test-blackhole-20 -c 99 9 -j DROP
";
        assert_eq!(count_dropped(text, "mpio-test-blackhole-2"), Ok((3, 7)));
    }

    #[test]
    fn counts_filters_of_one_address_and_port() {
        // `tc filter show dev lo parent 6d70:` with a limit on 127.0.0.3:23456
        let text = "\
filter protocol ip pref 5 u32 chain 0
filter protocol ip pref 5 u32 chain 0 fh 800: ht divisor 1
filter protocol ip pref 5 u32 chain 0 fh 800::800 order 2048 key ht 800 bkt 0 *flowid 6d70:5 not_in_hw
  match 7f000003/ffffffff at 16
  match 00005ba0/0000ffff at 20
filter protocol ip pref 5 u32 chain 0 fh 800::801 order 2049 key ht 800 bkt 0 *flowid 6d70:5 not_in_hw
  match 7f000003/ffffffff at 12
  match 5ba00000/ffff0000 at 20
";
        let count = |a: &str| count_filters(text, a.parse().unwrap());
        assert_eq!(count("127.0.0.3:23456"), 2);
        assert_eq!(count("127.0.0.3:23457"), 0);
        assert_eq!(count("127.0.0.4:23456"), 0);
    }

    #[test]
    fn reads_the_backlog_of_a_class() {
        // `tc -s class show dev lo classid 6d70:3` (iproute2 6.1)
        let text = "\
class htb 6d70:3 root prio 0 rate 8Kbit ceil 8Kbit burst 1599b cburst 1599b
 Sent 5302 bytes 25 pkt (dropped 0, overlimits 60 requeues 0)
 backlog 24816b 6p requeues 0
 lended: 25 borrowed: 0 giants: 0
 tokens: -24968750 ctokens: -24968750
";
        assert_eq!(parse_backlog_packets(text), Some(6));
        assert_eq!(parse_backlog_packets("class htb 6d70:3 root\n backlog 0b 0p requeues 0\n"), Some(0));
        assert_eq!(parse_backlog_packets("garbage"), None);
    }
}
