#!/bin/sh
# /init of the HVM guest's initramfs (busybox). Loads the virtio modules
# and runs the checks named by xt_tests= on the kernel command line
# (comma-separated, run in that order: rng, blk, console, net, disagg),
# printing one line per result
# on the serial console, which the dom0 script reads:
#   XG-PASS name [detail] | XG-FAIL name why | XG-INFO ... | XG-DONE
# xt_irq= names the interrupt kind each device must use (see check_irq).
/bin/busybox --install -s /bin
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
echo "XG-INIT uptime $(cut -d' ' -f1 /proc/uptime)"
for m in $(cat /modules.order); do
  insmod /lib/modules/$m 2>/dev/null || echo "XG-INFO insmod $m failed"
done
tests= irq= ring= victim=
for w in $(cat /proc/cmdline); do
  case $w in
    xt_tests=*) tests=$(echo "${w#xt_tests=}" | tr , ' ') ;;
    xt_irq=*) irq=${w#xt_irq=} ;;
    xt_ring=*) ring=${w#xt_ring=} ;;
    xt_disagg=*) victim=${w#xt_disagg=} ;;
  esac
done
pass() { echo "XG-PASS $*"; }
fail() { echo "XG-FAIL $*"; }
# Waits up to $2 seconds for path $1.
wait_for() {
  i=0
  while [ ! -e "$1" ] && [ $i -lt $(($2 * 10)) ]; do sleep 0.1; i=$((i + 1)); done
  [ -e "$1" ]
}

# virtio devices by PCI function (vendor 1af4), with their interrupt kind.
for d in /sys/bus/pci/devices/*; do
  [ "$(cat $d/vendor)" = 0x1af4 ] || continue
  echo "XG-INFO pci ${d##*/} $(cat $d/vendor):$(cat $d/device) class $(cat $d/class) driver $(basename "$(readlink $d/driver)" 2>/dev/null)"
done
grep -i virtio /proc/interrupts | sed 's/^/XG-INFO irq /'

# xt_irq=SLOT.FN:KIND,... (KIND msix|intx): the virtio device at
# 0000:00:SLOT.FN must have taken at least one interrupt of that kind.
# MSI-X vectors are named virtioN-config / virtioN-QUEUE (on Xen HVM the
# chip is xen-pirq, "msi-x"); INTx is one line named virtioN.
check_irq() {
  for spec in $(echo "$irq" | tr , ' '); do
    bdf=0000:00:${spec%%:*} kind=${spec#*:}
    v=$(basename "$(ls -d /sys/bus/pci/devices/$bdf/virtio* 2>/dev/null | head -1)")
    if [ -z "$v" ] || [ "$v" = . ]; then fail "irq-$kind $bdf has no virtio device"; continue; fi
    case $kind in
      msix) n=$(grep -i "msi" /proc/interrupts | grep " $v-" | awk '{s += $2} END {print s + 0}') ;;
      intx) n=$(grep " $v\$" /proc/interrupts | grep -vi msi | awk '{s += $2} END {print s + 0}') ;;
    esac
    if [ "$n" -gt 0 ]; then pass "irq-$kind $bdf $v $n interrupts"; else fail "irq-$kind $bdf $v took no $kind interrupt"; fi
  done
}

# xt_ring=SLOT.FN:split|packed,...: the ring layout the driver negotiated
# (features bit 34, VIRTIO_F_RING_PACKED, in sysfs's bit string).
check_ring() {
  for spec in $(echo "$ring" | tr , ' '); do
    bdf=0000:00:${spec%%:*} want=${spec#*:}
    f=$(cat /sys/bus/pci/devices/$bdf/virtio*/features 2>/dev/null)
    case $(echo "$f" | cut -c35) in
      1) got=packed ;;
      0) got=split ;;
      *) got="unknown ($f)" ;;
    esac
    [ "$got" = "$want" ] && pass "ring-$want $bdf" || fail "ring-$want $bdf negotiated $got"
  done
}

t_rng() {
  wait_for /dev/hwrng 10 || { fail "rng no /dev/hwrng"; return; }
  cur=$(cat /sys/class/misc/hw_random/rng_current 2>/dev/null)
  case $cur in virtio_rng*) ;; *) fail "rng current source is '$cur'"; return ;; esac
  a=$(dd if=/dev/hwrng bs=64 count=1 2>/dev/null | od -An -tx1 | tr -d ' \n')
  b=$(dd if=/dev/hwrng bs=64 count=1 2>/dev/null | od -An -tx1 | tr -d ' \n')
  if [ ${#a} -ne 128 ] || [ ${#b} -ne 128 ]; then
    fail "rng short read (${#a} ${#b} hex digits)"
  elif [ "$a" = "$b" ] || [ "$a" = "$(printf '0%.0s' $(seq 128))" ]; then
    fail "rng same or zero bytes twice: $a"
  else
    pass "rng $cur ${a%${a#????????????????}}"
  fi
}

t_blk() {
  wait_for /dev/vda 10 || { fail "blk no /dev/vda"; return; }
  mkdir -p /mnt
  mount -t ext4 /dev/vda /mnt || { fail "blk mount ext4"; return; }
  [ "$(cat /mnt/from-dom0 2>/dev/null)" = "written by dom0" ] ||
    { fail "blk /from-dom0 not readable"; umount /mnt; return; }
  # About 1 MiB of data plus a marker, so several requests are in flight.
  dd if=/dev/urandom of=/mnt/bulk bs=64k count=16 2>/dev/null
  sum=$(md5sum /mnt/bulk | cut -d' ' -f1)
  echo "written by the guest" >/mnt/from-guest
  echo "$sum" >/mnt/bulk.md5
  sync
  umount /mnt || { fail "blk umount"; return; }
  # Read back after a fresh mount (page cache dropped with the unmount).
  mount -t ext4 -o ro /dev/vda /mnt || { fail "blk remount"; return; }
  [ "$(md5sum /mnt/bulk | cut -d' ' -f1)" = "$sum" ] ||
    { fail "blk bulk data changed after remount"; umount /mnt; return; }
  umount /mnt
  pass "blk md5 $sum"
}

# virtio-console: which /dev/hvcN is the virtio port is not fixed (an HVM
# guest also has Xen's PV console), so every hvc gets a line out and is
# read; dom0's client sends "hello-from-dom0" into the virtio one.
t_console() {
  i=0
  while [ ! -e /sys/bus/virtio/drivers/virtio_console/virtio* ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
  sleep 1
  hvcs=
  for h in /dev/hvc[0-9]; do
    [ -e "$h" ] && (echo -n >"$h") 2>/dev/null && hvcs="$hvcs $h"
  done
  # Readers first, then our line: dom0 answers it.
  for h in $hvcs; do (timeout 60 head -n1 "$h" >/tmp/in.${h##*/} 2>/dev/null &); done
  sleep 1
  for h in $hvcs; do echo "guest-line-on-${h##*/}" >"$h"; done
  i=0
  while [ $i -lt 600 ]; do
    got=$(grep -l hello-from-dom0 /tmp/in.* 2>/dev/null | head -1)
    [ -n "$got" ] && break
    sleep 0.1; i=$((i + 1))
  done
  if [ -n "$got" ]; then pass "console ${got#/tmp/in.} received hello-from-dom0"; else fail "console nothing from dom0 on any hvc"; fi
}

# virtio-net over a TAP in dom0 (10.77.0.1): ping it, then send 1 MiB over
# TCP to dom0's receiver (port 5077), which checks the guest's md5.
t_net() {
  wait_for /sys/class/net/eth0 10 || { fail "net no eth0"; return; }
  ip addr add 10.77.0.2/24 dev eth0 && ip link set eth0 up || { fail "net ip setup"; return; }
  ping -c 3 -W 5 10.77.0.1 >/tmp/ping.out 2>&1 ||
    { fail "net ping: $(tail -2 /tmp/ping.out | tr '\n' ' ')"; return; }
  dd if=/dev/urandom of=/tmp/bulk bs=64k count=16 2>/dev/null
  sum=$(md5sum /tmp/bulk | cut -d' ' -f1)
  echo "XG-NET-MD5 $sum"
  nc -w 30 10.77.0.1 5077 </tmp/bulk || { fail "net nc to dom0"; return; }
  pass "net ping ok, sent 1 MiB md5 $sum"
}

# The vendor ID as the function answers it now (a live config read).
cfg_vendor() {
  dd if=/sys/bus/pci/devices/$1/config bs=2 count=1 2>/dev/null | od -An -tx2 | tr -d ' \n'
}

# xt_disagg=SLOT.FN: disaggregation. The function's backend (the net
# device's, after t_net) is one of two backend processes; dom0 stops it
# while this streams zeros to dom0's port 5078 through eth0. Its functions
# then vanish (config space reads all ones: no ioreq server claims them),
# the stream stalls, and the guest goes on: the checks listed after this
# one run on the other backend's devices.
t_disagg() {
  bdf=0000:00:$victim
  ven=$(cfg_vendor $bdf)
  [ "$ven" = 1af4 ] || { fail "disagg $bdf reads vendor '$ven' before the stop"; return; }
  (dd if=/dev/zero bs=64k count=4096 2>/dev/null | nc 10.77.0.1 5078 >/dev/null 2>&1
   echo "XG-INFO disagg stream ended rc $?") &
  i=0
  while [ $i -lt 3000 ]; do
    ven=$(cfg_vendor $bdf)
    [ "$ven" = ffff ] && break
    sleep 0.1; i=$((i + 1))
  done
  if [ "$ven" = ffff ]; then
    pass "disagg $bdf gone after $i polls (config reads ffff), stream stalled: $(grep eth0 /proc/net/dev | awk '{print $10}') bytes sent"
  else
    fail "disagg $bdf still answers ($ven) after 3000 polls"
  fi
}

for t in $tests; do
  echo "XG-START $t uptime $(cut -d' ' -f1 /proc/uptime)"
  t_$t
done
check_irq
check_ring
echo "XG-DONE uptime $(cut -d' ' -f1 /proc/uptime)"
poweroff -f
