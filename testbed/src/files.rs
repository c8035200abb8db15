//! Known data on a filesystem in a test VM: guest scripts that write files of
//! random bytes, each with fsync (a write error fails `dd`, and the
//! script with it), and print `sha256sum`'s line for each once it is
//! written; and those lines parsed, to compare with a read-back later.

use std::collections::BTreeMap;

/// `{dir}/f{first}` .. `f{first+n-1}`, of `mib` MiB each.
pub fn writer(dir: &str, first: usize, n: usize, mib: u64) -> String {
    format!(
        "set -e\nmkdir -p {dir}\nfor i in $(seq {first} {last}); do\n{}done\n",
        write_one(dir, mib),
        last = first + n - 1
    )
}

/// `{dir}/f1`, `f2`, ... of `mib` MiB each, until the file `stop` exists
/// or `most` are written: a writer that keeps going across a fault for
/// as long as the test needs.
pub fn writer_until(dir: &str, stop: &str, mib: u64, most: usize) -> String {
    format!(
        "set -e\nmkdir -p {dir}\ni=0\nwhile [ ! -e {stop} ] && [ $i -lt {most} ]; do\ni=$((i+1))\n{}done\n",
        write_one(dir, mib)
    )
}

fn write_one(dir: &str, mib: u64) -> String {
    format!("dd if=/dev/urandom of={dir}/f$i bs=1M count={mib} conv=fsync status=none\nsha256sum {dir}/f$i\n")
}

/// `path -> sha256` from `sha256sum` lines.
pub fn sums(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once("  ").map(|(sum, path)| (path.trim().to_owned(), sum.to_owned())))
        .collect()
}
