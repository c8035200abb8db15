#!/usr/bin/env bash
# Builds every fuzz target listed in fuzz/Cargo.toml and runs each for a
# few seconds, so that none of them can rot (they live outside the
# workspace, and `cargo test` never compiles them).
#
#   scripts/fuzz.sh            # every target, FUZZ_SECONDS (default 10) each
#   scripts/fuzz.sh pdu nbd    # only these
#
# Stable Rust is enough: the targets are built with plain cargo and the
# instrumentation flags cargo-fuzz passes (SanitizerCoverage with inline
# 8-bit counters, PC table, compare tracing, stack depth, `--cfg fuzzing`),
# linked against libFuzzer by libfuzzer-sys. What cargo-fuzz adds on top is
# AddressSanitizer, which needs nightly (-Zsanitizer); our crates forbid
# unsafe code, so the bugs these runs look for are panics, overflow and
# debug assertions, which the build turns on. For long runs with
# AddressSanitizer use cargo-fuzz on nightly (fuzz/README.md).
#
# A crash fails the script and leaves the input in
# fuzz/artifacts/TARGET/; the corpus grows in fuzz/corpus/TARGET/.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

seconds="${FUZZ_SECONDS:-10}"
triple="$(rustc -vV | sed -n 's/^host: //p')"

# Every [[bin]] of the fuzz package, in file order.
mapfile -t all < <(awk '/^\[\[bin\]\]/ { bin = 1; next } /^\[/ { bin = 0 } bin && $1 == "name" { gsub(/"/, "", $3); print $3 }' Cargo.toml)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${all[@]}")
[ ${#targets[@]} -gt 0 ] || { echo "fuzz.sh: no [[bin]] targets in fuzz/Cargo.toml" >&2; exit 1; }
for t in "${targets[@]}"; do
  printf '%s\n' "${all[@]}" | grep -qx "$t" || { echo "fuzz.sh: no fuzz target $t (have: ${all[*]})" >&2; exit 1; }
done

# cargo-fuzz's flags (cargo-fuzz 0.13, src/project.rs), without a
# sanitizer. --target keeps them off build scripts and proc macros.
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares -Cllvm-args=-sanitizer-coverage-stack-depth \
-Cllvm-args=-simplifycfg-branch-fold-threshold=0 --cfg fuzzing -Cdebug-assertions -Coverflow-checks=on"

echo "== fuzz: building ${targets[*]}"
start=$(date +%s)
bins=()
for t in "${targets[@]}"; do bins+=(--bin "$t"); done
cargo build --locked --release --target "$triple" --config 'profile.release.debug="line-tables-only"' "${bins[@]}"
echo "== fuzz: built in $(( $(date +%s) - start )) s"

summary=()
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "artifacts/$t"
  log="$(mktemp)"
  echo "== fuzz: $t for ${seconds} s"
  # -rss_limit_mb: a target that leaks or balloons fails instead of
  # swapping the machine; -print_final_stats for the executions count.
  if ! "target/$triple/release/$t" -max_total_time="$seconds" -rss_limit_mb=2048 -print_final_stats=1 \
      -artifact_prefix="artifacts/$t/" "corpus/$t" >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    echo "fuzz.sh: target $t failed; the input is in fuzz/artifacts/$t/" >&2
    rm -f "$log"
    exit 1
  fi
  runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)"
  cov="$(grep -o 'cov: [0-9]*' "$log" | tail -n 1 | cut -d' ' -f2)"
  summary+=("$(printf '%-8s %10s executions  coverage %s  corpus %s' "$t" "${runs:-?}" "${cov:-?}" "$(find "corpus/$t" -type f | wc -l)")")
  rm -f "$log"
done
echo "== fuzz: ${seconds} s per target"
printf '%s\n' "${summary[@]}"
