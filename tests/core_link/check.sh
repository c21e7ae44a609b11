#!/usr/bin/env bash
# core_links_without_liburing: the program of core_only_main.cc, linked
# against libvirtio::virtio alone (with --no-as-needed, so every library on
# its link line is a dependency of the binary), runs, and neither depends
# on liburing nor refers to an io_uring symbol.
#
# Usage: check.sh <core-only program>
set -euo pipefail
program=$1

"$program"

deps=$(ldd "$program")
if grep -i uring <<<"$deps"; then
  echo "FAIL: the core-only program depends on liburing:" >&2
  echo "$deps" >&2
  exit 1
fi
symbols=$(nm -C "$program")
if grep -E 'io_uring|UringDisk' <<<"$symbols"; then
  echo "FAIL: the core-only program refers to io_uring symbols" >&2
  exit 1
fi
echo "OK: libvirtio::virtio links without liburing"
