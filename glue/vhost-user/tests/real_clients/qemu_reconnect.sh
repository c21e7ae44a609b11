#!/usr/bin/env bash
# rc-timeout: 900
# Real client, reconnect: QEMU 7.2 (q35, TCG) with two vhost-user-blk-pci
# disks on chardevs with reconnect=1, each served by a vhost-user-device
# daemon over a backing file:
#   vda: daemon packed=off -> split ring
#   vdb: QEMU packed=on    -> packed ring
# The guest runs one fio job per disk (random 4k writes at queue depth 16,
# libaio, direct, crc32c verify headers). While they run, the host SIGKILLs
# both daemons and restarts them on the same sockets and files, RC_KILLS
# times (default 2), each at a moment its inflight region shows requests
# in flight (kill_when_busy.py reads the daemon's region). QEMU reconnects, hands the inflight region back, and
# the new daemon resubmits what the dead one had in flight (packed: resuming
# from the ring position recorded in the region, since QEMU's is stale).
# Then the guest verifies everything fio wrote (a separate verify-only
# pass), and the test checks: fio succeeded in both phases, the kills
# happened while the write phase was running, every restarted daemon
# reports a recovery, and the guest kernel logged no I/O error.
#
# usage: qemu_reconnect.sh PATH/TO/vhost-user-device CACHE_DIR
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
rc_init "$@"

rc_need_pkgs qemu-system-x86 busybox-static fio
command -v python3 >/dev/null || rc_need_pkgs python3
rc_get_kernel
QEMU=$(command -v qemu-system-x86_64) || skip "qemu-system-x86_64 missing after install"

KILLS=${RC_KILLS:-2}
# Per disk: the write phase must outlast the kills (checked below).
FIO_SIZE=${RC_RECONNECT_SIZE:-160M}

DISK_A=$RC_TMP/a.img
DISK_B=$RC_TMP/b.img
truncate -s 192M "$DISK_A" "$DISK_B"

cat >"$RC_TMP/test.sh" <<T
RESULT=OK
bad() { echo "guest: FAIL: \$*"; RESULT="FAIL (\$*)"; }
for d in vda vdb; do
  i=0; while [ ! -b /dev/\$d ] && [ \$i -lt 100 ]; do sleep 0.1; i=\$((i+1)); done
  [ -b /dev/\$d ] || { bad "/dev/\$d never appeared"; return; }
done
pa=\$(cut -c35 /sys/block/vda/device/features)
pb=\$(cut -c35 /sys/block/vdb/device/features)
echo "guest: vda packed=\$pa vdb packed=\$pb"
[ "\$pa" = 0 ] || bad "vda negotiated a packed ring, expected split"
[ "\$pb" = 1 ] || bad "vdb did not negotiate a packed ring"
JOB="--direct=1 --ioengine=libaio --iodepth=16 --rw=randwrite --bs=4k \
  --fsync=8 --size=$FIO_SIZE --offset=16M --verify=crc32c --verify_fatal=1 \
  --randseed=4242 --output-format=terse"
echo "guest: write phase starts"
fio --name=a --filename=/dev/vda \$JOB --do_verify=0 >/tmp/wa.out 2>&1 &
A=\$!
fio --name=b --filename=/dev/vdb \$JOB --do_verify=0 >/tmp/wb.out 2>&1 &
B=\$!
wait \$A; ra=\$?
wait \$B; rb=\$?
echo "guest: write phase done (vda rc=\$ra, vdb rc=\$rb)"
[ \$ra = 0 ] || { cat /tmp/wa.out; bad "fio write vda exit \$ra"; }
[ \$rb = 0 ] || { cat /tmp/wb.out; bad "fio write vdb exit \$rb"; }
echo 3 >/proc/sys/vm/drop_caches
for d in a b; do
  fio --name=\$d --filename=/dev/vd\$d \$JOB --verify_only >/tmp/v\$d.out 2>&1
  rc=\$?
  if [ \$rc = 0 ]; then echo "guest: vd\$d verify ok"; else cat /tmp/v\$d.out; bad "fio verify vd\$d exit \$rc"; fi
done
T
rc_write_init "$RC_TMP/init"
rc_initramfs "$RC_TMP/initrd" "$RC_TMP/init" "$RC_TMP/test.sh" \
  "virtio_pci virtio_blk" fio
log "kernel $KVER, initramfs $(du -k "$RC_TMP/initrd" | cut -f1) KiB, fio size $FIO_SIZE per disk, $KILLS kills"

# --- daemons (no wrapper: the pid is the daemon's, for SIGKILL)
GEN=0
# start_daemon NAME SOCK SPEC: starts it, waits until it listens (sets
# RC_LAST_PID). A SIGKILLed daemon's io_uring may hold the backing file (and
# its lock) a moment longer while the kernel tears the ring down: retry.
start_daemon() {
  local name=$1 sock=$2 spec=$3 try i
  for ((try = 0; try < 50; try++)); do
    rc_bg "$name" "$DAEMON" --socket "$sock" --device "$spec"
    for ((i = 0; i < 100; i++)); do
      grep -q "listening on" "$RC_TMP/$name.log" 2>/dev/null && return 0
      kill -0 "$RC_LAST_PID" 2>/dev/null || break
      sleep 0.05
    done
    grep -q "locked by another process" "$RC_TMP/$name.log" 2>/dev/null || break
    cp "$RC_TMP/$name.log" "$RC_TMP/$name.retry$try"
    sleep 0.1
  done
  cat "$RC_TMP/$name.log"
  fail "daemon $name did not listen"
}
start_daemons() {
  start_daemon "daemon_a$GEN" "$RC_TMP/a.sock" "blk,path=$DISK_A,direct=on,packed=off,serial=rc-a"
  PID_A=$RC_LAST_PID
  start_daemon "daemon_b$GEN" "$RC_TMP/b.sock" "blk,path=$DISK_B,direct=on,serial=rc-b"
  PID_B=$RC_LAST_PID
}
start_daemons

show() {
  echo "--- QEMU"; cat "$RC_TMP/qemu.log"
  echo "--- guest console"; tail -80 "$RC_TMP/console.log"
  local f
  for f in "$RC_TMP"/daemon_*.log; do echo "--- ${f##*/}"; cat "$f"; done
}

# --- guest
log "booting QEMU (TCG)"
rc_bg qemu "$QEMU" -machine q35,accel=tcg -cpu qemu64 -smp 1 -m 512M \
  -object memory-backend-memfd,id=mem,size=512M,share=on -numa node,memdev=mem \
  -nodefaults -no-user-config -display none -no-reboot \
  -serial "file:$RC_TMP/console.log" \
  -kernel "$QEMU_KERNEL" -initrd "$RC_TMP/initrd" \
  -append "console=ttyS0 panic=-1 quiet loglevel=4" \
  -chardev socket,id=ca,path="$RC_TMP/a.sock",reconnect=1 \
  -device vhost-user-blk-pci,chardev=ca,num-queues=1 \
  -chardev socket,id=cb,path="$RC_TMP/b.sock",reconnect=1 \
  -device vhost-user-blk-pci,chardev=cb,num-queues=1,packed=on
QPID=$RC_LAST_PID

# Wait for the write phase, then kill and restart the daemons mid-run.
for ((i = 0; i < 240; i++)); do
  grep -q "guest: write phase starts" "$RC_TMP/console.log" 2>/dev/null && break
  kill -0 "$QPID" 2>/dev/null || { show; fail "QEMU exited before the write phase"; }
  sleep 0.5
done
grep -q "guest: write phase starts" "$RC_TMP/console.log" ||
  { show; fail "the guest never started its write phase"; }
log "guest write phase started"
# Kill until each ring has been killed with requests in flight at least
# once (the new daemon logs how many it resubmits) and at least KILLS
# times; give up after MAX_KILLS.
MAX_KILLS=${RC_MAX_KILLS:-10}
HIT_A=0 HIT_B=0 RESUB_A=0 RESUB_B=0
for ((k = 1; k <= MAX_KILLS; k++)); do
  sleep "${RC_KILL_INTERVAL:-2}"
  grep -q "guest: write phase done" "$RC_TMP/console.log" && break
  # Only kill daemons that are serving QEMU right now.
  for l in "daemon_a$GEN" "daemon_b$GEN"; do
    grep -q "front-end connected" "$RC_TMP/$l.log" ||
      { show; fail "$l has no front-end before kill $k"; }
  done
  # Each daemon dies at a moment its region shows requests in flight
  # (within 3 s; then regardless).
  python3 "$RC_DIR/kill_when_busy.py" "$PID_A" split 3 >"$RC_TMP/kill_a$k" 2>&1 &
  KA=$!
  python3 "$RC_DIR/kill_when_busy.py" "$PID_B" packed 3 >"$RC_TMP/kill_b$k" 2>&1 &
  KB=$!
  wait "$KA" "$KB"
  kill -KILL "$PID_A" "$PID_B" 2>/dev/null
  wait "$PID_A" "$PID_B" 2>/dev/null
  GEN=$k
  start_daemons
  # Until QEMU is back on both and their queues were recovered.
  for ((i = 0; i < 100; i++)); do
    [[ $(grep -l "resumes from the inflight region" "$RC_TMP/daemon_a$GEN.log" "$RC_TMP/daemon_b$GEN.log" 2>/dev/null | wc -l) == 2 ]] && break
    sleep 0.2
  done
  for d in a b; do
    line=$(grep -h "resumes from the inflight region" "$RC_TMP/daemon_$d$GEN.log" | head -1)
    [[ -n $line ]] || { show; fail "daemon $d did not recover its queue within 20 s of kill $k"; }
    n=$(sed -n 's/.*resubmitting \([0-9]*\) requests.*/\1/p' <<<"$line")
    if [[ $d == a ]]; then
      RESUB_A=$((RESUB_A + n)); [[ $n -gt 0 ]] && HIT_A=$((HIT_A + 1))
    else
      RESUB_B=$((RESUB_B + n)); [[ $n -gt 0 ]] && HIT_B=$((HIT_B + 1))
    fi
    log "kill $k, daemon $d (killed $(head -c 40 "$RC_TMP/kill_$d$k")): queue ${line#*: queue }"
  done
  KILLED=$k
  [[ $k -ge $KILLS && $HIT_A -gt 0 && $HIT_B -gt 0 ]] && break
done
[[ ${KILLED:-0} -ge $KILLS ]] ||
  { show; fail "the write phase ended after ${KILLED:-0} kills (want $KILLS): raise RC_RECONNECT_SIZE"; }
[[ $HIT_A -gt 0 && $HIT_B -gt 0 ]] ||
  { show; fail "after $KILLED kills, split ring hit $HIT_A times, packed $HIT_B: some ring was never killed with requests in flight"; }
log "$KILLED kills; resubmitted after restarts: split $RESUB_A (in $HIT_A kills), packed $RESUB_B (in $HIT_B kills)"

rc_watch "$QPID" 600 'ssertion|device needs reset' "$RC_TMP/qemu.log" "$RC_TMP"/daemon_*.log
qrc=$?
rc_guest_result "$qrc" 600
if grep -Ei 'I/O error|blk_update_request|critical|virtio_blk.*(error|fail)' "$RC_TMP/console.log"; then
  show; fail "the guest kernel logged an I/O error"
fi
grep -hi "protocol error" "$RC_TMP"/daemon_*.log && { show; fail "a daemon logged a protocol error"; }
rc_stop_daemon "$PID_A" "$RC_TMP/daemon_a$GEN.log"
rc_stop_daemon "$PID_B" "$RC_TMP/daemon_b$GEN.log"
echo "PASS: qemu vhost-user-blk reconnect (split + packed, $KILLED SIGKILLs during fio, resubmitted split $RESUB_A / packed $RESUB_B, data verified)"
