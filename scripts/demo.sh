#!/usr/bin/env bash
# The README's first command: installs what mpio needs, builds it, starts a
# local SAN (a private tgtd with one logical unit behind several portals)
# and tours what mpio does against it. Ctrl-C stops everything it started.
# Extra arguments go to `mpio demo` (see `mpio demo --help`).
#
# --vm: the tour of /dev/ublkbN instead, for a machine whose kernel has no
# ublk driver: in a qemu VM with Debian's 6.12 kernel (fetched once into
# /var/cache/mpio-tests), LIO behind two paths, ext4 on /dev/ublkbN, a
# path's link down while files are written, the daemon killed and started
# again under writes, every file checked after (mpio_testbed::tour). About two minutes under TCG once the VM's kernel is
# cached.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo -E env "PATH=$PATH" "$@"; fi; }

as_root ./scripts/install-test-deps.sh
echo "== building mpio (release)"
cargo build --release -q -p mpio
if [ "${1:-}" = --vm ]; then
  shift
  [ $# = 0 ] || { echo "demo.sh --vm takes no other argument" >&2; exit 2; }
  echo "== building the VM test bed (mpio-vm), fetching the VM's kernel"
  cargo build -q -p mpio-testbed --bin mpio-vm
  as_root target/debug/mpio-vm prepare
  as_root target/debug/mpio-vm demo --mpio target/release/mpio
  exit
fi
as_root target/release/mpio demo "$@"
