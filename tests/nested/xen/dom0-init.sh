#!/bin/sh
# /init of dom0's initramfs (busybox). Loads the Xen and 9p modules, then
# makes the host's root filesystem (virtio-9p tag "hostroot", read-only)
# dom0's root with a tmpfs overlay on top, mounts the test's output
# directory (tag "xtout", writable) at /xtout inside it and runs the test
# script named there (xtout/config.sh) in the chroot. Anything that goes
# wrong powers Xen off, so the host never waits for its deadline.
/bin/busybox --install -s /bin
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
die() {
  echo "XT-DOM0-FATAL: $*"
  poweroff -f
  sleep 30
}
echo "XT-DOM0-INIT uptime $(cut -d' ' -f1 /proc/uptime)"
for m in $(cat /modules.order); do
  insmod /lib/modules/$m || echo "insmod $m failed"
done
mkdir -p /lower /upper /newroot
# cache=loose: the host tree does not change while the test runs, and
# executables and libraries are then paged from dom0's page cache.
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000,cache=loose \
  hostroot /lower || die "cannot mount the host root over virtio-9p"
mount -t tmpfs -o size=600M tmpfs /upper || die "tmpfs"
mkdir -p /upper/u /upper/w
mount -t overlay overlay -o lowerdir=/lower,upperdir=/upper/u,workdir=/upper/w \
  /newroot || die "cannot mount the overlay over the 9p root"
mkdir -p /newroot/xtout
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 xtout /newroot/xtout ||
  die "cannot mount the output directory"
[ -f /newroot/xtout/config.sh ] || die "no config.sh in the output directory"
echo "XT-DOM0-ROOT uptime $(cut -d' ' -f1 /proc/uptime)"
# The chroot gets its own proc/sys/dev; the test script mounts the rest.
mount -t proc proc /newroot/proc
mount -t sysfs sys /newroot/sys
mount -t devtmpfs dev /newroot/dev
chroot /newroot /bin/bash /xtout/dom0.sh
echo "XT-DOM0-EXIT $?"
sync
poweroff -f
sleep 30
