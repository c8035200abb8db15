#!/usr/bin/env bash
# The README's first command: installs what mpio needs, builds it, starts a
# local SAN (a private tgtd with one logical unit behind several portals)
# and tours what mpio does against it. Ctrl-C stops everything it started.
# Extra arguments go to `mpio demo` (see `mpio demo --help`).
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo -E env "PATH=$PATH" "$@"; fi; }

as_root ./scripts/install-test-deps.sh
echo "== building mpio (release)"
cargo build --release -q -p mpio
as_root target/release/mpio demo "$@"
