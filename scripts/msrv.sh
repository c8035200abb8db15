#!/usr/bin/env bash
# The minimum Rust version (workspace rust-version), checked with the one
# toolchain this machine has (none older can be fetched):
# - std APIs: clippy's incompatible_msrv lint (on by default, an error
#   under -D warnings in scripts/test.sh) refuses any std item stabilised
#   after rust-version;
# - dependencies: this script refuses any crate in the build graph that
#   declares a newer rust-version than ours;
# - language features are checked by nothing here: rust-version is 1.88
#   because the code uses let chains (stable in 1.88), and a newer feature
#   would only show on a 1.88 toolchain.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo metadata --format-version 1 --locked | python3 -c '
import json, sys
m = json.load(sys.stdin)
v = lambda s: tuple(int(x) for x in (s.split(".") + ["0", "0"])[:3])
ours = {p["rust_version"] for p in m["packages"] if p["id"] in m["workspace_members"]}
if len(ours) != 1:
    sys.exit(f"msrv.sh: the workspace crates declare different rust-versions: {sorted(ours)}")
ours = ours.pop()
used = {n["id"] for n in m["resolve"]["nodes"]}
newer = ["%s %s needs Rust %s" % (p["name"], p["version"], p["rust_version"])
         for p in m["packages"]
         if p["id"] in used and p.get("rust_version") and v(p["rust_version"]) > v(ours)]
if newer:
    sys.exit(f"msrv.sh: rust-version is {ours}, but " + "; ".join(newer) + ": raise rust-version in Cargo.toml or pin older versions")
print(f"msrv.sh: every dependency builds with Rust {ours}")
'
