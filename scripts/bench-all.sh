#!/usr/bin/env bash
# Regenerates docs/benchmarks.md: runs the benchmark scripts, keeps their
# output (text and CSV) in docs/data/, draws docs/img/*.png and rewrites the
# generated blocks of docs/benchmarks.md (scripts/bench-plots.py).
#
# Usage: bash scripts/bench-all.sh [--quick] [--render-only]
#            [--skip "blk sweep net ringtest"] [--build-dir DIR]
#   --quick        1 round and short runs everywhere (~4 min): to check
#                  that everything works, not numbers to publish
#   --render-only  no benchmark: redraw and rewrite the page from docs/data
#   --skip LIST    leave these parts out (their old data stays)
# Default run (~12 min on 2 vCPUs): blk 3 rounds x 1 s (null and ram
# backing; ours, ours --poll-us=0, qsd), the queue-depth sweep 3 rounds x
# 0.5 s (null backing, poll:0), net 3 rounds x 3 s (needs root and DPDK),
# ringtest 3 rounds.
# The machine should be otherwise idle: the page records `uptime` before
# and after, and other load on two CPUs moves these numbers a lot.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/lib.sh

invocation="bash scripts/bench-all.sh${*:+ $*}"
quick=0
render_only=0
skip=""
build=build/release
while [[ $# -gt 0 ]]; do
  case $1 in
    --quick) quick=1; shift ;;
    --render-only) render_only=1; shift ;;
    --skip) skip=$2; shift 2 ;;
    --build-dir) build=$2; shift 2 ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done
data=docs/data
mkdir -p "$data" docs/img

# The plots need matplotlib: Debian's package (PyPI may be unreachable),
# which belongs to /usr/bin/python3, not to a python3 earlier in PATH
# (pyenv, venv).
py=python3
"$py" -c 'import matplotlib' 2>/dev/null || py=/usr/bin/python3
if ! "$py" -c 'import matplotlib' 2>/dev/null; then
  sudo=""
  [[ $(id -u) -eq 0 ]] || sudo=sudo
  $sudo apt-get install -y --no-install-recommends python3-matplotlib ||
    die "python3-matplotlib is needed for the plots"
  py=/usr/bin/python3
fi

# Percent of all CPUs' time spent non-idle during the next $1 seconds.
busy_percent() {
  local a b
  a=($(sed -n 's/^cpu  //p' /proc/stat))
  sleep "$1"
  b=($(sed -n 's/^cpu  //p' /proc/stat))
  awk -v a="${a[*]}" -v b="${b[*]}" 'BEGIN {
    n = split(a, x); split(b, y); total = 0
    for (i = 1; i <= n; i++) total += y[i] - x[i]
    idle = (y[4] - x[4]) + (y[5] - x[5])  # idle + iowait
    printf "%.0f", (total > 0 ? 100 * (total - idle) / total : 0) }'
}

wants() { [[ " $skip " != *" $1 "* ]]; }

if [[ $render_only == 0 ]]; then
  if [[ $quick == 1 ]]; then
    r=1 t=0.3 ts=0.2 nr=1 nt=2 rr=1
  else
    r=3 t=1 ts=0.5 nr=3 nt=3 rr=3
  fi
  banner "build"
  [[ -f $build/CMakeCache.txt ]] || cmake --preset release -B "$build"
  cmake --build "$build" -j "$LIBVIRTIO_JOBS" --target vhost-user-device \
    vhost_user_blk_bench ring_bench core_round_trip_bench
  # The page's header: what ran where, and how busy the machine was.
  {
    echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "commit: $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . ':!docs' || echo ' (with local changes)')"
    echo "command: $invocation"
    echo "cpu: $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) CPUs online"
    echo "kernel: $(uname -r)"
    echo "qemu-storage-daemon: $(qemu-storage-daemon --version 2>/dev/null | head -1 || echo missing)"
    tpmd=$(command -v dpdk-testpmd || true)
    # The Debian package that ships testpmd (dpdk, or dpdk-dev on bookworm).
    tpkg=$([[ -n $tpmd ]] && dpkg-query -S "$(readlink -f "$tpmd")" 2>/dev/null | cut -d: -f1 | head -1)
    echo "dpdk-testpmd: ${tpkg:-missing} $([[ -n $tpkg ]] && dpkg-query -W -f '${Version}' "$tpkg")"
    echo "load before: $(uptime)"
    # The load average still carries the build just done (and any earlier
    # benchmark); what matters is whether anything else wants the CPUs now:
    # the share of CPU time not idle over 5 s in which nothing of ours runs.
    echo "other CPU use before: $(busy_percent 5)% of $(nproc) CPUs over 5 s (nothing of ours running)"
  } >"$data/meta.txt.new"
  if wants blk; then
    banner "blk: qd 1 and 32"
    bash scripts/bench-vhost-user-blk.sh --build-dir "$build" --rounds "$r" \
      --min-time "$t" --backings "null ram" --kinds "ours ours-p0 qsd" \
      --csv "$data/blk.csv" | tee "$data/blk.txt"
  fi
  if wants sweep; then
    banner "blk: queue-depth sweep"
    bash scripts/bench-vhost-user-blk.sh --build-dir "$build" --rounds "$r" \
      --min-time "$ts" --backings null --kinds "ours qsd" --filter 'poll:0' \
      --depths "1 2 4 8 16 32 64 128" --csv "$data/blk-sweep.csv" |
      tee "$data/blk-sweep.txt"
  fi
  if wants net; then
    banner "net"
    if [[ $(id -u) -eq 0 ]] && command -v dpdk-testpmd >/dev/null; then
      bash scripts/bench-vhost-user-net.sh -r "$nr" -t "$nt" \
        -d "$build/glue/vhost-user/vhost-user-device" --csv "$data/net.csv" |
        tee "$data/net.txt"
    else
      echo "SKIP: needs root and dpdk-testpmd"
    fi
  fi
  if wants ringtest; then
    banner "ringtest"
    bash scripts/bench-ringtest.sh --build-dir "$build" --rounds "$rr" \
      --csv "$data/ringtest.csv" | tee "$data/ringtest.txt"
  fi
  echo "load after: $(uptime)" >>"$data/meta.txt.new"
  mv "$data/meta.txt.new" "$data/meta.txt"
fi

banner "render"
"$py" scripts/bench-plots.py --data "$data" --img docs/img --page docs/benchmarks.md
