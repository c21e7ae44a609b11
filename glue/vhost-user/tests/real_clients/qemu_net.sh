#!/usr/bin/env bash
# rc-timeout: 600
# Real client: QEMU 7.2 (q35, TCG, shared memfd RAM) with -netdev vhost-user
# + virtio-net-pci (vectors=0: QEMU 7.2 under TCG segfaults in
# vhost_net_start with MSI-X vectors on a vhost-user NIC) boots Debian's
# kernel with a busybox initramfs. vhost-user-device serves the NIC with
# its TAP backend on a TAP it creates inside a network namespace made for
# this test (host side 10.77.0.1, guest 10.77.0.2). Checked:
#   - the guest's eth0 is driven by virtio_net;
#   - guest -> host ping and host -> guest ping;
#   - bulk transfer both ways with busybox nc (4 MiB each), sha256 of what
#     arrived compared with what was sent, on both ends.
# Run twice against fresh daemons: split ring, then QEMU packed=on (the
# guest checks which one it negotiated).
#
# usage: qemu_net.sh PATH/TO/vhost-user-device CACHE_DIR
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
rc_init "$@"

[[ $(id -u) == 0 ]] || skip "needs root for a network namespace and a TAP device"
rc_need_pkgs qemu-system-x86 busybox-static iproute2
rc_get_kernel
QEMU=$(command -v qemu-system-x86_64) || skip "qemu-system-x86_64 missing after install"
[[ -c /dev/net/tun ]] || skip "no /dev/net/tun"

NS=vurc-net-$$
ip netns add "$NS" 2>"$RC_TMP/netns.err" ||
  skip "cannot create a network namespace: $(cat "$RC_TMP/netns.err")"
# rc_cleanup must see the script's exit status as its own $?.
trap 'rc_ns=$?; ip netns del "$NS" 2>/dev/null; (exit $rc_ns); rc_cleanup' EXIT
ip -n "$NS" link set lo up
NSX=(ip netns exec "$NS")
HOST_IP=10.77.0.1 GUEST_IP=10.77.0.2
BLOB=$((4 * 1024 * 1024))

mkdir "$RC_TMP/extra"
head -c "$BLOB" /dev/urandom >"$RC_TMP/extra/blob_g"   # guest -> host
head -c "$BLOB" /dev/urandom >"$RC_TMP/blob_h"         # host -> guest
SHA_G=$(sha256sum <"$RC_TMP/extra/blob_g" | cut -d' ' -f1)
SHA_H=$(sha256sum <"$RC_TMP/blob_h" | cut -d' ' -f1)
echo "$SHA_H" >"$RC_TMP/extra/sha_h"

# The guest prints "guest: READY" once it listens for the host's data and
# then waits (up to 60 s) for it to arrive whole.
cat >"$RC_TMP/test.sh" <<T
RESULT=OK
bad() { echo "guest: FAIL: \$*"; RESULT="FAIL (\$*)"; }
run() {
  i=0; while [ ! -e /sys/class/net/eth0 ] && [ \$i -lt 100 ]; do sleep 0.1; i=\$((i+1)); done
  [ -e /sys/class/net/eth0 ] || { bad "eth0 never appeared"; return; }
  drv=\$(basename \$(readlink /sys/class/net/eth0/device/driver))
  echo "guest: eth0 driver=\$drv packed=\$(cut -c35 /sys/class/net/eth0/device/features)"
  [ "\$drv" = virtio_net ] || { bad "eth0 is not virtio_net (\$drv)"; return; }
  ip link set lo up
  ip addr add $GUEST_IP/24 dev eth0 && ip link set eth0 up || { bad "ip setup"; return; }
  # The host side may still be coming up: retry for a while.
  i=0; until ping -c 1 -W 1 $HOST_IP >/dev/null 2>&1; do
    i=\$((i+1)); [ \$i -lt 20 ] || { bad "no ping reply from the host"; return; }
  done
  if ping -c 3 -W 2 $HOST_IP; then echo "guest: ping host ok"; else bad "ping host"; return; fi
  sleep 3600 | nc -l -p 5001 >/tmp/blob_h &
  echo "guest: READY"
  # guest -> host: the host's listener is up before the guest boots.
  if nc $HOST_IP 5000 </blob_g; then echo "guest: sent blob_g"; else bad "nc send to host"; fi
  i=0; while [ "\$(stat -c %s /tmp/blob_h 2>/dev/null)" != $BLOB ] && [ \$i -lt 600 ]; do
    sleep 0.1; i=\$((i+1))
  done
  sleep 0.2
  got=\$(sha256sum </tmp/blob_h | cut -d' ' -f1)
  echo "guest: received blob_h \$(stat -c %s /tmp/blob_h) bytes sha256 \$got"
  [ "\$got" = "\$(cat /sha_h)" ] || bad "blob from the host differs (sha256)"
  echo "guest: rx_packets=\$(cat /sys/class/net/eth0/statistics/rx_packets) tx_packets=\$(cat /sys/class/net/eth0/statistics/tx_packets)"
}
run
T
rc_write_init "$RC_TMP/init"
rc_initramfs "$RC_TMP/initrd" "$RC_TMP/init" "$RC_TMP/test.sh" "virtio_pci virtio_net"
log "kernel $KVER, initramfs $(du -k "$RC_TMP/initrd" | cut -f1) KiB"

run_guest() {  # NAME QEMU_NET_EXTRA WANT_PACKED
  local name=$1 extra=$2 want_packed=$3
  local sock=$RC_TMP/$name.sock dlog=$RC_TMP/daemon-$name.log con=$RC_TMP/console-$name.log
  rc_bg "daemon-$name" "${NSX[@]}" timeout -k 5 200 "$DAEMON" --socket "$sock" \
    --device "net,backend=tap,ifname=vutap0"
  local dpid=$RC_LAST_PID
  rc_wait_socket "$sock" || { cat "$dlog"; fail "daemon ($name) did not listen"; }
  local i
  for ((i = 0; i < 50; i++)); do
    ip -n "$NS" link show vutap0 >/dev/null 2>&1 && break
    sleep 0.1
  done
  ip -n "$NS" addr add "$HOST_IP/24" dev vutap0 && ip -n "$NS" link set vutap0 up ||
    { cat "$dlog"; fail "cannot configure the daemon's TAP vutap0 in $NS"; }
  rm -f "$RC_TMP/recv_g"
  rc_bg "listen-$name" "${NSX[@]}" timeout 150 sh -c \
    "sleep 3600 | busybox nc -l -p 5000 >'$RC_TMP/recv_g'"
  log "$name: booting QEMU (TCG)"
  rc_bg "qemu-$name" "$QEMU" -machine q35,accel=tcg -cpu qemu64 -smp 1 -m 512M \
    -object memory-backend-memfd,id=mem,size=512M,share=on -numa node,memdev=mem \
    -nodefaults -no-user-config -display none -no-reboot \
    -serial "file:$con" \
    -kernel "$QEMU_KERNEL" -initrd "$RC_TMP/initrd" \
    -append "console=ttyS0 panic=-1 quiet loglevel=4" \
    -chardev socket,id=cn,path="$sock" \
    -netdev vhost-user,id=n0,chardev=cn \
    -device "virtio-net-pci,netdev=n0,vectors=0,mac=52:54:00:12:34:56$extra"
  local qpid=$RC_LAST_PID
  show() {
    echo "--- QEMU ($name)"; cat "$RC_TMP/qemu-$name.log"
    echo "--- guest console ($name)"; tail -60 "$con"
    echo "--- daemon ($name)"; cat "$dlog"
  }
  # Host side: wait for the guest to listen, ping it, send it the blob.
  local ready=0
  for ((i = 0; i < 480; i++)); do
    grep -q "guest: READY" "$con" 2>/dev/null && { ready=1; break; }
    kill -0 "$qpid" 2>/dev/null || break
    grep -qE "$RC_FATAL_RE" "$RC_TMP/qemu-$name.log" "$dlog" && break
    sleep 0.25
  done
  if [[ $ready == 1 ]]; then
    "${NSX[@]}" busybox ping -c 3 -W 2 "$GUEST_IP" >"$RC_TMP/ping-$name.log" 2>&1 ||
      { cat "$RC_TMP/ping-$name.log"; show; fail "$name: host -> guest ping failed"; }
    log "$name: host -> guest ping ok ($(grep -o '[0-9]* packets received' "$RC_TMP/ping-$name.log"))"
    "${NSX[@]}" timeout 120 busybox nc "$GUEST_IP" 5001 <"$RC_TMP/blob_h" ||
      { show; fail "$name: host -> guest nc failed"; }
    log "$name: host sent blob_h ($BLOB bytes)"
  fi
  rc_watch "$qpid" 150 "$RC_FATAL_RE" "$RC_TMP/qemu-$name.log" "$dlog"
  local qrc=$?
  log "$name: QEMU exited with $qrc"
  [[ $qrc == 124 ]] && { show; fail "$name: guest did not power off within 150 s"; }
  [[ $qrc == 125 ]] && { show; fail "$name: stopped the guest early: $RC_WATCH_HIT"; }
  [[ $qrc == 0 ]] || { show; fail "$name: QEMU exited with $qrc"; }
  grep "guest:" "$con"; [[ -n ${RC_VERBOSE:-} ]] && show
  grep -q '^RC-RESULT: OK' "$con" ||
    { show; fail "$name: guest: $(grep RC-RESULT "$con" || echo 'no result')"; }
  grep -q "guest: eth0 driver=virtio_net packed=$want_packed" "$con" ||
    { show; fail "$name: expected packed=$want_packed"; }
  local got
  got=$(sha256sum <"$RC_TMP/recv_g" | cut -d' ' -f1)
  [[ $got == "$SHA_G" ]] ||
    { show; fail "$name: host received $(stat -c %s "$RC_TMP/recv_g") bytes, sha256 $got != $SHA_G"; }
  log "$name: host received blob_g whole (sha256 matches)"
  rc_stop_daemon "$dpid" "$dlog"
  [[ -e $sock ]] && fail "$name: daemon left its socket behind"
  return 0
}

run_guest split "" 0
run_guest packed ",packed=on" 1
echo "PASS: QEMU virtio-net-pci over vhost-user on a TAP (split + packed): ping both ways, 4 MiB each way verified"
