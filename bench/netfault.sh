# Network faults on lo for the benchmark scripts: blackholes (iptables
# DROP) and rate limits (tc htb), made the way testbed/src/netfault.rs
# makes them, so the benchmarks and the test suite can run at the same
# time and clean up after each other:
#
# * each blackhole and each rate limit holds a slot, an flock on
#   /tmp/mpio-testbed/<kind>-<n>.lock (testbed/src/slot.rs), for as long
#   as the script runs; the kernel drops it when the script dies, even by
#   SIGKILL;
# * iptables rules carry the comment mpio-test-blackhole-<n>; rate limits
#   are htb classes 6d70:<n> (hex) under the htb root 6d70: of lo, with
#   two u32 filters of priority <n> (to and from address:port);
# * rules and classes whose slot nobody holds are leftovers of a dead
#   process: nf_sweep removes them (the testbed does the same whenever it
#   makes a guard), and whoever removes the last class removes the root.
#
# Source it after lib.sh; call nf_cleanup on exit. Needs root, iptables,
# tc and flock.

NF_LOCKS=/tmp/mpio-testbed
NF_TC=6d70
NF_COMMENT=mpio-test-blackhole-
NF_BLACKHOLE_SLOT=
NF_CLASSES=()

# nf_slot KIND VAR: takes the first free slot of KIND, keeps its lock on a
# file descriptor of this shell until it exits, and sets VAR to its number.
nf_slot() {
  # Names no caller uses for VAR: bash's locals are dynamically scoped.
  local _nf_kind=$1 _nf_var=$2 _nf_n _nf_fd
  mkdir -p "$NF_LOCKS"
  for _nf_n in $(seq 1 4095); do
    exec {_nf_fd}<>"$NF_LOCKS/$_nf_kind-$_nf_n.lock"
    if flock -n "$_nf_fd"; then
      printf -v "$_nf_var" %s "$_nf_n"
      return 0
    fi
    exec {_nf_fd}>&-
  done
  echo "no free $_nf_kind slot in $NF_LOCKS" >&2
  return 1
}

# nf_free KIND N: nobody holds slot N of KIND.
nf_free() { flock -n "$NF_LOCKS/$1-$2.lock" true 2>/dev/null; }

# nf_locked NAME CMD...: runs CMD under the host-wide lock NAME (the
# testbed's iptables.lock / tc.lock).
nf_locked() {
  local name=$1 fd; shift
  mkdir -p "$NF_LOCKS"
  exec {fd}<>"$NF_LOCKS/$name.lock"
  flock "$fd"
  local rc=0
  "$@" || rc=$?
  exec {fd}>&-
  return $rc
}

nf_tc_classes() { tc class show dev lo | sed -n "s/^class htb $NF_TC:\([0-9a-f]*\) .*/\1/p"; }

nf_remove_class() { # N (decimal)
  tc filter del dev lo parent "$NF_TC:" protocol ip prio "$1" 2>/dev/null || true
  tc class del dev lo classid "$NF_TC:$(printf %x "$1")" 2>/dev/null || true
}

nf_drop_root_if_empty() {
  if tc qdisc show dev lo root | grep -q "^qdisc htb $NF_TC: root" && [ -z "$(nf_tc_classes)" ]; then
    tc qdisc del dev lo root
  fi
}

_nf_sweep_iptables() {
  local line n
  iptables -w -S OUTPUT 2>/dev/null | { grep -- "--comment $NF_COMMENT" || true; } | while read -r line; do
    n=${line##*"$NF_COMMENT"}; n=${n%% *}
    if [ "$n" != "$NF_BLACKHOLE_SLOT" ] && nf_free blackhole "$n"; then
      # shellcheck disable=SC2086 # the rule's words, as iptables -S prints them
      iptables -w -D ${line#-A } && echo "removed leftover iptables rule: $line" >&2
    fi
  done
}

_nf_sweep_tc() {
  local m n
  for m in $(nf_tc_classes); do
    n=$((16#$m))
    if nf_free ratelimit "$n"; then
      nf_remove_class "$n" && echo "removed leftover tc class $NF_TC:$m on lo" >&2
    fi
  done
  nf_drop_root_if_empty
}

# nf_sweep: removes leftover rules and classes of dead owners.
nf_sweep() {
  nf_locked iptables _nf_sweep_iptables
  nf_locked tc _nf_sweep_tc
}

_nf_rate_limit() { # N ADDR PORT BYTES_PER_SEC
  local n=$1 addr=$2 port=$3 bits=$(($4 * 8))bit class
  class=$NF_TC:$(printf %x "$n")
  local root
  root=$(tc qdisc show dev lo root | head -1)
  case "$root" in
    "qdisc htb $NF_TC: root"*) ;;
    "qdisc noqueue "* | "") tc qdisc add dev lo root handle "$NF_TC:" htb ;;
    *) echo "lo already has a root qdisc that is not ours: $root" >&2; return 1 ;;
  esac
  tc class add dev lo parent "$NF_TC:" classid "$class" htb rate "$bits" ceil "$bits" quantum 65536
  tc filter add dev lo parent "$NF_TC:" protocol ip prio "$n" u32 \
    match ip dst "$addr/32" match ip dport "$port" 0xffff flowid "$class"
  tc filter add dev lo parent "$NF_TC:" protocol ip prio "$n" u32 \
    match ip src "$addr/32" match ip sport "$port" 0xffff flowid "$class"
}

# nf_rate_limit ADDR PORT BYTES_PER_SEC: limits TCP traffic to and from
# ADDR:PORT, both directions together, until nf_cleanup.
nf_rate_limit() {
  local n
  nf_slot ratelimit n
  NF_CLASSES+=("$n")
  nf_locked tc _nf_rate_limit "$n" "$@"
}

# nf_blackhole_command VAR ADDR PORT: sets VAR to a shell command that
# drops every TCP packet to and from ADDR:PORT (two OUTPUT rules: all
# loopback packets pass OUTPUT), for `mpio perf --at`. nf_unblackhole
# removes them. (Not in a $(...): the slot's lock must stay with this
# shell.)
nf_blackhole_command() {
  local var=$1 addr=$2 port=$3
  [ -n "$NF_BLACKHOLE_SLOT" ] || nf_slot blackhole NF_BLACKHOLE_SLOT
  local c="-m comment --comment $NF_COMMENT$NF_BLACKHOLE_SLOT -j DROP"
  printf -v "$var" %s \
    "iptables -w -I OUTPUT -p tcp -d $addr --dport $port $c && iptables -w -I OUTPUT -p tcp -s $addr --sport $port $c"
}

_nf_unblackhole() {
  local line
  iptables -w -S OUTPUT 2>/dev/null | { grep -- "--comment $NF_COMMENT$NF_BLACKHOLE_SLOT " || true; } | while read -r line; do
    # shellcheck disable=SC2086
    iptables -w -D ${line#-A }
  done
}

# nf_unblackhole: removes this script's blackhole rules.
nf_unblackhole() {
  [ -n "$NF_BLACKHOLE_SLOT" ] || return 0
  nf_locked iptables _nf_unblackhole
}

_nf_unlimit() {
  local n
  for n in "${NF_CLASSES[@]}"; do nf_remove_class "$n"; done
  NF_CLASSES=()
  nf_drop_root_if_empty
}

# nf_cleanup: removes every rule and class this script made.
nf_cleanup() {
  nf_unblackhole || true
  if [ "${#NF_CLASSES[@]}" -gt 0 ]; then nf_locked tc _nf_unlimit || true; fi
}
