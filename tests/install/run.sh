#!/usr/bin/env bash
# install_consumer test: install the build tree into a temporary prefix, then
# build and run tests/install/consumer against it twice — once through
# find_package(libvirtio) and once through pkg-config. Any failure fails.
#
# When the package has the vhost-user libraries (their headers are
# installed), the consumer also builds a vhost-user daemon for a device of
# its own (consumer/uppercase/) and a front-end that checks its answers;
# each pair runs twice: with a correct device, which must pass, and with
# one that answers wrongly, which the check must catch. The installed
# vhost-user-device daemon is then checked as an operator would use it
# (check_installed_daemon below).
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

# The installed daemons: vhost-user-device as an operator would find it
# (bin/, the conventions' libexec links, QEMU's discovery files, the
# systemd units, the documentation), serving an image to blk_check.
check_installed_daemon() {
  local bin=$prefix/bin/vhost-user-device link
  link=$prefix/libexec/libvirtio/vhost-user-blk
  step "installed vhost-user-device: files"
  local f
  for f in "$bin" "$link" "$prefix/lib/systemd/system/vhost-user-device@.service" \
    "$prefix/lib/systemd/system/vhost-user-device@.socket" \
    "$prefix/share/doc/libvirtio/vhost-user-device/README.md" \
    "$prefix/share/doc/libvirtio/devices.md"; do
    if [[ ! -e $f ]]; then
      echo "not installed: $f" >&2
      exit 1
    fi
  done
  if [[ -x $build_dir/glue/kvm/virtio-kvm && ! -x $prefix/bin/virtio-kvm ]]; then
    echo "virtio-kvm is built but not installed" >&2
    exit 1
  fi
  if [[ -x $prefix/bin/virtio-kvm && ! -e $prefix/share/doc/libvirtio/virtio-kvm/README.md ]]; then
    echo "virtio-kvm installed without its README" >&2
    exit 1
  fi
  if [[ -x $prefix/bin/xen-virtio-backend && ! -e $prefix/share/doc/libvirtio/xen-virtio-backend/README.md ]]; then
    echo "xen-virtio-backend installed without its README" >&2
    exit 1
  fi
  # The unit runs the installed binary, not the build tree's.
  grep -qF "ExecStart=$prefix/bin/vhost-user-device " \
    "$prefix/lib/systemd/system/vhost-user-device@.service" ||
    { echo "vhost-user-device@.service does not run $bin" >&2; exit 1; }

  step "installed vhost-user-device: QEMU discovery files and --print-capabilities"
  local type qemu_type json binary caps
  for type in blk net console rng; do
    qemu_type=$type
    [[ $type == blk ]] && qemu_type=block
    json=$prefix/share/qemu/vhost-user/50-libvirtio-vhost-user-$type.json
    # CMake's JSON parser: no jq or python needed.
    binary=$(cmake -DJSON="$json" -DWANT_TYPE="$qemu_type" \
      -P "$here/check_discovery_json.cmake" 2>&1) ||
      { echo "$json: $binary" >&2; exit 1; }
    if [[ $binary != "$prefix/libexec/libvirtio/vhost-user-$type" ]]; then
      echo "$json names $binary" >&2
      exit 1
    fi
    # What management software does with it: run the binary it names.
    caps=$("$binary" --print-capabilities)
    echo "$binary --print-capabilities: $caps"
    if [[ $caps != "{\"type\": \"$qemu_type\", "* ]]; then
      echo "$binary reports the wrong type: $caps" >&2
      exit 1
    fi
  done

  if command -v systemd-analyze >/dev/null; then
    step "installed vhost-user-device: systemd-analyze verify on the units"
    local units=$work_dir/units
    mkdir -p "$units"
    cp "$prefix/lib/systemd/system/vhost-user-device@.service" \
      "$units/vhost-user-device@disk0.service"
    cp "$prefix/lib/systemd/system/vhost-user-device@.socket" \
      "$units/vhost-user-device@disk0.socket"
    # Only this unit's own problems (the host's units may have theirs).
    local out
    out=$(cd "$units" && systemd-analyze verify ./vhost-user-device@disk0.socket \
      ./vhost-user-device@disk0.service 2>&1 | grep -F vhost-user-device@ || true)
    if [[ -n $out ]]; then
      echo "systemd-analyze verify: $out" >&2
      exit 1
    fi
  else
    echo "(systemd-analyze missing: the units' syntax is not checked)"
  fi

  # Served through the link (its name gives the type, as for libvirt) with
  # the conventions' --socket-path and --blk-file.
  step "installed vhost-user-device: serving an image to blk_check"
  local img=$work_dir/disk.img sock=$work_dir/installed-blk.sock pid rc=0
  rm -f "$img" "$sock"
  truncate -s 8M "$img"
  "$link" --socket-path "$sock" --blk-file "$img" 2>"$work_dir/daemon.log" &
  pid=$!
  for _ in $(seq 200); do [[ -S $sock ]] && break; sleep 0.05; done
  "$1" "$sock" 16384 24 || rc=$?
  kill "$pid" 2>/dev/null || true
  wait "$pid" || { echo "the installed daemon failed:" >&2; cat "$work_dir/daemon.log" >&2; exit 1; }
  if [[ $rc -ne 0 ]]; then
    cat "$work_dir/daemon.log" >&2
    echo "blk_check failed against the installed daemon (exit $rc)" >&2
    exit 1
  fi
  # The pattern is in the image itself: the installed daemon served it.
  local byte
  byte=$(od -An -tu1 -j $((24 * 512 + 5)) -N1 "$img" | tr -d ' ')
  if [[ $byte != $(((24 + 5) & 255)) ]]; then
    echo "the image does not hold what blk_check wrote (byte $byte)" >&2
    exit 1
  fi
  if [[ -e $sock ]]; then
    echo "the daemon left its socket behind" >&2
    exit 1
  fi
}
if [[ $vhost_user == ON && -x $prefix/bin/vhost-user-device ]]; then
  check_installed_daemon "$work_dir/consumer-build/blk_check"
elif [[ $vhost_user == ON ]]; then
  echo "vhost-user libraries installed without bin/vhost-user-device" >&2
  exit 1
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
