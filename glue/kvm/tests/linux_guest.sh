#!/usr/bin/env bash
# linux_guest.sh — boots Debian's unmodified Linux kernel under virtio-kvm
# with all four libvirtio devices on virtio-pci and checks what the guest did.
#
#   linux_guest.sh VMM CACHE split|packed
#
# The guest (2 vCPUs, MSI-X through irqfd + GSI routes, ioeventfd kicks):
#   blk      mounts an ext4 image the host built, checks a file, writes two;
#            the host then runs e2fsck and reads them back with debugfs
#   rng      reads /dev/hwrng
#   console  exchanges lines with the host over hvc0 (socket backend)
#   net      pings a TAP in a network namespace made here and moves 1 MiB
#            each way (HTTP download; nc upload with a receipt)
# then powers off through ACPI, which ends virtio-kvm's run (exit 0).
# `split` boots the bzImage (through its decompressor's 64-bit entry) with
# devices that offer the split ring only; `packed` the extracted vmlinux
# with packed rings, and its rng on virtio-mmio, which Linux finds in the
# ACPI DSDT (the others stay on virtio-pci, under the DSDT's PCI root).
#
# Without a usable /dev/kvm the VMM runs inside a nested KVM
# (tests/nested/nested-kvm.sh). Exit 0 pass, 1 fail, 77 skip (the reason
# is printed).
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
top=$(cd "$here/../../.." && pwd)
T0=$SECONDS
log() { echo "[t+$((SECONDS - T0))s] $*"; }
skip() { echo "SKIP: $*"; exit 77; }
fail() { echo "FAIL: $*"; exit 1; }

HOST_IP=10.98.0.1
GUEST_IP=10.98.0.2
HTTP_PORT=8080
NC_PORT=9000
TAP=kvmlx0

# --- Inside: where /dev/kvm works (here or in the nested VM) -------------------
# inner WORK VMM KERNEL INITRD LAYOUT TOKEN: runs the VMM in a network
# namespace with the host's peers; leaves vmm.log, vmm.rc, console.log.
if [[ ${1:-} == --inner ]]; then
  work=$2 vmm=$3 kernel=$4 initrd=$5 layout=$6 token=$7
  ns=kvmlx$$
  pids=()
  cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
    ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null
    ip netns del "$ns" 2>/dev/null
  }
  trap cleanup EXIT
  [[ -c /dev/net/tun ]] || modprobe tun 2>/dev/null
  [[ -c /dev/net/tun ]] || { echo "no /dev/net/tun for the TAP backend" >"$work/inner.err"; exit 1; }
  ip netns add "$ns" && ip -n "$ns" link set lo up ||
    { echo "cannot create network namespace $ns" >"$work/inner.err"; exit 1; }

  # The guest's peers: HTTP (payload.bin and the upload receipt) and nc,
  # started once the TAP has its address; the console's other end.
  mkdir -p "$work/www/cgi-bin"
  cp "$work/payload.bin" "$work/www/"
  cat >"$work/www/cgi-bin/receipt" <<CGI
#!/bin/sh
f="$work/upload.bin"
want=\${QUERY_STRING%%[!0-9]*}
i=0
while [ "\$(stat -c %s "\$f" 2>/dev/null || echo 0)" -lt "\${want:-0}" ] && [ \$i -lt 300 ]; do
  sleep 0.1; i=\$((i + 1))
done
printf 'Content-Type: text/plain\r\n\r\n'
echo "\$(wc -c <"\$f") \$(sha256sum <"\$f" | cut -d' ' -f1)"
CGI
  chmod +x "$work/www/cgi-bin/receipt"
  # Not in WORK: that may be a 9p mount (nested), which has no sockets.
  sock=$(mktemp -u /tmp/kvmlx-console.XXXXXX)
  python3 "$here/console_peer.py" "$sock" "$token" \
    "$work/console.log" >"$work/console_peer.log" 2>&1 &
  pids+=($!)

  packed=on rng_transport=mmio
  [[ $layout == split ]] && packed=off rng_transport=pci
  cmdline="console=ttyS0 quiet loglevel=4 panic=-1"
  cmdline+=" LAYOUT=$layout TOKEN=$token HOST_IP=$HOST_IP GUEST_IP=$GUEST_IP"
  cmdline+=" RNG_TRANSPORT=$rng_transport"
  cmdline+=" HTTP_PORT=$HTTP_PORT NC_PORT=$NC_PORT"
  start=$SECONDS
  ip netns exec "$ns" "$vmm" --kernel "$kernel" --initrd "$initrd" \
    --cmdline "$cmdline" --cpus 2 --mem 384 --transport pci --timeout 400 \
    --device "blk,path=$work/disk.img,packed=$packed" \
    --device "rng,packed=$packed,transport=$rng_transport" \
    --device "console,backend=socket=$sock,packed=$packed" \
    --device "net,backend=tap,ifname=$TAP,packed=$packed" \
    >"$work/vmm.log" 2>&1 </dev/null &
  vmm_pid=$!
  # The VMM creates the TAP in the namespace: give it the host's address.
  for ((i = 0; i < 300; i++)); do
    ip -n "$ns" link show "$TAP" >/dev/null 2>&1 && break
    kill -0 "$vmm_pid" 2>/dev/null || break
    sleep 0.1
  done
  ip -n "$ns" addr add "$HOST_IP/24" dev "$TAP" 2>/dev/null &&
    ip -n "$ns" link set "$TAP" up ||
    echo "could not configure $TAP in $ns" >>"$work/inner.err"
  # Their output goes to files: a straggler holding the runner's stdout
  # would keep the run open.
  ip netns exec "$ns" busybox httpd -f -p "$HOST_IP:$HTTP_PORT" -h "$work/www" \
    >"$work/httpd.log" 2>&1 </dev/null &
  pids+=($!)
  ip netns exec "$ns" sh -c 'sleep 100000 | busybox nc -l -p "$1" >"$2"' sh \
    "$NC_PORT" "$work/upload.bin" 2>"$work/nc.log" </dev/null &
  pids+=($!)
  wait "$vmm_pid"
  echo $? >"$work/vmm.rc"
  echo $((SECONDS - start)) >"$work/vmm.secs"
  exit 0
fi

# --- Outside: prepare, run (nested if need be), check ---------------------------
[[ $# == 3 ]] || { echo "usage: $0 VMM CACHE split|packed"; exit 2; }
vmm=$(readlink -f "$1") cache=$2 layout=$3
[[ $layout == split || $layout == packed ]] || fail "layout must be split or packed"
[[ -x $vmm ]] || fail "no VMM at $1"
[[ $(id -u) == 0 ]] || skip "needs root (network namespace, TAP)"
# shellcheck source=../../../tests/nested/lib.sh
source "$top/tests/nested/lib.sh"
mkdir -p "$cache" && cache=$(readlink -f "$cache")
nested_need_pkgs "$cache" busybox-static e2fsprogs python3 iproute2 ||
  skip "$NESTED_ERR"
nested_get_kernel "$cache" || skip "$NESTED_ERR"
kernel=$NESTED_VMLINUZ what="bzImage $(basename "$NESTED_VMLINUZ")"
if [[ $layout == packed ]]; then
  [[ -f $cache/kernel/vmlinux ]] || fail "no vmlinux extracted from $NESTED_VMLINUZ"
  kernel=$cache/kernel/vmlinux what="vmlinux (extracted from $(basename "$NESTED_VMLINUZ"))"
fi
initrd=$cache/kvm-linux-guest.cpio
nested_initramfs "$initrd" "$here/linux_guest_init.sh" "$NESTED_KMODS" \
  "virtio_pci virtio_mmio virtio_blk virtio_net virtio_console virtio_rng crc32c_generic ext4" ||
  fail "guest initramfs: $NESTED_ERR"

work=$(mktemp -d /tmp/kvm-linux.XXXXXX) || fail "mktemp"
trap 'if [[ -n ${KEEP:-} ]]; then echo "kept $work"; else rm -rf "$work"; fi' EXIT
token=$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')
head -c 1048576 /dev/urandom >"$work/payload.bin"
mkdir -p "$work/disk"
echo "welcome, guest: token $token" >"$work/disk/welcome.txt"
mkfs.ext4 -q -F -L kvmlinux -d "$work/disk" "$work/disk.img" 64M ||
  fail "mkfs.ext4 failed"

log "$layout ring: booting $what, $NESTED_KVER, with 4 virtio devices (rng on virtio-$([[ $layout == packed ]] && echo mmio || echo pci))"
runner=(bash "$top/tests/nested/nested-kvm.sh" --cache "$cache" --rw "$work"
        --mem 1536 --timeout 700)
"${runner[@]}" -- bash "$here/linux_guest.sh" --inner "$work" "$vmm" "$kernel" \
  "$initrd" "$layout" "$token"
rc=$?
[[ $rc == 77 ]] && exit 77
if [[ $rc != 0 ]]; then
  KEEP=1
  for f in vmm.log inner.err console_peer.log; do
    [[ -s $work/$f ]] && { echo "--- $f (last 60 lines)"; tail -60 "$work/$f"; }
  done
  fail "the nested run failed (exit $rc; work dir $work kept)"
fi
[[ -f $work/vmm.rc ]] || { cat "$work/inner.err" 2>/dev/null; fail "the VMM did not run"; }

echo "--- virtio-kvm's output (serial console and VMM log)"
cat "$work/vmm.log"
echo "--- host side of hvc0"
cat "$work/console.log" 2>/dev/null
echo "---"
problems=0
problem() { echo "FAIL: $*"; problems=$((problems + 1)); }
[[ -s $work/inner.err ]] && problem "$(cat "$work/inner.err")"
vmm_rc=$(cat "$work/vmm.rc")
log "virtio-kvm exited $vmm_rc after $(cat "$work/vmm.secs") s (boot to power-off)"
[[ $vmm_rc == 0 ]] || problem "virtio-kvm exited $vmm_rc, not 0"
grep -q '^LINUX-GUEST: PASS' "$work/vmm.log" || problem "the guest did not report PASS"
grep 'LINUX-GUEST: FAIL' "$work/vmm.log" && problem "the guest reported failures"
grep -q 'the guest powered off' "$work/vmm.log" ||
  problem "the run did not end with the guest's ACPI power-off"
grep -q "msi_routing=yes" "$work/vmm.log" || problem "MSI-X did not go through GSI routes + irqfd"
grep -Eq 'ioeventfd_kicks=[1-9]' "$work/vmm.log" || problem "no ioeventfd kick was seen"
grep -q "GUEST-ECHO $token" "$work/console.log" 2>/dev/null ||
  problem "hvc0: the host never got the guest's echo"
# The guest's upload, as the host's nc received it.
up=$(sed -n 's/.*guest -> host: 1048576 bytes, sha256 \([0-9a-f]*\).*/\1/p' "$work/vmm.log")
[[ -n $up && $(sha256sum <"$work/upload.bin" | cut -d' ' -f1) == "$up" ]] ||
  problem "net: the upload the host received does not match the guest's sha256"
down=$(sed -n 's/.*host -> guest: 1048576 bytes, sha256 \([0-9a-f]*\).*/\1/p' "$work/vmm.log")
[[ $down == $(sha256sum <"$work/payload.bin" | cut -d' ' -f1) ]] ||
  problem "net: the guest's download does not match payload.bin"
# The disk, after the guest: clean, with the guest's files.
if e2fsck -fn "$work/disk.img" >"$work/fsck.log" 2>&1; then
  log "e2fsck -fn: clean ($(tail -1 "$work/fsck.log"))"
else
  cat "$work/fsck.log"; problem "e2fsck found problems in the guest's disk"
fi
debugfs -R "cat /from-guest.txt" "$work/disk.img" 2>/dev/null | grep -q "token $token" ||
  problem "disk: from-guest.txt is missing or lacks the token"
want=$(debugfs -R "cat /random.sha256" "$work/disk.img" 2>/dev/null)
debugfs -R "dump /random.bin $work/random.bin" "$work/disk.img" >/dev/null 2>&1
[[ -n $want && $(sha256sum <"$work/random.bin" | cut -d' ' -f1) == "$want" ]] ||
  problem "disk: random.bin does not match the sha256 the guest wrote beside it"
[[ $problems == 0 ]] || { KEEP=1; fail "$problems problem(s) (work dir $work kept)"; }
echo "PASS: Linux $NESTED_KVER on virtio-kvm, $layout rings: blk, rng, console, net"
