use mpio_testbed::vm::VmSpec;
use std::process::Command;
use std::time::Duration;

fn host(cmd: &str) {
    let out = mpio_testbed::cmd::run(Command::new("sh").args(["-c", cmd]), Duration::from_secs(30)).unwrap();
    println!("HOST $ {cmd}\n{}{}[{:?}]", out.stdout, out.stderr, out.status);
}

fn main() {
    let vm = VmSpec::new().nic(1).nic(1).boot().unwrap();
    println!("booted in {:?}", vm.boot_time());
    let script = std::fs::read_to_string(std::env::args().nth(1).unwrap()).unwrap();
    let out = vm.sh(&script).run().unwrap();
    println!("GUEST:\n{}\nERR:\n{}", out.stdout, out.stderr);
    if let Some(h) = std::env::args().nth(2) {
        host(&std::fs::read_to_string(h).unwrap());
    }
    if let Some(g) = std::env::args().nth(3) {
        let out = vm.sh(&std::fs::read_to_string(g).unwrap()).run().unwrap();
        println!("GUEST2:\n{}\nERR:\n{}", out.stdout, out.stderr);
    }
    println!("console:\n{}", vm.console_tail(30));
}
