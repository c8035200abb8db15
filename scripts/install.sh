#!/bin/sh
# Installs mpio as a systemd service: the binary as /usr/sbin/mpio, the unit
# as /etc/systemd/system/mpio.service, the annotated example as
# /etc/mpio/mpio.toml (only when there is none: an edited file is kept) and
# /etc/mpio/chap/ for CHAP secret files (0700; the secrets must be 0600).
#
#   scripts/install.sh                  # builds with cargo build --release
#   scripts/install.sh --binary FILE    # installs FILE instead of building
#   DESTDIR=/tmp/stage scripts/install.sh --binary FILE   # staged (packages, tests)
#
# Then: edit /etc/mpio/mpio.toml, mpio config check /etc/mpio/mpio.toml,
# systemctl enable --now mpio.
set -eu

binary=
while [ $# -gt 0 ]; do
    case "$1" in
        --binary) binary=${2:?--binary needs a file}; shift 2 ;;
        *) echo "install.sh: unknown option $1 (use --binary FILE)" >&2; exit 2 ;;
    esac
done
case "$binary" in
    /* | "") ;;
    *) binary=$PWD/$binary ;;
esac
cd "$(dirname "$0")/.."
if [ -z "$binary" ]; then
    # The ublk frontend's bindings are generated at build time (bindgen).
    ls /usr/lib/llvm-*/lib/libclang.so >/dev/null 2>&1 ||
        { echo "install.sh: building mpio needs libclang: apt-get install libclang-dev (or give --binary FILE)" >&2; exit 1; }
    cargo build --release -p mpio
    binary=target/release/mpio
fi
[ -x "$binary" ] || { echo "install.sh: $binary is not an executable: build it or give --binary FILE" >&2; exit 1; }

root=${DESTDIR:-}
install -D -m 0755 "$binary" "$root/usr/sbin/mpio"
install -D -m 0644 dist/mpio.service "$root/etc/systemd/system/mpio.service"
install -d -m 0700 "$root/etc/mpio/chap"
if [ -e "$root/etc/mpio/mpio.toml" ]; then
    echo "kept $root/etc/mpio/mpio.toml"
else
    install -m 0644 mpio/mpio.example.toml "$root/etc/mpio/mpio.toml"
fi
# Only the running system's manager is told; a staged tree has none.
if [ -z "$root" ] && [ -d /run/systemd/system ]; then
    systemctl daemon-reload
fi
echo "installed $root/usr/sbin/mpio and $root/etc/systemd/system/mpio.service"
echo "next: edit $root/etc/mpio/mpio.toml, run mpio config check on it, then systemctl enable --now mpio"
