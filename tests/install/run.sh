#!/usr/bin/env bash
# install_consumer test: install the build tree into a temporary prefix, then
# build and run tests/install/consumer against it twice — once through
# find_package(libvirtio) and once through pkg-config. Any failure fails.
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

step "configure consumer with find_package(libvirtio)"
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
  -DCMAKE_FIND_PACKAGE_PREFER_CONFIG=ON

step "build consumer (CMake)"
cmake --build "$work_dir/consumer-build" --verbose

step "run consumer (CMake)"
"$work_dir/consumer-build/consumer"
"$work_dir/consumer-build/consumer_backends"

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

step "OK"
