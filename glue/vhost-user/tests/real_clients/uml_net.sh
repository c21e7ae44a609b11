#!/usr/bin/env bash
# rc-timeout: 300
# Real client: User-mode Linux 6.1 (Debian's user-mode-linux) attaches
# vhost-user-device as a virtio-net device (virtio_uml.device=SOCKET:1) and
# runs Linux's real virtio_net driver at native speed, host / as a read-only
# hostfs root. The daemon serves the TAP backend on a TAP it creates inside
# a network namespace made for this test (host side 10.78.0.1, guest
# 10.78.0.2); it runs with --no_packed (UML 6.1 cannot drive packed rings).
# UML hands the control queue to the back-end (QEMU keeps it): the daemon
# must answer it or UML hangs in probe / at `ip link set up`. Checked:
#   - eth0 is virtio_net on a split ring, with the control queue negotiated;
#   - guest -> host ping and host -> guest ping;
#   - bulk transfer both ways with busybox nc (16 MiB each), sha256 of what
#     arrived compared with what was sent, on both ends.
# On an AMX host UML runs under uml_xstate_seccomp (see uml_blk.sh).
#
# usage: uml_net.sh PATH/TO/vhost-user-device CACHE_DIR
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
rc_init "$@"

[[ $(id -u) == 0 ]] || skip "needs root for a network namespace and a TAP device"
rc_need_pkgs user-mode-linux busybox-static iproute2
rc_uml_prepare
MODS=$(rc_mod_closure "$UML_KMODS" virtio_net | sed "s|^|$UML_KMODS/|" | tr '\n' ' ')
[[ -n $MODS ]] || skip "UML $UML_VER has no virtio_net module"

NS=vurc-unet-$$
ip netns add "$NS" 2>"$RC_TMP/netns.err" ||
  skip "cannot create a network namespace: $(cat "$RC_TMP/netns.err")"
trap 'rc_ns=$?; ip netns del "$NS" 2>/dev/null; (exit $rc_ns); rc_cleanup' EXIT
ip -n "$NS" link set lo up
NSX=(ip netns exec "$NS")
HOST_IP=10.78.0.1 GUEST_IP=10.78.0.2
BLOB=$((16 * 1024 * 1024))
head -c "$BLOB" /dev/urandom >"$RC_TMP/blob_g"   # guest -> host (read over hostfs)
head -c "$BLOB" /dev/urandom >"$RC_TMP/blob_h"   # host -> guest
SHA_G=$(sha256sum <"$RC_TMP/blob_g" | cut -d' ' -f1)
SHA_H=$(sha256sum <"$RC_TMP/blob_h" | cut -d' ' -f1)

cat >"$RC_TMP/init" <<EOF2
#!/bin/busybox sh
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
bb=/bin/busybox
\$bb mount -t proc proc /proc
\$bb mount -t sysfs sys /sys
\$bb mount -t devtmpfs dev /dev 2>/dev/null
\$bb mount -t tmpfs tmp /mnt
RESULT=OK
bad() { echo "guest: FAIL: \$*"; RESULT="FAIL (\$*)"; }
run() {
for m in $MODS; do \$bb insmod \$m || bad "insmod \$m"; done
i=0; while [ ! -e /sys/class/net/eth0 ] && [ \$i -lt 100 ]; do \$bb sleep 0.1; i=\$((i+1)); done
[ -e /sys/class/net/eth0 ] || { bad "eth0 never appeared"; return; }
drv=\$(\$bb basename \$(\$bb readlink /sys/class/net/eth0/device/driver))
f=/sys/class/net/eth0/device/features
echo "guest: eth0 driver=\$drv packed=\$(\$bb cut -c35 \$f) ctrl_vq=\$(\$bb cut -c18 \$f)"
[ "\$drv" = virtio_net ] || { bad "eth0 is not virtio_net (\$drv)"; return; }
[ "\$(\$bb cut -c35 \$f)" = 0 ] || bad "packed ring negotiated (UML 6.1 cannot drive it)"
[ "\$(\$bb cut -c18 \$f)" = 1 ] || bad "control queue not negotiated"
\$bb ip link set lo up
\$bb ip addr add $GUEST_IP/24 dev eth0 && \$bb ip link set eth0 up || { bad "ip setup"; return; }
i=0; until \$bb ping -c 1 -W 1 $HOST_IP >/dev/null 2>&1; do
  i=\$((i+1)); [ \$i -lt 20 ] || { bad "no ping reply from the host"; return; }
done
if \$bb ping -c 3 -W 2 $HOST_IP; then echo "guest: ping host ok"; else bad "ping host"; return; fi
\$bb sleep 3600 | \$bb nc -l -p 5001 >/mnt/blob_h &
echo "guest: READY"
if \$bb nc $HOST_IP 5000 <$RC_TMP/blob_g; then echo "guest: sent blob_g"; else bad "nc send to host"; fi
i=0; while [ "\$(\$bb stat -c %s /mnt/blob_h 2>/dev/null)" != $BLOB ] && [ \$i -lt 600 ]; do
  \$bb sleep 0.1; i=\$((i+1))
done
\$bb sleep 0.2
got=\$(\$bb sha256sum </mnt/blob_h | \$bb cut -d' ' -f1)
echo "guest: received blob_h \$(\$bb stat -c %s /mnt/blob_h) bytes sha256 \$got"
[ "\$got" = "$SHA_H" ] || bad "blob from the host differs (sha256)"
echo "guest: rx_packets=\$(\$bb cat /sys/class/net/eth0/statistics/rx_packets) tx_packets=\$(\$bb cat /sys/class/net/eth0/statistics/tx_packets)"
}
run
echo "RC-RESULT: \$RESULT"
\$bb sync
\$bb poweroff -f
EOF2
chmod +x "$RC_TMP/init"

SOCK=$RC_TMP/net.sock
rc_bg daemon "${NSX[@]}" timeout -k 5 120 "$DAEMON" --socket "$SOCK" --no_packed \
  --device "net,backend=tap,ifname=vutap0"
DPID=$RC_LAST_PID
rc_wait_socket "$SOCK" || { cat "$RC_TMP/daemon.log"; fail "daemon did not listen"; }
for ((i = 0; i < 50; i++)); do
  ip -n "$NS" link show vutap0 >/dev/null 2>&1 && break
  sleep 0.1
done
ip -n "$NS" addr add "$HOST_IP/24" dev vutap0 && ip -n "$NS" link set vutap0 up ||
  { cat "$RC_TMP/daemon.log"; fail "cannot configure the daemon's TAP vutap0 in $NS"; }
rc_bg listen "${NSX[@]}" timeout 100 sh -c \
  "sleep 3600 | busybox nc -l -p 5000 >'$RC_TMP/recv_g'"

log "booting UML $UML_VER"
rc_bg uml env TMPDIR=/dev/shm "${UML_WRAP[@]}" "$UML" mem=256M \
  root=/dev/root rootfstype=hostfs rootflags=/ ro \
  init="$RC_TMP/init" con=null con0=null,fd:1 \
  virtio_uml.device="$SOCK:1" "${UML_EXTRA[@]}"
UPID=$RC_LAST_PID
show() {
  echo "--- UML console"; tail -80 "$RC_TMP/uml.log"
  echo "--- daemon"; cat "$RC_TMP/daemon.log"
}
ready=0
for ((i = 0; i < 160; i++)); do
  grep -q "guest: READY" "$RC_TMP/uml.log" 2>/dev/null && { ready=1; break; }
  kill -0 "$UPID" 2>/dev/null || break
  grep -qE "$RC_FATAL_RE|Kernel panic" "$RC_TMP/uml.log" "$RC_TMP/daemon.log" && break
  sleep 0.25
done
if [[ $ready == 1 ]]; then
  "${NSX[@]}" busybox ping -c 3 -W 2 "$GUEST_IP" >"$RC_TMP/ping.log" 2>&1 ||
    { cat "$RC_TMP/ping.log"; show; fail "host -> guest ping failed"; }
  log "host -> guest ping ok ($(grep -o '[0-9]* packets received' "$RC_TMP/ping.log"))"
  "${NSX[@]}" timeout 60 busybox nc "$GUEST_IP" 5001 <"$RC_TMP/blob_h" ||
    { show; fail "host -> guest nc failed"; }
  log "host sent blob_h ($BLOB bytes)"
fi
rc_watch "$UPID" 60 "$RC_FATAL_RE|Kernel panic|ptrace set fp regs failed" "$RC_TMP/uml.log" "$RC_TMP/daemon.log"
urc=$?
log "UML exited with $urc"
[[ $urc == 124 ]] && { show; fail "UML did not power off within 60 s"; }
[[ $urc == 125 ]] && { show; fail "stopped UML early: $RC_WATCH_HIT"; }
grep 'guest:' "$RC_TMP/uml.log"
[[ -n ${RC_VERBOSE:-} ]] && show
grep -q '^RC-RESULT: OK' "$RC_TMP/uml.log" ||
  { show; fail "guest: $(grep RC-RESULT "$RC_TMP/uml.log" || echo 'no result')"; }
got=$(sha256sum <"$RC_TMP/recv_g" | cut -d' ' -f1)
[[ $got == "$SHA_G" ]] ||
  { show; fail "host received $(stat -c %s "$RC_TMP/recv_g") bytes, sha256 $got != $SHA_G"; }
log "host received blob_g whole (sha256 matches)"
rc_stop_daemon "$DPID" "$RC_TMP/daemon.log"
[[ -e $SOCK ]] && fail "daemon left its socket behind"
echo "PASS: user-mode-linux virtio_net over vhost-user on a TAP (split, control queue): ping both ways, 16 MiB each way verified"
