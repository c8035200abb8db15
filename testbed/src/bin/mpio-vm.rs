//! `mpio-vm`: the test VM from the command line.
//!
//! ```text
//! mpio-vm prepare                 fetch the kernel, build the agent and the base initramfs
//!                                 into the cache (scripts/test.sh runs it before the tests)
//! mpio-vm run [--nic N]... [--program P]... SCRIPT
//!                                 boot a VM, run SCRIPT with sh, print its output, the boot
//!                                 time and the console on failure, power off
//! mpio-vm demo --mpio PATH        boot a VM with two paths and tour /dev/ublkbN in it
//!                                 (mpio_testbed::tour; ./scripts/demo.sh --vm runs it)
//! ```

use std::process::ExitCode;
use std::time::Instant;

use mpio_testbed::tour;
use mpio_testbed::vm::{self, VmSpec};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("prepare") if args.len() == 1 => prepare(),
        Some("run") => run(&args[1..]),
        Some("demo") if args.len() == 3 && args[1] == "--mpio" => demo(&args[2]),
        _ => {
            eprintln!(
                "usage: mpio-vm prepare | mpio-vm run [--nic ADDRESSES]... [--program NAME]... SCRIPT | mpio-vm \
                 demo --mpio PATH"
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("mpio-vm: {e}");
            ExitCode::FAILURE
        }
    }
}

fn prepare() -> Result<ExitCode, mpio_testbed::Error> {
    let t = Instant::now();
    let ready = vm::prepare()?;
    let size = std::fs::metadata(&ready.base).map(|m| m.len() >> 20).unwrap_or(0);
    println!("kernel {}, agent {}", ready.kernel, ready.agent.display());
    println!("base initramfs {} ({size} MB); cache {}", ready.base.display(), vm::cache::dir().display());
    println!("ready in {:.1?}", t.elapsed());
    Ok(ExitCode::SUCCESS)
}

fn run(args: &[String]) -> Result<ExitCode, mpio_testbed::Error> {
    let mut spec = VmSpec::new();
    let mut it = args.iter();
    let mut script = None;
    while let Some(arg) = it.next() {
        match (arg.as_str(), it.clone().next()) {
            ("--nic", Some(n)) => {
                spec = spec.nic(n.parse().map_err(|_| bad(&format!("--nic {n}: a number of addresses")))?);
                it.next();
            }
            ("--program", Some(p)) => {
                spec = spec.host_program(p);
                it.next();
            }
            (s, _) if script.is_none() && !s.starts_with("--") => script = Some(s.to_owned()),
            (s, _) => return Err(bad(&format!("unexpected argument {s:?}"))),
        }
    }
    let script = script.ok_or_else(|| bad("no SCRIPT given"))?;
    let vm = spec.boot()?;
    eprintln!("{} booted in {:.1?}", vm.name(), vm.boot_time());
    let out = vm.sh(&script).timeout(std::time::Duration::from_secs(3600)).run()?;
    print!("{}", out.stdout);
    eprint!("{}", out.stderr);
    let code = out.status.and_then(|s| s.code()).unwrap_or(1);
    if code != 0 {
        eprintln!("--- console ---\n{}", vm.console_tail(40));
    }
    vm.power_off()?;
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
}

fn demo(mpio: &str) -> Result<ExitCode, mpio_testbed::Error> {
    println!("== Booting a VM with Debian's kernel (ublk_drv, LIO) under qemu");
    let vm = VmSpec::new().memory_mib(1024).inner_paths(2).boot()?;
    println!("   {} booted in {:.1?}", vm.name(), vm.boot_time());
    vm.install_binary(std::path::Path::new(mpio), mpio_testbed::daemon::GUEST_MPIO)?;
    let toured = tour::run(&vm, &tour::TourOptions::default(), &mut std::io::stdout());
    if toured.is_err() {
        eprintln!("--- console ---\n{}", vm.console_tail(40));
    }
    vm.power_off()?;
    toured.map(|()| ExitCode::SUCCESS)
}

fn bad(what: &str) -> mpio_testbed::Error {
    mpio_testbed::Error::Environment(format!("{what} (usage: mpio-vm run [--nic N]... [--program P]... SCRIPT)"))
}
