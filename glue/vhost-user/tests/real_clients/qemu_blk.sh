#!/usr/bin/env bash
# rc-timeout: 900
# Real client: QEMU 7.2 (q35, TCG, shared memfd RAM) boots Debian's kernel
# with a busybox initramfs; two vhost-user-blk-pci disks are served by two
# vhost-user-device daemons:
#   vda: a file-backed disk (io_uring), daemon packed=off -> split ring
#   vdb: a RAM disk, QEMU packed=on                       -> packed ring
# The guest checks which ring each disk negotiated, writes a random pattern
# to each with dd, drops caches, reads it back and compares, runs a small
# fio verify job on vdb, and powers off. The host then checks that the
# pattern is in the backing file at the right offset.
#
# usage: qemu_blk.sh PATH/TO/vhost-user-device CACHE_DIR
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
rc_init "$@"

rc_need_pkgs qemu-system-x86 busybox-static fio
rc_get_kernel
QEMU=$(command -v qemu-system-x86_64) || skip "qemu-system-x86_64 missing after install"

# --- backing file and pattern
DISK=$RC_TMP/disk.img
truncate -s 64M "$DISK"
mkdir "$RC_TMP/extra"
head -c 1M /dev/urandom >"$RC_TMP/extra/pattern_a"
head -c 1M /dev/urandom >"$RC_TMP/extra/pattern_b"

cat >"$RC_TMP/test.sh" <<'T'
RESULT=OK
bad() { echo "guest: FAIL: $*"; RESULT="FAIL ($*)"; }
for d in vda vdb; do
  i=0; while [ ! -b /dev/$d ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
  [ -b /dev/$d ] || { bad "/dev/$d never appeared"; return; }
done
ls -l /dev/vd* 2>&1
# Ring layout actually negotiated: virtio feature bit 34 = RING_PACKED.
pa=$(cut -c35 /sys/block/vda/device/features)
pb=$(cut -c35 /sys/block/vdb/device/features)
echo "guest: vda packed=$pa vdb packed=$pb"
[ "$pa" = 0 ] || bad "vda negotiated a packed ring, expected split"
[ "$pb" = 1 ] || bad "vdb did not negotiate a packed ring"
[ "$(cat /sys/block/vda/size)" = 131072 ] || bad "vda size $(cat /sys/block/vda/size) sectors, expected 131072"
[ "$(cat /sys/block/vdb/size)" = 65536 ] || bad "vdb size $(cat /sys/block/vdb/size) sectors, expected 65536"
for x in "vda a" "vdb b"; do
  set -- $x
  dd if=/pattern_$2 of=/dev/$1 bs=64k seek=16 conv=fsync 2>/dev/null || bad "dd write $1"
  echo 3 >/proc/sys/vm/drop_caches
  dd if=/dev/$1 of=/tmp/back bs=64k skip=16 count=16 2>/dev/null || bad "dd read $1"
  if cmp /pattern_$2 /tmp/back; then echo "guest: $1 pattern verified"; else bad "$1 readback differs"; fi
done
if [ -x /usr/bin/fio ]; then
  fio --name=verify --filename=/dev/vdb --direct=1 --ioengine=psync \
      --rw=randwrite --bs=4k --size=2M --offset=8M --verify=crc32c \
      --do_verify=1 --output-format=terse >/tmp/fio.out 2>&1
  rc=$?
  if [ $rc = 0 ]; then echo "guest: fio verify ok"; else cat /tmp/fio.out; bad "fio exit $rc"; fi
fi
T
rc_write_init "$RC_TMP/init"
rc_initramfs "$RC_TMP/initrd" "$RC_TMP/init" "$RC_TMP/test.sh" \
  "virtio_pci virtio_blk" ${RC_QEMU_FIO-fio}
log "kernel $KVER, initramfs $(du -k "$RC_TMP/initrd" | cut -f1) KiB"

# --- daemons
rc_bg daemon_a timeout -k 5 200 "$DAEMON" --socket "$RC_TMP/a.sock" \
  --device "blk,path=$DISK,packed=off,serial=rc-a"
PID_A=$RC_LAST_PID
rc_bg daemon_b timeout -k 5 200 "$DAEMON" --socket "$RC_TMP/b.sock" \
  --device "blk,backend=ram,size=32M,num-queues=2"
PID_B=$RC_LAST_PID
rc_wait_socket "$RC_TMP/a.sock" || { cat "$RC_TMP/daemon_a.log"; fail "daemon a did not listen"; }
rc_wait_socket "$RC_TMP/b.sock" || { cat "$RC_TMP/daemon_b.log"; fail "daemon b did not listen"; }

# --- guest
log "booting QEMU (TCG)"
rc_bg qemu "$QEMU" -machine q35,accel=tcg -cpu qemu64 -smp 1 -m 512M \
  -object memory-backend-memfd,id=mem,size=512M,share=on -numa node,memdev=mem \
  -nodefaults -no-user-config -display none -no-reboot \
  -serial "file:$RC_TMP/console.log" \
  -kernel "$QEMU_KERNEL" -initrd "$RC_TMP/initrd" \
  -append "console=ttyS0 panic=-1 quiet loglevel=4" \
  -chardev socket,id=ca,path="$RC_TMP/a.sock" \
  -device vhost-user-blk-pci,chardev=ca,num-queues=1 \
  -chardev socket,id=cb,path="$RC_TMP/b.sock" \
  -device vhost-user-blk-pci,chardev=cb,num-queues=2,packed=on
rc_watch "$RC_LAST_PID" 120 "$RC_FATAL_RE" "$RC_TMP/qemu.log" "$RC_TMP/daemon_a.log" "$RC_TMP/daemon_b.log"
qrc=$?
show() {
  echo "--- QEMU"; cat "$RC_TMP/qemu.log"
  echo "--- guest console"; tail -60 "$RC_TMP/console.log"
  echo "--- daemon a"; cat "$RC_TMP/daemon_a.log"
  echo "--- daemon b"; cat "$RC_TMP/daemon_b.log"
}
rc_guest_result "$qrc" 120

rc_stop_daemon "$PID_A" "$RC_TMP/daemon_a.log"
rc_stop_daemon "$PID_B" "$RC_TMP/daemon_b.log"
[[ -e $RC_TMP/a.sock || -e $RC_TMP/b.sock ]] && fail "daemon left its socket behind"

# --- host-side check of the backing file
cmp -i 0:1048576 -n 1048576 "$RC_TMP/extra/pattern_a" "$DISK" ||
  fail "backing file does not hold the guest's pattern at offset 1 MiB"
log "host: backing file holds the pattern"
echo "PASS: qemu vhost-user-blk (split file disk + packed RAM disk, dd + fio)"
