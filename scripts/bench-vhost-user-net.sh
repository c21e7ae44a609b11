#!/usr/bin/env bash
# vhost-user-net packets/s: our vhost-user-device against DPDK's own vhost
# PMD, same front-end, same workload, same run.
#
# Front-end: dpdk-testpmd with virtio-user (--vdev net_virtio_user0,path=SOCK),
# one forwarding lcore (CPU 0). Back-ends, one forwarding core each (CPU 1):
#   ours: vhost-user-device --busy-poll, one worker, --device net with
#         backend=null (drops what the front-end sends) for txonly and
#         backend=generator (64-byte frames into every rx buffer) for rxonly;
#   dpdk: a second dpdk-testpmd with --vdev net_vhost0,iface=SOCK,queues=1,
#         forward-mode rxonly (drops) for txonly, txonly for rxonly.
# Modes (the front-end's testpmd forward mode): txonly (front-end transmits
# 64-byte frames, back-end drops; measured: front-end Tx-pps) and rxonly
# (back-end generates 64-byte frames, front-end receives; measured:
# front-end Rx-pps). Ring layouts: split and packed (packed_vq=1). Each
# round runs A then B (alternating the order every round) for every mode and
# layout; the script prints each measurement, then per mode and layout the
# medians and the median of the per-round ratios ours/DPDK.
#
# Placement: on a VM the two CPUs may be siblings of one host core or two
# cores, and that can change between runs (measured here: 64-byte rates
# of 15 or 5 Mpps for the same binary, stable within a run). Before every
# measurement the script runs bench/core_round_trip_bench (the CPU 0 <-> 1
# cache-line round trip) and prints it; the summary also gives the median
# ratio over the rounds whose two measurements saw round trips within 25%
# of each other ("same placement"), the comparison to trust.
#
# usage: scripts/bench-vhost-user-net.sh [-r ROUNDS] [-t SECONDS] [-d DAEMON]
#        [-m MODES] [-l LAYOUTS] [--hugepages]
#   DAEMON default: build/release/glue/vhost-user/vhost-user-device
#   (the probe is taken from the same build tree: DAEMON/../../bench/)
#   MODES default "txonly rxonly", LAYOUTS default "split packed"
#   --hugepages: reserve 2 MiB pages and run EAL on them (default --no-huge)
# Needs root (DPDK), dpdk-testpmd (Debian dpdk-dev) and its virtio and
# vhost PMDs (librte-net-virtio23, librte-net-vhost23).
set -u -o pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROUNDS=5 SECS=5 DAEMON=$ROOT/build/release/glue/vhost-user/vhost-user-device
MODES="txonly rxonly" LAYOUTS="split packed" HUGE=0
while [[ $# -gt 0 ]]; do
  case $1 in
    -r) ROUNDS=$2; shift 2 ;;
    -t) SECS=$2; shift 2 ;;
    -d) DAEMON=$2; shift 2 ;;
    -m) MODES=$2; shift 2 ;;
    -l) LAYOUTS=$2; shift 2 ;;
    --hugepages) HUGE=1; shift ;;
    -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
[[ -x $DAEMON ]] || { echo "no daemon at $DAEMON (build it or pass -d)" >&2; exit 2; }
PROBE=$(dirname "$DAEMON")/../../bench/core_round_trip_bench
[[ -x $PROBE ]] || PROBE=$ROOT/build/release/bench/core_round_trip_bench
[[ -x $PROBE ]] || { echo "no $PROBE (build target core_round_trip_bench)" >&2; exit 2; }
TESTPMD=$(command -v dpdk-testpmd) || { echo "dpdk-testpmd missing (apt-get install dpdk-dev)" >&2; exit 2; }
compgen -G "/usr/lib/*/dpdk/pmds-*/librte_net_vhost.so*" >/dev/null ||
  { echo "DPDK's vhost PMD missing (apt-get install librte-net-vhost23)" >&2; exit 2; }
[[ $(id -u) == 0 ]] || { echo "needs root (DPDK)" >&2; exit 2; }

TMP=$(mktemp -d /tmp/vu-bench.XXXXXX)
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
  sleep 0.3
  for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null; done
  [[ -n ${HUGE_MOUNT:-} ]] && umount "$HUGE_MOUNT" 2>/dev/null
  rm -rf "$TMP" /var/run/dpdk/vu-bench-$$-*
}
trap cleanup EXIT
trap 'exit 1' INT TERM

MEM=(--no-huge -m 512)
if [[ $HUGE == 1 ]]; then
  have=$(cat /proc/sys/vm/nr_hugepages)
  (( have >= 1024 )) || echo 1024 >/proc/sys/vm/nr_hugepages
  (( $(cat /proc/sys/vm/nr_hugepages) >= 512 )) ||
    { echo "could not reserve 2 MiB hugepages" >&2; exit 2; }
  # EAL finds its pages through a hugetlbfs mount; a fresh VM may have none.
  if ! grep -q '^[^ ]* [^ ]* hugetlbfs ' /proc/mounts; then
    mkdir -p "$TMP/huge" && mount -t hugetlbfs none "$TMP/huge" ||
      { echo "could not mount hugetlbfs" >&2; exit 2; }
    HUGE_MOUNT=$TMP/huge
  fi
  MEM=(--single-file-segments -m 512)
fi

# eal PREFIX MAIN_LCORE FWD_LCORE: common EAL arguments
eal() {
  echo -n "-l $2,$3 --main-lcore $2 -n 1 ${MEM[*]} --no-pci --file-prefix=vu-bench-$$-$1"
}
TPMD_COMMON=(--nb-cores=1 --rxd=1024 --txd=1024 --txpkts=64 --burst=32
             --total-num-mbufs=32768)

# front MODE LAYOUT LOG: runs the virtio-user testpmd for SECS measured
# seconds; prints the measured pps.
front() {
  local mode=$1 layout=$2 logf=$3 extra=""
  [[ $layout == packed ]] && extra=",packed_vq=1"
  {
    sleep 2; echo "start"; sleep 1; echo "show port stats 0"; sleep "$SECS"
    echo "show port stats 0"; echo "stop"; sleep 0.5; echo "quit"
  } | timeout -k 5 $((SECS + 30)) "$TESTPMD" $(eal front 1 0) \
      --vdev "net_virtio_user0,path=$TMP/net.sock,queues=1,queue_size=1024$extra" \
      -- -i "${TPMD_COMMON[@]}" --forward-mode="$mode" >"$logf" 2>&1
  local key=Tx-pps
  [[ $mode == rxonly ]] && key=Rx-pps
  grep -o "$key: *[0-9]*" "$logf" | tail -1 | grep -o '[0-9]*$'
}

# back_ours MODE LAYOUT: starts the daemon (busy-poll) on CPU 1.
back_ours() {
  local mode=$1 backend=null
  [[ $mode == rxonly ]] && backend=generator
  rm -f "$TMP/net.sock"
  taskset -c 1 "$DAEMON" --busy-poll --socket "$TMP/net.sock" \
    --device "net,backend=$backend,queue-size=1024" >"$TMP/daemon.log" 2>&1 &
  BACK_PID=$!
  PIDS+=("$BACK_PID")
  local i
  for ((i = 0; i < 100; i++)); do [[ -S $TMP/net.sock ]] && return 0; sleep 0.05; done
  echo "daemon did not listen:" >&2; cat "$TMP/daemon.log" >&2; return 1
}

# back_dpdk MODE LAYOUT: starts the vhost-PMD testpmd (forwarding on CPU 1).
back_dpdk() {
  local mode=$1 fwd=rxonly
  [[ $mode == rxonly ]] && fwd=txonly
  rm -f "$TMP/net.sock"
  # Commands on a FIFO kept open: start once the front-end had time to
  # connect, then run until killed.
  rm -f "$TMP/back.fifo"; mkfifo "$TMP/back.fifo"
  { sleep 1.5; echo "start"; exec sleep 3600; } >"$TMP/back.fifo" &
  FIFO_PID=$!
  PIDS+=("$FIFO_PID")
  "$TESTPMD" $(eal back 0 1) --vdev "net_vhost0,iface=$TMP/net.sock,queues=1" \
    -- -i "${TPMD_COMMON[@]}" --forward-mode="$fwd" \
    <"$TMP/back.fifo" >"$TMP/back.log" 2>&1 &
  BACK_PID=$!
  PIDS+=("$BACK_PID")
  local i
  for ((i = 0; i < 200; i++)); do [[ -S $TMP/net.sock ]] && return 0; sleep 0.05; done
  echo "vhost PMD did not listen:" >&2; tail -20 "$TMP/back.log" >&2; return 1
}

stop_back() {
  [[ -n ${FIFO_PID:-} ]] && { kill -TERM "$FIFO_PID" 2>/dev/null; wait "$FIFO_PID" 2>/dev/null; FIFO_PID=; }
  kill -TERM "$BACK_PID" 2>/dev/null
  local i
  for ((i = 0; i < 50; i++)); do kill -0 "$BACK_PID" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$BACK_PID" 2>/dev/null
  wait "$BACK_PID" 2>/dev/null
  rm -rf /var/run/dpdk/vu-bench-$$-back
}

# probe: the CPU 0 <-> 1 round trip in ns (integer), 0 if it failed.
probe() {
  "$PROBE" --benchmark_format=csv 2>/dev/null |
    awk -F, '/BM_CoreRoundTrip/ {printf "%d", $3; found=1} END {if (!found) print 0}'
}

# measure WHO MODE LAYOUT: one measurement into MEAS (pps, 0 on failure)
# and the round trip probed just before it into RT.
# Not run in a $(...) subshell: the back-end's processes must be tracked
# (PIDS) and stopped by this shell.
measure() {
  local who=$1 mode=$2 layout=$3 pps
  MEAS=0
  RT=$(probe)
  if [[ $who == ours ]]; then back_ours "$mode" || return
  else back_dpdk "$mode" || return; fi
  pps=$(front "$mode" "$layout" "$TMP/front-$who.log")
  stop_back
  if [[ -z $pps || $pps == 0 ]]; then
    {
      echo "  ($who $mode $layout: no rate; front-end log tail:)"
      tail -15 "$TMP/front-$who.log"
      if [[ $who == ours ]]; then tail -5 "$TMP/daemon.log"; else tail -15 "$TMP/back.log"; fi
    } >&2
    pps=0
  fi
  MEAS=$pps
}

median() { sort -g | awk '{a[NR]=$1} END {if (NR==0) print 0; else if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }

declare -A OURS DPDK RATIO SAME
echo "vhost-user-net 64-byte frames, $ROUNDS rounds of ${SECS}s, EAL ${MEM[*]}"
echo "daemon: $DAEMON"
for ((r = 1; r <= ROUNDS; r++)); do
  for layout in $LAYOUTS; do
    for mode in $MODES; do
      k="$mode/$layout"
      if (( r % 2 )); then
        measure ours "$mode" "$layout"; a=$MEAS; rta=$RT
        measure dpdk "$mode" "$layout"; b=$MEAS; rtb=$RT
      else
        measure dpdk "$mode" "$layout"; b=$MEAS; rtb=$RT
        measure ours "$mode" "$layout"; a=$MEAS; rta=$RT
      fi
      ratio=$(awk -v a="$a" -v b="$b" 'BEGIN {printf "%.3f", (b > 0) ? a / b : 0}')
      same=$(awk -v a="$rta" -v b="$rtb" 'BEGIN {lo = a < b ? a : b; hi = a < b ? b : a;
        print (lo > 0 && hi <= 1.25 * lo) ? 1 : 0}')
      OURS[$k]+="$a "; DPDK[$k]+="$b "; RATIO[$k]+="$ratio "
      [[ $same == 1 ]] && SAME[$k]+="$ratio "
      printf "round %d %-7s %-6s ours %10d pps (rt %4d ns)  dpdk-vhost %10d pps (rt %4d ns)  ratio %s%s\n" \
        "$r" "$mode" "$layout" "$a" "$rta" "$b" "$rtb" "$ratio" "$([[ $same == 1 ]] || echo "  (placement differed)")"
    done
  done
done
echo
echo "summary (medians over $ROUNDS rounds; ratio = median of per-round ours/dpdk)"
for layout in $LAYOUTS; do
  for mode in $MODES; do
    k="$mode/$layout"
    mo=$(tr ' ' '\n' <<<"${OURS[$k]}" | grep . | median)
    md=$(tr ' ' '\n' <<<"${DPDK[$k]}" | grep . | median)
    mr=$(tr ' ' '\n' <<<"${RATIO[$k]}" | grep . | median)
    ns=$(tr ' ' '\n' <<<"${SAME[$k]:-}" | grep -c .)
    ms=$(tr ' ' '\n' <<<"${SAME[$k]:-}" | grep . | median)
    printf "%-7s %-6s ours %12.0f pps  dpdk-vhost %12.0f pps  ratio %s  (same placement: %s over %d rounds)\n" \
      "$mode" "$layout" "$mo" "$md" "$mr" "$ms" "$ns"
  done
done
