#!/bin/sh
# Install the Debian packages that mpio's demo and tests need, then check
# that every command they call runs. For Debian 12; run as root or through
# sudo. Idempotent: installs only what is missing or mismatched.
#
#   scripts/install-test-deps.sh          # install what is missing, then check
#   scripts/install-test-deps.sh --check  # only check, exit 1 naming what is missing
#
# The check is by command, not by dpkg status: a package can be "installed"
# while the command it should bring is gone or broken (a qemu-utils from a
# newer suite, removed when Debian 12's qemu-block-extra came in, left the
# demo without qemu-io). To add a dependency, append a line to PACKAGES:
# "<package> <command>[,<command>...] <why>".
set -eu

# package              commands checked            why
PACKAGES='
tgt                    tgtd,tgtadm                 the iSCSI target of the demo and tests
libiscsi-bin           iscsi-ls,iscsi-inq,iscsi-perf,iscsi-test-cu  reference initiator
iptables               iptables                    netfault::Blackhole (iptables DROP)
iproute2               ip,tc                       netfault::RateLimit (tc), ip netns
libclang-dev           -                           bindgen for libublk (ublk frontend build)
g++                    g++                         libFuzzer (C++), built by libfuzzer-sys for scripts/fuzz.sh
procps                 ps,pgrep                    process checks in scripts
libnbd-bin             nbdinfo,nbdcopy,nbdfuse     NBD clients of the nbd tests
fio                    fio                         verified random I/O in the nbd tests and benchmarks
e2fsprogs              mkfs.ext4,fsck.ext4         a filesystem over nbdfuse + loop in the nbd tests
mount                  losetup,mount,umount        the loop device and mount in the nbd tests
prometheus             promtool                    checks and unit-tests dashboards/alerts.yml
busybox-static         -                           the VM tests initramfs (testbed::vm)
cpio                   cpio                        packs the VM tests initramfs
xz-utils               xz                          unpacks the kernel modules (.ko.xz) for the VM
kmod                   depmod                      modules.dep of the VM kernel
nbd-client             nbd-client                  NBD client of the guest kernel in the VM tests (tests/tests/lio)
'
# qemu's packages must come from one version: qemu-block-extra depends on
# the exact qemu-utils it was built with, and apt removes a qemu-utils of
# another version (the machine image has one from a newer suite) rather
# than leave the iSCSI driver unusable. They are installed as a set, at the
# version apt would install qemu-block-extra from.
QEMU_SET='qemu-utils qemu-block-extra qemu-system-common qemu-system-x86'
# commands of the qemu set (qemu-storage-daemon: bench/nbd.sh's peer server;
# qemu-system-x86_64: the VM tests)
QEMU_COMMANDS='qemu-img qemu-io qemu-nbd qemu-storage-daemon qemu-system-x86_64'

check_only=0
case "${1-}" in
    --check) check_only=1 ;;
    "") ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

say() { echo "install-test-deps: $*"; }

installed_version() {
    dpkg-query -W -f='${Status} ${Version}' "$1" 2>/dev/null | sed -n 's/^install ok installed //p'
}

# Every command the demo and the tests call, checked by running it (or
# finding it). Prints the missing ones as "command (package)".
check_commands() {
    printf '%s\n' "$PACKAGES" | awk 'NF { print $1, $2 }' | while read -r pkg cmds; do
        [ "$cmds" = - ] && continue
        for c in $(echo "$cmds" | tr , ' '); do
            command -v "$c" >/dev/null 2>&1 || echo "$c ($pkg)"
        done
    done
    for c in $QEMU_COMMANDS; do
        command -v "$c" >/dev/null 2>&1 || echo "$c (qemu set: $QEMU_SET)"
    done
    [ -x /bin/busybox ] || echo "/bin/busybox (busybox-static)"
    # bindgen (libublk's build script) loads libclang itself: no command.
    ls /usr/lib/llvm-*/lib/libclang.so >/dev/null 2>&1 || echo "libclang.so (libclang-dev: bindgen for the ublk frontend)"
    # The VM tests: qemu needs TAP devices, and the guest's kernel package
    # is fetched by apt-get download (the test command does that itself).
    [ -c /dev/net/tun ] || echo "/dev/net/tun (the tun module: modprobe tun)"
    command -v apt-get >/dev/null 2>&1 || echo "apt-get (apt; the VM tests download their kernel with it)"
    # qemu-block-extra's iSCSI driver is a module of one qemu version: ask
    # qemu-img to open an iscsi:// URL where nothing listens. A usable
    # driver fails to connect ("iSCSI: Failed to connect ..."); without one
    # qemu-img cannot load the module and never gets that far.
    if command -v qemu-img >/dev/null 2>&1 &&
        ! qemu-img info 'iscsi://127.0.0.1:1/iqn.2026-01.invalid:none/0' 2>&1 | grep -q 'iSCSI:'; then
        echo "qemu's iSCSI driver (qemu-block-extra, same version as qemu-utils)"
    fi
}

# Packages to install: missing from dpkg, plus the qemu set when any member
# is missing or at another version than the set's.
plan() {
    for pkg in $(printf '%s\n' "$PACKAGES" | awk 'NF { print $1 }'); do
        [ -n "$(installed_version "$pkg")" ] || printf '%s ' "$pkg"
    done
    want=$(apt-cache policy qemu-block-extra 2>/dev/null | sed -n 's/^ *Candidate: //p')
    if [ -z "$want" ] || [ "$want" = "(none)" ]; then
        echo "install-test-deps: apt knows no qemu-block-extra; check /etc/apt/sources.list (Debian 12 main)" >&2
        return 1
    fi
    for pkg in $QEMU_SET; do
        if [ "$(installed_version "$pkg")" != "$want" ]; then
            for p in $QEMU_SET; do printf '%s=%s ' "$p" "$want"; done
            break
        fi
    done
}

if [ "$check_only" = 1 ]; then
    missing=$(check_commands)
    if [ -n "$missing" ]; then
        say "missing:"; echo "$missing" | sed 's/^/  /'; exit 1
    fi
    say "every command of the demo and tests is there"; exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
else
    SUDO="-"
fi

todo=$(plan || true)
if [ -z "$todo" ] && [ -n "$(check_commands)" ]; then
    # Everything looks installed by dpkg yet a command is missing: refresh
    # the package lists once and plan again (a candidate may have changed).
    todo="-"
fi
if [ -n "$todo" ]; then
    if [ "$SUDO" = "-" ]; then
        say "need root (or sudo) to install: $todo" >&2; exit 1
    fi
    say "apt-get update"
    if ! $SUDO apt-get update -q; then
        say "'apt-get update' failed; check the network and /etc/apt/sources.list" >&2; exit 1
    fi
    todo=$(plan) || exit 1
fi
if [ -n "$todo" ]; then
    say "installing: $todo"
    # --allow-downgrades: the qemu set is pinned to one version, which may
    # be older than a qemu-utils the machine came with.
    # shellcheck disable=SC2086 # word splitting of the package list is intended
    if ! $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        --allow-downgrades $todo; then
        say "'apt-get install $todo' failed (see the apt output above)" >&2; exit 1
    fi
fi

missing=$(check_commands)
if [ -n "$missing" ]; then
    say "installed packages, but these commands are still missing or unusable:" >&2
    echo "$missing" | sed 's/^/  /' >&2
    exit 1
fi
say "every command of the demo and tests is there"
