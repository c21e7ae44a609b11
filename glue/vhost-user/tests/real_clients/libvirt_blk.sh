#!/usr/bin/env bash
# rc-timeout: 900
# Real client: libvirt 9.0 (Debian 12's libvirtd, QEMU driver) manages a
# TCG guest whose disk is a <disk type='vhostuser'> served by
# vhost-user-device. The test runs its own libvirtd (system mode, as root)
# in a private mount namespace, so its config, state, logs and sockets live
# in the test's temp dir and cannot meet another libvirt; virsh talks to it
# over an explicit socket. The domain (direct kernel boot of Debian's
# kernel + a busybox initramfs, memfd shared memory) is started twice:
#   1. the guest writes a pattern at 1 MiB, drops its caches, reads it back
#      and powers off: libvirt sees the domain shut off;
#   2. `virsh start` again (a second front-end connection): the guest finds
#      the pattern the first boot wrote, then keeps reading the disk until
#      `virsh destroy` pulls the plug; then `virsh undefine`.
# The host then checks that the daemon logged both connections and their
# ends, that it still answers a new front-end (a GET_FEATURES probe), that
# it stops cleanly on SIGTERM, and the pattern in the image.
#
# usage: libvirt_blk.sh PATH/TO/vhost-user-device CACHE_DIR
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
rc_init "$@"

# libvirt-daemon has libvirtd and the drivers without the -system
# package's users, config files and init scripts: nothing to start or to
# fail in a postinst without systemd.
rc_need_pkgs qemu-system-x86 busybox-static libvirt-daemon \
  libvirt-daemon-driver-qemu libvirt-clients
command -v python3 >/dev/null || rc_need_pkgs python3
rc_get_kernel
LIBVIRTD=$(command -v libvirtd || echo /usr/sbin/libvirtd)
[[ -x $LIBVIRTD ]] || skip "libvirtd missing after install"
command -v virsh >/dev/null || skip "virsh missing after install"
command -v unshare >/dev/null || skip "no unshare (util-linux) for libvirtd's private mount namespace"
# A system-mode libvirtd keeps its config in /etc/libvirt and its state in
# /run/libvirt and /var/{lib,log,cache}/libvirt, with no option to move
# them: only bind mounts in a namespace of its own make them private.
unshare --mount true 2>/dev/null ||
  skip "cannot create a mount namespace (needs CAP_SYS_ADMIN) to give libvirtd private dirs"

NAME=vu-rc-libvirt
DISK=$RC_TMP/disk.img
SOCK=$RC_TMP/blk.sock
LV=$RC_TMP/lv
truncate -s 64M "$DISK"
mkdir "$RC_TMP/extra"
head -c 1M /dev/urandom >"$RC_TMP/extra/pattern"

# --- guest: phase 1 when the disk does not hold the pattern yet, phase 2
# when it does.
cat >"$RC_TMP/test.sh" <<'T'
RESULT=OK
bad() { echo "guest: FAIL: $*"; RESULT="FAIL ($*)"; }
i=0; while [ ! -b /dev/vda ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
[ -b /dev/vda ] || { bad "/dev/vda never appeared"; return; }
[ "$(cat /sys/block/vda/size)" = 131072 ] || bad "vda size $(cat /sys/block/vda/size) sectors, expected 131072"
dd if=/dev/vda of=/tmp/back bs=64k skip=16 count=16 2>/dev/null || bad "dd read vda"
if cmp -s /pattern /tmp/back; then
  echo "guest: phase 2: the pattern from the first boot is on vda"
  echo "RC-RESULT: $RESULT"
  # Keep requests going so that `virsh destroy` cuts a busy connection.
  n=0
  while :; do
    echo 3 >/proc/sys/vm/drop_caches
    dd if=/dev/vda of=/dev/null bs=64k count=64 2>/dev/null
    n=$((n+1)); [ $((n % 20)) = 1 ] && echo "guest: read round $n"
  done
fi
echo "guest: phase 1: writing the pattern"
dd if=/pattern of=/dev/vda bs=64k seek=16 conv=fsync 2>/dev/null || bad "dd write vda"
echo 3 >/proc/sys/vm/drop_caches
dd if=/dev/vda of=/tmp/back bs=64k skip=16 count=16 2>/dev/null || bad "dd read vda"
if cmp /pattern /tmp/back; then echo "guest: vda pattern verified"; else bad "vda readback differs"; fi
T
rc_write_init "$RC_TMP/init"
rc_initramfs "$RC_TMP/initrd" "$RC_TMP/init" "$RC_TMP/test.sh" "virtio_pci virtio_blk"
log "kernel $KVER, initramfs $(du -k "$RC_TMP/initrd" | cut -f1) KiB"

# --- the daemon
rc_bg daemon timeout -k 5 300 "$DAEMON" --socket-path "$SOCK" \
  --device "blk,path=$DISK,serial=libvirt0"
PID_D=$RC_LAST_PID
rc_wait_socket "$SOCK" || { cat "$RC_TMP/daemon.log"; fail "daemon did not listen"; }

# --- a private libvirtd
mkdir -p "$LV"/{etc,run,lib,log,cache,sock}
cat >"$LV/libvirtd.conf" <<EOF
unix_sock_dir = "$LV/sock"
auth_unix_ro = "none"
auth_unix_rw = "none"
log_outputs = "3:file:$LV/libvirtd.log"
EOF
# What a container lacks, turned off: no cgroup controllers to place QEMU
# in (and no systemd-machined), no AppArmor/SELinux, no per-domain mount
# namespace for /dev; QEMU runs as root (Debian's default user
# libvirt-qemu comes with libvirt-daemon-system, not installed) and libvirt
# neither chowns the files it hands QEMU nor remembers owners (xattrs);
# QEMU's stdout goes to a plain file, not through virtlogd.
cat >"$LV/etc/qemu.conf" <<'EOF'
user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
cgroup_controllers = [ ]
namespaces = [ ]
stdio_handler = "file"
EOF
# The bind mounts need mount points: dirs where libvirt-daemon-system
# would have made them. One this test makes holds a marker and is removed
# when the last running instance of the test ends: the holder of a shared
# lock (on the libvirtd binary, the same file for every build tree) is a
# running instance, and removing a mount point on the host would unmount
# it from under another instance's libvirtd.
LV_MARK=.made-by-libvirtio-real-client-test
exec {LV_LOCK}<"$LIBVIRTD"
flock -w 60 -s "$LV_LOCK" || fail "another libvirt test holds $LIBVIRTD locked"
for d in /run/libvirt /var/lib/libvirt /var/log/libvirt /var/cache/libvirt; do
  [[ -d $d ]] || { mkdir -p "$d" && : >"$d/$LV_MARK"; }
done
# The mount points go once QEMU and libvirtd (and with them the namespace)
# are gone; rc_cleanup does the rest and takes the exit status from $?:
# keep it.
lv_cleanup() {
  local rc=$? d i
  [[ -n ${QPID:-} ]] && kill -KILL "$QPID" 2>/dev/null
  if [[ -n ${PID_LV:-} ]]; then
    kill -TERM -- "-$PID_LV" 2>/dev/null
    for ((i = 0; i < 40; i++)); do kill -0 "$PID_LV" 2>/dev/null || break; sleep 0.1; done
  fi
  if flock -n -x "$LV_LOCK"; then
    for d in /run/libvirt /var/lib/libvirt /var/log/libvirt /var/cache/libvirt; do
      [[ $(ls -A "$d" 2>/dev/null) == "$LV_MARK" ]] && rm -f "$d/$LV_MARK" && rmdir "$d"
    done
  fi
  (exit "$rc"); rc_cleanup
}
trap lv_cleanup EXIT
# libvirtd looks up its built-in QEMU user and group (Debian:
# libvirt-qemu, made by libvirt-daemon-system) before it reads qemu.conf
# and fails when they do not exist; it sees copies of passwd and group
# that have them, the host's files stay as they are.
cp /etc/passwd "$LV/passwd"; cp /etc/group "$LV/group"
getent passwd libvirt-qemu >/dev/null ||
  echo "libvirt-qemu:x:64055:64055:libvirt (test):/nonexistent:/usr/sbin/nologin" >>"$LV/passwd"
getent group libvirt-qemu >/dev/null || echo "libvirt-qemu:x:64055:" >>"$LV/group"
cat >"$LV/start.sh" <<EOF
set -e
mount --bind "$LV/passwd" /etc/passwd
mount --bind "$LV/group" /etc/group
mount --bind "$LV/etc" /etc/libvirt
mount --bind "$LV/run" /run/libvirt
mount --bind "$LV/lib" /var/lib/libvirt
mount --bind "$LV/log" /var/log/libvirt
mount --bind "$LV/cache" /var/cache/libvirt
exec "$LIBVIRTD" --config "$LV/libvirtd.conf" --pid-file "$LV/libvirtd.pid"
EOF
# unshare's default propagation for the new namespace is private: the
# bind mounts never show outside it.
rc_bg libvirtd unshare --mount --propagation private bash "$LV/start.sh"
PID_LV=$RC_LAST_PID
VIRSH=(timeout -k 5 60 virsh -q -c "qemu+unix:///system?socket=$LV/sock/libvirt-sock")

QLOG=$LV/log/qemu/$NAME.log
CONSOLE=$RC_TMP/console.log
show() {
  echo "--- libvirtd"; cat "$RC_TMP/libvirtd.log" "$LV/libvirtd.log" 2>/dev/null
  echo "--- QEMU (libvirt's domain log)"; cat "$QLOG" 2>/dev/null
  for c in "$RC_TMP/console1.log" "$CONSOLE"; do
    [[ -f $c ]] && { echo "--- guest console ${c##*/}"; tail -40 "$c"; }
  done
  echo "--- daemon"; cat "$RC_TMP/daemon.log"
}
rc_wait_socket "$LV/sock/libvirt-sock" 30 ||
  { show; fail "libvirtd did not listen within 30 s"; }
"${VIRSH[@]}" version >"$RC_TMP/version.log" 2>&1 || { cat "$RC_TMP/version.log"; show; fail "virsh cannot reach libvirtd"; }
log "libvirtd up: $(grep -i 'hypervisor' "$RC_TMP/version.log" | tr -s ' ')"

# --- the domain
cat >"$RC_TMP/domain.xml" <<EOF
<domain type='qemu'>
  <name>$NAME</name>
  <memory unit='MiB'>256</memory>
  <memoryBacking>
    <source type='memfd'/>
    <access mode='shared'/>
  </memoryBacking>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='q35'>hvm</type>
    <kernel>$QEMU_KERNEL</kernel>
    <initrd>$RC_TMP/initrd</initrd>
    <cmdline>console=ttyS0 panic=-1 quiet loglevel=4</cmdline>
  </os>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>$(command -v qemu-system-x86_64)</emulator>
    <disk type='vhostuser' device='disk'>
      <driver name='qemu' type='raw'/>
      <source type='unix' path='$SOCK'>
        <reconnect enabled='yes' timeout='2'/>
      </source>
      <target dev='vda' bus='virtio'/>
    </disk>
    <serial type='file'>
      <source path='$CONSOLE'/>
      <target port='0'/>
    </serial>
    <console type='file'>
      <source path='$CONSOLE'/>
      <target type='serial' port='0'/>
    </console>
    <controller type='usb' model='none'/>
    <memballoon model='none'/>
  </devices>
</domain>
EOF
"${VIRSH[@]}" define "$RC_TMP/domain.xml" >"$RC_TMP/virsh.log" 2>&1 ||
  { cat "$RC_TMP/virsh.log"; show; fail "virsh define failed"; }

# start_domain: virsh start, and the QEMU it started joins the processes
# the EXIT trap kills (libvirtd leaves its guests running when it stops).
start_domain() {
  "${VIRSH[@]}" start "$NAME" >>"$RC_TMP/virsh.log" 2>&1 ||
    { cat "$RC_TMP/virsh.log"; show; fail "virsh start failed"; }
  QPID=$(cat "$LV/run/qemu/$NAME.pid" 2>/dev/null)
  [[ $QPID =~ ^[0-9]+$ ]] || { show; fail "no QEMU pid file from libvirt"; }
  RC_PIDS+=("$QPID")
}
# wait_state STATE SECS
wait_state() {
  local i st
  for ((i = 0; i < $2 * 4; i++)); do
    st=$("${VIRSH[@]}" domstate "$NAME" 2>/dev/null)
    [[ $st == "$1" ]] && return 0
    RC_WATCH_HIT=$(grep -hE "$RC_FATAL_RE" "$QLOG" "$RC_TMP/daemon.log" 2>/dev/null | head -1)
    [[ -n $RC_WATCH_HIT ]] && return 125
    kill -0 "$PID_LV" 2>/dev/null || { RC_WATCH_HIT="libvirtd exited"; return 125; }
    sleep 0.25
  done
  return 124
}

log "phase 1: virsh start (TCG)"
start_domain
wait_state "shut off" 120; src=$?
[[ $src == 124 ]] && { show; fail "phase 1: the domain did not shut off within 120 s"; }
[[ $src == 125 ]] && { show; fail "phase 1: $RC_WATCH_HIT"; }
log "phase 1: domain shut off"
# libvirt opens the console file for appending: phase 2 starts on an
# empty one.
cp "$CONSOLE" "$RC_TMP/console1.log"; : >"$CONSOLE"
grep "guest:" "$RC_TMP/console1.log"
grep -q '^RC-RESULT: OK' "$RC_TMP/console1.log" ||
  { show; fail "phase 1 guest: $(grep RC-RESULT "$RC_TMP/console1.log" || echo 'no result')"; }
grep -q 'guest: phase 1' "$RC_TMP/console1.log" || { show; fail "phase 1: the guest did not run phase 1"; }
kill -0 "$QPID" 2>/dev/null && { show; fail "phase 1: QEMU $QPID still runs after shut off"; }

log "phase 2: virsh start again"
start_domain
for ((i = 0; i < 480; i++)); do
  [[ $(grep -c 'guest: read round' "$CONSOLE" 2>/dev/null) -ge 2 ]] && break
  grep -qE '^RC-RESULT: FAIL|guest: phase 1' "$CONSOLE" 2>/dev/null && break
  [[ $("${VIRSH[@]}" domstate "$NAME" 2>/dev/null) == running ]] || break
  sleep 0.25
done
grep "guest:" "$CONSOLE" | head -3
grep -q '^RC-RESULT: OK' "$CONSOLE" ||
  { show; fail "phase 2 guest: $(grep RC-RESULT "$CONSOLE" || echo 'no result')"; }
grep -q 'guest: phase 2' "$CONSOLE" || { show; fail "phase 2: the guest did not find the pattern"; }
grep -q 'guest: read round' "$CONSOLE" || { show; fail "phase 2: the guest's read loop did not run"; }
log "phase 2: virsh destroy while the guest reads"
"${VIRSH[@]}" destroy "$NAME" >>"$RC_TMP/virsh.log" 2>&1 ||
  { cat "$RC_TMP/virsh.log"; show; fail "virsh destroy failed"; }
wait_state "shut off" 20 || { show; fail "phase 2: the domain is not shut off after virsh destroy"; }
"${VIRSH[@]}" undefine "$NAME" >>"$RC_TMP/virsh.log" 2>&1 ||
  { cat "$RC_TMP/virsh.log"; show; fail "virsh undefine failed"; }
[[ -z $("${VIRSH[@]}" list --all --name 2>/dev/null) ]] || { show; fail "a domain is still defined after undefine"; }
for ((i = 0; i < 40; i++)); do
  kill -0 "$QPID" 2>/dev/null || break
  sleep 0.25
done
kill -0 "$QPID" 2>/dev/null && { show; fail "QEMU $QPID still runs after virsh destroy"; }
log "domain destroyed and undefined"
[[ -n ${RC_VERBOSE:-} ]] && show

# --- the daemon: saw two front-ends come and go, is still serving
for ((i = 0; i < 40; i++)); do
  [[ $(grep -c 'connection #2 closed' "$RC_TMP/daemon.log") -ge 1 ]] && break
  sleep 0.25
done
for n in 1 2; do
  grep -q "front-end connected (#$n)" "$RC_TMP/daemon.log" || { show; fail "daemon did not log front-end #$n connecting"; }
  grep -q "connection #$n closed" "$RC_TMP/daemon.log" || { show; fail "daemon did not log connection #$n closing"; }
done
kill -0 "$PID_D" 2>/dev/null || { show; fail "daemon died with the domain"; }
[[ -S $SOCK ]] || { show; fail "daemon no longer listens on $SOCK"; }
# Still serving: a third front-end, reduced to the first message of the
# protocol, gets its answer.
timeout -k 5 10 python3 - "$SOCK" >"$RC_TMP/probe.log" 2>&1 <<'PY' ||
import socket, struct, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.sendall(struct.pack("<III", 1, 1, 0))  # GET_FEATURES, version 1, no payload
b = b""
while len(b) < 20:
    c = s.recv(20 - len(b))
    if not c:
        sys.exit("connection closed after %d bytes" % len(b))
    b += c
req, flags, size, feats = struct.unpack("<IIIQ", b)
print("reply: request %d flags %#x size %d features %#x" % (req, flags, size, feats))
# A reply to GET_FEATURES, with VIRTIO_F_VERSION_1 (32) and
# VHOST_USER_F_PROTOCOL_FEATURES (30).
ok = req == 1 and flags & 4 and size == 8 and feats >> 32 & 1 and feats >> 30 & 1
sys.exit(0 if ok else "unexpected reply")
PY
  { cat "$RC_TMP/probe.log"; show; fail "the daemon does not answer a new front-end after the domain is gone"; }
log "daemon answers a new front-end: $(cat "$RC_TMP/probe.log")"
for ((i = 0; i < 40; i++)); do
  grep -q 'connection #3 closed' "$RC_TMP/daemon.log" && break
  sleep 0.25
done
grep -q 'connection #3 closed' "$RC_TMP/daemon.log" || { show; fail "daemon did not log the probe's connection closing"; }
grep -E 'front-end (connected|disconnected)|connection #[0-9]+ closed' "$RC_TMP/daemon.log"
rc_stop_daemon "$PID_D" "$RC_TMP/daemon.log"
[[ -e $SOCK ]] && fail "daemon left its socket behind"

# --- host-side check of the image
cmp -i 0:1048576 -n 1048576 "$RC_TMP/extra/pattern" "$DISK" ||
  fail "the image does not hold the guest's pattern at offset 1 MiB"
log "host: the image holds the pattern"
echo "PASS: libvirt 9.0 vhostuser disk (define, start, guest poweroff, start, destroy, undefine)"
