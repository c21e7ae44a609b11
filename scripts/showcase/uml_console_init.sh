#!/bin/busybox sh
# /init of the showcase's User-mode Linux guest (root: the host's / over
# hostfs, read-only). showcase.sh replaces @MODS@ with the virtio_console
# module files. Loads virtio_console, greets the host on /dev/hvc0 (a
# libvirtio virtio-console served over vhost-user), then runs a shell whose
# input and output are /dev/hvc0, so the host drives it through the
# daemon's console socket; when that shell exits, the guest powers off.
bb=/bin/busybox
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
$bb mount -t proc proc /proc
$bb mount -t sysfs sys /sys
$bb mount -t devtmpfs dev /dev 2>/dev/null # UML may have mounted it
for m in @MODS@; do $bb insmod "$m" || echo "uml: insmod $m failed"; done
i=0
while [ ! -c /dev/hvc0 ] && [ $i -lt 100 ]; do
  $bb sleep 0.1
  i=$((i + 1))
done
if [ -c /dev/hvc0 ]; then
  echo "uml: /dev/hvc0 is up"
  # Held open throughout: hvc resets the tty's settings on its last close.
  exec 3<>/dev/hvc0
  # No echo of what the host types (it shows that itself); output keeps
  # the tty's \n -> \r\n, which the host strips.
  $bb stty -echo <&3
  echo "hello from $($bb uname -sr) (User-mode Linux), writing to /dev/hvc0" >&3
  # The script file is the tty: sh reads it line by line (canonical mode)
  # and, not being interactive, prints no prompt or banner.
  $bb sh /dev/hvc0 </dev/null >&3 2>&3
  exec 3>&-
  echo "uml: the console shell exited"
else
  echo "uml: FAILED: /dev/hvc0 never appeared"
fi
$bb poweroff -f
