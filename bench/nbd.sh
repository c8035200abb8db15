#!/usr/bin/env bash
# Benchmark of mpio's NBD export against the fastest existing way to serve
# an iSCSI LU as NBD: qemu-nbd and qemu-storage-daemon over qemu's iSCSI
# block driver (libiscsi). One run, the same tgtd LU, the same client (fio
# with its nbd engine, one connection) for every server:
#
#   mpio 1p    mpio daemon, one device with one path (127.0.0.1)
#   mpio 2p    mpio daemon, one device with two paths, round-robin
#              (portals 127.0.0.1 and 127.0.0.2 of the same tgtd)
#   qemu-nbd   qemu-nbd --cache=none over iscsi://
#   qsd        qemu-storage-daemon, iscsi blockdev, NBD export
#
# Figures: 4 KiB random read IOPS at QD 1 and 32, 1 MiB sequential read and
# write MB/s at QD 8, and the CPU time of each server process per I/O
# (utime+stime of all its threads from /proc/PID/stat over the run, divided
# by the I/Os fio completed). "best qemu" is the faster of qemu-nbd and qsd
# per figure (the lower CPU per I/O for CPU rows); ratios are ours/best.
#
# Fairness: both qemu servers use cache=none (cache.direct=on, no
# writethrough flushes; the iSCSI driver has no host page cache, so this is
# writeback semantics without a cache, like ours). There is no aio= for the
# iSCSI driver (aio=native is file-posix only). Neither server gets an
# iothread: qemu-storage-daemon crashed on client disconnect with one,
# and qemu-nbd has none. The target is "tuned" as in bench/transport.sh.
# mpio's daemon offers its default iSCSI parameters (MaxRecvDataSegmentLength
# 64 KiB, FirstBurstLength 64 KiB, MaxBurstLength 256 KiB; the daemon has no
# knob for them); libiscsi offers 256 KiB / 256 KiB / 256 KiB.
#
# Placement as in lib.sh: tgtd on CPU 1; the server under test and fio on
# CPU 0 (all of the server's threads), so at QD 32 the server and fio share
# one core: qemu-nbd gets ~36k IOPS here against ~63k unplaced on a
# 2-core machine. TGTD_CPU=0-1 INITIATOR_CPU=0-1 leaves placement to the
# scheduler (much noisier when the machine is busy).
# Runs of the servers alternate, so drift of the machine hits all alike;
# each figure is the median of RUNS runs of SECONDS_PER_RUN seconds.
#
# CPU per I/O falls as more completions share a wake-up, so it is lowest
# where the target is fastest (null LU); on the tmpfs LU tgtd's worker
# threads pace completions and every server pays more per I/O.
#
#   RUNS=3 SECONDS_PER_RUN=5 LUNS="null tmpfs" bench/nbd.sh
#
# LUNS: "null" (tgtd --bstype null, default) and/or "tmpfs" (a 1 GiB file on
# /dev/shm, pre-filled). Needs root, tgt, fio, libnbd-bin, qemu-utils,
# qemu-block-extra and qemu-system-common (scripts/install-test-deps.sh
# installs them; this script installs nothing).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-5}
LUNS=${LUNS:-null}
WORK=$(mktemp -d /tmp/mpio-bench-nbd.XXXXXX)
. bench/lib.sh

for bin in tgtd fio nbdinfo qemu-nbd qemu-storage-daemon python3; do
  command -v "$bin" >/dev/null || { echo "nbd.sh: $bin is missing: run scripts/install-test-deps.sh" >&2; exit 1; }
done
[ -e /usr/lib/x86_64-linux-gnu/qemu/block-iscsi.so ] || ls /usr/lib/*/qemu/block-iscsi.so >/dev/null 2>&1 ||
  { echo "nbd.sh: qemu's iSCSI driver (qemu-block-extra) is missing: run scripts/install-test-deps.sh" >&2; exit 1; }

cargo build --release -q -p mpio
MPIO=${CARGO_TARGET_DIR:-$PWD/target}/release/mpio
PORT=3272
P1=127.0.0.1:$PORT
P2=127.0.0.2:$PORT
NULL_T=iqn.2026-11.org.mpio:bench-nbd-null
FILE_T=iqn.2026-11.org.mpio:bench-nbd-tmpfs
SHM=/dev/shm/mpio-bench-nbd-$$.img
TICK=$(getconf CLK_TCK)

SERVERS="mpio1p mpio2p qnbd qsd"
declare -A PID

stop_servers() {
  local s
  for s in $SERVERS; do
    [ -n "${PID[$s]:-}" ] || continue
    kill -TERM "${PID[$s]}" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "${PID[$s]}" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "${PID[$s]}" 2>/dev/null || true
    wait "${PID[$s]}" 2>/dev/null || true
    PID[$s]=
  done
}
cleanup() { stop_servers; stop_tgtd; rm -f "$SHM"; rm -rf "$WORK"; }

start_tgtd "$P1" "$P2"
trap cleanup EXIT
trap 'exit 130' INT TERM HUP
new_target 1 "$NULL_T" --bstype null --backing-store /dev/null
if [[ " $LUNS " == *" tmpfs "* ]]; then
  truncate -s 1G "$SHM"
  dd if=/dev/zero of="$SHM" bs=1M count=1024 status=none
  new_target 2 "$FILE_T" --backing-store "$SHM"
fi
for tid in $(tgt --mode target --op show | awk '/^Target [0-9]+:/ {sub(":", "", $2); print $2}'); do
  set_param "$tid" MaxRecvDataSegmentLength 262144
  set_param "$tid" MaxXmitDataSegmentLength 262144
  set_param "$tid" MaxBurstLength 1048576
  set_param "$tid" FirstBurstLength 262144
  set_param "$tid" InitialR2T No
done

# wait_for WHAT LOG CMD...: runs CMD until it succeeds, for at most 30 s;
# shows LOG if it never does.
wait_for() {
  local what=$1 log=$2; shift 2
  for _ in $(seq 300); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "nbd.sh: $what did not come up; its log:" >&2
  tail -20 "$log" >&2
  return 1
}

# mpio_ready CONTROL_SOCKET: the daemon is ready and every path is usable
# (ready alone means one usable path per device).
mpio_ready() {
  MPIO_SOCKET=$1 "$MPIO" status --json | python3 -c '
import json, sys
s = json.load(sys.stdin)
sys.exit(0 if s["ready"] is True and all(d["paths_usable"] == d["paths_total"] for d in s["devices"]) else 1)'
}

# A daemon with one device "d" over the given portals, round-robin.
start_mpio() {
  local name=$1 iqn=$2; shift 2
  local dir=$WORK/$name
  mkdir -p "$dir"
  {
    printf 'initiator = "iqn.2026-11.org.mpio:bench-%s"\n' "$name"
    printf '[daemon]\ncontrol_socket = "%s/mpio.sock"\nlog = "warn"\n' "$dir"
    printf '[metrics]\nenabled = false\n'
    printf '[nbd]\nsocket = "%s/nbd.sock"\n' "$dir"
    printf '[[target]]\nname = "t"\niqn = "%s"\n' "$iqn"
    printf '[[device]]\nname = "d"\ntarget = "t"\nlun = 1\npolicy = "round-robin"\n'
    local i=0 p
    for p in "$@"; do
      i=$((i + 1))
      printf '[[device.path]]\nname = "p%d"\nportal = "%s"\n' "$i" "$p"
    done
  } >"$dir/mpio.toml"
  setsid taskset -c "$INITIATOR_CPU" "$MPIO" daemon --config "$dir/mpio.toml" >"$dir/log" 2>&1 </dev/null &
  PID[$name]=$!
  wait_for "mpio daemon $name" "$dir/log" mpio_ready "$dir/mpio.sock"
  URI[$name]="nbd+unix:///d?socket=$dir/nbd.sock"
}

# qemu's iSCSI driver options for TARGET, as initiator NAME.
qemu_iscsi() {
  echo "transport=tcp,portal=$P1,target=$2,lun=1,initiator-name=iqn.2026-11.org.mpio:bench-$1"
}

start_qnbd() {
  local iqn=$1 sock=$WORK/qnbd.sock opts
  opts=$(qemu_iscsi qnbd "$iqn" | sed 's/\([^,]*\)/file.\1/g')
  setsid taskset -c "$INITIATOR_CPU" qemu-nbd --persistent --shared=8 --cache=none -k "$sock" \
    --image-opts "driver=raw,file.driver=iscsi,$opts" >"$WORK/qnbd.log" 2>&1 </dev/null &
  PID[qnbd]=$!
  URI[qnbd]="nbd+unix:///?socket=$sock"
  wait_for qemu-nbd "$WORK/qnbd.log" nbdinfo --size "${URI[qnbd]}"
}

start_qsd() {
  local iqn=$1 sock=$WORK/qsd.sock
  setsid taskset -c "$INITIATOR_CPU" qemu-storage-daemon \
    --blockdev "driver=iscsi,node-name=lun0,cache.direct=on,cache.no-flush=off,$(qemu_iscsi qsd "$iqn")" \
    --nbd-server "addr.type=unix,addr.path=$sock" \
    --export type=nbd,id=exp0,node-name=lun0,name=lun0,writable=on >"$WORK/qsd.log" 2>&1 </dev/null &
  PID[qsd]=$!
  URI[qsd]="nbd+unix:///lun0?socket=$sock"
  wait_for qemu-storage-daemon "$WORK/qsd.log" nbdinfo --size "${URI[qsd]}"
}

# utime+stime of every thread of PID, in clock ticks.
cputicks() { sed 's/.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }

# run SERVER RW BS QD -> "iops mbps cpu_us_per_io" (of the server process)
run() {
  local s=$1 rw=$2 bs=$3 qd=$4 t0 t1
  t0=$(cputicks "${PID[$s]}")
  on_initiator_cpu fio --name=nbd --ioengine=nbd --uri="${URI[$s]}" --rw="$rw" --bs="$bs" --iodepth="$qd" \
    --size=1g --time_based --runtime="$SECONDS_PER_RUN" --output-format=json >"$WORK/fio.json" 2>"$WORK/fio.err" ||
    { echo "nbd.sh: fio against $s failed:" >&2; cat "$WORK/fio.err" "$WORK/fio.json" >&2; return 1; }
  t1=$(cputicks "${PID[$s]}")
  python3 - "$WORK/fio.json" "$t0" "$t1" "$TICK" <<'EOF'
import json, sys
text = open(sys.argv[1]).read()  # the nbd engine prints "fio: connected ..." first
j = json.loads(text[text.index("{"):])["jobs"][0]
t0, t1, tick = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
ios = j["read"]["total_ios"] + j["write"]["total_ios"]
secs = (j["job_runtime"] or 1) / 1000
nbytes = j["read"]["io_bytes"] + j["write"]["io_bytes"]
cpu = (t1 - t0) / tick * 1e6 / ios if ios else float("nan")
print(ios / secs, nbytes / secs / 1e6, cpu)
EOF
}

median_col() { awk -v c="$2" '{print $c}' "$1" | median; }

# measure RW BS QD: every server RUNS times, alternating; sets
# VAL[server] (IOPS, or MB/s for 1 MiB) and CPU[server] (us per I/O).
declare -A VAL CPU URI
measure() {
  local rw=$1 bs=$2 qd=$3 s col=1
  [ "$bs" = 1m ] && col=2
  for s in $SERVERS; do : >"$WORK/r.$s"; done
  for _ in $(seq "$RUNS"); do
    for s in $SERVERS; do run "$s" "$rw" "$bs" "$qd" >>"$WORK/r.$s"; done
  done
  for s in $SERVERS; do
    VAL[$s]=$(median_col "$WORK/r.$s" $col)
    CPU[$s]=$(median_col "$WORK/r.$s" 3)
  done
}

fmt() { awk -v v="$1" 'BEGIN { printf (v >= 1000 ? "%.0f" : "%.1f"), v }'; }
best() { awk -v a="$1" -v b="$2" -v lo="${3:-}" 'BEGIN { print (lo ? (a < b ? a : b) : (a > b ? a : b)) }'; }

echo "# bench/nbd.sh: RUNS=$RUNS SECONDS_PER_RUN=$SECONDS_PER_RUN LUNS=\"$LUNS\"; $(nproc) CPUs; load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# $(fio --version), $(qemu-nbd --version | head -1), tgtd on CPU $TGTD_CPU, servers and fio on CPU $INITIATOR_CPU"
declare -A GOALS
header() {
  printf '%-34s %9s %9s %9s %9s %9s %7s %7s\n' "$1" "mpio 1p" "mpio 2p" "qemu-nbd" "qsd" "best qemu" "1p/qemu" "2p/qemu"
}
row() { # NAME LOWER_IS_BETTER VALUES_ASSOC
  local name=$1 lo=$2; local -n v=$3
  local b; b=$(best "${v[qnbd]}" "${v[qsd]}" "$lo")
  printf '%-34s %9s %9s %9s %9s %9s %7s %7s\n' "$name" "$(fmt "${v[mpio1p]}")" "$(fmt "${v[mpio2p]}")" \
    "$(fmt "${v[qnbd]}")" "$(fmt "${v[qsd]}")" "$(fmt "$b")" "$(ratio "${v[mpio1p]}" "$b")" "$(ratio "${v[mpio2p]}" "$b")"
  BEST=$b
}
# goal NAME OURS THRESHOLD ">=" | "<="
goal() {
  local ok
  ok=$(awk -v a="$2" -v t="$3" -v op="$4" 'BEGIN { print ((op == ">=" ? a >= t : a <= t) ? "PASS" : "MISS") }')
  printf '  %-58s %10s %s %-8s %s\n' "$1" "$(fmt "$2")" "$4" "$(fmt "$3")" "$ok"
}

for lun in $LUNS; do
  t=$NULL_T; [ "$lun" = tmpfs ] && t=$FILE_T
  start_mpio mpio1p "$t" "$P1"
  start_mpio mpio2p "$t" "$P1" "$P2"
  start_qnbd "$t"
  start_qsd "$t"
  echo
  header "LU $lun: throughput"
  cpu_lines=()
  for fig in "randread 4k 1" "randread 4k 32" "read 1m 8" "write 1m 8"; do
    set -- $fig
    measure "$1" "$2" "$3"
    if [ "$2" = 4k ]; then name="4k randread QD$3 IOPS"; else name="1M seq $1 QD$3 MB/s"; fi
    row "$name" "" VAL
    GOALS["$lun $fig"]="${VAL[mpio1p]} ${VAL[mpio2p]} ${VAL[qnbd]} $BEST"
    cpu_lines+=("$(row "$name: CPU us/IO" 1 CPU)")
    GOALS["$lun $fig cpu"]="${CPU[mpio1p]} ${CPU[mpio2p]}"
  done
  header "LU $lun: server CPU per I/O (us)"
  printf '%s\n' "${cpu_lines[@]}"
  stop_servers
done

echo
echo "# Goals (against the qemu-nbd or best qemu figure of this run; unpinned, qemu-nbd"
echo "# reached about 63k IOPS 4k QD32 on a 2-core machine; CPU per I/O in our process)"
for lun in $LUNS; do
  read -r o1 o2 qn _ <<<"${GOALS["$lun randread 4k 32"]}"
  goal "$lun 4k QD32 IOPS mpio 1p >= 1.2x qemu-nbd" "$o1" "$(awk -v q="$qn" 'BEGIN{print 1.2*q}')" ">="
  goal "$lun 4k QD32 IOPS mpio 2p >= 1.2x qemu-nbd" "$o2" "$(awk -v q="$qn" 'BEGIN{print 1.2*q}')" ">="
  for fig in "randread 4k 1" "read 1m 8" "write 1m 8"; do
    read -r o1 o2 _ b <<<"${GOALS["$lun $fig"]}"
    goal "$lun $fig mpio 1p >= 1.0x best qemu" "$o1" "$b" ">="
    goal "$lun $fig mpio 2p >= 1.0x best qemu" "$o2" "$b" ">="
  done
  read -r c1 c2 <<<"${GOALS["$lun randread 4k 32 cpu"]}"
  goal "$lun 4k QD32 CPU us/IO mpio 1p <= 11" "$c1" 11 "<="
  goal "$lun 4k QD32 CPU us/IO mpio 2p <= 11" "$c2" 11 "<="
done
echo "# load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
