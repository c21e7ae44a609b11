#!/usr/bin/env bash
# The full test run (also what CI runs):
#   1. install dependencies; clang-format check of the files changed since
#      .ci/lint-base (clang-tidy on them follows the release build)
#   2. release preset (g++) with -Werror: build, ctest
#   3. asan preset (clang++, ASan+UBSan): build, ctest        (skip: --no-asan)
#      Both ctest runs include the KVM tests (kvm.*, example.kvm_mini_vmm):
#      without /dev/kvm they run in a nested KVM under QEMU TCG
#      (tests/nested/), all in one outer boot per preset (the fixture
#      nested_kvm.batch: ~40 s idle, ~1 min at load 7-8; the asan batch
#      takes ~2x that, cheap enough to keep KVM glue under ASan in CI).
#      Release also boots Debian's Linux on virtio-kvm twice (kvm_linux.*,
#      each in its own nested VM, ~2 min each when idle).
#   2b. release: real Xen (label xen_real, its own stage, after the rest of
#      the release ctest): Debian's Xen 4.17 under QEMU TCG, an HVM guest
#      whose virtio-pci devices two xen-virtio-backend processes serve
#      (tests/nested/xen/run.sh); both cores. The single-backend version
#      took 6-7 min on a quiet host; this one 15 min at host load 7-8. The
#      first run on a machine also apt-installs QEMU and the Xen toolstack
#      and downloads Xen and the kernel. A skip (exit 77: no root, not
#      x86_64, packages that cannot be installed or downloaded) is printed
#      as SKIPPED with its reason, never counted as a pass.
#                                                     (skip: --no-xen-real)
#   4. tsan preset (clang++, TSan): the threaded tests only
#   5. every fuzzer (built by the asan preset, or by the fuzz preset with
#      --no-asan) for N seconds, nproc at a time        (--fuzz-seconds N, 0 skips)
# Exits non-zero on the first failure.
#
# Usage: bash scripts/test.sh [--no-asan] [--no-xen-real] [--fuzz-seconds N]
#        bash scripts/test.sh --xen-real-only   (steps 1 and 2b: builds only the
#                                                 backend, runs only xen_real)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/lib.sh

run_asan=1
run_xen_real=1
xen_real_only=0
fuzz_seconds=30
while [[ $# -gt 0 ]]; do
  case $1 in
    --no-asan) run_asan=0; shift ;;
    --no-xen-real) run_xen_real=0; shift ;;
    --xen-real-only) xen_real_only=1; shift ;;
    --fuzz-seconds)
      [[ $# -ge 2 && $2 =~ ^[0-9]+$ ]] || die "--fuzz-seconds needs a number of seconds"
      fuzz_seconds=$2; shift 2 ;;
    --fuzz-seconds=*)
      fuzz_seconds=${1#*=}
      [[ $fuzz_seconds =~ ^[0-9]+$ ]] || die "--fuzz-seconds needs a number of seconds"
      shift ;;
    -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
    *) die "unknown argument: $1 (try --help)" ;;
  esac
done

start=$SECONDS
stage() { banner "$* [t+$((SECONDS - start))s]"; }

# Totals over every ctest run, for the closing summary line.
total_passed=0
total_failed=0
fuzzers_run=0
# run_ctest <preset> [ctest args...]: runs ctest, adds its counts to the totals
# (and copies its output to $RUN_CTEST_KEEP when that is set).
run_ctest() {
  local preset=$1 log
  shift
  log=$(mktemp)
  local rc=0
  ctest --preset "$preset" -j "$LIBVIRTIO_JOBS" "$@" 2>&1 | tee "$log" || rc=$?
  local line
  line=$(grep -E '^[0-9]+% tests passed, [0-9]+ tests failed out of [0-9]+' "$log" | tail -1 || true)
  if [[ -n ${RUN_CTEST_KEEP:-} ]]; then cp "$log" "$RUN_CTEST_KEEP"; fi
  rm -f "$log"
  if [[ -n $line ]]; then
    local failed total
    failed=$(sed -E 's/.* ([0-9]+) tests failed out of ([0-9]+).*/\1/' <<<"$line")
    total=$(sed -E 's/.* out of ([0-9]+).*/\1/' <<<"$line")
    total_passed=$((total_passed + total - failed))
    total_failed=$((total_failed + failed))
  fi
  return "$rc"
}

stage "install dependencies"
bash scripts/install-deps.sh

# Format and clang-tidy apply to what changed since .ci/lint-base (the
# commit they were introduced at): new and modified files must be clean,
# older files are brought in line when next touched.
lint_base=$(tr -d '[:space:]' <.ci/lint-base)
stage "format: clang-format on the C/C++ files changed since ${lint_base:0:12}"
bash scripts/check-format.sh --since "$lint_base"

# xen_real_stage: the real-Xen tests (label xen_real) on their own, with
# their wall time. Skips are reported as such (ctest counts them as
# neither passed nor failed); none registered is an error (libxen-dev is
# installed above, so the backend and its tests must exist).
xen_real_stage() {
  local t0=$SECONDS log rc=0
  stage "release: real Xen (xen_real: Xen 4.17 under QEMU TCG, HVM guest, two backends)"
  if ! ctest --preset release -N -L xen_real | grep -q 'Total Tests: [1-9]'; then
    die "no xen_real test registered (is xen-virtio-backend built, LIBVIRTIO_XEN_REAL=ON?)"
  fi
  log=$(mktemp)
  # Verbose: its progress lines (t+Ns milestones, what the guest and dom0
  # report) show up in the CI log, and so does the reason of a skip.
  RUN_CTEST_KEEP=$log run_ctest release -L xen_real --verbose || rc=$?
  if grep -qE '\*\*\*Skipped|\(Skipped\)' "$log"; then
    xen_real_result="SKIPPED: $(grep -m1 -oE 'SKIP: .*' "$log" | cut -c7- || true)"
  elif [[ $rc -eq 0 ]]; then
    xen_real_result="passed"
  else
    xen_real_result="FAILED"
  fi
  rm -f "$log"
  banner "real Xen: $xen_real_result in $((SECONDS - t0))s"
  return "$rc"
}
xen_real_result="not run"

if [[ $xen_real_only -eq 1 ]]; then
  stage "release (g++, -Werror): configure + build xen-virtio-backend"
  cmake --preset release -DLIBVIRTIO_WERROR=ON -DLIBVIRTIO_XEN_REAL=ON
  cmake --build --preset release -j "$LIBVIRTIO_JOBS" --target xen-virtio-backend
  xen_real_stage
  exit 0
fi

stage "release (g++, -Werror): configure + build"
cmake --preset release -DLIBVIRTIO_WERROR=ON -DLIBVIRTIO_XEN_REAL=ON
cmake --build --preset release -j "$LIBVIRTIO_JOBS"

stage "clang-tidy: the .cc files changed since ${lint_base:0:12} (every check an error)"
bash scripts/tidy.sh -p build/release --since "$lint_base"

stage "release: ctest"
run_ctest release -LE xen_real

if [[ $run_xen_real -eq 1 ]]; then
  xen_real_stage
else
  stage "release: real Xen skipped (--no-xen-real)"
  xen_real_result="not run (--no-xen-real)"
fi

if [[ $run_asan -eq 1 ]]; then
  stage "asan (clang++, -Werror, ASan+UBSan): configure + build"
  cmake --preset asan -DLIBVIRTIO_WERROR=ON
  cmake --build --preset asan -j "$LIBVIRTIO_JOBS"

  stage "asan: ctest"
  # Real clients (QEMU, UML, DPDK) and the Linux guests on virtio-kvm
  # (kvm_linux: minutes of guest code under TCG, the VMM's share is small)
  # run once, in release.
  # Prefix assignments reach the function's child processes (ctest) only.
  # (They must directly precede the command: a comment line after a
  # backslash ended the command there, leaving plain unexported variables.)
  ASAN_OPTIONS=detect_leaks=1:detect_stack_use_after_return=1:strict_string_checks=1 \
  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    run_ctest asan -LE 'real_client|kvm_linux'
else
  stage "asan: skipped (--no-asan)"
fi

if [[ $run_asan -eq 1 ]]; then
  # The threaded tests (the Xen simulator's vCPU threads against the ioreq
  # server) also run under ThreadSanitizer; only their target is built.
  stage "tsan (clang++, -Werror): threaded tests"
  cmake --preset tsan -DLIBVIRTIO_WERROR=ON
  if cmake --build --preset tsan -j "$LIBVIRTIO_JOBS" --target help | grep -q xen_threaded_test; then
    cmake --build --preset tsan -j "$LIBVIRTIO_JOBS" --target xen_threaded_test
    TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 run_ctest tsan -L xen_threaded
  else
    echo "no threaded test targets in this configuration"
  fi
fi

if [[ $fuzz_seconds -gt 0 ]]; then
  # The asan build above already holds the fuzzers (the asan preset sets
  # LIBVIRTIO_BUILD_FUZZ=ON, so its code carries libFuzzer's coverage
  # instrumentation); a separate fuzz build is needed only with --no-asan.
  if [[ $run_asan -eq 1 ]]; then
    fuzz_build=build/asan
  else
    stage "fuzz (clang++, libFuzzer+ASan+UBSan): configure + build"
    cmake --preset fuzz
    cmake --build --preset fuzz -j "$LIBVIRTIO_JOBS"
    fuzz_build=build/fuzz
  fi

  # fuzz/CMakeLists.txt writes the declared fuzzers' paths to fuzzers.txt.
  manifest=$fuzz_build/fuzz/fuzzers.txt
  [[ -f $manifest ]] || die "$manifest missing: is LIBVIRTIO_BUILD_FUZZ=ON in its preset?"
  mapfile -t fuzzers < <(grep -v '^$' "$manifest" | sort)
  if [[ ${#fuzzers[@]} -eq 0 ]]; then
    stage "fuzz: no fuzzers declared in fuzz/fuzz_list.cmake yet; nothing to run"
  fi
  # run_fuzzer <path> <log>: one fuzzer for $fuzz_seconds, output to <log>.
  run_fuzzer() {
    local fuzzer=$1 log=$2 name corpus artifacts
    name=$(basename "$fuzzer")
    corpus=$fuzz_build/corpus/$name
    artifacts=$fuzz_build/artifacts/$name
    mkdir -p "$corpus" "$artifacts"
    local seeds=()
    [[ -d fuzz/corpus/$name ]] && seeds=("fuzz/corpus/$name")
    # New inputs go to the first corpus dir (build/), seeds are read-only.
    ASAN_OPTIONS=detect_leaks=1 \
    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
      "$fuzzer" -max_total_time="$fuzz_seconds" -timeout=10 -rss_limit_mb=4096 \
        -print_final_stats=1 -artifact_prefix="$artifacts/" \
        "$corpus" "${seeds[@]}" >"$log" 2>&1
  }
  # Fuzzers are single-threaded: run $LIBVIRTIO_JOBS of them at a time.
  fuzz_logs=$(mktemp -d)
  for ((i = 0; i < ${#fuzzers[@]}; i += LIBVIRTIO_JOBS)); do
    batch=("${fuzzers[@]:i:LIBVIRTIO_JOBS}")
    stage "fuzz: $(for f in "${batch[@]}"; do printf '%s ' "$(basename "$f")"; done)for ${fuzz_seconds}s each"
    pids=()
    for fuzzer in "${batch[@]}"; do
      run_fuzzer "$fuzzer" "$fuzz_logs/$(basename "$fuzzer").log" &
      pids+=($!)
    done
    for j in "${!batch[@]}"; do
      fuzzer=${batch[j]}
      name=$(basename "$fuzzer")
      log=$fuzz_logs/$name.log
      fuzzers_run=$((fuzzers_run + 1))
      if ! wait "${pids[j]}"; then
        wait  # let the rest of the batch finish before reporting
        tail -n 60 "$log"
        die "fuzzer $name failed (log above); reproducer(s) in $fuzz_build/artifacts/$name/:
$(ls -1 "$fuzz_build/artifacts/$name" 2>/dev/null)
rerun with: $fuzzer <reproducer>"
      fi
      echo "$name: $(grep -E '^(stat::peak_rss_mb|Done )' "$log" | tr '\n' ' ')"
    done
  done
  rm -rf "$fuzz_logs"
else
  stage "fuzz: skipped (--fuzz-seconds 0)"
fi

stage "ALL TESTS PASSED"
echo "tests (release + asan ctest; fuzzers: ${fuzzers_run} run clean): ${total_passed} passed, ${total_failed} failed"
echo "real Xen (xen_real): ${xen_real_result}"
