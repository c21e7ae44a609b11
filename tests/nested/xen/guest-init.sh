#!/bin/sh
# /init of the HVM guest's initramfs (busybox). Loads the virtio modules
# and runs the checks named by xt_tests= on the kernel command line
# (comma-separated: rng, blk, console, net), printing one line per result
# on the serial console, which the dom0 script reads:
#   XG-PASS name [detail] | XG-FAIL name why | XG-INFO ... | XG-DONE
# xt_irq=msix|intx says which interrupt kind the virtio devices must use.
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
tests= irq=
for w in $(cat /proc/cmdline); do
  case $w in
    xt_tests=*) tests=$(echo "${w#xt_tests=}" | tr , ' ') ;;
    xt_irq=*) irq=${w#xt_irq=} ;;
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

check_irq() {
  name=$1
  case $irq in
    msix) grep -i virtio /proc/interrupts | grep -q 'MSI' && pass "irq-msix" ||
            fail "irq-msix no virtio MSI-X vector in /proc/interrupts" ;;
    intx) if grep -i virtio /proc/interrupts | grep -q 'MSI'; then
            fail "irq-intx a virtio device uses MSI"
          elif grep -i virtio /proc/interrupts | grep -q .; then
            pass "irq-intx"
          else
            fail "irq-intx no virtio interrupt line"
          fi ;;
  esac
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

for t in $tests; do
  echo "XG-START $t uptime $(cut -d' ' -f1 /proc/uptime)"
  t_$t
done
check_irq
echo "XG-DONE uptime $(cut -d' ' -f1 /proc/uptime)"
poweroff -f
