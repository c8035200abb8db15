#!/usr/bin/env bash
# Runs every test: formatting, lints, the fuzz targets (built and run a few
# seconds each), unit tests, and the end-to-end tests
# against real tgtd targets and network faults. Installs what they need
# first (a fresh Debian machine has only Rust, gcc, Python and qemu-utils).
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo -E env "PATH=$PATH" "$@"; fi; }

as_root ./scripts/install-test-deps.sh

echo "== cargo fmt --check"
cargo fmt --all --check
echo "== minimum Rust version (dependencies; std APIs through clippy below)"
./scripts/msrv.sh
echo "== cargo clippy -D warnings"
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo doc (broken links are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet
echo "== fuzz targets: build each, run it ${FUZZ_SECONDS:-10} s"
./scripts/fuzz.sh
echo "== VM image: the kernel package (apt-get download, cached in /var/cache/mpio-tests), agent, initramfs"
as_root cargo run --quiet -p mpio-testbed --bin mpio-vm -- prepare
echo "== cargo test (end-to-end tests need root: tgtd, iptables, tc; the VM tests: TAP devices)"
as_root cargo test --workspace --no-fail-fast
