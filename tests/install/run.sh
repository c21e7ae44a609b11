#!/usr/bin/env bash
# install_consumer test: install the build tree into a temporary prefix, then
# build and run tests/install/consumer against it twice — once through
# find_package(libvirtio) and once through pkg-config. Any failure fails.
#
# When the package has the vhost-user libraries (their headers are
# installed), the consumer also builds a vhost-user daemon for a device of
# its own (consumer/uppercase/) and a front-end that checks its answers;
# each pair runs twice: with a correct device, which must pass, and with
# one that answers wrongly, which the check must catch.
#
# Usage: run.sh <build-dir> <work-dir> <c++ compiler> "<extra flags>" [make program]
# <extra flags> are compile+link flags (the sanitizer flags of sanitizer builds,
# since libvirtio.a is then instrumented); may be empty.
set -euo pipefail

if [[ $# -lt 4 ]]; then
  echo "usage: $0 <build-dir> <work-dir> <cxx> <extra-flags> [make-program]" >&2
  exit 2
fi
build_dir=$1
work_dir=$2
cxx=$3
extra_flags=$4
make_program=${5:-}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

step() { printf '\n=== install_consumer: %s\n' "$*"; }

rm -rf "$work_dir"
mkdir -p "$work_dir"
prefix="$work_dir/prefix"

step "cmake --install $build_dir --prefix $prefix"
cmake --install "$build_dir" --prefix "$prefix"

vhost_user=OFF
if [[ -f "$prefix/include/vhost_user/server.h" ]]; then
  vhost_user=ON
fi

# run_uppercase <daemon> <check> <label>: the check against a correct
# device must pass; against one that echoes the text unchanged it must fail.
run_uppercase() {
  local daemon=$1 check=$2 label=$3 socket daemon_pid rc
  socket="$work_dir/uppercase-$label.sock"
  for mode in correct broken; do
    step "uppercase device ($label, $mode)"
    rm -f "$socket"
    local args=(--socket "$socket" --connections 1)
    [[ $mode == broken ]] && args+=(--answer-unchanged)
    "$daemon" "${args[@]}" &
    daemon_pid=$!
    rc=0
    "$check" "$socket" || rc=$?
    if [[ $mode == correct && $rc -ne 0 ]]; then
      kill "$daemon_pid" 2>/dev/null || true
      wait "$daemon_pid" 2>/dev/null || true
      echo "uppercase_check failed against a correct device" >&2
      exit 1
    fi
    # 1: a wrong answer caught (anything else: the check never got that far).
    if [[ $mode == broken && $rc -ne 1 ]]; then
      kill "$daemon_pid" 2>/dev/null || true
      wait "$daemon_pid" 2>/dev/null || true
      echo "uppercase_check did not catch a wrong answer (exit $rc)" >&2
      exit 1
    fi
    # The daemon serves one front-end and exits: cleanly, or it failed.
    if ! wait "$daemon_pid"; then
      echo "uppercase_daemon failed ($mode device)" >&2
      exit 1
    fi
  done
}

step "configure consumer with find_package(libvirtio) (vhost-user: $vhost_user)"
generator_args=()
if [[ -n "$make_program" && "$(basename "$make_program")" == ninja* ]]; then
  generator_args=(-G Ninja -DCMAKE_MAKE_PROGRAM="$make_program")
fi
cmake -S "$here/consumer" -B "$work_dir/consumer-build" \
  "${generator_args[@]}" \
  -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_CXX_COMPILER="$cxx" \
  -DCMAKE_CXX_FLAGS="$extra_flags" \
  -DCMAKE_EXE_LINKER_FLAGS="$extra_flags" \
  -DCMAKE_PREFIX_PATH="$prefix" \
  -DCMAKE_FIND_PACKAGE_PREFER_CONFIG=ON \
  -DCONSUMER_VHOST_USER="$vhost_user"

step "build consumer (CMake)"
cmake --build "$work_dir/consumer-build" --verbose

step "run consumer (CMake)"
"$work_dir/consumer-build/consumer"
"$work_dir/consumer-build/consumer_backends"
if [[ $vhost_user == ON ]]; then
  run_uppercase "$work_dir/consumer-build/uppercase_daemon" \
    "$work_dir/consumer-build/uppercase_check" cmake
fi

step "build consumer with pkg-config"
pc_file=$(find "$prefix" -name libvirtio.pc -print -quit)
if [[ -z "$pc_file" ]]; then
  echo "libvirtio.pc was not installed under $prefix" >&2
  exit 1
fi
PKG_CONFIG_PATH="$(dirname "$pc_file")${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
export PKG_CONFIG_PATH
pkg-config --exists --print-errors libvirtio
pc_flags=$(pkg-config --cflags --libs libvirtio)
echo "pkg-config --cflags --libs libvirtio: $pc_flags"
if [[ "$pc_flags" == *uring* ]]; then
  echo "libvirtio.pc (the core) brings liburing: $pc_flags" >&2
  exit 1
fi
# shellcheck disable=SC2086  # word splitting of flag strings is intended
"$cxx" -std=c++20 $extra_flags "$here/consumer/main.cc" $pc_flags \
  -o "$work_dir/consumer-pkgconfig"

step "run consumer (pkg-config)"
"$work_dir/consumer-pkgconfig"

step "build consumer_backends with pkg-config (libvirtio-backends)"
pkg-config --exists --print-errors libvirtio-backends
pc_flags=$(pkg-config --cflags --libs libvirtio-backends)
echo "pkg-config --cflags --libs libvirtio-backends: $pc_flags"
# shellcheck disable=SC2086
"$cxx" -std=c++20 $extra_flags "$here/consumer/backends_main.cc" $pc_flags \
  -o "$work_dir/consumer-backends-pkgconfig"
"$work_dir/consumer-backends-pkgconfig"
if [[ $vhost_user == ON ]]; then
  step "build the uppercase daemon and check with pkg-config"
  pkg-config --exists --print-errors libvirtio-vhost-user \
    libvirtio-vhost-user-frontend
  daemon_flags=$(pkg-config --cflags --libs libvirtio-vhost-user)
  check_flags=$(pkg-config --cflags --libs libvirtio-vhost-user-frontend)
  echo "pkg-config --cflags --libs libvirtio-vhost-user: $daemon_flags"
  echo "pkg-config --cflags --libs libvirtio-vhost-user-frontend: $check_flags"
  # shellcheck disable=SC2086  # word splitting of flag strings is intended
  "$cxx" -std=c++20 $extra_flags "$here/consumer/uppercase/uppercase_daemon.cc" \
    $daemon_flags -o "$work_dir/uppercase_daemon-pkgconfig"
  # shellcheck disable=SC2086
  "$cxx" -std=c++20 $extra_flags "$here/consumer/uppercase/uppercase_check.cc" \
    $check_flags -o "$work_dir/uppercase_check-pkgconfig"
  run_uppercase "$work_dir/uppercase_daemon-pkgconfig" \
    "$work_dir/uppercase_check-pkgconfig" pkgconfig
fi

step "OK"
