#!/usr/bin/env bash
# Soak test (not in ctest: it runs for minutes): a QEMU 7.2 guest (TCG)
# drives two vhost-user-blk disks served by vhost-user-device daemons with
# default options, over file disks (io_uring):
#   vda: split ring (daemon packed=off)     vdb: packed ring (QEMU packed=on)
# On each disk at once, for SECONDS: fio random writes with crc32c verify
# (verify_backlog, fsync every 16 writes: flushes), random reads at queue
# depth 32, and random discards, as the stall of issue 18 was seen (reads
# at QD32 right after a discard and a flush). Then a full verify pass.
#
# A stall shows up as: a daemon logging "no completion for 5 s" (it dumps
# its queues), the guest's own timeout (fio not done SECONDS + 120 s after
# it started; the guest prints its blk-mq state), or QEMU never powering
# off. The host then asks each daemon for a queue dump (SIGUSR1) and
# prints everything.
#
# usage: qemu_blk_soak.sh PATH/TO/vhost-user-device CACHE_DIR [SECONDS] [ROUNDS]
#   SECONDS per round (default 300); ROUNDS guests booted one after the
#   other (default 1). MACHINE=microvm uses QEMU's microvm (1024-entry
#   rings) instead of q35 (128).
source "$(dirname "${BASH_SOURCE[0]}")/../real_clients/common.sh"
rc_init "$1" "$2"
SECS=${3:-300}
ROUNDS=${4:-1}
MACHINE=${MACHINE:-q35}

rc_need_pkgs qemu-system-x86 busybox-static fio
rc_get_kernel
QEMU=$(command -v qemu-system-x86_64) || skip "qemu-system-x86_64 missing after install"

cat >"$RC_TMP/test.sh" <<T
SECS=$SECS
T
cat >>"$RC_TMP/test.sh" <<'T'
RESULT=OK
bad() { echo "guest: FAIL: $*"; RESULT="FAIL ($*)"; }
for d in vda vdb; do
  i=0; while [ ! -b /dev/$d ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
  [ -b /dev/$d ] || { bad "/dev/$d never appeared"; return; }
done
echo "guest: vda packed=$(cut -c35 /sys/block/vda/device/features) vdb packed=$(cut -c35 /sys/block/vdb/device/features), discard max $(cat /sys/block/vda/queue/discard_max_bytes)"
job() {  # DISK: the mixed workload, then a verify-only pass
  cat >/tmp/$1.fio <<EOF
[global]
filename=/dev/$1
direct=1
time_based
runtime=$SECS
[verify]
ioengine=libaio
offset=0
size=16M
rw=randwrite
bs=4k
iodepth=16
verify=crc32c
verify_backlog=128
verify_fatal=1
fsync=16
[reads]
ioengine=libaio
offset=16M
size=16M
rw=randread
bs=4k
iodepth=32
[trim]
ioengine=psync
offset=32M
size=16M
rw=randtrim
bs=64k
thinktime=20000
EOF
  timeout $((SECS + 120)) fio --output-format=terse /tmp/$1.fio >/tmp/$1.out 2>&1
  echo $? >/tmp/$1.rc
}
job vda & A=$!
job vdb & B=$!
wait $A; wait $B
for d in vda vdb; do
  rc=$(cat /tmp/$d.rc)
  if [ "$rc" = 124 ]; then
    bad "$d: fio still running $((SECS + 120)) s after it started: STALL"
    for f in /sys/block/$d/inflight /sys/block/$d/mq/*/tags; do echo "guest: $f: $(cat $f 2>/dev/null | tr '\n' ' ')"; done
  elif [ "$rc" != 0 ]; then
    tail -20 /tmp/$d.out; bad "$d: fio exit $rc"
  else
    echo "guest: $d: $(grep -c . /tmp/$d.out) fio jobs done, verify ok"
  fi
done
T
rc_write_init "$RC_TMP/init"
rc_initramfs "$RC_TMP/initrd" "$RC_TMP/init" "$RC_TMP/test.sh" \
  "virtio_pci virtio_mmio virtio_blk" fio

if [[ $MACHINE == microvm ]]; then
  TSC_KHZ=$(awk -F: '/^cpu MHz/ {printf "%d", $2 * 1000; exit}' /proc/cpuinfo)
  MACH=(-machine microvm,acpi=on,memory-backend=mem0,accel=tcg
        -global virtio-mmio.force-legacy=false)
  DEVA=(-device vhost-user-blk,chardev=ca)
  DEVB=(-device vhost-user-blk,chardev=cb,packed=on)
  EXTRA="tsc_early_khz=${TSC_KHZ:-2000000}"
else
  MACH=(-machine q35,accel=tcg -numa node,memdev=mem0)
  DEVA=(-device vhost-user-blk-pci,chardev=ca,num-queues=1)
  DEVB=(-device vhost-user-blk-pci,chardev=cb,num-queues=1,packed=on)
  EXTRA=
fi

for ((round = 1; round <= ROUNDS; round++)); do
  truncate -s 0 "$RC_TMP/a.img" "$RC_TMP/b.img"
  truncate -s 64M "$RC_TMP/a.img" "$RC_TMP/b.img"
  rc_bg daemon_a "$DAEMON" --socket "$RC_TMP/a.sock" \
    --device "blk,path=$RC_TMP/a.img,packed=off"
  PID_A=$RC_LAST_PID
  rc_bg daemon_b "$DAEMON" --socket "$RC_TMP/b.sock" \
    --device "blk,path=$RC_TMP/b.img"
  PID_B=$RC_LAST_PID
  rc_wait_socket "$RC_TMP/a.sock" || fail "daemon a did not listen"
  rc_wait_socket "$RC_TMP/b.sock" || fail "daemon b did not listen"
  log "round $round/$ROUNDS: $MACHINE guest, ${SECS}s of fio on vda (split) and vdb (packed)"
  rc_bg qemu "$QEMU" "${MACH[@]}" -cpu qemu64 -smp 2 -m 512M \
    -object memory-backend-memfd,id=mem0,size=512M,share=on \
    -nodefaults -no-user-config -display none -no-reboot \
    -serial "file:$RC_TMP/console.log" \
    -kernel "$QEMU_KERNEL" -initrd "$RC_TMP/initrd" \
    -append "console=ttyS0 panic=-1 quiet loglevel=4 $EXTRA" \
    -chardev socket,id=ca,path="$RC_TMP/a.sock" "${DEVA[@]}" \
    -chardev socket,id=cb,path="$RC_TMP/b.sock" "${DEVB[@]}"
  QPID=$RC_LAST_PID
  rc_watch "$QPID" $((SECS + 300)) "$RC_FATAL_RE|no completion for|STALL" \
    "$RC_TMP/qemu.log" "$RC_TMP/console.log" "$RC_TMP/daemon_a.log" "$RC_TMP/daemon_b.log"
  qrc=$?
  show() {
    # Each daemon's own view of its queues, whatever went wrong.
    kill -USR1 "$PID_A" "$PID_B" 2>/dev/null; sleep 1
    echo "--- QEMU"; cat "$RC_TMP/qemu.log"
    echo "--- guest console"; tail -40 "$RC_TMP/console.log"
    echo "--- daemon a"; tail -40 "$RC_TMP/daemon_a.log"
    echo "--- daemon b"; tail -40 "$RC_TMP/daemon_b.log"
  }
  [[ $qrc == 124 ]] && { show; fail "round $round: guest did not power off within $((SECS + 300)) s"; }
  [[ $qrc == 125 ]] && { show; fail "round $round: $RC_WATCH_HIT"; }
  [[ $qrc == 0 ]] || { show; fail "round $round: QEMU exited with $qrc"; }
  grep "guest:" "$RC_TMP/console.log"
  grep -q '^RC-RESULT: OK' "$RC_TMP/console.log" ||
    { show; fail "round $round: $(grep RC-RESULT "$RC_TMP/console.log" || echo 'no result')"; }
  rc_stop_daemon "$PID_A" "$RC_TMP/daemon_a.log"
  rc_stop_daemon "$PID_B" "$RC_TMP/daemon_b.log"
  mv "$RC_TMP/console.log" "$RC_TMP/console.$round.log"
done
echo "PASS: $ROUNDS round(s) of ${SECS}s fio verify + reads + discards + flushes, split and packed, no stall"
