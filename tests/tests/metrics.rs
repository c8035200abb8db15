//! The Prometheus metrics (mpio-metrics), the Grafana dashboard and the
//! alert rules of dashboards/: the dashboard is well formed and its
//! queries parse, the alert rules pass `promtool check rules` and their
//! unit tests, every metric they use is served by a running exporter over
//! a real device on tgtd, counters move by exactly what a known workload
//! did, states and failover counters follow a disabled path and a reset
//! connection, and every family is there at zero before any login.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use mpio_metrics::{CONTENT_TYPE, DeviceView};
use mpio_mpath::{DeviceCore, PolicySpec, TimerConfig};
use mpio_mpath::{DeviceEvent, EventKind};
use mpio_testbed::require_root;
use mpio_testbed::tgtd::{LunSpec, TargetSpec, Tgtd};
use mpio_tests::mp::{device_config, open_all, reset_path, wait_device_event};
use mpio_tests::{INITIATOR, pattern};
use mpio_transport::{SessionConfig, SessionHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn dashboards() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../dashboards")
}

fn read(name: &str) -> String {
    std::fs::read_to_string(dashboards().join(name)).unwrap_or_else(|e| panic!("dashboards/{name}: {e}"))
}

// ---- the exposition, parsed ------------------------------------------------

/// One scrape: samples by name and labels, and the families' types.
#[derive(Debug, Default)]
struct Scrape {
    samples: BTreeMap<(String, BTreeMap<String, String>), f64>,
    types: BTreeMap<String, String>,
}

impl Scrape {
    fn parse(text: &str) -> Scrape {
        let mut s = Scrape::default();
        assert!(text.ends_with("# EOF\n"), "the exposition ends with # EOF");
        for line in text.lines() {
            if let Some(t) = line.strip_prefix("# TYPE ") {
                let (name, ty) = t.split_once(' ').expect("# TYPE name type");
                s.types.insert(name.into(), ty.into());
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("sample line {line:?}"));
            let value: f64 = value.parse().unwrap_or_else(|e| panic!("value in {line:?}: {e}"));
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, parse_labels(rest.strip_suffix('}').expect("labels end with }"))),
                None => (series, BTreeMap::new()),
            };
            let old = s.samples.insert((name.into(), labels), value);
            assert!(old.is_none(), "series {series} twice");
        }
        s
    }

    fn names(&self) -> BTreeSet<&str> {
        self.samples.keys().map(|(n, _)| n.as_str()).collect()
    }

    /// Sum of the series of `name` whose labels include `labels`.
    fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|((n, l), _)| n == name && labels.iter().all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v)))
            .map(|(_, v)| v)
            .sum()
    }

    /// The one series of `name` with exactly these labels.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let key = (name.to_string(), labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
        *self.samples.get(&key).unwrap_or_else(|| panic!("no series {name}{labels:?}"))
    }
}

/// `k="v",k2="v2"` (values escape `\`, `"` and newlines).
fn parse_labels(mut s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    while !s.is_empty() {
        let (key, rest) = s.split_once("=\"").expect("label=\"value\"");
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next().expect("closing quote") {
                (_, '\\') => match chars.next().expect("escaped char").1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                (i, '"') => break i,
                (_, c) => value.push(c),
            }
        };
        out.insert(key.to_string(), value);
        s = rest[end + 1..].strip_prefix(',').unwrap_or(&rest[end + 1..]);
    }
    out
}

/// GET `target` over a plain TCP connection (HTTP/1.1, Connection:
/// close): the headers (names in lower case) and the body of a 200 answer.
async fn http_get(addr: std::net::SocketAddr, target: &str) -> (BTreeMap<String, String>, String) {
    let mut tcp = TcpStream::connect(addr).await.unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    let req = format!("GET {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut raw)).await.expect("answered").unwrap();
    let raw = String::from_utf8(raw).expect("UTF-8 response");
    let (head, body) = raw.split_once("\r\n\r\n").expect("HTTP head and body");
    let mut lines = head.lines();
    assert_eq!(lines.next(), Some("HTTP/1.1 200 OK"), "GET {target}: {head}\n{body}");
    let headers: BTreeMap<String, String> =
        lines.filter_map(|l| l.split_once(": ")).map(|(k, v)| (k.to_ascii_lowercase(), v.to_string())).collect();
    if let Some(len) = headers.get("content-length") {
        assert_eq!(body.len(), len.parse::<usize>().unwrap(), "whole body received");
    }
    let body =
        if headers.get("transfer-encoding").is_some_and(|t| t == "chunked") { dechunk(body) } else { body.into() };
    (headers, body)
}

/// The payload of a chunked body (`size CRLF data CRLF ... 0 CRLF CRLF`).
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").expect("chunk size line");
        let size = usize::from_str_radix(size.split(';').next().unwrap().trim(), 16).expect("hex chunk size");
        if size == 0 {
            return out;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].strip_prefix("\r\n").expect("CRLF after a chunk");
    }
}

/// GET /metrics of the exporter.
async fn scrape(addr: std::net::SocketAddr) -> Scrape {
    let (headers, body) = http_get(addr, "/metrics").await;
    assert_eq!(headers.get("content-type").map(String::as_str), Some(CONTENT_TYPE));
    assert!(headers.contains_key("content-length"), "not chunked");
    Scrape::parse(&body)
}

/// `mpio_…` names mentioned in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("mpio_") {
        let tail = &rest[i..];
        let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
        // Not part of a longer identifier (e.g. `foo_mpio_x`).
        if i == 0 || !rest[..i].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_') {
            out.insert(tail[..end].to_string());
        }
        rest = &tail[end..];
    }
    out
}

// ---- the dashboard -----------------------------------------------------------

fn dashboard() -> serde_json::Value {
    serde_json::from_str(&read("mpio.json")).expect("dashboards/mpio.json is JSON")
}

/// Every target of every panel (rows hold none when expanded).
/// A panel target's query with Grafana's variables replaced as Grafana
/// does before sending it (every instance, device and path).
fn promql(target: &serde_json::Value) -> String {
    target["expr"]
        .as_str()
        .expect("expr")
        .replace("$__rate_interval", "1m")
        .replace("$instance", ".*")
        .replace("$device", ".*")
        .replace("$path", ".*")
}

fn targets(d: &serde_json::Value) -> Vec<(String, &serde_json::Value)> {
    let panels = d["panels"].as_array().expect("panels");
    let mut out = Vec::new();
    for p in panels {
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push((p["title"].as_str().unwrap_or("?").to_string(), t));
        }
    }
    out
}

/// Labels a query's result keeps: those of its `by (...)` clauses when it
/// aggregates, or any label of the metrics otherwise.
fn legend_labels_ok(expr: &str, legend: &str) -> Result<(), String> {
    const SERIES_LABELS: [&str; 13] = [
        "instance", "job", "device", "path", "state", "op", "cause", "cid", "portal", "result", "policy", "hold",
        "failback",
    ];
    let by: Vec<Vec<&str>> = expr
        .match_indices("by (")
        .map(|(i, m)| {
            let inner = &expr[i + m.len()..];
            inner[..inner.find(')').unwrap_or(inner.len())].split(',').map(str::trim).collect()
        })
        .collect();
    let mut rest = legend;
    while let Some(i) = rest.find("{{") {
        let close = rest[i..].find("}}").ok_or_else(|| format!("unclosed {{{{ in {legend:?}"))?;
        let label = rest[i + 2..i + close].trim();
        let kept = if by.is_empty() { SERIES_LABELS.contains(&label) } else { by.iter().all(|b| b.contains(&label)) };
        if !kept {
            return Err(format!("legend {legend:?} uses {label}, which {expr:?} does not keep"));
        }
        rest = &rest[i + close + 2..];
    }
    Ok(())
}

#[test]
fn dashboard_is_well_formed() {
    let d = dashboard();
    assert!(d["uid"].as_str().is_some_and(|u| !u.is_empty() && u.len() <= 40), "a stable uid");
    assert!(d["title"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(d["schemaVersion"].as_u64().is_some_and(|v| (36..=41).contains(&v)), "classic schema");
    let vars = d["templating"]["list"].as_array().expect("templating.list");
    let var = |name: &str| vars.iter().find(|v| v["name"] == name).unwrap_or_else(|| panic!("variable {name}"));
    assert_eq!(var("datasource")["type"], "datasource");
    assert_eq!(var("datasource")["query"], "prometheus");
    for name in ["device", "path"] {
        let v = var(name);
        assert_eq!(v["type"], "query", "{name}");
        assert_eq!(v["datasource"]["uid"], "${datasource}", "{name}");
        let q = v["query"]["query"].as_str().expect("variable query");
        assert!(q.starts_with("label_values(mpio_") && q.ends_with(&format!(", {name})")), "{name}: {q}");
    }

    let panels = d["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    let mut rows = Vec::new();
    for p in panels {
        let title = p["title"].as_str().expect("every panel has a title");
        assert!(ids.insert(p["id"].as_u64().expect("numeric id")), "panel id of {title} is unique");
        let g = &p["gridPos"];
        let (x, w) = (g["x"].as_u64().unwrap(), g["w"].as_u64().unwrap());
        assert!(x + w <= 24 && g["h"].as_u64().unwrap() > 0, "{title} fits the grid");
        if p["type"] == "row" {
            rows.push(title);
            continue;
        }
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{title}: data source from the variable");
        assert!(p["description"].as_str().is_some_and(|s| !s.is_empty()), "{title} says what it shows");
        assert!(p["fieldConfig"]["defaults"]["unit"].is_string(), "{title} has a unit");
        let targets = p["targets"].as_array().filter(|t| !t.is_empty()).unwrap_or_else(|| panic!("{title}: no query"));
        let mut refs = BTreeSet::new();
        for t in targets {
            assert!(refs.insert(t["refId"].as_str().expect("refId")), "{title}: refIds unique");
            assert_eq!(t["datasource"]["uid"], "${datasource}", "{title}");
            let expr = t["expr"].as_str().filter(|e| !e.is_empty()).unwrap_or_else(|| panic!("{title}: empty expr"));
            let legend = t["legendFormat"].as_str().filter(|l| !l.is_empty()).unwrap_or_else(|| panic!("{title}"));
            assert!(expr.contains("device=~\"$device\""), "{title}: {expr} follows the device variable");
            if legend.contains("{{path}}") {
                assert!(expr.contains("path=~\"$path\""), "{title}: {expr} follows the path variable");
            }
            if expr.contains("rate(") || expr.contains("increase(") {
                assert!(expr.contains("[$__rate_interval]"), "{title}: {expr} uses $__rate_interval");
            }
            if let Err(e) = legend_labels_ok(expr, legend) {
                panic!("{title}: {e}");
            }
        }
    }
    for want in ["overview", "states", "I/O", "Failover", "hold", "iSCSI"] {
        assert!(rows.iter().any(|r| r.contains(want)), "a row about {want}: {rows:?}");
    }
}

/// Runs promtool with `args` in dashboards/; panics with its output on
/// failure.
fn promtool(args: &[&str], dir: &Path) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("promtool (Debian package prometheus; scripts/install-test-deps.sh installs it)");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

#[test]
fn dashboard_queries_are_valid_promql() {
    // Each query as a recording rule, with Grafana's variables replaced
    // as Grafana does before sending it.
    let d = dashboard();
    let mut rules = Vec::new();
    for (i, (title, t)) in targets(&d).into_iter().enumerate() {
        let expr = promql(t);
        rules.push(
            serde_json::json!({ "record": format!("mpio:dashboard:{i}"), "expr": expr, "labels": { "panel": title } }),
        );
    }
    // A larger bad query must fail the same check, or the check proves nothing.
    let dir = std::env::temp_dir().join(format!("mpio-dashboard-promql-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = |name: &str, rules: &[serde_json::Value]| {
        let doc = serde_json::json!({ "groups": [{ "name": "dashboard", "rules": rules }] });
        std::fs::write(dir.join(name), doc.to_string()).unwrap();
    };
    file("good.json", &rules);
    let out = promtool(&["check", "rules", "good.json"], &dir);
    assert!(out.contains(&format!("{} rules found", rules.len())), "{out}");
    file("bad.json", &[serde_json::json!({ "record": "mpio:bad", "expr": "sum by (device (mpio_path_up)" })]);
    let bad = Command::new("promtool").args(["check", "rules", "bad.json"]).current_dir(&dir).output().unwrap();
    assert!(!bad.status.success(), "promtool accepts a broken query");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn alert_rules_pass_promtool_and_their_unit_tests() {
    let dir = dashboards();
    let out = promtool(&["check", "rules", "alerts.yml"], &dir);
    assert!(out.contains("SUCCESS: 4 rules found"), "{out}");
    let out = promtool(&["test", "rules", "alerts_test.yml"], &dir);
    assert!(out.contains("SUCCESS"), "{out}");
    // Every alert has a test where it fires.
    let (rules, tests) = (read("alerts.yml"), read("alerts_test.yml"));
    let alerts: Vec<&str> = rules.lines().filter_map(|l| l.trim().strip_prefix("- alert: ")).collect();
    assert_eq!(alerts.len(), 4, "{alerts:?}");
    for a in alerts {
        assert!(
            tests.contains(&format!("alertname: {a}\n        exp_alerts:\n          - exp_labels")),
            "{a} fires in a test"
        );
        assert!(tests.contains(&format!("alertname: {a}\n        exp_alerts: []")), "{a} stays silent in a test");
        let rule = rules.split("- alert: ").find(|r| r.starts_with(a)).unwrap();
        assert!(rule.contains("summary:") && rule.contains("description:"), "{a} has summary and description");
    }
}

// ---- a running exporter --------------------------------------------------------

/// Serves the metrics of `dev` on 127.0.0.1:0; the server stops when the
/// returned sender is dropped.
async fn exporter(dev: &mpio_mpath::Device) -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let dev = dev.clone();
    tokio::spawn(mpio_metrics::serve(listener, move || vec![dev.clone()], async move {
        let _ = stopped.await;
    }));
    (addr, stop)
}

fn path_state(s: &Scrape, path: &str) -> Vec<String> {
    s.samples
        .iter()
        .filter(|((n, l), v)| n == "mpio_path_state" && l["path"] == path && **v == 1.0)
        .map(|((_, l), _)| l["state"].clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_exporter_counts_a_known_workload_and_follows_failures() {
    require_root!();
    const N: u64 = 48;
    const M: u64 = 36; // N + M a multiple of the 3 paths: round robin gives each a third
    const KIB4: u64 = 4096;
    let tgtd =
        Tgtd::builder().portals(3).target(TargetSpec::new("metrics").lun(LunSpec::file(64 << 20))).start().unwrap();
    let dev = open_all(device_config(&tgtd, 1, 3)).await;
    let (addr, _stop) = exporter(&dev).await;

    // Every metric the dashboard and the alert rules use is served.
    let before = scrape(addr).await;
    let served = before.names();
    let mut used = metric_names(&read("mpio.json"));
    used.extend(metric_names(&read("alerts.yml")));
    for name in &used {
        let family = before.types.contains_key(name);
        assert!(served.contains(name.as_str()) || family, "{name} (dashboard or alerts) is not served: {served:?}");
    }

    // Paths, sessions and connections as the device has them.
    for (i, p) in ["p1", "p2", "p3"].iter().enumerate() {
        let l = [("device", "mp0"), ("path", *p)];
        assert_eq!(path_state(&before, p), ["active"], "{p}");
        assert_eq!(before.get("mpio_path_up", &l), 1.0, "{p}");
        assert_eq!(before.get("mpio_session_up", &l), 1.0, "{p}");
        let portal = tgtd.portal(i).to_string();
        let conn = [("device", "mp0"), ("path", *p), ("cid", "0"), ("portal", portal.as_str())];
        assert_eq!(before.get("mpio_connection_up", &conn), 1.0, "{p} through {portal}");
        assert!(before.sum("mpio_connection_logins_total", &[("path", p), ("result", "success")]) >= 1.0);
    }
    assert_eq!(
        before.get(
            "mpio_device_policy_info",
            &[("device", "mp0"), ("policy", "round-robin"), ("hold", "20s"), ("failback", "immediate")]
        ),
        1.0
    );

    // N writes and M reads of 4 KiB.
    for i in 0..N {
        dev.write(i * KIB4, pattern(i * KIB4, KIB4 as usize, 7), false).await.unwrap();
    }
    for i in 0..M {
        dev.read(i * KIB4, KIB4).await.unwrap();
    }
    let after = scrape(addr).await;
    let delta = |name: &str, labels: &[(&str, &str)]| after.sum(name, labels) - before.sum(name, labels);
    assert_eq!(delta("mpio_path_requests_total", &[("op", "write")]), N as f64);
    assert_eq!(delta("mpio_path_requests_total", &[("op", "read")]), M as f64);
    assert_eq!(delta("mpio_path_requests_total", &[]), (N + M) as f64, "nothing else");
    assert_eq!(delta("mpio_path_bytes_total", &[("op", "write")]), (N * KIB4) as f64);
    assert_eq!(delta("mpio_path_bytes_total", &[("op", "read")]), (M * KIB4) as f64);
    assert_eq!(delta("mpio_path_latency_seconds_count", &[]), (N + M) as f64);
    assert_eq!(delta("mpio_path_latency_seconds_bucket", &[("le", "+Inf")]), (N + M) as f64);
    assert!(delta("mpio_path_latency_seconds_sum", &[]) > 0.0);
    // Round robin: every path served a third.
    for p in ["p1", "p2", "p3"] {
        assert_eq!(delta("mpio_path_requests_total", &[("path", p)]), ((N + M) / 3) as f64, "{p}");
        assert_eq!(
            delta("mpio_path_latency_seconds_count", &[("path", p)]),
            delta("mpio_path_requests_total", &[("path", p)]),
            "{p}: one observation per request"
        );
    }
    // Each command is at least one PDU each way; the payloads crossed.
    assert!(delta("mpio_connection_pdus_sent_total", &[]) >= (N + M) as f64);
    assert!(delta("mpio_connection_pdus_received_total", &[]) >= (N + M) as f64);
    assert!(delta("mpio_connection_sent_bytes_total", &[]) >= (N * KIB4) as f64);
    assert!(delta("mpio_connection_received_data_bytes_total", &[]) >= (M * KIB4) as f64);
    assert_eq!(after.sum("mpio_path_outstanding_commands", &[]), 0.0, "all completed");
    assert_eq!(after.sum("mpio_connection_digest_errors_total", &[]), 0.0);

    // An administrator disables p2: its state, the up gauge, a failover.
    dev.disable_path("p2").unwrap();
    let disabled = scrape(addr).await;
    assert_eq!(path_state(&disabled, "p2"), ["disabled"]);
    assert_eq!(disabled.get("mpio_path_up", &[("device", "mp0"), ("path", "p2")]), 0.0);
    assert_eq!(disabled.get("mpio_path_failures_total", &[("device", "mp0"), ("path", "p2"), ("cause", "admin")]), 1.0);
    let failovers = |s: &Scrape| s.get("mpio_device_failovers_total", &[("device", "mp0")]);
    assert_eq!(failovers(&disabled) - failovers(&after), 1.0);

    // The target drops p1's connection: the path fails, reconnects and
    // comes back; the session and connection counters say so.
    let mut events = dev.events();
    reset_path(&tgtd, 1, 0).await;
    let p1 = |kind: EventKind| move |e: &DeviceEvent| e.kind == kind && e.path == Some(0);
    wait_device_event(&mut events, Duration::from_secs(10), "p1 failed", p1(EventKind::PathFailed)).await;
    wait_device_event(&mut events, Duration::from_secs(30), "p1 back", p1(EventKind::PathReady)).await;
    let back = scrape(addr).await;
    assert_eq!(path_state(&back, "p1"), ["active"]);
    assert_eq!(back.sum("mpio_connection_failures_total", &[("path", "p1")]), 1.0, "one drop");
    assert!(
        back.sum("mpio_connection_logins_total", &[("path", "p1"), ("result", "success")]) >= 2.0,
        "logged in again"
    );
    assert_eq!(
        back.get("mpio_path_failures_total", &[("device", "mp0"), ("path", "p1"), ("cause", "connection")]),
        1.0
    );
    assert_eq!(back.sum("mpio_path_failures_total", &[("path", "p1")]), 1.0, "one path failure");
    assert_eq!(failovers(&back) - failovers(&disabled), 1.0, "p1's failure moved its I/O; its return is no failback");
    assert_eq!(back.get("mpio_device_failbacks_total", &[("device", "mp0")]), 0.0);
    assert_eq!(path_state(&back, "p2"), ["disabled"]);
    assert_eq!(back.sum("mpio_path_failures_total", &[("path", "p3")]), 0.0, "p3 never failed");
}

// ---- before any login ------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_family_is_present_at_zero_before_any_login() {
    // A device whose portals lead nowhere: its core (as Device::open
    // builds it) and a real session per path, connecting to a port
    // nothing listens on. (Device::open itself waits for a first path.)
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let names = vec!["p1".to_string(), "p2".to_string()];
    let start = Instant::now();
    let core = DeviceCore::new(TimerConfig::default(), names.clone(), PolicySpec::default(), start);
    let mut cfg =
        SessionConfig::new(INITIATOR.parse().unwrap(), "iqn.2026-11.test.mpio:nowhere".parse().unwrap(), dead.into());
    cfg.reconnect = true;
    let sessions: Vec<SessionHandle> = names.iter().map(|_| SessionHandle::spawn(cfg.clone()).unwrap()).collect();
    // Let the first connect attempts fail, so the failure counter has moved.
    for s in &sessions {
        assert!(s.wait_up(Duration::from_secs(10)).await.is_err(), "nothing listens on {dead}");
    }
    let mut snaps = Vec::new();
    for s in &sessions {
        snaps.push(Some(mpio_mpath::SessionView::from(&s.snapshot().await.unwrap())));
    }
    // Exported over NBD: the frontend family has its sample too.
    let frontends = vec![mpio_metrics::Frontend { kind: "nbd".into(), block_device: String::new() }];
    let view =
        DeviceView { name: "mp0".into(), snapshot: core.snapshot(), sessions: snaps, at: Instant::now(), frontends };
    let text = mpio_metrics::encode(vec![view]);
    let s = Scrape::parse(&text);

    for p in ["p1", "p2"] {
        assert_eq!(path_state(&s, p), ["connecting"], "{p}");
        let l = [("device", "mp0"), ("path", p)];
        assert_eq!(s.get("mpio_path_up", &l), 0.0);
        assert_eq!(s.get("mpio_session_up", &l), 0.0);
        assert_eq!(s.sum("mpio_connection_logins_total", &[("path", p), ("result", "success")]), 0.0);
        assert!(s.sum("mpio_connection_logins_total", &[("path", p), ("result", "failure")]) >= 1.0, "{p}");
        assert_eq!(s.get("mpio_connection_up", &[l[0], l[1], ("cid", "0"), ("portal", &dead.to_string())]), 0.0);
        for op in ["read", "write", "flush", "discard", "write_zeroes", "other"] {
            assert_eq!(s.get("mpio_path_requests_total", &[l[0], l[1], ("op", op)]), 0.0);
        }
        for cause in mpio_mpath::CauseKind::ALL {
            assert_eq!(s.get("mpio_path_failures_total", &[l[0], l[1], ("cause", cause.label())]), 0.0);
        }
    }

    // Every family has a sample for this device, and dashboards/METRICS.md
    // documents each one (and nothing that is not served).
    let doc = read("METRICS.md");
    let served = s.names();
    for (family, ty) in &s.types {
        let sample = match ty.as_str() {
            "counter" => format!("{family}_total"),
            "info" => format!("{family}_info"),
            "histogram" => format!("{family}_count"),
            _ => family.clone(),
        };
        assert!(served.contains(sample.as_str()), "family {family} has no sample before login:\n{text}");
        let row = if ty == "histogram" { family } else { &sample };
        assert!(doc.contains(&format!("| `{row}` |")), "METRICS.md has no row for {row}");
    }
    // (`mpio_path_*` and the like name prefixes.)
    for name in metric_names(&doc).into_iter().filter(|n| !n.ends_with('_')) {
        let known = served.contains(name.as_str())
            || s.types.contains_key(&name)
            || served.iter().any(|n| n.starts_with(&format!("{name}_")));
        assert!(known, "METRICS.md names {name}, which is not served");
    }
}

// ---- a real Prometheus -------------------------------------------------------------

/// A Prometheus server of our own (Debian's `prometheus`), killed on drop.
struct Prometheus {
    child: std::process::Child,
    addr: std::net::SocketAddr,
    dir: PathBuf,
}

impl Prometheus {
    /// Scrapes `target` every second and evaluates dashboards/alerts.yml
    /// every second.
    fn start(target: std::net::SocketAddr) -> Prometheus {
        let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let dir = std::env::temp_dir().join(format!("mpio-prometheus-{}-{}", std::process::id(), addr.port()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = format!(
            "global: {{ scrape_interval: 1s, evaluation_interval: 1s }}\n\
             rule_files: [{rules:?}]\n\
             scrape_configs:\n  - job_name: mpio\n    static_configs: [{{ targets: [\"{target}\"] }}]\n",
            rules = dashboards().join("alerts.yml").canonicalize().unwrap(),
        );
        std::fs::write(dir.join("prometheus.yml"), config).unwrap();
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("prometheus (Debian package prometheus; scripts/install-test-deps.sh installs it)");
        Prometheus { child, addr, dir }
    }

    /// Waits until the server answers /-/ready with 200 (its storage is
    /// open), for at most 30 s.
    async fn ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(mut tcp) = TcpStream::connect(self.addr).await {
                let mut answer = Vec::new();
                let req = format!("GET /-/ready HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", self.addr);
                if tcp.write_all(req.as_bytes()).await.is_ok()
                    && tcp.read_to_end(&mut answer).await.is_ok()
                    && answer.starts_with(b"HTTP/1.1 200")
                {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "Prometheus not ready within 30 s; log:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    /// GET an API path; `data` of a successful answer.
    async fn api(&self, target: &str) -> serde_json::Value {
        let (_, body) = http_get(self.addr, target).await;
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{target}: {e}: {body}"));
        assert_eq!(v["status"], "success", "{target}: {body}");
        v["data"].clone()
    }

    async fn query(&self, promql: &str) -> Vec<serde_json::Value> {
        let data = self.api(&format!("/api/v1/query?query={}", urlencode(promql))).await;
        data["result"].as_array().cloned().unwrap_or_default()
    }

    /// Polls until `check` accepts the value (every 200 ms, for at most
    /// 30 s: Prometheus scrapes and evaluates once a second).
    async fn wait<T>(&self, what: &str, mut check: impl AsyncFnMut(&Prometheus) -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(v) = check(self).await {
                return v;
            }
            assert!(Instant::now() < deadline, "no {what} within 30 s; Prometheus log:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The value of an instant vector's single sample.
fn value(result: &[serde_json::Value]) -> Option<f64> {
    match result {
        [one] => one["value"][1].as_str()?.parse().ok(),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_scrapes_the_exporter_and_evaluates_the_rules() {
    require_root!();
    let tgtd = Tgtd::builder().portals(2).target(TargetSpec::new("prom").lun(LunSpec::file(16 << 20))).start().unwrap();
    let dev = open_all(device_config(&tgtd, 1, 2)).await;
    let (addr, _stop) = exporter(&dev).await;
    let prom = Prometheus::start(addr);
    prom.ready().await;

    // The scrape works: Prometheus negotiates and parses OpenMetrics.
    prom.wait("a healthy scrape", async |p| {
        let targets = p.api("/api/v1/targets").await;
        let t = targets["activeTargets"].as_array()?.first()?.clone();
        (t["health"] == "up").then_some(())
    })
    .await;
    let paths = prom.query("mpio_path_up{job=\"mpio\"} == 1").await;
    assert_eq!(paths.len(), 2, "{paths:?}");
    let info = prom.query("mpio_device_policy_info").await;
    assert_eq!(info.first().map(|s| s["metric"]["policy"].clone()), Some("round-robin".into()), "{info:?}");

    // A workload shows up in Prometheus as counted.
    for i in 0..10u64 {
        dev.write(i * 4096, pattern(i * 4096, 4096, 3), false).await.unwrap();
    }
    prom.wait("the writes in Prometheus", async |p| {
        let v = value(&p.query("sum(mpio_path_requests_total{op=\"write\"})").await)?;
        (v == 10.0).then_some(())
    })
    .await;

    // Every dashboard query runs on the real data and, unless it keeps
    // only non-zero values, returns series.
    for (title, t) in targets(&dashboard()) {
        let expr = promql(t);
        let result = prom.query(&expr).await;
        let may_be_empty = expr.ends_with("> 0");
        assert!(may_be_empty || !result.is_empty(), "{title}: {expr} returns nothing");
    }

    // The rules are loaded and healthy; a disabled path makes the device
    // degraded (pending: the alert waits 2 minutes before firing), and
    // no path-down alert (it was disabled on purpose).
    let rules = prom.api("/api/v1/rules").await;
    let loaded: Vec<_> = rules["groups"][0]["rules"].as_array().unwrap().iter().map(|r| r["health"].clone()).collect();
    assert_eq!(loaded, vec![serde_json::Value::from("ok"); 4], "{rules}");
    dev.disable_path("p2").unwrap();
    let alerts = prom
        .wait("MpioDeviceDegraded pending", async |p| {
            let alerts = p.api("/api/v1/alerts").await["alerts"].as_array()?.clone();
            alerts
                .iter()
                .any(|a| a["labels"]["alertname"] == "MpioDeviceDegraded" && a["state"] == "pending")
                .then_some(alerts)
        })
        .await;
    let names: Vec<_> = alerts.iter().map(|a| a["labels"]["alertname"].as_str().unwrap_or("?")).collect();
    assert_eq!(names, ["MpioDeviceDegraded"], "{alerts:?}");
    assert_eq!(alerts[0]["labels"]["device"], "mp0");
}
