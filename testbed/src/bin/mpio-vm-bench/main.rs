//! `mpio-vm-bench`: mpio's block devices against their peers, in one VM
//! run against the same LIO LUs (issue 9, the benchmark; `bench/ublk.sh`
//! builds and runs it). Not a test: it prints figures and ratios.
//!
//! ```text
//! mpio-vm-bench --mpio PATH --rublk PATH [--runs 3] [--seconds 3] [--lus "null fileio"]
//!               [--queues 2] [--depth 64]
//! ```
//!
//! One VM (TCG, 2 vCPUs), LIO with one target of two LUNs, an rd_mcp null
//! LU and a fileio LU on the guest's tmpfs, on two portals (127.0.0.1 and
//! 127.0.0.2, loopback: every stack pays the same TCP). For each LU, fio
//! (io_uring, direct) on every stack, the stacks taking turns run by run:
//!
//! * `ublk`: `/dev/ublkbN` of mpio's daemon (`frontend = "ublk"`, with
//!   `ublk_queues` and `ublk_depth`), round robin over both portals;
//! * `nbd`: `/dev/nbd0`, the guest kernel's nbd-client on the same
//!   daemon's NBD export of the same LU (a second device, same paths);
//! * `kernel`: open-iscsi (`iscsid`, `iscsiadm`) logged in through both
//!   portals, and dm-multipath over the two SCSI disks, round robin;
//! * `rublk`: rublk's null target with the same queues and depth, the
//!   floor of any ublk server (no LU at all).
//!
//! dm-multipath gets its table from `dmsetup` rather than `multipath`:
//! multipath-tools finds paths through udev, which the guest does not run;
//! the table is what multipathd would load (one priority group, round
//! robin, each path once in turn), and the data path is the kernel's.
//! Every block device gets the `none` I/O scheduler.
//!
//! Figures per LU: 4 KiB random read IOPS at QD 1 and 32, 1 MiB
//! sequential read and write MB/s at QD 8, each the median of `--runs`
//! runs of `--seconds` s; the CPU per I/O of the serving process (mpio's
//! daemon, rublk; utime+stime of all its threads from /proc/PID/stat) and
//! of the whole guest (busy time of both vCPUs from /proc/stat, which also
//! counts fio and the kernel's own work: the only CPU figure the kernel
//! stack has). Ratios: ublk/nbd, ublk/kernel, nbd/kernel, ublk/rublk.
//! Under TCG absolute figures mean little; ratios within one run count.

use std::process::ExitCode;

mod measure;
mod report;
mod setup;

/// What to run.
#[derive(Debug, Clone)]
struct Options {
    mpio: String,
    rublk: String,
    runs: usize,
    seconds: u32,
    lus: Vec<setup::Lu>,
    queues: u16,
    depth: u16,
}

fn main() -> ExitCode {
    let options = match parse(std::env::args().skip(1).collect()) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("mpio-vm-bench: {e}");
            eprintln!(
                "usage: mpio-vm-bench --mpio PATH --rublk PATH [--runs N] [--seconds S] [--lus \"null fileio\"] \
                 [--queues Q] [--depth D]"
            );
            return ExitCode::from(2);
        }
    };
    match run(&options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mpio-vm-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn parse(args: Vec<String>) -> Result<Options, String> {
    let mut o = Options {
        mpio: String::new(),
        rublk: String::new(),
        runs: 3,
        seconds: 3,
        lus: vec![setup::Lu::Null, setup::Lu::Fileio],
        queues: 2,
        depth: 64,
    };
    let mut it = args.into_iter();
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = |what: &str| value.parse::<u64>().map_err(|_| format!("{flag} {value:?}: {what}"));
        match flag.as_str() {
            "--mpio" => o.mpio = value,
            "--rublk" => o.rublk = value,
            "--runs" => o.runs = number("a number of runs")?.clamp(1, 99) as usize,
            "--seconds" => o.seconds = number("seconds per run")?.clamp(1, 600) as u32,
            "--queues" => o.queues = number("ublk queues")?.clamp(1, 64) as u16,
            "--depth" => o.depth = number("ublk queue depth")?.clamp(1, 4096) as u16,
            "--lus" => {
                o.lus = value
                    .split_whitespace()
                    .map(|l| match l {
                        "null" => Ok(setup::Lu::Null),
                        "fileio" => Ok(setup::Lu::Fileio),
                        _ => Err(format!("--lus: {l:?}: use null and/or fileio")),
                    })
                    .collect::<Result<_, _>>()?
            }
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    if o.mpio.is_empty() || o.rublk.is_empty() {
        return Err("--mpio and --rublk are required".into());
    }
    Ok(o)
}

fn run(o: &Options) -> Result<(), Box<dyn std::error::Error>> {
    let vm = setup::boot(o)?;
    let bench = setup::Bench::start(&vm, o)?;
    println!("{}", bench.banner());
    let mut results = Vec::new();
    for &lu in &o.lus {
        let stacks = bench.stacks(lu)?;
        let figures = measure::all(&bench, &stacks, o)?;
        report::print(lu, &figures);
        results.push((lu, figures));
        bench.release(stacks)?;
    }
    report::summary(&results);
    bench.finish()?;
    vm.power_off()?;
    Ok(())
}
