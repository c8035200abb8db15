#!/bin/sh
# Install the Debian packages that mpio's end-to-end tests need (tests/,
# package mpio-tests). Idempotent: asks dpkg which packages are missing and
# installs only those. For Debian 12; run as root or through sudo.
#
#   scripts/install-test-deps.sh          # install what is missing
#   scripts/install-test-deps.sh --check  # only report, exit 1 if something is missing
#
# To add a dependency, append a line to PACKAGES below: "<package>  <why>".
set -eu

# package              why (which binary / test needs it)
PACKAGES='
tgt                    tgtd + tgtadm: the iSCSI target the tests talk to
libiscsi-bin           iscsi-ls, iscsi-inq, iscsi-perf: reference initiator
iptables               netfault::Blackhole (iptables DROP)
iproute2               netfault::RateLimit (tc), ip netns
libclang-dev           bindgen for libublk (ublk frontend build)
qemu-utils             qemu-img, qemu-io, qemu-nbd: NBD / iSCSI clients
qemu-block-extra       iSCSI block driver for qemu-img/qemu-io
qemu-system-common     qemu-storage-daemon: a peer NBD server in bench/nbd.sh
procps                 ps, pgrep: process checks in scripts
libnbd-bin             nbdinfo, nbdcopy, nbdfuse: NBD clients of the nbd tests
fio                    fio with its nbd engine: verified random I/O in the nbd tests
e2fsprogs              mkfs.ext4, fsck.ext4: a filesystem over nbdfuse + loop in the nbd tests
mount                  losetup, mount, umount: the loop device and mount in the nbd tests
prometheus             promtool: checks and unit-tests dashboards/alerts.yml (tests/tests/metrics.rs)
'
# kmod is not listed: the dev kernel has no loadable modules (everything the
# tests need is built in), so nothing calls modprobe.

check_only=0
case "${1-}" in
    --check) check_only=1 ;;
    "") ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

all=$(printf '%s\n' "$PACKAGES" | awk 'NF { print $1 }')

missing=""
for pkg in $all; do
    # dpkg -s succeeds for removed-but-configured packages too; require "installed".
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'ok installed$'; then
        missing="$missing $pkg"
    fi
done
missing=${missing# }

if [ -z "$missing" ]; then
    echo "install-test-deps: all test packages are installed:" $all
    exit 0
fi

echo "install-test-deps: missing: $missing"
if [ "$check_only" = 1 ]; then
    exit 1
fi

if [ "$(id -u)" -eq 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
else
    echo "install-test-deps: need root (or sudo) to install: $missing" >&2
    exit 1
fi

echo "install-test-deps: apt-get update"
if ! $SUDO apt-get update; then
    echo "install-test-deps: 'apt-get update' failed; check the network and /etc/apt/sources.list" >&2
    exit 1
fi

echo "install-test-deps: installing: $missing"
# shellcheck disable=SC2086 # word splitting of the package list is intended
if ! $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $missing; then
    echo "install-test-deps: 'apt-get install $missing' failed (see the apt output above)" >&2
    exit 1
fi

echo "install-test-deps: installed: $missing"
