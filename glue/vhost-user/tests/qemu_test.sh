#!/usr/bin/env bash
# Real front-end check: QEMU's vhost-user-blk-pci and vhost-user-rng-pci
# connect to vhost-user-device and run the vhost-user handshake (features,
# protocol features, queue count, config space) at device realize time,
# before any guest runs (-S: paused). Passes if QEMU starts against the
# daemon, the daemon logs the connection and no protocol error.
#
# Needs qemu-system-x86_64 (Debian: qemu-system-x86). Exits 77 (ctest
# SKIP) with a reason when it is not installed. Booting a guest that drives
# the rings (write/read a pattern, fio, packed=on) needs a kernel with an
# initramfs as well: not done here yet.
#
# usage: qemu_test.sh PATH/TO/vhost-user-device
set -u
daemon=${1:?usage: qemu_test.sh PATH/TO/vhost-user-device}
qemu=$(command -v qemu-system-x86_64 || true)
if [[ -z $qemu ]]; then
  echo "SKIP: qemu-system-x86_64 not installed (apt-get install qemu-system-x86)"
  exit 77
fi
tmp=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  wait 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT
fail=0

run_one() {  # NAME DEVICE_SPEC QEMU_DEVICE
  local name=$1 spec=$2 qdev=$3 sock=$tmp/$1.sock log=$tmp/$1.log
  "$daemon" --socket "$sock" --device "$spec" >"$log" 2>&1 &
  local dpid=$!
  pids+=("$dpid")
  for _ in $(seq 100); do [[ -S $sock ]] && break; sleep 0.05; done
  if [[ $(stat -c %a "$sock") != 600 ]]; then
    echo "FAIL $name: socket mode $(stat -c %a "$sock"), want 600"; fail=1
  fi
  if ! "$qemu" -qmp stdio -S -display none -machine q35,accel=tcg -m 256M \
      -object memory-backend-memfd,id=mem,size=256M,share=on \
      -numa node,memdev=mem -chardev socket,id=c0,path="$sock" \
      -device "$qdev,chardev=c0" >"$tmp/$name.qemu" 2>&1 <<<'{"execute":"qmp_capabilities"}
{"execute":"quit"}'; then
    echo "FAIL $name: QEMU refused the device:"; cat "$tmp/$name.qemu"; fail=1
  fi
  sleep 0.2
  kill -TERM "$dpid"; wait "$dpid"; local rc=$?
  if [[ $rc != 0 ]]; then echo "FAIL $name: daemon exit $rc"; fail=1; fi
  if ! grep -q "front-end connected" "$log"; then
    echo "FAIL $name: no connection logged"; fail=1
  fi
  if grep -q "protocol error" "$log"; then
    echo "FAIL $name: protocol error"; fail=1
  fi
  if [[ -e $sock ]]; then echo "FAIL $name: socket not removed"; fail=1; fi
  echo "--- $name daemon log"; cat "$log"
}

run_one blk "blk,backend=ram,size=64M,num-queues=2" vhost-user-blk-pci,num-queues=2
if "$qemu" -device help 2>/dev/null | grep -q vhost-user-rng-pci; then
  run_one rng "rng" vhost-user-rng-pci
else
  echo "note: this QEMU has no vhost-user-rng-pci; rng not checked"
fi
exit $fail
