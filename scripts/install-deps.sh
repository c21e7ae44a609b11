#!/usr/bin/env bash
# Installs the build and test dependencies of libvirtio on Debian 12 / Ubuntu.
# Idempotent and quick: apt is only touched when a package is missing.
set -euo pipefail

packages=(
  build-essential g++
  clang clang-14 libclang-rt-14-dev   # clang++ (asan/tsan/fuzz presets), sanitizer + libFuzzer runtimes
  cmake ninja-build pkg-config
  libabsl-dev libgtest-dev libgmock-dev libbenchmark-dev liburing-dev
  libxen-dev                          # glue/xen: xendevicemodel, xenforeignmemory, xenevtchn, xengnttab
  clang-format clang-tidy
  acpica-tools                        # iasl: kvm_acpi_test disassembles virtio-kvm's DSDT
  qemu-utils                          # qemu-img/qemu-io: image_lock_test checks QEMU sees our image locks
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$'; then
    missing+=("$p")
  fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
  echo "install-deps: all ${#packages[@]} packages already installed"
  exit 0
fi

echo "install-deps: installing: ${missing[*]}"
sudo=()
if [[ $(id -u) -ne 0 ]]; then
  if ! command -v sudo >/dev/null; then
    echo "install-deps: not root and sudo is not available; install as root: ${missing[*]}" >&2
    exit 1
  fi
  sudo=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
  apt-get install -y -q --no-install-recommends "${missing[@]}"
