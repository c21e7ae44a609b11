#!/usr/bin/env bash
# rc-timeout: 600
# Real client: live migration of a QEMU 7.2 guest (q35, TCG, shared memfd
# RAM) whose vhost-user-blk-pci disk is served by vhost-user-device, to a
# second QEMU (-incoming) whose disk is served by a second daemon on the
# same backing file (both read-only: a writable image is locked by its one
# daemon).
#
# The disk starts with an 8 MiB random pattern the guest also has; round
# after round, while the host migrates it, the guest drops its caches,
# reads the disk into the page cache, waits, and compares the cached copy. Every read lands in guest RAM
# by the source back-end's DMA, which QEMU sees only through the dirty log
# (SET_LOG_BASE / LOG_ALL / VHOST_VRING_F_LOG): a page it missed arrives
# stale on the destination and the comparison that straddles the switchover
# fails. Rounds must have run on both sides; the host then sets a flag
# sector in the backing file, the guest's next round sees it and powers off
# with its verdict. The source daemon must have logged "dirty logging on".
#
# The ring is split; qemu_migrate_packed.sh runs this with a packed ring
# (RC_MIGRATE_RING=packed), where the used elements the dirty log must
# cover are the descriptor ring's slots.
#
# usage: qemu_migrate.sh PATH/TO/vhost-user-device CACHE_DIR
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
rc_init "$@"
RING=${RC_MIGRATE_RING:-split}
case $RING in
  split) DAEMON_RING=packed=off, QEMU_RING= ;;
  packed) DAEMON_RING= QEMU_RING=,packed=on ;;
  *) fail "RC_MIGRATE_RING=$RING: split or packed" ;;
esac

rc_need_pkgs qemu-system-x86 busybox-static python3
rc_get_kernel
QEMU=$(command -v qemu-system-x86_64) || skip "qemu-system-x86_64 missing after install"

DISK=$RC_TMP/disk.img
truncate -s 32M "$DISK"
mkdir "$RC_TMP/extra"
head -c 8M /dev/urandom >"$RC_TMP/extra/pattern"
dd if="$RC_TMP/extra/pattern" of="$DISK" conv=notrunc 2>/dev/null
[[ $RING == packed ]] && echo 1 >"$RC_TMP/extra/packed" || echo 0 >"$RC_TMP/extra/packed"
# The stop flag lives in the last 4 KiB of the disk (sector 65528).
FLAG_SECTOR=65528

cat >"$RC_TMP/test.sh" <<'T'
RESULT=OK
bad() { echo "guest: FAIL: $*"; RESULT="FAIL ($*)"; }
i=0; while [ ! -b /dev/vda ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
if [ -b /dev/vda ]; then
  # Virtio feature bit 34: RING_PACKED.
  [ "$(cut -c35 /sys/block/vda/device/features)" = "$(cat /packed)" ] ||
    bad "ring layout: packed bit $(cut -c35 /sys/block/vda/device/features), expected $(cat /packed)"
  echo "guest: MIGRATE-NOW"
  round=0; failed=0
  while [ $round -lt 3000 ]; do
    round=$((round + 1))
    # Fill the page cache by DMA, keep it a while, then compare from it:
    # no CPU write touches those pages (init_on_alloc=0), so only the
    # dirty log tells QEMU to copy them again.
    echo 3 >/proc/sys/vm/drop_caches
    dd if=/dev/vda of=/dev/null bs=64k count=128 2>/dev/null
    sleep 0.5
    if ! dd if=/dev/vda bs=64k count=128 2>/dev/null | cmp -s /pattern -; then
      failed=$((failed + 1))
      echo "guest: round $round: readback differs"
    fi
    echo "guest: round $round"
    flag=$(dd if=/dev/vda bs=4096 skip=8191 count=1 iflag=direct 2>/dev/null |
           head -c 4)
    [ "$flag" = STOP ] && break
  done
  echo "guest: $round rounds, $failed failed"
  [ "$flag" = STOP ] || bad "never saw the stop flag"
  [ $failed = 0 ] || bad "$failed rounds read stale data"
else
  bad "/dev/vda never appeared"
fi
T
rc_write_init "$RC_TMP/init"
rc_initramfs "$RC_TMP/initrd" "$RC_TMP/init" "$RC_TMP/test.sh" \
  "virtio_pci virtio_blk"
log "kernel $KVER, initramfs $(du -k "$RC_TMP/initrd" | cut -f1) KiB"

rc_bg daemon_src timeout -k 5 300 "$DAEMON" --socket "$RC_TMP/src.sock" \
  --device "blk,path=$DISK,${DAEMON_RING}readonly=true"
PID_SRC=$RC_LAST_PID
rc_bg daemon_dst timeout -k 5 300 "$DAEMON" --socket "$RC_TMP/dst.sock" \
  --device "blk,path=$DISK,${DAEMON_RING}readonly=true"
PID_DST=$RC_LAST_PID
rc_wait_socket "$RC_TMP/src.sock" || { cat "$RC_TMP/daemon_src.log"; fail "source daemon did not listen"; }
rc_wait_socket "$RC_TMP/dst.sock" || { cat "$RC_TMP/daemon_dst.log"; fail "destination daemon did not listen"; }

qemu_args() {  # SOCK CONSOLE QMP: sets QARGS
  QARGS=(-machine q35,accel=tcg -cpu qemu64 -smp 1 -m 256M \
    -object memory-backend-memfd,id=mem,size=256M,share=on \
    -numa node,memdev=mem -nodefaults -no-user-config -display none \
    -no-reboot -serial "file:$2" -qmp "unix:$3,server=on,wait=off" \
    -kernel "$QEMU_KERNEL" -initrd "$RC_TMP/initrd" \
    -append "console=ttyS0 panic=-1 quiet loglevel=4 init_on_alloc=0" \
    -chardev socket,id=c0,path="$1" \
    -device "vhost-user-blk-pci,chardev=c0,num-queues=1$QEMU_RING")
}
qemu_args "$RC_TMP/dst.sock" "$RC_TMP/console_dst.log" "$RC_TMP/dst.qmp"
rc_bg qemu_dst "$QEMU" "${QARGS[@]}" -incoming "unix:$RC_TMP/mig.sock"
PID_QDST=$RC_LAST_PID
qemu_args "$RC_TMP/src.sock" "$RC_TMP/console_src.log" "$RC_TMP/src.qmp"
rc_bg qemu_src "$QEMU" "${QARGS[@]}"
PID_QSRC=$RC_LAST_PID

show() {
  echo "--- QEMU source"; cat "$RC_TMP/qemu_src.log"
  echo "--- QEMU destination"; cat "$RC_TMP/qemu_dst.log"
  echo "--- console source"; tail -20 "$RC_TMP/console_src.log"
  # A guest that oopsed: the whole report (the first lines say where).
  echo "--- console destination"; tail -120 "$RC_TMP/console_dst.log"
  echo "--- readback mismatches (both sides)"
  grep -h "readback differs" "$RC_TMP/console_src.log" "$RC_TMP/console_dst.log" || echo "(none)"
  echo "--- daemon source"; cat "$RC_TMP/daemon_src.log"
  echo "--- daemon destination"; cat "$RC_TMP/daemon_dst.log"
  [[ -f $RC_TMP/qmp.log ]] && { echo "--- QMP"; cat "$RC_TMP/qmp.log"; }
}

log "booting the source guest (TCG)"
for ((i = 0; i < 480; i++)); do
  grep -q "MIGRATE-NOW" "$RC_TMP/console_src.log" 2>/dev/null && break
  kill -0 "$PID_QSRC" 2>/dev/null || { show; fail "source QEMU exited before the guest was ready"; }
  sleep 0.25
done
grep -q "MIGRATE-NOW" "$RC_TMP/console_src.log" || { show; fail "source guest never got ready"; }
sleep 1  # a few rounds in

# QMP: migrate and wait for the result; then quit the source.
cat >"$RC_TMP/qmp.py" <<'PY'
import json, socket, sys, time
def connect(path):
    s = socket.socket(socket.AF_UNIX); s.connect(path)
    f = s.makefile("rw")
    json.loads(f.readline())
    return f
def cmd(f, name, args=None):
    f.write(json.dumps({"execute": name, "arguments": args or {}}) + "\n")
    f.flush()
    while True:
        r = json.loads(f.readline())
        if "return" in r or "error" in r:
            return r
src = connect(sys.argv[1])
print(cmd(src, "qmp_capabilities"))
# Slow for the first seconds, so that several readback rounds run while
# pages are copied, then fast so that it converges despite the page cache
# churn.
print(cmd(src, "migrate-set-parameters",
          {"max-bandwidth": 24 << 20, "downtime-limit": 2000}))
r = cmd(src, "migrate", {"uri": "unix:" + sys.argv[2]})
print(r)
if "error" in r:
    sys.exit(2)
t0 = time.time()
fast = False
while time.time() - t0 < 120:
    if not fast and time.time() - t0 > 4:
        print(cmd(src, "migrate-set-parameters", {"max-bandwidth": 1 << 30}))
        fast = True
    st = cmd(src, "query-migrate")["return"]
    if st.get("status") in ("completed", "failed", "cancelled"):
        break
    time.sleep(0.2)
print(json.dumps(st))
if st.get("status") != "completed":
    sys.exit(3)
print("migration completed in %.1f s, %s" % (time.time() - t0, st.get("ram")))
cmd(src, "quit")
PY
log "migrating"
timeout -k 5 150 python3 "$RC_TMP/qmp.py" "$RC_TMP/src.qmp" "$RC_TMP/mig.sock" \
  >"$RC_TMP/qmp.log" 2>&1 || { show; fail "migration failed (QMP exit $?)"; }
grep "migration completed" "$RC_TMP/qmp.log"
for ((i = 0; i < 40; i++)); do kill -0 "$PID_QSRC" 2>/dev/null || break; sleep 0.25; done
kill -0 "$PID_QSRC" 2>/dev/null && { show; fail "source QEMU did not quit after migrating"; }

# Let the destination run a few rounds, then raise the stop flag.
for ((i = 0; i < 240; i++)); do
  [[ $(grep -c "guest: round" "$RC_TMP/console_dst.log" 2>/dev/null) -ge 3 ]] && break
  sleep 0.25
done
printf 'STOP' | dd of="$DISK" bs=4096 seek=$((FLAG_SECTOR / 8)) conv=notrunc,fsync 2>/dev/null
rc_watch "$PID_QDST" 120 "$RC_FATAL_RE" "$RC_TMP/qemu_dst.log" "$RC_TMP/daemon_dst.log"
qrc=$?
log "destination QEMU exited with $qrc"
[[ $qrc == 124 ]] && { show; fail "destination guest did not power off within 120 s"; }
[[ $qrc == 125 ]] && { show; fail "stopped the guest early: $RC_WATCH_HIT"; }
[[ $qrc == 0 ]] || { show; fail "destination QEMU exited with $qrc"; }

src_rounds=$(grep -cE 'guest: round [0-9]+[[:space:]]*$' "$RC_TMP/console_src.log")
dst_rounds=$(grep -cE 'guest: round [0-9]+[[:space:]]*$' "$RC_TMP/console_dst.log")
log "rounds: $src_rounds on the source, $dst_rounds on the destination"
grep "guest:.*rounds" "$RC_TMP/console_dst.log"
[[ -n ${RC_VERBOSE:-} ]] && show
grep -q '^RC-RESULT: OK' "$RC_TMP/console_dst.log" ||
  { show; fail "guest: $(grep RC-RESULT "$RC_TMP/console_dst.log" || echo 'no result')"; }
[[ $src_rounds -ge 1 && $dst_rounds -ge 1 ]] ||
  { show; fail "the readback loop did not run on both sides of the migration"; }
grep -q "dirty logging on" "$RC_TMP/daemon_src.log" ||
  { show; fail "the source daemon never turned dirty logging on"; }
grep -q "dirty log of" "$RC_TMP/daemon_src.log" ||
  { show; fail "the source daemon never got a dirty log"; }

rc_stop_daemon "$PID_SRC" "$RC_TMP/daemon_src.log"
rc_stop_daemon "$PID_DST" "$RC_TMP/daemon_dst.log"
echo "PASS: qemu live migration with vhost-user-blk ($RING ring, dirty log), $src_rounds + $dst_rounds readback rounds"
