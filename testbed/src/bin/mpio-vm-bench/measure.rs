//! fio runs on the stacks, with the CPU they cost.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::Options;
use crate::setup::{Bench, Kind, Stack, Stacks};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// The kernel's clock tick (`USER_HZ`, 100 on x86).
const TICKS_PER_SEC: f64 = 100.0;

/// A load: fio's `rw`, block size and queue depth.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Load {
    pub(crate) rw: &'static str,
    pub(crate) bs: &'static str,
    pub(crate) qd: u32,
}

impl Load {
    /// What the issue asks for.
    pub(crate) const ALL: [Load; 4] = [
        Load { rw: "randread", bs: "4k", qd: 1 },
        Load { rw: "randread", bs: "4k", qd: 32 },
        Load { rw: "read", bs: "1m", qd: 8 },
        Load { rw: "write", bs: "1m", qd: 8 },
    ];

    /// 4 KiB loads count IOPS, 1 MiB ones MB/s.
    pub(crate) fn is_iops(self) -> bool {
        self.bs == "4k"
    }

    pub(crate) fn name(self) -> String {
        if self.is_iops() {
            format!("4k {} QD{} IOPS", self.rw, self.qd)
        } else {
            format!("1M seq {} QD{} MB/s", self.rw, self.qd)
        }
    }
}

/// One fio run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sample {
    pub(crate) iops: f64,
    pub(crate) mbps: f64,
    /// The serving process's CPU per I/O, µs (None: no such process).
    pub(crate) server_us: Option<f64>,
    /// Both vCPUs' busy time per I/O, µs.
    pub(crate) guest_us: f64,
}

impl Sample {
    /// The figure of `load`: IOPS or MB/s.
    pub(crate) fn value(&self, load: Load) -> f64 {
        if load.is_iops() { self.iops } else { self.mbps }
    }
}

/// The medians of one load on every stack.
#[derive(Debug, Clone)]
pub(crate) struct Figure {
    pub(crate) load: Load,
    pub(crate) by_stack: BTreeMap<&'static str, Median>,
}

/// Medians of a stack's samples.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Median {
    pub(crate) value: f64,
    pub(crate) server_us: Option<f64>,
    pub(crate) guest_us: f64,
}

/// Every load on every stack, `runs` times, the stacks taking turns in
/// each run so that drift of the machine hits all alike.
pub(crate) fn all(bench: &Bench<'_>, stacks: &Stacks<'_>, o: &Options) -> Result<Vec<Figure>> {
    let mut figures = Vec::new();
    for load in Load::ALL {
        let mut samples: BTreeMap<&'static str, Vec<Sample>> = BTreeMap::new();
        for _ in 0..o.runs {
            for stack in &stacks.list {
                let s = run(bench, stack, load, o.seconds, stacks.size)?;
                samples.entry(stack.kind.label()).or_default().push(s);
            }
        }
        let by_stack = samples
            .into_iter()
            .map(|(k, v)| {
                let m = Median {
                    value: median(v.iter().map(|s| s.value(load))),
                    server_us: v
                        .iter()
                        .all(|s| s.server_us.is_some())
                        .then(|| median(v.iter().filter_map(|s| s.server_us))),
                    guest_us: median(v.iter().map(|s| s.guest_us)),
                };
                (k, m)
            })
            .collect();
        figures.push(Figure { load, by_stack });
    }
    Ok(figures)
}

fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.collect();
    v.sort_by(f64::total_cmp);
    v.get(v.len().saturating_sub(1) / 2).copied().unwrap_or(f64::NAN)
}

/// One fio run on `stack`, with the server's and the guest's CPU time
/// read just before and after it, in the same guest command.
fn run(bench: &Bench<'_>, stack: &Stack, load: Load, seconds: u32, size: u64) -> Result<Sample> {
    let pid = stack.server_pid.map_or("0".to_owned(), |p| p.to_string());
    let script = format!(
        r#"set -e
ticks() {{ [ "$1" = 0 ] && echo 0 || sed 's/.*) //' /proc/$1/stat | awk '{{print $12 + $13}}'; }}
p0=$(ticks {pid}); s0=$(head -1 /proc/stat)
fio --name=bench --filename={dev} --ioengine=io_uring --direct=1 --rw={rw} --bs={bs} --iodepth={qd} \
    --size={size} --time_based --runtime={seconds} --norandommap --randrepeat=0 --output-format=json >/tmp/bench-fio.json
s1=$(head -1 /proc/stat); p1=$(ticks {pid})
echo "proc $p0 $p1"; echo "stat0 $s0"; echo "stat1 $s1"; echo ---; cat /tmp/bench-fio.json
"#,
        dev = stack.device,
        rw = load.rw,
        bs = load.bs,
        qd = load.qd,
    );
    let out = bench
        .vm
        .sh(&script)
        .timeout(Duration::from_secs(u64::from(seconds) + 180))
        .run_ok()
        .map_err(|e| format!("fio on {} ({}): {e}", stack.kind.label(), stack.device))?;
    parse(&out, stack.kind).map_err(|e| format!("fio on {}: {e}\n{out}", stack.kind.label()).into())
}

fn parse(out: &str, kind: Kind) -> std::result::Result<Sample, String> {
    let (head, json) = out.split_once("---\n").ok_or("no fio output")?;
    let field = |tag: &str| -> std::result::Result<Vec<f64>, String> {
        let line = head.lines().find_map(|l| l.strip_prefix(tag)).ok_or(format!("no {tag:?} line"))?;
        line.split_whitespace()
            .filter(|w| *w != "cpu")
            .map(|w| w.parse().map_err(|_| format!("{tag}: {w:?}")))
            .collect()
    };
    let proc = field("proc ")?;
    let busy = |v: &[f64]| v.iter().sum::<f64>() - v.get(3).unwrap_or(&0.0) - v.get(4).unwrap_or(&0.0);
    let (s0, s1) = (field("stat0 ")?, field("stat1 ")?);
    // fio may print notes before its JSON.
    let json = json.get(json.find('{').unwrap_or(0)..).unwrap_or(json);
    let j: serde_json::Value = serde_json::from_str(json).map_err(|e| format!("fio's JSON: {e}"))?;
    let job = &j["jobs"][0];
    let (r, w) = (&job["read"], &job["write"]);
    let num = |v: &serde_json::Value| v.as_f64().unwrap_or(0.0);
    let ios = num(&r["total_ios"]) + num(&w["total_ios"]);
    let bytes = num(&r["io_bytes"]) + num(&w["io_bytes"]);
    let errors = num(&job["error"]);
    if ios == 0.0 || errors != 0.0 {
        return Err(format!("{} I/Os, error {errors}", ios));
    }
    let secs = num(&job["job_runtime"]).max(1.0) / 1000.0;
    let per_io = |ticks: f64| ticks / TICKS_PER_SEC * 1e6 / ios;
    let server = match (kind, proc.as_slice()) {
        (Kind::Kernel, _) => None,
        (_, [a, b]) => Some(per_io(b - a)),
        _ => return Err(format!("proc line {proc:?}")),
    };
    Ok(Sample {
        iops: ios / secs,
        mbps: bytes / secs / 1e6,
        server_us: server,
        guest_us: per_io(busy(&s1) - busy(&s0)),
    })
}
