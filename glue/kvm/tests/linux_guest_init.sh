#!/bin/sh
# /init of the Linux guest that linux_guest.sh boots under virtio-kvm.
# Uses every libvirtio device the VMM gives it and prints one line per
# check ("LINUX-GUEST: ..."); the host test reads them from the serial
# console. LAYOUT (split|packed), TOKEN, HOST_IP, GUEST_IP, HTTP_PORT and
# NC_PORT come from the kernel command line (Linux hands unknown key=value
# words to init as environment variables).
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp

fails=0
say() { echo "LINUX-GUEST: $*"; }
bad() { say "FAIL: $*"; fails=$((fails + 1)); }

for m in $(cat /lib/modules/order); do
  insmod "/lib/modules/$m" 2>/dev/null || bad "insmod $m"
done
say "kernel $(uname -r), $(nproc) CPUs, layout $LAYOUT"
[ "$(nproc)" -ge 2 ] || bad "expected at least 2 CPUs, have $(nproc)"
# The platform comes from virtio-kvm's ACPI tables (not the MP table).
if [ -e /sys/firmware/acpi/tables/DSDT ] && [ -e /sys/firmware/acpi/tables/APIC ]; then
  say "ACPI: DSDT and MADT present, PCI root $(ls -d /sys/bus/acpi/devices/PNP0A03:* 2>/dev/null | wc -l)"
  [ -e /sys/bus/acpi/devices/PNP0A03:00 ] || bad "ACPI: no PNP0A03 PCI root"
else
  bad "ACPI: no DSDT/MADT in /sys/firmware/acpi/tables"
fi

# Every virtio device: its ring layout (feature bit 34, VIRTIO_F_RING_PACKED,
# is character 35 of the features string) and its PCI interrupt mode.
n=0
for d in /sys/bus/virtio/devices/*; do
  [ -e "$d/features" ] || continue
  n=$((n + 1))
  ring=split
  [ "$(cut -c35 "$d/features")" = 1 ] && ring=packed
  transport=pci
  case "$(readlink -f "$d")" in *LNRO0005*) transport=mmio ;; esac
  say "virtio device $(cat "$d/device") ($(basename "$(readlink "$d/driver")")): $ring ring, virtio-$transport"
  [ "$ring" = "$LAYOUT" ] || bad "$(basename "$d") uses the $ring ring, expected $LAYOUT"
  if [ "$(cat "$d/device")" = 0x0004 ]; then
    [ "$transport" = "$RNG_TRANSPORT" ] || bad "rng is on virtio-$transport, expected virtio-$RNG_TRANSPORT"
  fi
done
[ "$n" -eq 4 ] || bad "expected 4 virtio devices, found $n"
msix=$(grep -c 'PCI-MSI.*virtio' /proc/interrupts)
say "MSI-X vectors in use by virtio: $msix"
[ "$msix" -ge 4 ] || bad "virtio devices use $msix MSI-X vectors"

# virtio-rng: two reads of /dev/hwrng, full length, different.
i=0
while [ ! -e /dev/hwrng ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
rng=$(cat /sys/class/misc/hw_random/rng_current 2>/dev/null)
dd if=/dev/hwrng of=/tmp/rng1 bs=64 count=1 2>/dev/null
dd if=/dev/hwrng of=/tmp/rng2 bs=64 count=1 2>/dev/null
if [ "$(wc -c </tmp/rng1)" = 64 ] && [ "$(wc -c </tmp/rng2)" = 64 ] &&
   ! cmp -s /tmp/rng1 /tmp/rng2; then
  say "[rng] /dev/hwrng ($rng): 2 x 64 bytes, distinct"
else
  bad "[rng] /dev/hwrng ($rng) did not give 2 distinct 64-byte reads"
fi

# virtio-blk: mount the ext4 disk the host built, check its file, write one.
if mount -t ext4 /dev/vda /mnt; then
  if grep -q "$TOKEN" /mnt/welcome.txt; then
    say "[blk] /dev/vda mounted (ext4), welcome.txt holds the host's token"
  else
    bad "[blk] welcome.txt lacks the token"
  fi
  echo "written by the Linux guest of virtio-kvm, token $TOKEN" >/mnt/from-guest.txt
  dd if=/dev/urandom of=/mnt/random.bin bs=64k count=16 2>/dev/null
  rs=$(sha256sum /mnt/random.bin | cut -d' ' -f1)
  echo "$rs" >/mnt/random.sha256
  sync
  umount /mnt || bad "[blk] umount failed"
  say "[blk] wrote from-guest.txt and random.bin, 1 MiB with sha256 $rs"
else
  bad "[blk] mount /dev/vda failed"
fi

# virtio-console: a line to the host on hvc0, the host's answer back, echoed.
if [ -e /dev/hvc0 ]; then
  # One open file for the whole exchange: hvc resets the tty (and leaves
  # interrupt mode) when its last user closes it.
  exec 3<>/dev/hvc0
  stty -F /dev/hvc0 -echo 2>/dev/null
  echo "GUEST-HELLO $TOKEN" >&3
  reply=
  read -r -t 60 reply <&3
  reply=$(echo "$reply" | tr -d '\r')
  case $reply in
    "HOST-REPLY "*)
      echo "GUEST-ECHO ${reply#HOST-REPLY }" >&3
      say "[console] hvc0: sent a line, got '$reply', echoed it"
      ;;
    *) bad "[console] hvc0: no reply from the host (got '$reply')" ;;
  esac
  exec 3>&-
else
  bad "[console] no /dev/hvc0"
fi

# virtio-net: ping the host's TAP, 1 MiB host -> guest over HTTP, 1 MiB
# guest -> host with nc and a receipt (size + sha256) from the host.
if ip link set eth0 up && ip addr add "$GUEST_IP/24" dev eth0; then
  if ping -c 3 -W 5 "$HOST_IP" >/tmp/ping 2>&1; then
    say "[net] ping $HOST_IP: $(grep -o '[0-9]* packets received' /tmp/ping)"
  else
    bad "[net] ping $HOST_IP failed: $(tail -2 /tmp/ping)"
  fi
  if timeout 60 wget -q -O /tmp/payload "http://$HOST_IP:$HTTP_PORT/payload.bin"; then
    say "[net] host -> guest: $(wc -c </tmp/payload) bytes, sha256 $(sha256sum /tmp/payload | cut -d' ' -f1)"
  else
    bad "[net] wget payload.bin failed"
  fi
  head -c 1048576 /dev/urandom >/tmp/upload
  up=$(sha256sum /tmp/upload | cut -d' ' -f1)
  if nc -w 10 "$HOST_IP" "$NC_PORT" </tmp/upload &&
     receipt=$(timeout 60 wget -q -O - "http://$HOST_IP:$HTTP_PORT/cgi-bin/receipt?1048576") &&
     [ "$receipt" = "1048576 $up" ]; then
    say "[net] guest -> host: 1048576 bytes, sha256 $up, receipt matches"
  else
    bad "[net] guest -> host: receipt '$receipt' for sha256 $up"
  fi
else
  bad "[net] configuring eth0 failed"
fi

say "RESULT: $fails failure(s)"
if [ "$fails" -eq 0 ]; then
  say PASS
  poweroff -f
fi
# A failure count on the exit port (0xf4): virtio-kvm exits 1.
printf "\\$(printf %o "$fails")" | dd of=/dev/port bs=1 seek=244 count=1 2>/dev/null
sleep 5
reboot -f
