#!/bin/bash
# Runs in dom0 (chrooted into the host's root with a tmpfs overlay, see
# dom0-init.sh): brings the Xen toolstack up, then for each guest named in
# /xtout/config.sh creates an HVM guest paused, starts xen-virtio-backend
# on it (claiming its virtio-pci functions before the guest runs), unpauses
# it and checks what the guest and the backend report. Prints progress
# lines "XT-..." on the console (the host script reads them from Xen's
# serial log) and ends with "XT-RESULT: PASS" or "XT-RESULT: FAIL why".
set -u
. /xtout/config.sh
XL=/usr/lib/xen-4.17/bin/xl
BIN=/usr/lib/xen-4.17/bin
up() { cut -d' ' -f1 /proc/uptime; }
say() { echo "XT-$* (dom0 uptime $(up))"; }
FAILS=()
failed() { FAILS+=("$*"); say "FAIL-STEP $*"; }
finish() {
  if [[ ${#FAILS[@]} == 0 ]]; then
    echo "XT-RESULT: PASS"
  else
    echo "XT-RESULT: FAIL ${FAILS[*]}"
  fi
  sync
  exit 0
}

# --- toolstack ------------------------------------------------------------------
mkdir -p /dev/pts /dev/shm
mount -t devpts -o ptmxmode=666 devpts /dev/pts || failed "devpts"
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /var/log
mount -t tmpfs tmpfs /var/lib/xen 2>/dev/null || mkdir -p /var/lib/xen
mkdir -p /run/xen /run/xenstored /var/lib/xenstored /var/log/xen/console /run/lock
mount -t xenfs xenfs /proc/xen || { failed "mount xenfs"; finish; }
"$BIN/xenstored" --pid-file /run/xenstored.pid >/xtout/xenstored.log 2>&1
for ((i = 0; i < 100; i++)); do [[ -S /run/xenstored/socket ]] && break; sleep 0.1; done
[[ -S /run/xenstored/socket ]] || { failed "xenstored did not start"; finish; }
timeout 60 "$BIN/xen-init-dom0" >/xtout/xen-init-dom0.log 2>&1 ||
  { failed "xen-init-dom0"; finish; }
"$BIN/xenconsoled" --log=guest --log-dir=/xtout >/xtout/xenconsoled.log 2>&1
timeout 30 "$XL" info >/xtout/xl-info.log 2>&1 || { failed "xl info"; finish; }
say "TOOLSTACK-UP $(grep -E '^(xen_version|virt_caps)' /xtout/xl-info.log | tr -s ' ' | tr '\n' ' ')"

# --- one guest --------------------------------------------------------------------
# run_guest NAME "BACKEND ARGS" TESTS IRQS RINGS [EXTRA KERNEL ARGS]
# (IRQS: SLOT.FN:msix|intx,...; RINGS: SLOT.FN:split|packed,...)
# BACKEND ARGS: one xen-virtio-backend process per ";;"-separated part,
# all sharing one placement-claims directory. xt_disagg=SLOT.FN in the
# kernel args: the backend serving that function is killed (SIGKILL: no
# teardown of its own, its guardian process answers the guest's pending
# requests and destroys the ioreq server; xt_disagg_sig=TERM for the
# orderly stop) while the guest streams data through it (see
# guest-init.sh t_disagg).
run_guest() {
  local name=$1 bargs=$2 tests=$3 irq=$4 ring=$5 extra=${6:-}
  local dir=/xtout/$name img=/tmp/$name-disk.img t
  local victim_fn= victim_sig=KILL
  [[ " $extra " =~ \ xt_disagg=([0-9a-f]+\.[0-7])\  ]] && victim_fn=${BASH_REMATCH[1]}
  [[ " $extra " =~ \ xt_disagg_sig=(TERM|KILL)\  ]] && victim_sig=${BASH_REMATCH[1]}
  mkdir -p "$dir"
  say "GUEST-CREATE $name"
  cat >"$dir/guest.cfg" <<EOF
name = "xt-$name"
type = "hvm"
device_model_version = "qemu-xen"
memory = 256
vcpus = 1
# pCPU 1 for the guest alone (dom0 is pinned to pCPU 0).
cpus = "1"
kernel = "$GUEST_KERNEL"
ramdisk = "$GUEST_INITRD"
extra = "console=ttyS0 quiet loglevel=3 panic=-1 xt_tests=$tests xt_irq=$irq xt_ring=$ring $extra"
vga = "none"
vnc = 0
serial = "file:$dir/serial.log"
on_poweroff = "destroy"
on_crash = "destroy"
on_reboot = "destroy"
EOF
  if ! timeout 120 "$XL" -v create -p "$dir/guest.cfg" >"$dir/xl-create.log" 2>&1; then
    failed "$name: xl create"; tail -5 "$dir/xl-create.log"; return
  fi
  local domid
  domid=$(timeout 30 "$XL" domid "xt-$name")
  say "GUEST-CREATED $name domid $domid"
  # Blk: an ext4 image with a file from dom0 the guest must read.
  if [[ $bargs == *@IMG@* ]]; then
    # In dom0's tmpfs (not on the 9p share: the backend uses io_uring).
    truncate -s 64M "$img"
    mkfs.ext4 -q -F "$img" >/dev/null 2>&1 || { failed "$name: mkfs"; return; }
    echo "written by dom0" >/tmp/from-dom0
    debugfs -w -R "write /tmp/from-dom0 from-dom0" "$img" >/dev/null 2>&1
    bargs=${bargs//@IMG@/$img}
  fi
  # The backends claim their BDFs now, before hvmloader scans the bus.
  local claims=/run/xt-claims-$name parts=() bpids=() blogs=() k victim=
  mkdir -p "$claims"
  local rest=$bargs
  while [[ $rest == *";;"* ]]; do parts+=("${rest%%;;*}"); rest=${rest#*;;}; done
  parts+=("$rest")
  for k in "${!parts[@]}"; do
    blogs[k]=$dir/backend-$k.log
    # shellcheck disable=SC2086
    "$BACKEND" --domid "$domid" --claims-dir "$claims" ${parts[k]} >"${blogs[k]}" 2>&1 &
    bpids[k]=$!
    for ((i = 0; i < 150; i++)); do
      grep -q "serving domain" "${blogs[k]}" && break
      kill -0 "${bpids[k]}" 2>/dev/null || break
      sleep 0.1
    done
    if ! grep -q "serving domain" "${blogs[k]}"; then
      failed "$name: backend $k did not start"; cat "${blogs[k]}"
      kill -TERM "${bpids[@]}" 2>/dev/null
      timeout 60 "$XL" destroy "$domid"; return
    fi
    [[ -n $victim_fn && ${parts[k]} == *addr=00:$victim_fn* ]] && victim=$k
    say "BACKEND-UP $name #$k pid ${bpids[k]}: $(grep -o 'ioreq server [0-9]*' "${blogs[k]}" | head -1)"
  done
  if [[ -n $victim_fn ]]; then
    [[ -n $victim ]] || { failed "$name: no backend serves 00:$victim_fn"; timeout 60 "$XL" destroy "$domid"; return; }
    # The claims keep the processes apart: a third one asking for a
    # function another already serves must be refused before it touches Xen.
    local other=$(( victim == 0 ? 1 : 0 ))
    local taken
    taken=$(grep -o 'addr=00:[0-9a-f]*\.[0-7]' <<<"${parts[other]}" | head -1)
    if timeout 30 "$BACKEND" --domid "$domid" --claims-dir "$claims" \
        --device "rng,${taken}" >"$dir/backend-conflict.log" 2>&1; then
      failed "$name: a backend claiming ${taken#addr=} twice was not refused"
    elif grep -q "placement conflict" "$dir/backend-conflict.log"; then
      say "PLACEMENT-REFUSED $name: $(grep -m1 "placement conflict" "$dir/backend-conflict.log")"
    else
      failed "$name: conflicting backend failed for another reason: $(head -c 300 "$dir/backend-conflict.log")"
    fi
  fi
  local helpers=()
  # Console (backend=socket,path=/tmp/xt-con.sock): a client that keeps
  # what the guest writes and answers the guest's first line with one of
  # its own (sent earlier, before the guest opened its tty, Linux dropped
  # it: seen on the first run).
  if [[ $bargs == *xt-con.sock* ]]; then
    python3 -c '
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect("/tmp/xt-con.sock")
out = open(sys.argv[1], "ab", 0)
seen = b""
while True:
    d = s.recv(4096)
    if not d: break
    out.write(d)
    if seen is not None:
        seen += d
        if b"guest-line-on-" in seen:
            s.sendall(b"hello-from-dom0\n")
            seen = None
' "$dir/console.out" >"$dir/console-client.log" 2>&1 &
    helpers+=($!)
  fi
  # Net (backend=tap,ifname=xt0): dom0 end of the link and a receiver.
  if [[ $bargs == *ifname=xt0* ]]; then
    ip addr add 10.77.0.1/24 dev xt0 && ip link set xt0 up || failed "$name: xt0 setup"
    python3 -c '
import hashlib, socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("10.77.0.1", 5077)); s.listen(1)
c, _ = s.accept()
h = hashlib.md5(); n = 0
while True:
    d = c.recv(65536)
    if not d: break
    h.update(d); n += len(d)
open(sys.argv[1], "w").write("%s %d\n" % (h.hexdigest(), n))
' "$dir/net.md5" >"$dir/net-receiver.log" 2>&1 &
    helpers+=($!)
  fi
  # Disaggregation: the guest streams zeros to port 5078 through the
  # victim's device; once 256 KiB have arrived the receiver kills the
  # victim backend (see victim_sig) and notes how much had arrived and
  # what came after.
  if [[ -n $victim_fn ]]; then
    python3 -c '
import os, signal, socket, sys, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("10.77.0.1", 5078)); s.listen(1)
c, _ = s.accept()
n = 0; killed = None
while True:
    d = c.recv(65536)
    if not d: break
    n += len(d)
    if killed is None and n >= 262144:
        os.kill(int(sys.argv[1]), getattr(signal, "SIG" + sys.argv[4]))
        killed = n
        open(sys.argv[2], "w").write("%d %.1f\n" % (n, time.monotonic()))
    if killed is not None:
        open(sys.argv[3], "w").write("%d\n" % (n - killed))
' "${bpids[victim]}" "$dir/killed" "$dir/after-kill" "$victim_sig" >"$dir/stream-receiver.log" 2>&1 &
    helpers+=($!)
  fi
  timeout 60 "$XL" unpause "$domid" || failed "$name: xl unpause"
  say "GUEST-UNPAUSED $name"
  local t0=$SECONDS done=0 last=0 cpu='' prev_cpu='' flat=0
  # Cheap checks only: dom0 shares the (emulated) CPUs with the guest, and
  # every xl run costs seconds of them under TCG. GUEST_DEADLINE is a
  # generous cap (a busy host slows everything 2-4x); a guest whose CPU
  # time stops growing (blocked, e.g. on an ioreq nobody answers) is
  # given up on after STALL_SAMPLES flat samples, 60 s apart.
  while ((SECONDS - t0 < GUEST_DEADLINE)); do
    if grep -q "XG-DONE" "$dir/serial.log" 2>/dev/null; then done=1; break; fi
    # Every 60 s: the guest's state and CPU seconds (rising: running;
    # flat and blocked: waiting, e.g. for an ioreq answer), dom0's CPU
    # seconds, the backends' (utime+stime ticks), dom0's load and the
    # processes with the most CPU time. (Each look costs dom0 time under
    # TCG: `top -bn1` every 30 s reported itself at 10-40%.)
    if ((SECONDS - last >= 60)); then
      last=$SECONDS
      local st
      st=$(timeout 30 "$XL" list "xt-$name" 2>/dev/null | awk 'NR == 2 {print "state", $5, "cpu", $6}')
      [[ -n $st ]] || break
      cpu=${st##* }
      if [[ -n $prev_cpu ]] && awk -v a="$cpu" -v b="$prev_cpu" 'BEGIN {exit !(a - b < 0.5)}'; then
        flat=$((flat + 1))
      else
        flat=0
      fi
      prev_cpu=$cpu
      if ((flat >= ${STALL_SAMPLES:-3})); then
        failed "$name: guest stalled (CPU time flat at $cpu s for $flat samples)"
        break
      fi
      say "GUEST-PROGRESS $name $st; dom0 cpu $(timeout 30 "$XL" list 0 | awk 'NR == 2 {print $6}')" \
        "backend ticks $(for k in "${!bpids[@]}"; do awk '{printf "%d ", $14 + $15}' /proc/${bpids[k]}/stat 2>/dev/null; done)" \
        "load $(cut -d' ' -f1-3 /proc/loadavg);" \
        "most CPU time: $(ps -eo time=,comm= --sort=-time 2>/dev/null | head -3 | tr -s ' ' | tr '\n' ' ')"
    fi
    sleep 2
  done
  say "GUEST-END $name after $((SECONDS - t0)) s"
  grep -a '^XG-' "$dir/serial.log" 2>/dev/null | sed "s/^/XT-GUEST $name: /"
  # Let the guest power off by itself; then make sure it is gone.
  # Which backends were still serving when the guest finished.
  local alive=()
  for k in "${!bpids[@]}"; do
    kill -0 "${bpids[k]}" 2>/dev/null && alive[k]=1 || alive[k]=0
  done
  for ((i = 0; i < 10; i++)); do timeout 30 "$XL" domid "xt-$name" >/dev/null 2>&1 || break; sleep 2; done
  timeout 60 "$XL" destroy "xt-$name" >/dev/null 2>&1
  local brc
  for k in "${!bpids[@]}"; do
    if kill -0 "${bpids[k]}" 2>/dev/null; then
      kill -TERM "${bpids[k]}"
      for ((i = 0; i < 50; i++)); do kill -0 "${bpids[k]}" 2>/dev/null || break; sleep 0.1; done
    fi
    kill -KILL "${bpids[k]}" 2>/dev/null
    wait "${bpids[k]}"
    brc=$?
    say "BACKEND-EXIT $name #$k rc $brc (alive at guest end: ${alive[k]})"
    sed "s/^/XT-BACKEND $name #$k: /" "${blogs[k]}" | tail -30
    local want_rc=0
    [[ $k == "$victim" && $victim_sig == KILL ]] && want_rc=137
    [[ $brc == "$want_rc" ]] || failed "$name: backend $k exited with $brc, not $want_rc"
    if [[ $k != "$victim" && ${alive[k]} != 1 ]]; then
      failed "$name: backend $k was not serving when the guest finished"
    fi
  done
  [[ $done == 1 ]] || { failed "$name: guest did not finish (XG-DONE missing)"; tail -20 "$dir/serial.log"; }
  if [[ -n $victim_fn ]]; then
    # Stopped mid-stream (data was flowing when it went), gone before the
    # guest ended, and the guest's checks after the stop passed: those
    # ran on the other backend's devices.
    local kb
    kb=$(cut -d' ' -f1 "$dir/killed" 2>/dev/null)
    if [[ -z $kb ]]; then
      failed "$name: the victim backend was never stopped (stream receiver: $(head -c 300 "$dir/stream-receiver.log"))"
    else
      say "DISAGG $name: backend #$victim (00:$victim_fn) stopped after $kb bytes of the stream," \
        "$(cat "$dir/after-kill" 2>/dev/null || echo 0) bytes arrived after it"
      [[ ${alive[victim]} == 0 ]] || failed "$name: victim backend still running at the guest's end"
      if [[ $victim_sig == TERM ]]; then
        grep -q "stopping: tearing the ioreq server down" "${blogs[victim]}" ||
          failed "$name: victim backend did not tear its ioreq server down"
      elif grep -q "guardian: ioreq server [0-9]* destroyed" "${blogs[victim]}"; then
        say "GUARDIAN $name: $(grep -m1 "guardian: ioreq server" "${blogs[victim]}")"
      else
        failed "$name: the killed backend's guardian did not destroy its ioreq server"
      fi
    fi
    local lk lt
    lk=$(grep -an '^XG-PASS disagg' "$dir/serial.log" | head -1 | cut -d: -f1)
    if [[ -z $lk ]]; then
      failed "$name: no XG-PASS disagg"
    else
      # The checks listed after disagg run after the stop (their passes
      # are required below with the others).
      local after=${tests#*disagg}
      after=${after#,}
      for t in ${after//,/ }; do
        lt=$(grep -an "^XG-START $t " "$dir/serial.log" | head -1 | cut -d: -f1)
        if [[ -z $lt ]] || ((lt < lk)); then
          failed "$name: $t did not run after the stop"
        else
          say "DISAGG $name: $t ran after the stop (line $lt > $lk)"
        fi
      done
    fi
  fi
  # Every guardian is gone: the killed backend's after reaping, the
  # others with their backend's orderly stop.
  local left
  left=$(pgrep -x xvb-guardian | tr '\n' ' ')
  [[ -z $left ]] || failed "$name: guardian processes left running: $left"
  grep -a '^XG-FAIL' "$dir/serial.log" | while read -r l; do echo "$l"; done >"$dir/fails"
  [[ -s $dir/fails ]] && failed "$name: $(tr '\n' ';' <"$dir/fails")"
  local t
  kill "${helpers[@]}" 2>/dev/null
  if [[ $bargs == *xt-con.sock* ]]; then
    grep -aq "guest-line-on-" "$dir/console.out" 2>/dev/null ||
      failed "$name: no guest line reached the console socket"
    say "CONSOLE-FROM-GUEST $(tr -d '\r' <"$dir/console.out" 2>/dev/null | tr '\n' ' ')"
  fi
  if [[ $bargs == *ifname=xt0* ]]; then
    local sent
    sent=$(grep -a -m1 '^XG-NET-MD5' "$dir/serial.log" | awk '{print $2}' | tr -d '\r')
    [[ -n $sent && $(cat "$dir/net.md5" 2>/dev/null) == "$sent 1048576" ]] ||
      failed "$name: dom0 received '$(cat "$dir/net.md5" 2>/dev/null)', guest sent $sent"
  fi
  local t want=()
  for t in ${tests//,/ }; do want+=("$t"); done
  for t in ${irq//,/ }; do want+=("irq-${t#*:} 0000:00:${t%%:*}"); done
  for t in ${ring//,/ }; do want+=("ring-${t#*:} 0000:00:${t%%:*}"); done
  for t in "${want[@]}"; do
    grep -aq "^XG-PASS $t" "$dir/serial.log" || failed "$name: no XG-PASS $t"
  done

  if [[ -f $img ]]; then
    if ! timeout 120 e2fsck -fn "$img" >"$dir/e2fsck.log" 2>&1; then
      failed "$name: e2fsck reports errors"; tail -5 "$dir/e2fsck.log"
    fi
    local got sum
    got=$(debugfs -R "cat from-guest" "$img" 2>/dev/null)
    [[ $got == "written by the guest" ]] || failed "$name: from-guest is '$got'"
    debugfs -R "dump bulk /tmp/bulk" "$img" >/dev/null 2>&1
    sum=$(md5sum 2>/dev/null </tmp/bulk | cut -d' ' -f1)
    [[ $sum == "$(debugfs -R 'cat bulk.md5' "$img" 2>/dev/null)" ]] ||
      failed "$name: bulk file differs from the guest's md5"
    say "DISK-CHECKED $name md5 $sum"
    rm -f "$img" /tmp/bulk
  fi
}

for g in "${GUESTS[@]}"; do
  eval "run_guest $g"
done
finish
