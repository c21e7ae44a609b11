#!/usr/bin/env bash
# rc-timeout: 600
# Real client: online resize. QEMU 7.2 (q35, TCG, shared memfd RAM) boots
# Debian's kernel with a busybox initramfs and one vhost-user-blk-pci disk
# served by vhost-user-device from a 32 MiB image, with a control socket.
# While the guest runs, the host grows the image twice: to 64 MiB, then
# asks `--query CTL resize`; to 96 MiB, then sends the daemon SIGHUP. Each
# time it writes a marker just past the old end first. The guest, which
# never reboots, waits for /sys/block/vda/size to change (the daemon's
# CONFIG_CHANGE_MSG -> QEMU's GET_CONFIG -> the guest's config interrupt),
# checks the new size and reads the marker past the old end. After the
# guest powered off, the host shrinks the image: `resize` must be refused
# (exit status 1, "shrinking is refused"), the capacity unchanged.
#
# usage: qemu_resize.sh PATH/TO/vhost-user-device CACHE_DIR
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
rc_init "$@"

rc_need_pkgs qemu-system-x86 busybox-static
rc_get_kernel
QEMU=$(command -v qemu-system-x86_64) || skip "qemu-system-x86_64 missing after install"

DISK=$RC_TMP/disk.img
CTL=$RC_TMP/ctl.sock
truncate -s 32M "$DISK"

cat >"$RC_TMP/test.sh" <<'T'
RESULT=OK
bad() { echo "guest: FAIL: $*"; RESULT="FAIL ($*)"; }
i=0; while [ ! -b /dev/vda ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
[ -b /dev/vda ] || { bad "/dev/vda never appeared"; return; }
# wait_grow OLD: waits (30 s at most) for vda's size to leave OLD.
wait_grow() {
  i=0
  while [ "$(cat /sys/block/vda/size)" = "$1" ] && [ $i -lt 300 ]; do
    sleep 0.1; i=$((i+1))
  done
  cat /sys/block/vda/size
}
# check STEP OLD WANT: the new size and the marker one sector past OLD.
check() {
  got=$(wait_grow "$2")
  echo "guest: step $1: size $2 -> $got"
  [ "$got" = "$3" ] || { bad "step $1: size $got, expected $3"; return; }
  mark=$(dd if=/dev/vda bs=512 skip=$(($2 + 1)) count=1 2>/dev/null | head -c 14)
  [ "$mark" = "RESIZE-MARK-$1" ] || bad "step $1: read '$mark' past the old end"
}
s0=$(cat /sys/block/vda/size)
[ "$s0" = 65536 ] || bad "vda starts with $s0 sectors, expected 65536"
echo "guest: ready-1 size=$s0"
check 1 65536 131072
echo "guest: ready-2"
check 2 131072 196608
T
rc_write_init "$RC_TMP/init"
rc_initramfs "$RC_TMP/initrd" "$RC_TMP/init" "$RC_TMP/test.sh" \
  "virtio_pci virtio_blk"
log "kernel $KVER, initramfs $(du -k "$RC_TMP/initrd" | cut -f1) KiB"

# --- daemon (not under timeout(1): SIGHUP goes to the daemon itself)
rc_bg daemon "$DAEMON" --socket "$RC_TMP/vu.sock" --control-socket "$CTL" \
  --device "blk,path=$DISK,serial=rc-resize"
PID_D=$RC_LAST_PID
rc_wait_socket "$RC_TMP/vu.sock" || { cat "$RC_TMP/daemon.log"; fail "daemon did not listen"; }
rc_wait_socket "$CTL" || { cat "$RC_TMP/daemon.log"; fail "no control socket"; }

# --- the host's side, while the guest runs: grow, mark, tell
cat >"$RC_TMP/host.sh" <<H
wait_line() { # PATTERN: up to 90 s for it on the guest's console
  for i in \$(seq 900); do
    grep -q "\$1" "$RC_TMP/console.log" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "host: never saw '\$1' on the console"; return 1
}
# grow STEP BYTES: grows the image, then writes the step's marker one
# sector past the old end (the guest reads it after it saw the new size).
grow() {
  old=\$(stat -c %s "$DISK")
  truncate -s "\$2" "$DISK"
  printf 'RESIZE-MARK-%s' "\$1" |
    dd of="$DISK" bs=512 seek=\$((old / 512 + 1)) conv=notrunc 2>/dev/null
}
wait_line "guest: ready-1" || exit 1
grow 1 64M
"$DAEMON" --query "$CTL" resize || { echo "host: resize query failed"; exit 1; }
wait_line "guest: ready-2" || exit 1
grow 2 96M
kill -HUP $PID_D
echo "host: HOST-DONE"
H
rc_bg host bash "$RC_TMP/host.sh"
PID_H=$RC_LAST_PID

log "booting QEMU (TCG)"
rc_bg qemu "$QEMU" -machine q35,accel=tcg -cpu qemu64 -smp 1 -m 256M \
  -object memory-backend-memfd,id=mem,size=256M,share=on -numa node,memdev=mem \
  -nodefaults -no-user-config -display none -no-reboot \
  -serial "file:$RC_TMP/console.log" \
  -kernel "$QEMU_KERNEL" -initrd "$RC_TMP/initrd" \
  -append "console=ttyS0 panic=-1 quiet loglevel=4" \
  -chardev socket,id=c0,path="$RC_TMP/vu.sock" \
  -device vhost-user-blk-pci,chardev=c0,num-queues=1
rc_watch "$RC_LAST_PID" 120 "$RC_FATAL_RE" "$RC_TMP/qemu.log" "$RC_TMP/daemon.log"
qrc=$?
show() {
  echo "--- QEMU"; cat "$RC_TMP/qemu.log"
  echo "--- guest console"; tail -60 "$RC_TMP/console.log"
  echo "--- host side"; cat "$RC_TMP/host.log"
  echo "--- daemon"; cat "$RC_TMP/daemon.log"
}
rc_guest_result "$qrc" 120
cat "$RC_TMP/host.log"
grep -q "HOST-DONE" "$RC_TMP/host.log" || { show; fail "the host side did not finish"; }
grep -q "resized (the control socket) from 65536 to 131072 sectors; configuration change sent" \
  "$RC_TMP/daemon.log" || { show; fail "no resize line for the control request"; }
grep -q "resized (SIGHUP) from 131072 to 196608 sectors; configuration change sent" \
  "$RC_TMP/daemon.log" || { show; fail "no resize line for SIGHUP"; }

# --- shrinking is refused, the capacity kept
truncate -s 16M "$DISK"
rc=0
"$DAEMON" --query "$CTL" resize >"$RC_TMP/shrink.out" 2>&1 || rc=$?
cat "$RC_TMP/shrink.out"
[[ $rc == 1 ]] || fail "a shrinking resize exited $rc, expected 1"
grep -q "shrinking is refused" "$RC_TMP/shrink.out" || fail "no refusal message"
"$DAEMON" --query "$CTL" stats >"$RC_TMP/stats.json" || fail "stats query failed"
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); c=d["device"]["capacity_sectors"]; assert c == 196608, c' \
  "$RC_TMP/stats.json" || fail "capacity changed by a refused shrink: $(cat "$RC_TMP/stats.json")"

rc_stop_daemon "$PID_D" "$RC_TMP/daemon.log"
[[ -e $RC_TMP/vu.sock || -e $CTL ]] && fail "daemon left a socket behind"
echo "PASS: qemu vhost-user-blk online resize (control request and SIGHUP; shrink refused)"
