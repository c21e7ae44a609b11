#!/usr/bin/env bash
# Line coverage of libvirtio/ and glue/ by the test suite.
#
#   bash scripts/coverage.sh [--html DIR] [ctest args...]
#
# Builds the `coverage` preset (g++ --coverage, -O0), runs its ctest, and
# prints gcovr's per-file line coverage and the total (the figure in
# README.md comes from here). Tests that run the code somewhere the
# coverage counters cannot be written back are left out by default: the
# nested KVM and Xen stages (their processes run inside a VM over a
# read-only 9p root) and the real-client tests (QEMU, UML, DPDK: minutes
# each, and their share of new lines is small), and install_consumer (it
# builds a program against the installed, instrumented library without
# --coverage). Pass your own ctest
# arguments to change that; --html DIR also writes an HTML report.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/lib.sh

html=""
if [[ ${1:-} == --html ]]; then
  [[ $# -ge 2 ]] || die "--html needs a directory"
  html=$2
  shift 2
  mkdir -p "$html"
fi
ctest_args=("$@")
[[ ${#ctest_args[@]} -gt 0 ]] || ctest_args=(-LE 'nested|real_client|kvm_linux|xen_real' -E '^install_consumer$')

bash scripts/install-deps.sh
if ! command -v gcovr >/dev/null; then
  banner "installing gcovr"
  sudo=()
  [[ $(id -u) -ne 0 ]] && sudo=(sudo)
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q gcovr
fi

banner "coverage: configure + build"
cmake --preset coverage
cmake --build --preset coverage -j "$LIBVIRTIO_JOBS"
# Counters from an earlier run would add up with this one.
find build/coverage -name '*.gcda' -delete

banner "coverage: ctest ${ctest_args[*]}"
ctest --preset coverage -j "$LIBVIRTIO_JOBS" "${ctest_args[@]}" || true

banner "coverage: line coverage of libvirtio/ and glue/"
filters=(--filter 'libvirtio/' --filter 'glue/'
         --exclude '.*/tests/.*' --exclude '.*_test\.cc' --exclude 'glue/kvm/guest/.*'
         --exclude 'glue/xen/sim/.*')
gcovr -r . --object-directory build/coverage "${filters[@]}" \
  --exclude-unreachable-branches --sort-percentage --print-summary \
  ${html:+--html-details "$html/index.html"} -j "$LIBVIRTIO_JOBS" |
  tee build/coverage/coverage.txt
[[ -n $html ]] && echo "HTML report: $html/index.html"
