//! Tables of figures and ratios, and the goals.

use crate::measure::{Figure, Median};
use crate::setup::{Kind, Lu};

const RATIOS: [(&str, &str); 4] = [("ublk", "nbd"), ("ublk", "kernel"), ("nbd", "kernel"), ("ublk", "rublk-null")];

fn get<'a>(f: &'a Figure, stack: &str) -> Option<&'a Median> {
    f.by_stack.get(stack)
}

fn fmt(v: Option<f64>) -> String {
    match v {
        Some(v) if v.is_finite() && v >= 1000.0 => format!("{v:.0}"),
        Some(v) if v.is_finite() => format!("{v:.1}"),
        _ => "-".into(),
    }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 && a.is_finite() => format!("{:.2}", a / b),
        _ => "-".into(),
    }
}

fn header(title: &str) {
    print!("{title:<32}");
    for k in Kind::ALL {
        print!(" {:>10}", k.label());
    }
    for (a, b) in RATIOS {
        print!(" {:>11}", format!("{a}/{}", b.trim_end_matches("-null")));
    }
    println!();
}

fn row(name: &str, f: &Figure, pick: impl Fn(&Median) -> Option<f64>) {
    print!("{name:<32}");
    for k in Kind::ALL {
        print!(" {:>10}", fmt(get(f, k.label()).and_then(&pick)));
    }
    for (a, b) in RATIOS {
        let (a, b) = (get(f, a).and_then(&pick), get(f, b).and_then(&pick));
        print!(" {:>11}", ratio(a, b));
    }
    println!();
}

/// The tables of one LU: figures, the server's CPU per I/O, the guest's.
pub(crate) fn print(lu: Lu, figures: &[Figure]) {
    println!();
    header(&format!("LU {}", lu.name()));
    for f in figures {
        row(&f.load.name(), f, |m| Some(m.value));
    }
    header("server CPU us/IO (lower: better)");
    for f in figures {
        row(&f.load.name(), f, |m| m.server_us);
    }
    header("guest CPU us/IO (both vCPUs)");
    for f in figures {
        row(&f.load.name(), f, |m| Some(m.guest_us));
    }
}

/// The goals against this run's figures.
pub(crate) fn summary(results: &[(Lu, Vec<Figure>)]) {
    println!();
    println!("# Goals (issue 9): ublk >= 1.3x nbd at 4k QD32 and >= 1.0x elsewhere; ublk >= 0.8x kernel;");
    println!("# the daemon's CPU per 4 KiB I/O through ublk below its CPU through nbd");
    let line = |what: String, got: Option<f64>, goal: f64, higher: bool| {
        let ok = got.is_some_and(|g| if higher { g >= goal } else { g < goal });
        println!(
            "  {what:<56} {:>7} {} {goal:<5} {}",
            fmt(got).trim(),
            if higher { ">=" } else { "<" },
            if ok { "PASS" } else { "MISS" }
        );
    };
    for (lu, figures) in results {
        for f in figures {
            let v = |s: &str| get(f, s).map(|m| m.value);
            let over = |a: Option<f64>, b: Option<f64>| a.zip(b).map(|(a, b)| a / b);
            let vs_nbd = if f.load.is_iops() && f.load.qd == 32 { 1.3 } else { 1.0 };
            line(format!("{} {}: ublk/nbd", lu.name(), f.load.name()), over(v("ublk"), v("nbd")), vs_nbd, true);
            line(format!("{} {}: ublk/kernel", lu.name(), f.load.name()), over(v("ublk"), v("kernel")), 0.8, true);
            if f.load.is_iops() {
                let cpu = |s: &str| get(f, s).and_then(|m| m.server_us);
                line(
                    format!("{} {}: CPU ublk/nbd", lu.name(), f.load.name()),
                    over(cpu("ublk"), cpu("nbd")),
                    1.0,
                    false,
                );
            }
        }
    }
}
