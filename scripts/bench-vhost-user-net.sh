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
# CPU cost: over the measured interval (between the front-end's two
# "show port stats") the script reads the CPU time of the back-end (all
# threads, /proc/PID/task/*/schedstat) and of the front-end testpmd, and
# divides by the packets counted in that interval: ns per packet, printed
# per measurement and as CPU-seconds per million packets in the summary.
# Both sides busy-poll, so this is mostly 1 / rate per polling thread; it
# shows what a polling thread that is never idle costs. Per-packet latency
# is not measurable with testpmd's txonly/rxonly (no timestamps): not
# reported.
#
# usage: scripts/bench-vhost-user-net.sh [-r ROUNDS] [-t SECONDS] [-d DAEMON]
#        [-m MODES] [-l LAYOUTS] [--hugepages] [--csv FILE]
#   DAEMON default: build/release/glue/vhost-user/vhost-user-device
#   (the probe is taken from the same build tree: DAEMON/../../bench/)
#   MODES default "txonly rxonly", LAYOUTS default "split packed"
#   --hugepages: reserve 2 MiB pages and run EAL on them (default --no-huge)
#   --csv FILE: the summary's medians, one line per mode/layout
# Needs root (DPDK), dpdk-testpmd (Debian dpdk-dev) and its virtio and
# vhost PMDs (librte-net-virtio23, librte-net-vhost23).
set -u -o pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROUNDS=5 SECS=5 DAEMON=$ROOT/build/release/glue/vhost-user/vhost-user-device
MODES="txonly rxonly" LAYOUTS="split packed" HUGE=0 CSV=
while [[ $# -gt 0 ]]; do
  case $1 in
    -r) ROUNDS=$2; shift 2 ;;
    -t) SECS=$2; shift 2 ;;
    -d) DAEMON=$2; shift 2 ;;
    -m) MODES=$2; shift 2 ;;
    -l) LAYOUTS=$2; shift 2 ;;
    --hugepages) HUGE=1; shift ;;
    --csv) CSV=$2; shift 2 ;;
    -h|--help) sed -n '2,41p' "$0"; exit 0 ;;
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

# cpu_ns PID: CPU time of all of PID's threads so far, in ns (0 if gone).
cpu_ns() {
  # %.0f, not %d: mawk clamps %d to 2^31 (2.1 s of CPU).
  cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{s += $1} END {printf "%.0f", s}'
}

# cpu_snap FILE: appends "back_ns front_ns" (the front-end testpmd found
# by its EAL file prefix; timeout's own command line starts with timeout).
cpu_snap() {
  local fp
  fp=$(pgrep -f "^$TESTPMD .*--file-prefix=vu-bench-$$-front" | head -1)
  echo "$(cpu_ns "$BACK_PID") $([[ -n $fp ]] && cpu_ns "$fp" || echo 0)" >>"$1"
}

# front MODE LAYOUT LOG: runs the virtio-user testpmd for SECS measured
# seconds; prints the measured pps; leaves the CPU snapshots taken at the
# two "show port stats" in LOG.cpu.
front() {
  local mode=$1 layout=$2 logf=$3 extra=""
  [[ $layout == packed ]] && extra=",packed_vq=1"
  rm -f "$logf.cpu"
  {
    sleep 2; echo "start"; sleep 1; echo "show port stats 0"; cpu_snap "$logf.cpu"
    sleep "$SECS"
    echo "show port stats 0"; cpu_snap "$logf.cpu"; echo "stop"; sleep 0.5; echo "quit"
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

# cpu_per_pkt LOG KEY: ns per packet of back-end and front-end over the
# measured interval ("back front", 0 0 if unknown): CPU deltas from
# LOG.cpu, packets from the last two KEY-packets counters in LOG.
cpu_per_pkt() {
  local pk
  # Only the "show port stats" lines (KEY-packets followed by KEY-missed /
  # KEY-errors), not the forward statistics printed at "stop".
  pk=$(grep -oE "$2-packets: *[0-9]+ +$2-(missed|errors)" "$1" | tail -2 |
    grep -oE '[0-9]+' | tr '\n' ' ')
  awk -v pk="$pk" 'NR == 1 {b0 = $1; f0 = $2} NR == 2 {b1 = $1; f1 = $2}
    END {split(pk, p, " "); n = p[2] - p[1];
      if (NR < 2 || n <= 0) print "0 0";
      else printf "%.2f %.2f\n", (b1 - b0) / n, (f1 - f0) / n}' "$1.cpu" 2>/dev/null ||
    echo "0 0"
}

# measure WHO MODE LAYOUT: one measurement into MEAS (pps, 0 on failure),
# the round trip probed just before it into RT, and the back-end's and
# front-end's CPU ns per packet into BCPU and FCPU.
# Not run in a $(...) subshell: the back-end's processes must be tracked
# (PIDS) and stopped by this shell.
measure() {
  local who=$1 mode=$2 layout=$3 pps
  MEAS=0 BCPU=0 FCPU=0
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
  local key=TX
  [[ $mode == rxonly ]] && key=RX
  read -r BCPU FCPU < <(cpu_per_pkt "$TMP/front-$who.log" "$key")
}

median() { sort -g | awk '{a[NR]=$1} END {if (NR==0) print 0; else if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }

declare -A OURS DPDK RATIO SAME OCPU DCPU OFCPU DFCPU
echo "vhost-user-net 64-byte frames, $ROUNDS rounds of ${SECS}s, EAL ${MEM[*]}"
echo "daemon: $DAEMON"
for ((r = 1; r <= ROUNDS; r++)); do
  for layout in $LAYOUTS; do
    for mode in $MODES; do
      k="$mode/$layout"
      if (( r % 2 )); then
        measure ours "$mode" "$layout"; a=$MEAS; rta=$RT; ca=$BCPU; fa=$FCPU
        measure dpdk "$mode" "$layout"; b=$MEAS; rtb=$RT; cb=$BCPU; fb=$FCPU
      else
        measure dpdk "$mode" "$layout"; b=$MEAS; rtb=$RT; cb=$BCPU; fb=$FCPU
        measure ours "$mode" "$layout"; a=$MEAS; rta=$RT; ca=$BCPU; fa=$FCPU
      fi
      OCPU[$k]+="$ca "; DCPU[$k]+="$cb "; OFCPU[$k]+="$fa "; DFCPU[$k]+="$fb "
      ratio=$(awk -v a="$a" -v b="$b" 'BEGIN {printf "%.3f", (b > 0) ? a / b : 0}')
      same=$(awk -v a="$rta" -v b="$rtb" 'BEGIN {lo = a < b ? a : b; hi = a < b ? b : a;
        print (lo > 0 && hi <= 1.25 * lo) ? 1 : 0}')
      OURS[$k]+="$a "; DPDK[$k]+="$b "; RATIO[$k]+="$ratio "
      [[ $same == 1 ]] && SAME[$k]+="$ratio "
      printf "round %d %-7s %-6s ours %10d pps (rt %4d ns)  dpdk-vhost %10d pps (rt %4d ns)  ratio %s%s\n" \
        "$r" "$mode" "$layout" "$a" "$rta" "$b" "$rtb" "$ratio" "$([[ $same == 1 ]] || echo "  (placement differed)")"
      printf "        CPU ns/packet: back-end ours %6.1f dpdk %6.1f; front-end with ours %6.1f with dpdk %6.1f\n" \
        "$ca" "$cb" "$fa" "$fb"
    done
  done
done
echo
echo "summary (medians over $ROUNDS rounds; ratio = median of per-round ours/dpdk)"
[[ -n $CSV ]] && echo "mode,layout,rounds,ours_pps,dpdk_pps,ratio,same_ratio,same_rounds,ours_back_ns,dpdk_back_ns,front_ns_ours,front_ns_dpdk" >"$CSV"
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
    co=$(tr ' ' '\n' <<<"${OCPU[$k]}" | grep . | median)
    cd_=$(tr ' ' '\n' <<<"${DCPU[$k]}" | grep . | median)
    fo=$(tr ' ' '\n' <<<"${OFCPU[$k]}" | grep . | median)
    fd=$(tr ' ' '\n' <<<"${DFCPU[$k]}" | grep . | median)
    printf "%-7s %-6s back-end CPU-s per million packets: ours %.3f dpdk-vhost %.3f (packets per CPU-s ours/dpdk %s); front-end %.3f / %.3f\n" \
      "$mode" "$layout" "$(awk -v x="$co" 'BEGIN {print x / 1000}')" \
      "$(awk -v x="$cd_" 'BEGIN {print x / 1000}')" \
      "$(awk -v a="$co" -v b="$cd_" 'BEGIN {if (a > 0) printf "%.2f", b / a; else print "-"}')" \
      "$(awk -v x="$fo" 'BEGIN {print x / 1000}')" "$(awk -v x="$fd" 'BEGIN {print x / 1000}')"
    [[ -n $CSV ]] && echo "$mode,$layout,$ROUNDS,$mo,$md,$mr,$ms,$ns,$co,$cd_,$fo,$fd" >>"$CSV"
  done
done
