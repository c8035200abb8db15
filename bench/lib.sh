# Shared helpers for the benchmark scripts: a private tgtd, medians, ratios.
# Source it; it expects $WORK (a scratch directory) to be set.

TGT_CTL=${TGT_CTL:-71}

tgt() { tgtadm -C "$TGT_CTL" --lld iscsi "$@"; }

# The target runs on one core and the initiators under test on the other,
# for every run: where the scheduler puts them otherwise decides whether a
# round trip costs 7 us or 80 us (seen on a 2-core machine), which swamps the
# difference between initiators.
TGTD_CPU=${TGTD_CPU:-1}
INITIATOR_CPU=${INITIATOR_CPU:-0}
on_initiator_cpu() { taskset -c "$INITIATOR_CPU" "$@"; }

# start_tgtd PORTAL...: a tgtd with its own control port, stopped on exit.
# tgtd keeps only the last of several --iscsi portal= options, so the
# others are added at run time.
start_tgtd() {
  local first=$1; shift
  setsid taskset -c "$TGTD_CPU" tgtd -f -C "$TGT_CTL" --iscsi "portal=$first" >"$WORK/tgtd.log" 2>&1 </dev/null &
  TGTD_PID=$!
  trap stop_tgtd EXIT
  local up=
  for _ in $(seq 100); do tgt --mode target --op show >/dev/null 2>&1 && { up=1; break; }; sleep 0.05; done
  [ -n "$up" ] || { echo "tgtd did not start; see $WORK/tgtd.log" >&2; return 1; }
  for p in "$@"; do tgt --mode portal --op new --param "portal=$p" || { echo "tgtd: cannot add portal $p" >&2; return 1; }; done
}

stop_tgtd() {
  [ -n "${TGTD_PID:-}" ] || return 0
  tgtadm -C "$TGT_CTL" --op delete --mode system >/dev/null 2>&1 || true
  kill -9 "$TGTD_PID" 2>/dev/null || true
  wait "$TGTD_PID" 2>/dev/null || true
  TGTD_PID=
}

# new_target TID IQN [tgtadm logicalunit args...]: target with LUN 1, open to all.
new_target() {
  local tid=$1 iqn=$2; shift 2
  tgt --mode target --op new --tid "$tid" --targetname "$iqn"
  tgt --mode logicalunit --op new --tid "$tid" --lun 1 "$@"
  tgt --mode target --op bind --tid "$tid" --initiator-address ALL
}

# set_param TID NAME VALUE
set_param() { tgt --mode target --op update --tid "$1" --name "$2" --value "$3"; }

median() { sort -g | awk '{a[NR]=$1} END {if (NR==0) print "nan"; else print a[int((NR+1)/2)]}'; }

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b+0 == 0) print "n/a"; else printf "%.2f", a/b }'; }
