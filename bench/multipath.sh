#!/usr/bin/env bash
# Benchmark of mpio's multipath device (issue 3): I/O stalls on failover
# and load balancing over unequal and equal paths, in one run against one
# private tgtd with four portals (127.0.0.1-4:$PORT). Not a test: it prints
# every figure with its goal and PASS/MISS, and exits 0 unless the setup
# fails. The load is `mpio perf` over a multipath device (`--path`,
# `--policy`) with the device's DEFAULT timers; faults are injected while
# the load runs by `mpio perf --at SECONDS:COMMAND`.
#
# 1. Stalls. 4 KiB random reads, then random writes, QD 16, round robin
#    over 2 paths, tmpfs-backed LU; STALL_SECONDS s per run, the fault
#    FAULT_AT s into the measurement. Figures: the slowest single request,
#    and the longest time in which no request completed at all.
#      - no fault: the noise floor of these figures;
#      - connection reset: `tgtadm --op delete --mode conn` of one path's
#        connection (tgtd closes it with a FIN); goal <= 100 ms;
#      - blackhole: iptables DROP of every packet to and from the second
#        portal, both directions (testbed's Blackhole), kept until the end
#        of the run; goal <= 3 s. Once more with least-queue-depth, for
#        comparison.
# 2. Unequal paths. 1 MiB sequential reads, QD 16, null LU. The fast
#    portal is rate limited to FAST_MBPS and the slow one to SLOW_MBPS
#    (10 %). The fast path is limited on purpose: unlimited, one path
#    moves 1-2 GB/s here and "the fast path alone" would measure the CPU
#    (which the target shares), not the path. Ratios are to the fast path
#    alone, driven as a one-path device so both sides pay the device's
#    cost: least-queue-depth, goal >= 0.9x; round robin, printed without a
#    goal (it gives the slow path every other request, so the fast one
#    waits for it).
# 3. Aggregation. The same load over two portals limited to EQUAL_MBPS
#    each, round robin and least-queue-depth, as a ratio to one of them
#    alone; goal >= 1.8x.
#
# Rate limits are htb classes on lo (token buckets, rate = ceil) with u32
# filters on the portal's address and port, both directions, as
# testbed/src/netfault.rs RateLimit makes them; blackholes and rate limits
# follow the testbed's slots and tags (bench/netfault.sh), so they coexist
# with a running test suite and nothing outlives the script, also on
# Ctrl-C. A test suite running at the same time still competes for the CPU
# and shows in the figures.
#
# Needs root, tgt, iptables, iproute2 (tc), util-linux (flock); about
# two minutes. RESULTS=DIR keeps every run's JSON (with the device's
# events) in DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
STALL_SECONDS=${STALL_SECONDS:-10}
FAULT_AT=${FAULT_AT:-3}
TPUT_SECONDS=${TPUT_SECONDS:-5}
FAST_MBPS=${FAST_MBPS:-100}
SLOW_MBPS=${SLOW_MBPS:-10}
EQUAL_MBPS=${EQUAL_MBPS:-50}
PORT=${PORT:-3291}
TGT_CTL=${TGT_CTL:-72}
RESULTS=${RESULTS:-}
WORK=$(mktemp -d /tmp/mpio-bench-mp.XXXXXX)
. bench/lib.sh
. bench/netfault.sh

[ "$(id -u)" = 0 ] || { echo "bench/multipath.sh needs root (tgtd, iptables, tc)" >&2; exit 1; }
cargo build --release -q -p mpio
MPIO=${CARGO_TARGET_DIR:-$PWD/target}/release/mpio
INIT=iqn.2026-11.org.mpio:bench-mp
FILE_T=iqn.2026-11.org.mpio:bench-mp-tmpfs
NULL_T=iqn.2026-11.org.mpio:bench-mp-null
SHM=/dev/shm/mpio-bench-mp-$$.img
P1=127.0.0.1:$PORT P2=127.0.0.2:$PORT P3=127.0.0.3:$PORT P4=127.0.0.4:$PORT

cleanup() {
  nf_cleanup
  stop_tgtd
  rm -f "$SHM"
  rm -rf "$WORK"
}
trap 'exit 130' INT
trap 'exit 143' TERM

# How busy the CPUs are before we start (other work shows in the figures).
busy=$(python3 -c '
import time
def idle():
    f = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    return f[3] + f[4], sum(f)
i0, t0 = idle(); time.sleep(1); i1, t1 = idle()
print(round(100 * (1 - (i1 - i0) / max(t1 - t0, 1))))')
if [ "$busy" -gt 15 ]; then
  echo "warning: the CPUs were ${busy}% busy before the benchmark started: other work shows in the figures"
fi

nf_sweep
start_tgtd "$P1" "$P2" "$P3" "$P4"
trap cleanup EXIT # after start_tgtd, which sets its own
truncate -s 256M "$SHM"
new_target 1 "$FILE_T" --backing-store "$SHM"
new_target 2 "$NULL_T" --bstype null --backing-store /dev/null
# Bigger bursts, as in bench/transport.sh, so 1 MiB reads are few PDUs.
for tid in 1 2; do
  set_param $tid MaxRecvDataSegmentLength 262144
  set_param $tid MaxXmitDataSegmentLength 262144
  set_param $tid MaxBurstLength 1048576
  set_param $tid FirstBurstLength 262144
done

# Other tgtd processes (a test suite) compete for the two CPUs.
others() {
  if pgrep -x tgtd | grep -qvx "$TGTD_PID"; then echo "$1" >>"$WORK/others"; fi
}

# perf NAME TARGET PERF-ARGS...: one run, its JSON in $WORK/NAME.json.
perf() {
  local name=$1 t=$2; shift 2
  others "$name"
  if ! on_initiator_cpu "$MPIO" perf -i "$INIT" -t "$t" -l 1 --json \
    --max-recv-data-segment-length 262144 --max-burst-length 1048576 --first-burst-length 262144 \
    "$@" >"$WORK/$name.json" 2>"$WORK/$name.err"; then
    echo "mpio perf ($name) failed:" >&2
    cat "$WORK/$name.err" >&2
    exit 1
  fi
  others "$name"
  [ -z "$RESULTS" ] || { mkdir -p "$RESULTS"; cp "$WORK/$name.json" "$RESULTS/"; }
}

# field NAME EXPR: a Python expression over the run's JSON (d).
field() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$WORK/$1.json" "$2"; }

# verdict VALUE GOAL le|ge -> PASS or MISS
verdict() { awk -v v="$1" -v g="$2" -v op="$3" 'BEGIN { ok = (op == "le") ? (v + 0 <= g + 0) : (v + 0 >= g + 0); print ok ? "PASS" : "MISS" }'; }

line() { # FIGURE VALUE RATIO GOAL RESULT NOTE
  printf '%-44s %11s %6s %10s %6s  %s\n' "$@"
}

# The fault commands perf runs at FAULT_AT s. A reset deletes the first
# connection tgtd lists for the target (which path that is shows in the
# note: the device's first path_failed event).
cat >"$WORK/reset" <<EOF
#!/bin/sh
set -e
set -- \$(tgtadm -C $TGT_CTL --lld iscsi --mode conn --op show --tid 1 | awk '/^Session:/ {s = \$2} /Connection:/ {print s, \$2; exit}')
[ \$# = 2 ] || { echo "no connection to reset" >&2; exit 1; }
exec tgtadm -C $TGT_CTL --lld iscsi --op delete --mode conn --tid 1 --sid "\$1" --cid "\$2"
EOF
chmod +x "$WORK/reset"
nf_blackhole_command BLACKHOLE 127.0.0.2 "$PORT"

# The stall figures of a run's JSON: "slowest-ms|gap-ms|note|note". With a
# fault they count from the moment it was injected (perf's since_at), so
# noise before it is left out; times are relative to the fault.
STALL_FIGURES='
import json, sys
d = json.load(open(sys.argv[1]))
s = d["since_at"] or d
t = s["from_s"] if d["since_at"] else 0.0
lat, gap = s["lat_max_us"] / 1e3, s["max_gap_us"] / 1e3
n1 = ["issued at %+.2f s" % (s["lat_max_at_s"] - t)]
n2 = ["from %+.2f s" % (s["max_gap_at_s"] - t)]
failed = [e for e in d.get("events", []) if e["event"] == "path_failed"]
if failed:
    e = failed[0]
    n1.append("%s failed (%s) at %+.2f s" % (e["path"], e["reason"].split(": ")[1], e["at_s"] - t))
if d.get("errors"):
    n1.append("%d I/O errors" % d["errors"])
if d["since_at"] and d["max_gap_us"] > s["max_gap_us"]:
    n2.append("before the fault: %.1f ms" % (d["max_gap_us"] / 1e3))
print("%.1f|%.1f|%s|%s" % (lat, gap, "; ".join(n1), "; ".join(n2)))
'

# stall RW FAULT GOAL_MS [POLICY]: one run over p1 + p2 (round robin).
stall() {
  local rw=$1 fault=$2 goal_ms=$3 policy=${4:-round-robin}
  local name="stall-$rw-$fault-$policy" label="$fault, $rw" at=()
  [ "$policy" = round-robin ] || label="$label, $policy"
  case "$fault" in
    reset) at=(--at "$FAULT_AT:$WORK/reset") ;;
    blackhole) at=(--at "$FAULT_AT:$BLACKHOLE") ;;
  esac
  perf "$name" "$FILE_T" -p "$P1" --path "$P2" --policy "$policy" --rw "$rw" --bs 4k --qd 16 \
    --seconds "$STALL_SECONDS" ${at[@]+"${at[@]}"}
  [ "$fault" != blackhole ] || nf_unblackhole
  local figures lat gap n1 n2
  figures=$(python3 -c "$STALL_FIGURES" "$WORK/$name.json")
  IFS='|' read -r lat gap n1 n2 <<<"$figures"
  if [ "$fault" = none ]; then
    line "no fault, $rw: slowest request" "$lat ms" - - - "$n1"
    line "no fault, $rw: longest gap" "$gap ms" - - - "$n2"
  else
    line "$label: slowest request" "$lat ms" - "<= $goal_ms ms" "$(verdict "$lat" "$goal_ms" le)" "$n1"
    line "$label: longest gap" "$gap ms" - "<= $goal_ms ms" "$(verdict "$gap" "$goal_ms" le)" "$n2"
  fi
}

echo "== stalls: 4k QD16, round robin over 2 paths, tmpfs LU, default timers; fault at $FAULT_AT s of $STALL_SECONDS s"
echo "   (longest gap: longest time without any completion; times in notes are relative to the fault)"
line figure value ratio goal result note
for rw in randread randwrite; do
  stall "$rw" none 0
  stall "$rw" reset 100
  stall "$rw" blackhole 3000
done
# For comparison: least-queue-depth stops sending to a path whose
# requests do not come back, so only the requests caught on it stall.
stall randread blackhole 3000 least-queue-depth

# throughput NAME PERF-ARGS...: 1 MiB sequential reads on the null LU -> MB/s.
throughput() {
  local name=$1; shift
  perf "$name" "$NULL_T" --rw read --bs 1m --qd 16 --seconds "$TPUT_SECONDS" "$@"
  field "$name" 'round(d["mbps"], 1)'
}
# shares NAME: requests per path.
shares() { field "$1" '" / ".join("%s %d" % (p["name"], p["requests"]) for p in d["paths"]) + " requests"'; }

mb=1000000
echo "== throughput: 1M sequential reads QD16, null LU; paths rate limited with htb on lo"
line figure value ratio goal result note
nf_rate_limit 127.0.0.1 "$PORT" $((FAST_MBPS * mb))
nf_rate_limit 127.0.0.2 "$PORT" $((SLOW_MBPS * mb))
nf_rate_limit 127.0.0.3 "$PORT" $((EQUAL_MBPS * mb))
nf_rate_limit 127.0.0.4 "$PORT" $((EQUAL_MBPS * mb))

fast=$(throughput fast -p "$P1" --policy round-robin)
line "fast path alone ($FAST_MBPS MB/s)" "$fast MB/s" 1.00 - - "one-path device"
lqd=$(throughput lqd -p "$P1" --path "$P2" --policy least-queue-depth)
r=$(ratio "$lqd" "$fast")
line "least-queue-depth, fast + slow ($SLOW_MBPS MB/s)" "$lqd MB/s" "$r" ">= 0.90" "$(verdict "$r" 0.9 ge)" "$(shares lqd)"
rr=$(throughput rr -p "$P1" --path "$P2" --policy round-robin)
line "round-robin, fast + slow ($SLOW_MBPS MB/s)" "$rr MB/s" "$(ratio "$rr" "$fast")" - - "$(shares rr)"

one=$(throughput one -p "$P3" --policy round-robin)
line "one path alone ($EQUAL_MBPS MB/s)" "$one MB/s" 1.00 - - "one-path device"
for policy in round-robin least-queue-depth; do
  two=$(throughput "two-$policy" -p "$P3" --path "$P4" --policy "$policy")
  r=$(ratio "$two" "$one")
  line "$policy, 2 x $EQUAL_MBPS MB/s" "$two MB/s" "$r" ">= 1.80" "$(verdict "$r" 1.8 ge)" "$(shares "two-$policy")"
done

if [ -s "$WORK/others" ]; then
  echo "warning: other tgtd processes (a test suite?) ran during: $(sort -u "$WORK/others" | tr '\n' ' ')"
  echo "         they compete for the CPUs; their noise is in these figures"
fi
