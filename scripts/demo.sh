#!/usr/bin/env bash
# The main demo: install dependencies, build the release preset, then the
# showcase (scripts/showcase/showcase.sh): vhost-user-device daemons serve
# a disk (an ext4 image) and a network card (a TAP in a network namespace)
# to a Linux guest in QEMU, which mounts the disk, writes a file, exchanges
# data with the host and powers off; the host then checks the file in the
# image; and a console, driven through User-mode Linux. Needs root (apt-get,
# network namespace, TAP); about 15-30 s after the build once the Debian
# packages and kernel are cached, about a minute more on the first run.
#
# Usage: bash scripts/demo.sh            install, build, showcase
#        bash scripts/demo.sh --bench [google-benchmark flags...]
#                                        install, build, ring benchmark
#                                        (device-side split/packed
#                                        virtqueue throughput)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/lib.sh

mode=showcase
if [[ ${1:-} == --bench ]]; then
  mode=bench
  shift
elif [[ $# -gt 0 ]]; then
  die "unknown argument '$1' (usage: bash scripts/demo.sh [--bench [benchmark flags...]])"
fi

banner "1/3 install dependencies"
bash scripts/install-deps.sh

banner "2/3 configure + build (preset: release)"
# The glue must be on: an old build dir may have cached it off.
cmake --preset release -DLIBVIRTIO_GLUE_VHOST_USER=ON
cmake --build --preset release -j "$LIBVIRTIO_JOBS"

if [[ $mode == bench ]]; then
  bench=build/release/bench/ring_bench
  banner "3/3 run $bench"
  if [[ ! -x $bench ]]; then
    die "$bench was not built. It is declared in bench/bench_list.cmake as
  libvirtio_add_bench(ring_bench ring_bench.cc) — is that line present and is
  LIBVIRTIO_BUILD_BENCH=ON?"
  fi
  # --benchmark_min_time is in seconds (plain number: google-benchmark 1.7).
  exec "$bench" --benchmark_min_time=0.2 --benchmark_counters_tabular=true "$@"
fi

daemon=build/release/glue/vhost-user/vhost-user-device
banner "3/3 showcase: a Linux guest on libvirtio devices (vhost-user)"
[[ -x $daemon ]] || die "$daemon was not built (is LIBVIRTIO_GLUE_VHOST_USER=ON in build/release?)"
if [[ $(id -u) != 0 ]]; then
  die "the showcase needs root (it installs packages, creates a network namespace
  and a TAP interface): run it as root, e.g. sudo bash scripts/demo.sh.
  The ring benchmark needs no root: bash scripts/demo.sh --bench"
fi
# The Debian kernel is kept where the real-client tests keep it.
cache=$(sed -n 's/^LIBVIRTIO_REAL_CLIENTS_CACHE:PATH=//p' build/release/CMakeCache.txt)
# Backstop only: every step inside has its own, much shorter, timeout.
rc=0
timeout --foreground -k 10 900 bash scripts/showcase/showcase.sh "$daemon" \
  "${cache:-build/release/real_clients_cache}" || rc=$?
case $rc in
  0) echo
     echo "More: bash scripts/demo.sh --bench (ring benchmark), bash scripts/test.sh (all tests)." ;;
  77) die "the showcase cannot run on this machine: see the SKIP line above" ;;
  124) die "the showcase did not finish within 15 minutes and was stopped" ;;
  130 | 143) die "the showcase was interrupted" ;;
  *) die "the showcase failed (exit status $rc): see the FAIL line above" ;;
esac
