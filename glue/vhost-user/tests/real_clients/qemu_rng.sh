#!/usr/bin/env bash
# rc-timeout: 600
# Real client: QEMU 7.2 (q35, TCG) with vhost-user-rng-pci; the guest's
# virtio-rng driver reads entropy served by vhost-user-device.
# Here QEMU listens (server=on,wait=on: wait=off with no back-end yet trips
# an assertion in QEMU 7.2) and the daemon connects with --client, so the
# daemon's client mode is covered by a real front-end too.
# The guest checks that virtio_rng is the current hwrng, reads 16 KiB from
# /dev/hwrng twice and checks both differ and are not constant.
#
# usage: qemu_rng.sh PATH/TO/vhost-user-device CACHE_DIR
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
rc_init "$@"

rc_need_pkgs qemu-system-x86 busybox-static
rc_get_kernel
QEMU=$(command -v qemu-system-x86_64) || skip "qemu-system-x86_64 missing after install"
"$QEMU" -device help 2>/dev/null | grep -q '"vhost-user-rng-pci"' ||
  skip "this QEMU has no vhost-user-rng-pci device"

cat >"$RC_TMP/test.sh" <<'T'
RESULT=OK
bad() { echo "guest: FAIL: $*"; RESULT="FAIL ($*)"; }
i=0
while ! grep -q virtio /sys/class/misc/hw_random/rng_available 2>/dev/null && [ $i -lt 100 ]; do
  sleep 0.1; i=$((i+1))
done
cur=$(cat /sys/class/misc/hw_random/rng_current 2>/dev/null)
echo "guest: rng_current=$cur"
case $cur in virtio_rng*) ;; *) bad "virtio_rng is not the current hwrng" ;; esac
timeout -k 5 30 dd if=/dev/hwrng of=/tmp/r1 bs=4096 count=4 iflag=fullblock 2>/dev/null || bad "read /dev/hwrng (1)"
timeout -k 5 30 dd if=/dev/hwrng of=/tmp/r2 bs=4096 count=4 iflag=fullblock 2>/dev/null || bad "read /dev/hwrng (2)"
n1=$(wc -c </tmp/r1); n2=$(wc -c </tmp/r2)
echo "guest: read $n1 + $n2 bytes"
[ "$n1" = 16384 ] && [ "$n2" = 16384 ] || { bad "short reads"; return; }
cmp -s /tmp/r1 /tmp/r2 && bad "two reads returned the same bytes"
# Not constant: at least 200 distinct byte values in 16 KiB.
distinct=$(od -An -v -tu1 /tmp/r1 | tr -s ' ' '\n' | grep . | sort -u | wc -l)
echo "guest: $distinct distinct byte values"
[ "$distinct" -ge 200 ] || bad "only $distinct distinct byte values"
T
rc_write_init "$RC_TMP/init"
rc_initramfs "$RC_TMP/initrd" "$RC_TMP/init" "$RC_TMP/test.sh" "virtio_pci virtio_rng"

SOCK=$RC_TMP/rng.sock
log "booting QEMU (TCG), QEMU listening on the socket"
rc_bg qemu "$QEMU" -machine q35,accel=tcg -cpu qemu64 -smp 1 -m 256M \
  -object memory-backend-memfd,id=mem,size=256M,share=on -numa node,memdev=mem \
  -nodefaults -no-user-config -display none -no-reboot \
  -serial "file:$RC_TMP/console.log" \
  -kernel "$QEMU_KERNEL" -initrd "$RC_TMP/initrd" \
  -append "console=ttyS0 panic=-1 quiet loglevel=4" \
  -chardev socket,id=c0,path="$SOCK",server=on,wait=on \
  -device vhost-user-rng-pci,chardev=c0
QPID=$RC_LAST_PID
rc_wait_socket "$SOCK" 30 || { cat "$RC_TMP/qemu.log"; fail "QEMU did not create $SOCK"; }
rc_bg daemon timeout -k 5 150 "$DAEMON" --client --socket "$SOCK" --device rng
DPID=$RC_LAST_PID

show() {
  echo "--- QEMU"; cat "$RC_TMP/qemu.log"
  echo "--- guest console"; tail -60 "$RC_TMP/console.log"
  echo "--- daemon"; cat "$RC_TMP/daemon.log"
}
rc_watch "$QPID" 90 "$RC_FATAL_RE" "$RC_TMP/qemu.log" "$RC_TMP/daemon.log"; qrc=$?
log "QEMU exited with $qrc"
[[ $qrc == 124 ]] && { show; fail "guest did not power off within 90 s"; }
[[ $qrc == 125 ]] && { show; fail "stopped the guest early: $RC_WATCH_HIT"; }
[[ $qrc == 0 ]] || { show; fail "QEMU exited with $qrc"; }
grep 'guest:' "$RC_TMP/console.log"
grep -q '^RC-RESULT: OK' "$RC_TMP/console.log" ||
  { show; fail "guest: $(grep RC-RESULT "$RC_TMP/console.log" || echo 'no result')"; }
grep -q "front-end connected\|connected" "$RC_TMP/daemon.log" || { show; fail "daemon logged no connection"; }
# After poweroff the daemon reconnects (client mode) and may catch QEMU's
# socket as it goes away: only the guest's connection counts here.
rc_stop_daemon "$DPID" "$RC_TMP/daemon.log" first
echo "PASS: qemu vhost-user-rng-pci (daemon in --client mode)"
