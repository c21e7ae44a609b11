# shellcheck shell=sh
# The showcase guest's script: /test.sh in the initramfs, sourced by the
# /init of rc_write_init (glue/vhost-user/tests/real_clients/common.sh)
# after it loaded the modules; it sets RESULT, and /init powers off.
# Every line for the audience starts with "demo: " (the host shows those
# as they come); /demo.conf holds the addresses the host chose.
. /demo.conf

RESULT=OK
say() { echo "demo: $*"; }
bad() {
  echo "demo: FAILED: $*"
  RESULT="FAIL ($*)"
}
# The ring layout the driver negotiated: virtio feature bit 34 is
# RING_PACKED (sysfs prints the feature bits as a 0/1 string, bit 0 first).
ring() {
  case $(cut -c35 "$1/features" 2>/dev/null) in
    1) echo packed ;;
    0) echo split ;;
    *) echo unknown ;;
  esac
}
wait_for() {
  i=0
  while [ ! -e "$1" ] && [ $i -lt 100 ]; do
    sleep 0.1
    i=$((i + 1))
  done
  [ -e "$1" ]
}
now() { cut -d' ' -f1 /proc/uptime; }
short() { echo "${1%"${1#????????????????}"}..."; }

demo_disk() {
  wait_for /dev/vda || {
    bad "no /dev/vda: the virtio-blk device did not appear"
    return 1
  }
  say "[disk] /dev/vda: virtio-blk, $(($(cat /sys/block/vda/size) / 2048)) MiB," \
    "serial '$(cat /sys/block/vda/serial 2>/dev/null)', $(ring /sys/block/vda/device) ring"
  mkdir -p /mnt/disk
  mount -t ext4 /dev/vda /mnt/disk || {
    bad "mount -t ext4 /dev/vda failed"
    return 1
  }
  say "[disk] mounted /dev/vda (ext4) on /mnt/disk; it holds: $(ls /mnt/disk | tr '\n' ' ')"
  say "[disk] welcome.txt says: \"$(head -1 /mnt/disk/welcome.txt)\""
}

demo_net() {
  wait_for /sys/class/net/eth0 || {
    bad "no eth0: the virtio-net device did not appear"
    return 1
  }
  ip link set lo up
  ip link set eth0 up
  ip addr add "$GUEST_IP/24" dev eth0
  say "[net]  eth0: virtio-net, MAC $(cat /sys/class/net/eth0/address)," \
    "$(ring /sys/class/net/eth0/device) ring, address $GUEST_IP/24"
  if ping -c 3 -W 3 "$HOST_IP" >/tmp/ping.out 2>&1; then
    say "[net]  ping $HOST_IP (the host's TAP):" \
      "$(grep -o '[0-9]* packets received' /tmp/ping.out)," \
      "rtt $(grep -o 'min/avg/max = [0-9./]* ms' /tmp/ping.out)"
  else
    cat /tmp/ping.out
    bad "ping $HOST_IP got no reply"
    return 1
  fi
  # host -> guest: HTTP GET of a binary file from the host's busybox httpd
  # (bounded by timeout: wget -T crashes this static busybox without /etc).
  t0=$(now)
  if ! timeout 30 wget -q -O /tmp/payload "http://$HOST_IP:$HTTP_PORT/payload.bin"; then
    bad "wget http://$HOST_IP:$HTTP_PORT/payload.bin failed"
    return 1
  fi
  t1=$(now)
  got=$(sha256sum /tmp/payload | cut -d' ' -f1)
  want=$(cat /mnt/disk/payload.sha256)
  say "[net]  host -> guest: wget payload.bin, $(wc -c </tmp/payload) bytes in" \
    "$(echo "$t0 $t1" | awk '{printf "%.2f", $2 - $1}') s"
  if [ "$got" = "$want" ]; then
    say "[net]  its sha256 matches payload.sha256 on the disk: $(short "$got")"
  else
    bad "payload.bin's sha256 is $got, the disk says $want"
    return 1
  fi
  # guest -> host: nc to the host's listener, then a receipt over HTTP
  # (a CGI that waits until that many bytes arrived and hashes them):
  # busybox nc cannot say when the far end has everything.
  head -c "$UPLOAD_BYTES" /dev/urandom >/tmp/upload
  UPLOAD_SHA=$(sha256sum /tmp/upload | cut -d' ' -f1)
  t0=$(now)
  if ! nc -w 10 "$HOST_IP" "$NC_PORT" </tmp/upload; then
    bad "nc $HOST_IP $NC_PORT failed"
    return 1
  fi
  if ! receipt=$(timeout 40 wget -q -O - "http://$HOST_IP:$HTTP_PORT/cgi-bin/receipt?$UPLOAD_BYTES"); then
    bad "no receipt from http://$HOST_IP:$HTTP_PORT/cgi-bin/receipt"
    return 1
  fi
  t1=$(now)
  say "[net]  guest -> host: nc sent $UPLOAD_BYTES random bytes to $HOST_IP:$NC_PORT;" \
    "the host had them all after $(echo "$t0 $t1" | awk '{printf "%.2f", $2 - $1}') s"
  if [ "$receipt" = "$UPLOAD_BYTES $UPLOAD_SHA" ]; then
    say "[net]  the host's receipt: $UPLOAD_BYTES bytes, sha256 $(short "$UPLOAD_SHA"), as sent"
  else
    bad "the host's receipt '$receipt' does not match '$UPLOAD_BYTES $UPLOAD_SHA'"
    return 1
  fi
}

demo_write() {
  cat >/mnt/disk/from-guest.txt <<EOF
written by the guest: Linux $(uname -r), uptime $(now) s
disk: /dev/vda $(ring /sys/block/vda/device) ring; net: eth0 $(ring /sys/class/net/eth0/device) ring
payload received over the network: sha256 $got
upload sent to the host: $UPLOAD_BYTES bytes, sha256 $UPLOAD_SHA, receipt ok
EOF
  sync
  say "[disk] wrote /mnt/disk/from-guest.txt ($(wc -c </mnt/disk/from-guest.txt) bytes) and synced"
  umount /mnt/disk || {
    bad "umount /mnt/disk failed"
    return 1
  }
  say "[disk] unmounted /mnt/disk"
}

if demo_disk; then
  demo_net && demo_write
  # Unmount even when the network part failed: the host reads the image.
  grep -q ' /mnt/disk ' /proc/mounts && umount /mnt/disk
fi
say "powering off (result: $RESULT)"
