#!/usr/bin/env bash
# rc-timeout: 600
# Real client: User-mode Linux (Debian's user-mode-linux, CONFIG_VIRTIO_UML)
# attaches vhost-user-device as a virtio-blk device with
# virtio_uml.device=SOCKET:2 and runs Linux's real virtio_blk driver at
# native speed. Root is the host's / over hostfs (read-only), so the guest
# runs the host's fio. The guest checks the ring is split (UML 6.1 breaks on
# packed rings: the daemon runs with --no_packed), writes a pattern with dd,
# drops caches, reads it back, runs a fio write+verify job, and powers off;
# the host then checks the pattern in the backing file.
#
# On a host with AMX, UML 6.1 panics at its first guest process (xstate
# buffer too small): it then runs under uml_xstate_seccomp (built here) and
# guest programs are kept off AVX with GLIBC_TUNABLES. Detected, not
# assumed; RC_UML_XSTATE_WORKAROUND=1 forces it (to test the workaround).
#
# usage: uml_blk.sh PATH/TO/vhost-user-device CACHE_DIR
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
rc_init "$@"

rc_need_pkgs user-mode-linux busybox-static fio
rc_uml_prepare

DISK=$RC_TMP/disk.img
truncate -s 64M "$DISK"
head -c 1M /dev/urandom >"$RC_TMP/pattern"
MODS=$(rc_mod_closure "$UML_KMODS" virtio_blk | sed "s|^|$UML_KMODS/|" | tr '\n' ' ')
[[ -n $MODS ]] || skip "UML $UML_VER has no virtio_blk module"

cat >"$RC_TMP/init" <<EOF2
#!/bin/busybox sh
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
bb=/bin/busybox
\$bb mount -t proc proc /proc
\$bb mount -t sysfs sys /sys
\$bb mount -t devtmpfs dev /dev 2>/dev/null  # UML may have mounted it
\$bb mount -t tmpfs tmp /mnt
RESULT=OK
bad() { echo "guest: FAIL: \$*"; RESULT="FAIL (\$*)"; }
run() {
for m in $MODS; do \$bb insmod \$m || bad "insmod \$m"; done
i=0; while [ ! -b /dev/vda ] && [ \$i -lt 100 ]; do \$bb sleep 0.1; i=\$((i+1)); done
[ -b /dev/vda ] || { bad "/dev/vda never appeared"; return; }
p=\$(\$bb cut -c35 /sys/block/vda/device/features)
echo "guest: vda packed=\$p size=\$(\$bb cat /sys/block/vda/size)"
[ "\$p" = 0 ] || bad "vda negotiated a packed ring (UML 6.1 cannot drive it)"
[ "\$(\$bb cat /sys/block/vda/size)" = 131072 ] || bad "wrong capacity"
\$bb dd if=$RC_TMP/pattern of=/dev/vda bs=64k seek=16 conv=fsync 2>/dev/null || bad "dd write"
echo 3 >/proc/sys/vm/drop_caches
\$bb dd if=/dev/vda of=/mnt/back bs=64k skip=16 count=16 2>/dev/null || bad "dd read"
if \$bb cmp $RC_TMP/pattern /mnt/back; then echo "guest: pattern verified"; else bad "readback differs"; fi
cd /mnt
fio --name=verify --filename=/dev/vda --direct=1 --ioengine=libaio --iodepth=16 \
    --rw=randwrite --bs=4k --size=16M --offset=16M --verify=crc32c --do_verify=1 \
    --output-format=terse --terse-version=3 >/mnt/fio.out 2>&1
rc=\$?
if [ \$rc = 0 ]; then
  echo "guest: fio randwrite+verify 16 MiB ok (write iops \$(\$bb cut -d';' -f49 /mnt/fio.out))"
else
  \$bb cat /mnt/fio.out; bad "fio exit \$rc"
fi
}
run
echo "RC-RESULT: \$RESULT"
\$bb sync
\$bb poweroff -f
EOF2
chmod +x "$RC_TMP/init"

rc_bg daemon timeout -k 5 100 "$DAEMON" --socket "$RC_TMP/blk.sock" --no_packed \
  --device "blk,path=$DISK,serial=uml0"
DPID=$RC_LAST_PID
rc_wait_socket "$RC_TMP/blk.sock" || { cat "$RC_TMP/daemon.log"; fail "daemon did not listen"; }

log "booting UML $UML_VER"
# UML's stdin must not be a terminal it would put in raw mode; its console
# goes to stdout (captured). TMPDIR: where UML creates its guest memory file.
rc_bg uml env TMPDIR=/dev/shm "${UML_WRAP[@]}" "$UML" mem=256M \
  root=/dev/root rootfstype=hostfs rootflags=/ ro \
  init="$RC_TMP/init" con=null con0=null,fd:1 \
  virtio_uml.device="$RC_TMP/blk.sock:2" "${UML_EXTRA[@]}"
rc_watch "$RC_LAST_PID" 25 "$RC_FATAL_RE|Kernel panic|ptrace set fp regs failed" "$RC_TMP/uml.log" "$RC_TMP/daemon.log"
urc=$?
log "UML exited with $urc"
show() {
  echo "--- UML console"; tail -80 "$RC_TMP/uml.log"
  echo "--- daemon"; cat "$RC_TMP/daemon.log"
}
if [[ $urc == 124 ]]; then
  show
  if ! grep -q "as init process" "$RC_TMP/uml.log" &&
     grep -q "front-end connected" "$RC_TMP/daemon.log"; then
    echo "hint: UML stalled inside the vhost-user handshake at boot (it prints"
    echo "      nothing until its console is up). UML sets NEED_REPLY on"
    echo "      SET_PROTOCOL_FEATURES and waits for the REPLY_ACK; it also sends"
    echo "      SET_MEM_TABLE with its whole fixed 2-region array (72 bytes)."
  fi
  fail "UML did not power off within 25 s"
fi
[[ $urc == 125 ]] && { show; fail "stopped UML early: $RC_WATCH_HIT"; }
grep 'guest:' "$RC_TMP/uml.log"
[[ -n ${RC_VERBOSE:-} ]] && show
grep -q '^RC-RESULT: OK' "$RC_TMP/uml.log" ||
  { show; fail "guest: $(grep RC-RESULT "$RC_TMP/uml.log" || echo 'no result')"; }
rc_stop_daemon "$DPID" "$RC_TMP/daemon.log"
[[ -e $RC_TMP/blk.sock ]] && fail "daemon left its socket behind"
cmp -i 0:1048576 -n 1048576 "$RC_TMP/pattern" "$DISK" ||
  fail "backing file does not hold the guest's pattern at offset 1 MiB"
log "host: backing file holds the pattern"
echo "PASS: user-mode-linux virtio_blk over vhost-user (split, dd + fio verify)"
