#!/usr/bin/env bash
# The main demo: install dependencies, build the release preset, and run the
# ring benchmark (device-side split/packed virtqueue throughput).
#
# Usage: bash scripts/demo.sh [extra google-benchmark flags...]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/lib.sh

banner "1/3 install dependencies"
bash scripts/install-deps.sh

banner "2/3 configure + build (preset: release)"
cmake --preset release
cmake --build --preset release -j "$LIBVIRTIO_JOBS"

bench=build/release/bench/ring_bench
banner "3/3 run $bench"
if [[ ! -x $bench ]]; then
  die "$bench was not built. It is declared in bench/bench_list.cmake as
  libvirtio_add_bench(ring_bench ring_bench.cc) — is that line present and is
  LIBVIRTIO_BUILD_BENCH=ON?"
fi
# --benchmark_min_time is in seconds (plain number: google-benchmark 1.7).
"$bench" --benchmark_min_time=0.2 --benchmark_counters_tabular=true "$@"
