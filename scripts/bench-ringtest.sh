#!/usr/bin/env bash
# The cross-core ring limit: Linux's ringtest models (tools/virtio/ringtest,
# built from Debian's linux-source package) against our two-thread ring
# benchmark (bench/ring_bench 2thread/{split,packed}/1desc/q:256), on the
# same two CPUs, back to back, alternating the order every round; prints
# the median rate of each and the ratios ours / model.
#
# Usage: bash scripts/bench-ringtest.sh [--rounds N] [--cycles N]
#            [--build-dir DIR] [--cache DIR] [--models "ring virtio_ring_0_9 ptr_ring"]
#            [--cpus "G,H"] [--csv FILE]
#
# What runs (both sides busy-poll, no notifications, ring of 256 entries):
#   ringtest MODEL --guest-affinity G --host-affinity H --batch 32
#       --run-cycles N   (N buffers through the ring; the script times the
#       process with the monotonic clock: rate = N / wall time). In polling
#       mode ringtest's guest keeps the ring full and its host consumes
#       whatever is available; --batch only paces kicks in --sleep mode, it
#       is passed to match our device's 32-chain batches.
#   ring_bench --benchmark_filter=2thread under taskset -c G,H (driver on G,
#       device on H, device publishes after at most 32 chains; 20 M chains).
#   bench/core_round_trip_bench on the same CPUs every round: half its
#   round trip is the latency of one cache-line transfer between them, the
#   unit in which the script also expresses every rate.
#   Models: ring (the experimental layout: one 16-byte descriptor array
#   written by the guest, the host writes back into the same entries),
#   virtio_ring_0_9 (the legacy split ring), ptr_ring (the kernel's pointer
#   FIFO), each skipped with a message if it does not build.
# --cache DIR (default build/bench-cache): where the ringtest sources are
#   extracted and built; nothing from Linux is copied into the repository.
# --csv FILE: medians and ratios, one line per (ours, model) pair.
# Needs root to apt-get install linux-source-6.1 (skipped with a message
# otherwise, unless the tarball is already there).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/lib.sh

rounds=5
cycles=10000000
build=build/release
cache=build/bench-cache
models="ring virtio_ring_0_9 ptr_ring"
cpus="0,1"
csv=""
while [[ $# -gt 0 ]]; do
  case $1 in
    --rounds) rounds=$2; shift 2 ;;
    --cycles) cycles=$2; shift 2 ;;
    --build-dir) build=$2; shift 2 ;;
    --cache) cache=$2; shift 2 ;;
    --models) models=$2; shift 2 ;;
    --cpus) cpus=$2; shift 2 ;;
    --csv) csv=$2; shift 2 ;;
    -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done
guest_cpu=${cpus%,*}
host_cpu=${cpus#*,}

banner "1/3 ringtest from linux-source-6.1 into $cache"
tarball=/usr/src/linux-source-6.1.tar.xz
if [[ ! -f $tarball ]]; then
  if [[ $(id -u) -ne 0 ]]; then
    echo "SKIP: $tarball missing and not root (apt-get install linux-source-6.1)"
    exit 0
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
    linux-source-6.1 >/dev/null || die "apt-get install linux-source-6.1 failed"
fi
src=$cache/linux-source-6.1
rt=$src/tools/virtio/ringtest
if [[ ! -f $rt/main.c ]]; then
  mkdir -p "$cache"
  # Only the members ringtest needs (ptr_ring.c includes the kernel header).
  tar -xJf "$tarball" -C "$cache" linux-source-6.1/tools/virtio/ringtest \
    linux-source-6.1/include/linux/ptr_ring.h
fi
built=""
for m in $models; do
  if make -s -C "$rt" "$m" >"$cache/make-$m.log" 2>&1; then
    built+="$m "
  else
    echo "  $m does not build here (see $cache/make-$m.log): skipped"
  fi
done
[[ -n $built ]] || die "no ringtest model built"
echo "  models: $built"

banner "2/3 build ring_bench and core_round_trip_bench in $build"
if [[ ! -f $build/CMakeCache.txt ]]; then
  cmake --preset release -B "$build"
fi
cmake --build "$build" -j "$LIBVIRTIO_JOBS" --target ring_bench core_round_trip_bench
ring_bench=$build/bench/ring_bench
round_trip=$build/bench/core_round_trip_bench
[[ -x $ring_bench && -x $round_trip ]] ||
  die "build did not produce $ring_bench and $round_trip"

banner "3/3 run: $rounds rounds, CPUs guest/driver $guest_cpu, host/device $host_cpu"
uptime
work=$(mktemp -d /tmp/ringtest-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
results=$work/results.txt  # lines: round name rate

run_model() {  # round model
  local t0 t1
  t0=$(date +%s%N)
  timeout 300 "$rt/$2" --guest-affinity "$guest_cpu" --host-affinity "$host_cpu" \
    --batch 32 --run-cycles "$cycles" || { echo "  $2 failed"; return 0; }
  t1=$(date +%s%N)
  awk -v r="$1" -v m="$2" -v n="$cycles" -v ns=$((t1 - t0)) \
    'BEGIN {printf "%s %s %.0f\n", r, m, n / (ns / 1e9)}' >>"$results"
}

# One cache-line transfer between the two CPUs, in ns: half the round trip.
run_transfer() {  # round
  CORE_RT_CPUS=$cpus "$round_trip" --benchmark_format=csv 2>/dev/null |
    awk -F, -v r="$1" '/BM_CoreRoundTrip/ {printf "%s line-transfer-ns %.1f\n", r, $3 / 2}' \
      >>"$results" || echo "  core_round_trip_bench failed"
}

run_ours() {  # round
  taskset -c "$cpus" "$ring_bench" --benchmark_filter=2thread \
    --benchmark_format=json 2>/dev/null >"$work/ours.json" ||
    { echo "  ring_bench failed"; return 0; }
  python3 - "$1" "$work/ours.json" >>"$results" <<'EOF'
import json, re, sys
for b in json.load(open(sys.argv[2]))["benchmarks"]:
    m = re.match(r"2thread/(split|packed)/", b["name"])
    if m and "items_per_second" in b:
        print(sys.argv[1], "ours-" + m.group(1), "%.0f" % b["items_per_second"])
        print(sys.argv[1], "ours-%s-window" % m.group(1), "%.0f" % b.get("win_median", 0))
        print(sys.argv[1], "ours-%s-preempted" % m.group(1), "%d" % b.get("preempted", 0))
EOF
}

for round in $(seq "$rounds"); do
  # Alternate which side goes first: drifting background load then hits
  # both sides alike.
  run_transfer "$round"
  if (( round % 2 )); then
    run_ours "$round"
    for m in $built; do run_model "$round" "$m"; done
  else
    for m in $built; do run_model "$round" "$m"; done
    run_ours "$round"
  fi
  printf '  round %s done\n' "$round"
done
uptime

python3 - "$results" "$built" "$csv" <<'EOF'
import statistics, sys
res, models, csv_path = sys.argv[1], sys.argv[2].split(), sys.argv[3]
per = {}  # name -> {round: value}
for line in open(res):
    r, name, v = line.split()
    per.setdefault(name, {})[int(r)] = float(v)

def med(name):
    v = list(per.get(name, {}).values())
    return statistics.median(v) if v else None

print()
print("two CPUs, ring of 256, busy-polling both sides; M = million buffers/s,")
print("median over rounds; ours 'window' = median rate over 16384-chain windows")
print("(rate between preemptions); preempted = involuntary context switches")
for name in ["ours-split", "ours-packed"] + models:
    m = med(name)
    if m is None:
        continue
    extra = ""
    if name.startswith("ours-"):
        w, p = med(name + "-window"), med(name + "-preempted")
        extra = "   window %6.2f M   preempted %d" % ((w or 0) / 1e6, p or 0)
    print("  %-18s %8.2f M%s" % (name, m / 1e6, extra))
xfer = med("line-transfer-ns")
if xfer:
    print()
    print("one cache-line transfer between the two CPUs (half of core_round_trip_bench):")
    print("  %.0f ns; per buffer, in units of that transfer (lower = more of the" % xfer)
    print("  transfers hidden behind one another):")
    for name in ["ours-split", "ours-packed"] + models:
        m = med(name)
        if m:
            print("  %-18s %7.1f ns = %5.2f transfers" % (name, 1e9 / m, 1e9 / m / xfer))
print()
print("ratios ours / model: median of per-round ratios (target: >= 1.0 vs ring)")
rows = []
for ours in ("ours-split", "ours-packed"):
    for model in models:
        a, b = per.get(ours, {}), per.get(model, {})
        rs = [a[r] / b[r] for r in a if r in b and b[r] > 0]
        if not rs:
            continue
        r = statistics.median(rs)
        rows.append((ours, model, med(ours), med(model), r, len(rs)))
        print("  %-12s / %-16s %6.2f  (%d rounds)" % (ours, model, r, len(rs)))
if csv_path:
    with open(csv_path, "w") as f:
        f.write("ours,model,ours_per_s,model_per_s,ratio,rounds\n")
        for o, m, a, b, r, n in rows:
            f.write("%s,%s,%.0f,%.0f,%.3f,%d\n" % (o, m, a, b, r, n))
    print()
    print("wrote", csv_path)
EOF
