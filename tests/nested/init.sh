#!/bin/sh
# /init of the outer VM that nested-kvm.sh boots (busybox sh, in the
# initramfs). It turns the host's root filesystem, exported read-only over
# virtio-9p, into a writable root (overlayfs, tmpfs upper layer), so that
# the host's own binaries and libraries run here unchanged, and runs one
# job in it:
#   9p tag "job"  (read-write): run.sh (the command), mounts ("TAG PATH"
#                 lines: more read-write exports), path (the job dir's host
#                 path, where it is bind-mounted again inside the root),
#                 require (device nodes that must exist, e.g. /dev/kvm)
#   9p tag "hostroot" (read-only): the host's /
# Results go back through the job dir: stdout, stderr, rc (written last).
# The console stays quiet because every byte of it costs under TCG: one
# ready line, and a line for anything that went wrong.
/bin/busybox --install -s /bin
export PATH=/bin

fail() {
  echo "nested-init: $*"
  [ -d /job ] && echo "$*" >/job/error
  sync
  poweroff -f
}

mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev

for m in $(cat /lib/modules/order); do
  insmod "/lib/modules/$m" || echo "nested-init: insmod $m failed"
done

# A large msize: fewer, bigger 9p round trips (each one is a virtio kick).
opts=trans=virtio,version=9p2000.L,msize=524288
mkdir -p /job /mnt/lower /mnt/upper /mnt/root
mount -t 9p -o "$opts" job /job || fail "cannot mount the job export"
# cache=loose: the read-only host root does not change under us while the
# job runs, and caching its pages and dentries saves 9p round trips.
mount -t 9p -o "$opts,ro,cache=loose" hostroot /mnt/lower ||
  fail "cannot mount the host root export"
mount -t tmpfs -o mode=755 upper /mnt/upper
mkdir -p /mnt/upper/u /mnt/upper/w
mount -t overlay -o lowerdir=/mnt/lower,upperdir=/mnt/upper/u,workdir=/mnt/upper/w \
  root /mnt/root || fail "cannot mount the overlay root"

r=/mnt/root
mount -t proc proc $r/proc
mount -t sysfs sys $r/sys
mount -t devtmpfs dev $r/dev
mkdir -p $r/dev/pts $r/dev/shm
mount -t devpts -o newinstance,ptmxmode=0666 devpts $r/dev/pts
mount -t tmpfs -o mode=1777 shm $r/dev/shm
mount -t tmpfs -o mode=755 run $r/run
# /tmp stays the overlay's: the host's files there are visible (a caller's
# mktemp dir, say) and what is written inside lands in the tmpfs upper layer.
# The host's /etc/mtab may be a link to /proc/self/mounts: fine as is.

# Read-write exports, each at its host path.
if [ -f /job/mounts ]; then
  while read -r tag path; do
    [ -n "$tag" ] || continue
    mkdir -p "$r$path" && mount -t 9p -o "$opts" "$tag" "$r$path" ||
      fail "cannot mount read-write export $tag at $path"
  done </job/mounts
fi
jobpath=$(cat /job/path)
mkdir -p "$r$jobpath" && mount --bind /job "$r$jobpath" ||
  fail "cannot bind the job dir at $jobpath"

if [ -f /job/require ]; then
  for dev in $(cat /job/require); do
    [ -e "$r$dev" ] || fail "$dev is missing after loading the modules ($(dmesg | grep -iE 'kvm|svm' | tail -3 | tr '\n' ' '))"
  done
fi

echo "nested-init: ready"
chroot $r /bin/bash "$jobpath/run.sh" </dev/null >/job/stdout 2>/job/stderr
echo $? >/job/rc.tmp
mv /job/rc.tmp /job/rc
sync
poweroff -f
