#!/usr/bin/env bash
# Benchmark of mpio's iSCSI initiator against libiscsi, in one run against
# the same tgtd LUNs (issue 2 section 6). Not a test: it prints figures and
# ratios ours/libiscsi; goals are ratios >= 1.0.
#
#   4 KiB random read IOPS at QD 1 and 32   ours: mpio perf     libiscsi: iscsi-perf
#   1 MiB sequential read MB/s (QD 8)       ours: mpio perf     libiscsi: iscsi-perf
#   1 MiB sequential write MB/s (QD 8)      ours: mpio perf     libiscsi: qemu-img bench (qemu's libiscsi driver)
#
# with digests off and with HeaderDigest=CRC32C (libiscsi has no DataDigest;
# ours with both digests is printed as an extra line), on a null backing
# store and on a tmpfs file. Each figure is the median of RUNS runs of
# SECONDS seconds; tgtd runs on CPU 1 and the initiator on CPU 0 (lib.sh). Needs root, tgt, libiscsi-bin, qemu-utils and
# qemu-block-extra (scripts/install-test-deps.sh installs them).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-5}
WORK=$(mktemp -d /tmp/mpio-bench.XXXXXX)
. bench/lib.sh

cargo build --release -q -p mpio
MPIO=${CARGO_TARGET_DIR:-$PWD/target}/release/mpio
INIT=iqn.2026-11.org.mpio:bench
PORTAL=127.0.0.1:3271
NULL_T=iqn.2026-11.org.mpio:bench-null
FILE_T=iqn.2026-11.org.mpio:bench-tmpfs
SHM=/dev/shm/mpio-bench-$$.img

start_tgtd "$PORTAL"
cleanup() { stop_tgtd; rm -f "$SHM"; rm -rf "$WORK"; }
trap cleanup EXIT
new_target 1 "$NULL_T" --bstype null --backing-store /dev/null
truncate -s 1G "$SHM"
dd if=/dev/zero of="$SHM" bs=1M count=1024 status=none
new_target 2 "$FILE_T" --backing-store "$SHM"
# A "tuned" target: big segments and bursts.
for tid in 1 2; do
  set_param $tid MaxRecvDataSegmentLength 262144
  set_param $tid MaxXmitDataSegmentLength 262144
  set_param $tid MaxBurstLength 1048576
  set_param $tid FirstBurstLength 262144
  set_param $tid InitialR2T No
  set_param $tid HeaderDigest None,CRC32C
  set_param $tid DataDigest None,CRC32C
done

# ours RW BS QD TARGET DIGESTS -> "iops mbps cpu_us_per_io". Offers what
# libiscsi offers (262144 for MaxRecvDataSegmentLength, FirstBurstLength
# and MaxBurstLength), so both negotiate the same PDU and burst sizes.
ours() {
  local rw=$1 bs=$2 qd=$3 t=$4 hd=$5 dd=$6
  on_initiator_cpu "$MPIO" perf -p "$PORTAL" -i "$INIT" -t "$t" -l 1 --rw "$rw" --bs "$bs" --qd "$qd" \
    --seconds "$SECONDS_PER_RUN" --header-digest "$hd" --data-digest "$dd" \
    --max-recv-data-segment-length 262144 --first-burst-length 262144 --max-burst-length 262144 --json |
    python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["iops"], d["mbps"], d["cpu_us_per_io"])'
}

# libiscsi reads: iscsi-perf BLOCKS QD RANDOM TARGET DIGEST -> "iops mbps"
lib_read() {
  local blocks=$1 qd=$2 random=$3 t=$4 hd=$5
  local url="iscsi://$PORTAL/$t/1"
  [ "$hd" = crc32c ] && url="$url?header_digest=crc32c"
  local out
  out=$(on_initiator_cpu timeout -k 2 $((SECONDS_PER_RUN + 20)) iscsi-perf -i "$INIT" -b "$blocks" -m "$qd" -t "$SECONDS_PER_RUN" $random "$url" 2>&1 | tr '\r' '\n')
  echo "$out" | grep -o 'iops average [0-9]*' | tail -1 | awk -v b="$blocks" '{print $3, $3*b*512/1e6}'
}

# libiscsi writes: qemu-img bench over qemu's iscsi driver -> "iops mbps"
lib_write() {
  local t=$1 hd=$2 count=$3
  # --image-opts: qemu 7.2 crashes on the URL form with ?header_digest=.
  local opts="driver=iscsi,transport=tcp,portal=$PORTAL,target=$t,lun=1,initiator-name=$INIT,header-digest=$hd"
  on_initiator_cpu timeout -k 2 120 qemu-img bench -w -t none -n -d 8 -s 1M -c "$count" --image-opts "$opts" 2>&1 |
    awk -v c="$count" '/Run completed in/ {s=$4; print c/s, c*1048576/s/1e6}'
}

# median_cols FILE: the median of each column of FILE's lines.
median_cols() {
  python3 -c '
import sys, statistics
rows = [list(map(float, l.split())) for l in open(sys.argv[1]) if l.strip()]
print(" ".join("%.1f" % statistics.median(c) for c in zip(*rows)) if rows else "nan nan nan")' "$1"
}

# pair "OURS CMD" "LIB CMD": runs them alternately RUNS times (so drift of
# the machine hits both alike) and sets $O and $L to their column medians.
pair() {
  : >"$WORK/o"; : >"$WORK/l"
  for _ in $(seq "$RUNS"); do
    eval "$1" >>"$WORK/o"
    [ -n "$2" ] && eval "$2" >>"$WORK/l"
  done
  O=$(median_cols "$WORK/o"); L=$(median_cols "$WORK/l")
}
col() { echo "$1" | awk -v c="$2" '{print $c}'; }

printf '%-44s %12s %12s %7s %12s\n' "figure" "mpio" "libiscsi" "ratio" "mpio CPU/IO"
line() { # NAME OURS_VALUE LIB_VALUE CPU UNIT
  printf '%-44s %12s %12s %7s %9s us\n' "$1" "$2" "$3" "$(ratio "$2" "$3")" "$4"
}

for lun in null tmpfs; do
  t=$NULL_T; [ "$lun" = tmpfs ] && t=$FILE_T
  for hd in none crc32c; do
    tag="$lun, HeaderDigest=$hd"
    for qd in 1 32; do
      pair "ours randread 4k $qd $t $hd none" "lib_read 8 $qd -r $t $hd"
      line "4k randread QD$qd IOPS ($tag)" "$(col "$O" 1)" "$(col "$L" 1)" "$(col "$O" 3)"
    done
    pair "ours read 1m 8 $t $hd none" "lib_read 2048 8 '' $t $hd"
    line "1M seq read MB/s QD8 ($tag)" "$(col "$O" 2)" "$(col "$L" 2)" "$(col "$O" 3)"
    pair "ours write 1m 8 $t $hd none" "lib_write $t $hd 6000"
    line "1M seq write MB/s QD8 ($tag)" "$(col "$O" 2)" "$(col "$L" 2)" "$(col "$O" 3)"
  done
  pair "ours randread 4k 32 $t crc32c crc32c" ""
  line "4k randread QD32 IOPS ($lun, both digests)" "$(col "$O" 1)" "-" "$(col "$O" 3)"
  pair "ours write 1m 8 $t crc32c crc32c" ""
  line "1M seq write MB/s QD8 ($lun, both digests)" "$(col "$O" 2)" "-" "$(col "$O" 3)"
done
