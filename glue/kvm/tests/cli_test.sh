#!/usr/bin/env bash
# cli_test.sh VMM — virtio-kvm's command line: --help, and every boot-file
# and disk mistake gets its message and exit status 4 before KVM is touched
# (so this runs on machines without /dev/kvm too).
set -uo pipefail
vmm=${1:?usage: $0 VMM}
work=$(mktemp -d) || exit 1
trap 'rm -rf "$work"' EXIT
fails=0

# expect STATUS REGEX ARGS...: runs the VMM, checks exit status and output.
expect() {
  local want=$1 re=$2; shift 2
  local out rc
  out=$("$vmm" "$@" 2>&1 </dev/null)
  rc=$?
  if [[ $rc != "$want" ]] || ! grep -Eq -- "$re" <<<"$out"; then
    echo "FAIL: virtio-kvm $*: exit $rc (want $want), output:"
    sed 's/^/    /' <<<"$out"
    echo "    (wanted a line matching: $re)"
    fails=$((fails + 1))
  else
    echo "ok: virtio-kvm $* -> $rc: $(grep -Em1 -- "$re" <<<"$out")"
  fi
}

# A file that looks like a bzImage (header only): enough to be taken for a
# Linux kernel; nothing here boots it.
python3 - "$work/bzImage" <<'PY'
import struct, sys
img = bytearray(5 * 512 + 4096)
img[0x1f1] = 4
struct.pack_into("<H", img, 0x1fe, 0xAA55)
img[0x201] = 0x6a
struct.pack_into("<I", img, 0x202, 0x53726448)
struct.pack_into("<H", img, 0x206, 0x020F)
struct.pack_into("<H", img, 0x236, 1)
struct.pack_into("<I", img, 0x238, 2047)
struct.pack_into("<Q", img, 0x258, 0x1000000)
struct.pack_into("<I", img, 0x260, 0x100000)
open(sys.argv[1], "wb").write(img)
PY
: >"$work/empty"
head -c 4096 /dev/zero >"$work/disk.img"

expect 0 'usage: virtio-kvm --kernel IMAGE' --help
expect 0 '--initrd FILE' -h
expect 4 'kernel /nonexistent/vmlinuz: No such file or directory' \
  --kernel /nonexistent/vmlinuz
expect 4 'kernel .*: not a regular file' --kernel "$work"
expect 4 'kernel .*empty: empty file' --kernel "$work/empty"
expect 4 'initramfs /nonexistent/initrd: No such file or directory' \
  --kernel "$work/bzImage" --initrd /nonexistent/initrd
expect 4 '--initrd and --cmdline are for a Linux kernel' \
  --kernel "$work/disk.img" --initrd "$work/disk.img"
expect 4 '--guest-flags is for the test guest' \
  --kernel "$work/bzImage" --guest-flags packed
expect 4 '--no-acpi is for a Linux kernel' --kernel "$work/disk.img" --no-acpi
expect 0 '--no-acpi +Linux: no ACPI tables' --help
expect 4 'disk image /nonexistent/disk.img: No such file or directory' \
  --kernel "$work/bzImage" --device blk,path=/nonexistent/disk.img,transport=pci
expect 4 '--cpus: 1\.\.8' --kernel "$work/bzImage" --cpus 0
expect 4 '--cpus: 1\.\.8' --kernel "$work/bzImage" --cpus 9
expect 4 '--mem: MiB in 4\.\.3072' --kernel "$work/bzImage" --mem 5000
expect 4 "'packed=maybe' is not on/off" --kernel "$work/bzImage" \
  --device rng,packed=maybe
head -c $((5 << 20)) /dev/zero >"$work/big.img"
expect 4 'initramfs .*big.img: 5 MiB is larger than guest RAM allows' \
  --kernel "$work/bzImage" --mem 4 --initrd "$work/big.img"

[[ $fails == 0 ]] || { echo "$fails failure(s)"; exit 1; }
echo "PASS: virtio-kvm command-line errors"
