#!/usr/bin/env bash
# Benchmark of mpio's block devices in the test VM (issue 9): in one VM run
# against the same LIO LUs (an rd_mcp null LU, then a fileio LU on the
# guest's tmpfs), fio (io_uring, direct) on
#
#   ublk        /dev/ublkbN of mpio's daemon (frontend = "ublk", ublk_queues
#               and ublk_depth set to QUEUES and DEPTH), round robin over
#               two portals
#   nbd         /dev/nbd0: the guest kernel's nbd-client on the same
#               daemon's NBD export of the same LU
#   kernel      open-iscsi through the same two portals and dm-multipath
#               (round robin) over its two SCSI disks: the reference line
#   rublk-null  rublk's null target, QUEUES x DEPTH: the floor of any ublk
#               server (no LU at all)
#
# Figures: 4 KiB random read IOPS at QD 1 and 32, 1 MiB sequential read and
# write MB/s at QD 8, the serving process's CPU per I/O (utime+stime of
# mpio's daemon or rublk from /proc/PID/stat over the run) and the whole
# guest's (both vCPUs from /proc/stat: the only CPU figure the kernel stack
# has). Ratios ublk/nbd, ublk/kernel, nbd/kernel, ublk/rublk; then the
# issue's goals with PASS/MISS. The stacks take turns run by run; each
# figure is the median of RUNS runs of SECONDS s. Under TCG absolute
# figures mean little: the ratios within one run are the result.
# testbed/src/bin/mpio-vm-bench/main.rs has the details (why dm-multipath
# gets its table from dmsetup: no udev in the guest).
#
#   RUNS=3 SECONDS_PER_RUN=3 LUS="null fileio" QUEUES=2 DEPTH=64 bench/ublk.sh
#
# About 10-15 minutes on a 2-core host. Needs root (TAP devices for the
# VM), what scripts/install-test-deps.sh installs (qemu, fio, nbd-client,
# busybox-static, ...), and on the host, packed into the guest: open-iscsi
# (iscsid, iscsiadm), dmsetup, and rublk (cargo install rublk
# --no-default-features; RUBLK=PATH if it is not in PATH). This script
# installs nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-3}
LUS=${LUS:-null fileio}
QUEUES=${QUEUES:-2}
DEPTH=${DEPTH:-64}
RUBLK=${RUBLK:-$(command -v rublk || echo "$HOME/.cargo/bin/rublk")}

[ "$(id -u)" = 0 ] || { echo "bench/ublk.sh needs root (the VM's TAP devices)" >&2; exit 1; }
for bin in iscsiadm iscsid dmsetup fio nbd-client qemu-system-x86_64; do
  command -v "$bin" >/dev/null ||
    { echo "ublk.sh: $bin is missing: apt-get install open-iscsi dmsetup, and scripts/install-test-deps.sh" >&2; exit 1; }
done
[ -x "$RUBLK" ] || { echo "ublk.sh: no rublk ($RUBLK): cargo install rublk --no-default-features, or set RUBLK=PATH" >&2; exit 1; }

cargo build --release -q -p mpio -p mpio-testbed --bin mpio --bin mpio-vm-bench
TARGET=${CARGO_TARGET_DIR:-$PWD/target}/release
"$TARGET/mpio-vm-bench" --mpio "$TARGET/mpio" --rublk "$RUBLK" --runs "$RUNS" --seconds "$SECONDS_PER_RUN" \
  --lus "$LUS" --queues "$QUEUES" --depth "$DEPTH"
