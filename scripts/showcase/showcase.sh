#!/usr/bin/env bash
# The libvirtio showcase (run by scripts/demo.sh after the build): a Linux
# guest in QEMU whose disk and network card are libvirtio devices served by
# `vhost-user-device` daemons, and a console shown through User-mode Linux
# (QEMU 7.2 has no vhost-user console front-end).
#
#   0. host: Debian packages, Debian's kernel (cached), a busybox initramfs
#   1. host: a 64 MiB ext4 image (mkfs.ext4 -d) holding welcome.txt and the
#      sha256 of a payload the host will serve over the network
#   2. daemons: blk on the image; net on a TAP it creates inside a network
#      namespace made here, where busybox httpd and nc listen for the guest
#   3. QEMU (KVM if a probe boot works, TCG otherwise) boots Debian's kernel:
#      the guest mounts the disk, pings the host, downloads the payload over
#      HTTP and checks it against the disk, sends random data with nc and
#      gets a receipt (size + sha256) from the host, writes a file on the
#      disk, unmounts it and powers off
#   4. host: stops the daemons, reads the guest's file out of the image
#      (debugfs), e2fsck -fn, compares what nc received with the file
#   5. console: UML attaches a vhost-user virtio-console; the host sends
#      shell commands through the daemon's console socket, shows the replies
#   6. summary
#
# usage: showcase.sh PATH/TO/vhost-user-device CACHE_DIR
# Exit status 0 = every step passed, 1 = a step failed (with the reason),
# 77 = cannot run here (a package or a host facility is missing; printed).
# Every step is bounded by a timeout; processes, the network namespace and
# the temp dir go away on any exit (RC_KEEP_TMP=1 keeps the temp dir of a
# failed run). SHOWCASE_NO_CONSOLE=1 leaves the UML console part out.
RC_COMMON=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../glue/vhost-user/tests/real_clients" && pwd)/common.sh
SC_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../../glue/vhost-user/tests/real_clients/common.sh
source "$RC_COMMON"

T0_NS=$(date +%s%N)
step() {
  local ms=$((($(date +%s%N) - T0_NS) / 1000000))
  printf '\n[%3d.%ds] ==> %s\n' $((ms / 1000)) $((ms % 1000 / 100)) "$*"
}
info() { echo "           $*"; }

[[ $(id -u) == 0 ]] || skip "the showcase needs root (network namespace, TAP interface, apt-get)"
rc_init "$@"

# The network namespace is not a process: remove it on every exit too.
NS=
sc_cleanup() {
  local rc=$?
  [[ -n $NS ]] && ip netns del "$NS" 2>/dev/null
  if [[ $rc != 0 && $rc != 77 ]]; then
    echo "showcase: stopped (exit status $rc); its processes, network namespace and temp dir are removed"
  fi
  (exit "$rc")
  rc_cleanup
}
trap sc_cleanup EXIT
trap 'echo; echo "FAIL: interrupted (SIGINT)"; exit 130' INT
trap 'echo; echo "FAIL: terminated (SIGTERM)"; exit 143' TERM

HOST_IP=10.77.0.1 GUEST_IP=10.77.0.2 HTTP_PORT=8080 NC_PORT=5001
MAC=52:54:00:4c:56:01 TAP=vudemo0
UPLOAD_BYTES=$((1024 * 1024)) PAYLOAD_BYTES=$((1024 * 1024))
DAEMON_SECS=240 # backstop for every daemon and server started here

# --- 0. what is needed --------------------------------------------------------
echo "libvirtio showcase: a Linux guest whose disk and network card are libvirtio"
echo "devices, served over vhost-user by the vhost-user-device daemon (and a console)"
step "0. host: packages, Debian's kernel, the guest's initramfs"
rc_need_pkgs qemu-system-x86 busybox-static e2fsprogs iproute2
QEMU=$(command -v qemu-system-x86_64) || skip "qemu-system-x86_64 missing after install"
rc_get_kernel
command -v ip >/dev/null || skip "no ip command (iproute2)"
[[ -c /dev/net/tun ]] || skip "no /dev/net/tun: cannot create the TAP interface"
QEMU_VER=$("$QEMU" --version | head -1 | grep -o '[0-9][0-9.]*' | head -1)
info "QEMU: $("$QEMU" --version | head -1)"
info "guest kernel: Debian $KVER ($QEMU_KERNEL)"

mkdir -p "$RC_TMP/extra"
cat >"$RC_TMP/extra/demo.conf" <<EOF
HOST_IP=$HOST_IP
GUEST_IP=$GUEST_IP
HTTP_PORT=$HTTP_PORT
NC_PORT=$NC_PORT
UPLOAD_BYTES=$UPLOAD_BYTES
EOF
rc_write_init "$RC_TMP/init"
# crc32c_generic: ext4 asks the crypto API for crc32c by name, which no
# module dependency pulls in.
rc_initramfs "$RC_TMP/initrd" "$RC_TMP/init" "$SC_DIR/guest.sh" \
  "virtio_pci virtio_blk virtio_net crc32c_generic ext4"
info "initramfs: busybox + virtio_pci, virtio_blk, virtio_net, ext4 ($(du -k "$RC_TMP/initrd" | cut -f1) KiB)"

# --- 1. the disk --------------------------------------------------------------
step "1. host: building the guest's disk, a 64 MiB ext4 image (mkfs.ext4)"
mkdir -p "$RC_TMP/disk-content" "$RC_TMP/www"
head -c "$PAYLOAD_BYTES" /dev/urandom >"$RC_TMP/payload.bin"
PAYLOAD_SHA=$(sha256sum "$RC_TMP/payload.bin" | cut -d' ' -f1)
echo "$PAYLOAD_SHA" >"$RC_TMP/disk-content/payload.sha256"
echo "Hello guest: this ext4 file system was made on the host at $(date -u '+%H:%M:%S UTC')." \
  >"$RC_TMP/disk-content/welcome.txt"
DISK=$RC_TMP/disk.img
timeout 60 mkfs.ext4 -q -F -L libvirtio-demo -d "$RC_TMP/disk-content" "$DISK" 64M \
  >"$RC_TMP/mkfs.log" 2>&1 || { cat "$RC_TMP/mkfs.log"; fail "mkfs.ext4 failed"; }
info "$DISK: welcome.txt, payload.sha256 (of the 1 MiB payload the host serves over the network)"

# --- 2. the daemons -----------------------------------------------------------
step "2. host: starting the vhost-user-device daemons (libvirtio)"
rc_bg daemon_blk timeout -k 5 "$DAEMON_SECS" "$DAEMON" --socket "$RC_TMP/blk.sock" \
  --device "blk,path=$DISK,serial=libvirtio-demo"
PID_BLK=$RC_LAST_PID
info "blk: vhost-user-device --socket blk.sock --device blk,path=disk.img,serial=libvirtio-demo"

NS=vudemo-$$
ip netns add "$NS" || skip "cannot create a network namespace (ip netns add $NS)"
ip -n "$NS" link set lo up
rc_bg daemon_net ip netns exec "$NS" timeout -k 5 "$DAEMON_SECS" "$DAEMON" \
  --socket "$RC_TMP/net.sock" --device "net,backend=tap,ifname=$TAP,mac=$MAC"
PID_NET=$RC_LAST_PID
info "net: ip netns exec $NS vhost-user-device --socket net.sock --device net,backend=tap,ifname=$TAP,mac=$MAC"
rc_wait_socket "$RC_TMP/blk.sock" || { cat "$RC_TMP/daemon_blk.log"; fail "the blk daemon did not listen"; }
rc_wait_socket "$RC_TMP/net.sock" || { cat "$RC_TMP/daemon_net.log"; fail "the net daemon did not listen"; }
ip -n "$NS" link show "$TAP" >/dev/null 2>&1 ||
  { cat "$RC_TMP/daemon_net.log"; fail "the net daemon did not create TAP $TAP"; }
if ! ip -n "$NS" addr add "$HOST_IP/24" dev "$TAP" || ! ip -n "$NS" link set "$TAP" up; then
  fail "configuring $TAP in $NS failed"
fi
info "network namespace $NS: TAP $TAP = $HOST_IP/24 (the guest will be $GUEST_IP)"
# host -> guest: busybox httpd serves payload.bin. guest -> host: busybox nc
# listens (fed a stdin that never ends: it quits when its stdin does), and
# the CGI "receipt" waits until QUERY_STRING bytes arrived and answers with
# their size and sha256.
mkdir -p "$RC_TMP/www/cgi-bin"
cp "$RC_TMP/payload.bin" "$RC_TMP/www/payload.bin"
cat >"$RC_TMP/www/cgi-bin/receipt" <<CGI
#!/bin/sh
f="$RC_TMP/upload.bin"
want=\${QUERY_STRING%%[!0-9]*}
i=0
while [ "\$(stat -c %s "\$f" 2>/dev/null || echo 0)" -lt "\${want:-0}" ] && [ \$i -lt 200 ]; do
  sleep 0.1
  i=\$((i + 1))
done
printf 'Content-Type: text/plain\r\n\r\n'
echo "\$(wc -c <"\$f") \$(sha256sum <"\$f" | cut -d' ' -f1)"
CGI
chmod +x "$RC_TMP/www/cgi-bin/receipt"
rc_bg httpd ip netns exec "$NS" timeout -k 5 "$DAEMON_SECS" \
  busybox httpd -f -p "$HOST_IP:$HTTP_PORT" -h "$RC_TMP/www"
rc_bg nc_listen ip netns exec "$NS" timeout -k 5 "$DAEMON_SECS" \
  sh -c 'sleep 100000 | busybox nc -l -p "$1" >"$2"' sh "$NC_PORT" "$RC_TMP/upload.bin"
info "in $NS: busybox httpd on $HOST_IP:$HTTP_PORT (payload.bin, /cgi-bin/receipt), busybox nc -l -p $NC_PORT"

# --- 3. the guest -------------------------------------------------------------
rc_qemu_pick_accel "$QEMU"
step "3. QEMU $QEMU_VER boots Debian's Linux $KVER (accel=$QEMU_ACCEL)"
info "accelerator: $QEMU_ACCEL_WHY"
info "vhost-user-blk-pci (packed=on) -> blk.sock; virtio-net-pci with -netdev vhost-user -> net.sock"
info "guest RAM is a shared memfd: the daemons serve its rings directly"
info "(the guest's own serial console is QEMU's; only 'demo:' lines are shown)"
CONSOLE=$RC_TMP/console.log
: >"$CONSOLE"
# Shows the guest's progress as it happens. \r: the serial console's.
setsid bash -c 'exec tail -s 0.2 -n +1 -F "$1" 2>/dev/null |
  sed -u -n -e "s/\r\$//" -e "s/^demo: /   guest | /p"' sh "$CONSOLE" &
RC_PIDS+=("$!")
TAIL_PID=$!
G0=$SECONDS
rc_bg qemu timeout -k 5 150 "$QEMU" -machine "q35,accel=$QEMU_ACCEL" -cpu "$QEMU_CPU" \
  -smp 1 -m 384M \
  -object memory-backend-memfd,id=mem,size=384M,share=on -numa node,memdev=mem \
  -nodefaults -no-user-config -display none -no-reboot \
  -serial "file:$CONSOLE" \
  -kernel "$QEMU_KERNEL" -initrd "$RC_TMP/initrd" \
  -append "console=ttyS0 panic=-1 quiet loglevel=3" \
  -chardev socket,id=blk0,path="$RC_TMP/blk.sock" \
  -device vhost-user-blk-pci,chardev=blk0,num-queues=1,packed=on \
  -chardev socket,id=net0,path="$RC_TMP/net.sock" \
  -netdev vhost-user,id=net0,chardev=net0 \
  -device virtio-net-pci,netdev=net0,mac="$MAC",vectors=0
QEMU_PID=$RC_LAST_PID
# 2>/dev/null: bash's report of a QEMU killed by a signal (said below).
rc_watch "$QEMU_PID" 120 "$RC_FATAL_RE" "$RC_TMP/qemu.log" "$RC_TMP/daemon_blk.log" \
  "$RC_TMP/daemon_net.log" 2>/dev/null
qrc=$?
GUEST_SECS=$((SECONDS - G0))
sleep 0.5
kill -TERM -- "-$TAIL_PID" 2>/dev/null
show_guest() {
  echo "--- QEMU ($RC_TMP/qemu.log)"; cat "$RC_TMP/qemu.log"
  echo "--- guest serial console (last 40 lines)"; tail -40 "$CONSOLE" | tr -d '\r'
  echo "--- blk daemon"; cat "$RC_TMP/daemon_blk.log"
  echo "--- net daemon"; cat "$RC_TMP/daemon_net.log"
}
[[ $qrc == 124 ]] && { show_guest; fail "the guest did not power off within 120 s"; }
[[ $qrc == 125 ]] && { show_guest; fail "stopped the guest early: $RC_WATCH_HIT"; }
if [[ $qrc != 0 ]]; then
  show_guest
  ((qrc > 128)) && fail "QEMU was killed by SIG$(kill -l $((qrc - 128)) 2>/dev/null) (status $qrc)"
  fail "QEMU exited with status $qrc"
fi
grep -q '^RC-RESULT: OK' <(tr -d '\r' <"$CONSOLE") ||
  { show_guest; fail "the guest reported: $(tr -d '\r' <"$CONSOLE" | grep RC-RESULT || echo 'no result')"; }
[[ -n ${RC_VERBOSE:-} ]] && show_guest

# --- 4. the host checks -------------------------------------------------------
step "4. host: the guest powered off after ${GUEST_SECS} s (QEMU exit 0); checking its work"
rc_stop_daemon "$PID_BLK" "$RC_TMP/daemon_blk.log"
rc_stop_daemon "$PID_NET" "$RC_TMP/daemon_net.log"
info "daemons stopped cleanly on SIGTERM, no protocol error logged"
FROM_GUEST=$(timeout 30 debugfs -R "cat /from-guest.txt" "$DISK" 2>/dev/null)
[[ -n $FROM_GUEST ]] || fail "the ext4 image has no /from-guest.txt"
info "debugfs -R 'cat /from-guest.txt' disk.img:"
sed 's/^/             | /' <<<"$FROM_GUEST"
timeout 60 e2fsck -fn "$DISK" >"$RC_TMP/fsck.log" 2>&1 ||
  { cat "$RC_TMP/fsck.log"; fail "e2fsck -fn found the guest's file system damaged"; }
info "e2fsck -fn disk.img: clean ($(tail -1 "$RC_TMP/fsck.log" | sed 's/^[^:]*: //'))"
grep -q "payload received over the network: sha256 $PAYLOAD_SHA" <<<"$FROM_GUEST" ||
  fail "the guest's file does not record the payload's sha256 $PAYLOAD_SHA"
want_up=$(sed -n 's/^upload sent to the host: .* sha256 \([0-9a-f]*\),.*/\1/p' <<<"$FROM_GUEST")
got_up=$(sha256sum "$RC_TMP/upload.bin" | cut -d' ' -f1)
got_bytes=$(stat -c %s "$RC_TMP/upload.bin")
[[ -n $want_up && $got_up == "$want_up" ]] ||
  fail "the host received $got_bytes bytes with sha256 $got_up; the guest wrote on its disk that it sent $want_up"
info "the $got_bytes bytes the host's nc received have the sha256 the guest wrote on its disk"

# --- 5. the console -----------------------------------------------------------
CONSOLE_RESULT="left out (SHOWCASE_NO_CONSOLE=1)"
sc_console() {
  step "5. console: QEMU 7.2 has no vhost-user console front-end (its virtio-console is"
  info "   its own virtio-serial), so User-mode Linux drives libvirtio's console instead"
  # A console that cannot be had here is reported, not fatal.
  if ! (rc_need_pkgs user-mode-linux socat); then
    CONSOLE_RESULT="left out: user-mode-linux or socat cannot be installed (see SKIP above)"
    info "$CONSOLE_RESULT"
    return 0
  fi
  rc_uml_prepare
  local mods
  mods=$(rc_mod_closure "$UML_KMODS" virtio_console | sed "s|^|$UML_KMODS/|" | tr '\n' ' ')
  [[ -n $mods ]] || skip "UML $UML_VER has no virtio_console module"
  sed "s|@MODS@|$mods|" "$SC_DIR/uml_console_init.sh" >"$RC_TMP/uml-init"
  chmod +x "$RC_TMP/uml-init"
  # UML 6.1 cannot drive packed rings (machine.md): split only; its rings
  # have 256 entries, more than the console's default maximum.
  rc_bg daemon_con timeout -k 5 60 "$DAEMON" --socket "$RC_TMP/con.sock" --no-packed \
    --device "console,backend=socket=$RC_TMP/con-host.sock,queue-size=256"
  local pid_con=$RC_LAST_PID
  info "console: vhost-user-device --socket con.sock --no-packed --device console,backend=socket=con-host.sock,queue-size=256"
  rc_wait_socket "$RC_TMP/con.sock" || { cat "$RC_TMP/daemon_con.log"; fail "the console daemon did not listen"; }
  rc_wait_socket "$RC_TMP/con-host.sock" || { cat "$RC_TMP/daemon_con.log"; fail "no console socket con-host.sock"; }
  # The host's end of the console: socat on the daemon's console socket.
  coproc CON { exec timeout -k 2 60 socat - "UNIX-CONNECT:$RC_TMP/con-host.sock" 2>"$RC_TMP/socat.log"; }
  RC_PIDS+=("$CON_PID")
  local con_in=${CON[1]} con_out=${CON[0]}
  info "host end: socat - UNIX-CONNECT:con-host.sock"
  rc_bg uml env TMPDIR=/dev/shm "${UML_WRAP[@]}" "$UML" mem=128M \
    root=/dev/root rootfstype=hostfs rootflags=/ ro \
    init="$RC_TMP/uml-init" con=null con0=null,fd:1 \
    virtio_uml.device="$RC_TMP/con.sock:3" "${UML_EXTRA[@]}"
  local uml_pid=$RC_LAST_PID
  info "UML $UML_VER: linux.uml ... virtio_uml.device=con.sock:3 (3 = virtio-console)"
  show_uml() {
    echo "--- UML ($RC_TMP/uml.log)"; tail -40 "$RC_TMP/uml.log"
    echo "--- console daemon"; cat "$RC_TMP/daemon_con.log"
  }
  # Reads console lines until one matches $1 (each shown), 20 s at most.
  local line
  con_expect() {
    local deadline=$((SECONDS + 20))
    while ((SECONDS < deadline)); do
      if IFS= read -r -t 1 line <&"$con_out"; then
        line=${line%$'\r'}
        [[ $line =~ $1 ]] && return 0
        echo "   guest | $line"
      elif ! kill -0 "$CON_PID" 2>/dev/null; then
        return 1
      fi
    done
    return 1
  }
  con_expect '^hello from ' || { show_uml; fail "no greeting from the UML guest on its console"; }
  echo "   guest | $line"
  local cmd n=0
  for cmd in 'uname -sr' 'cat /sys/bus/virtio/devices/virtio0/device   # 0x0003 = console' \
             'echo "6 x 7 = $((6 * 7))"'; do
    echo "   host> | $cmd"
    printf '%s\necho @@done\n' "$cmd" >&"$con_in"
    con_expect '^@@done$' || { show_uml; fail "no answer on the console to: $cmd"; }
    n=$((n + 1))
  done
  echo "   host> | exit"
  printf 'exit\n' >&"$con_in"
  rc_watch "$uml_pid" 20 "$RC_FATAL_RE|Kernel panic|ptrace set fp regs failed" "$RC_TMP/uml.log" "$RC_TMP/daemon_con.log"
  local urc=$?
  [[ $urc == 0 ]] || { show_uml; fail "UML did not power off cleanly (status $urc)"; }
  exec {con_in}>&- {con_out}<&-
  rc_stop_daemon "$pid_con" "$RC_TMP/daemon_con.log"
  CONSOLE_RESULT="User-mode Linux $UML_VER: greeting + $n shell commands over /dev/hvc0"
  info "UML powered off; console daemon stopped cleanly"
}
if [[ -z ${SHOWCASE_NO_CONSOLE:-} ]]; then
  sc_console
fi

# --- 6. summary ---------------------------------------------------------------
step "6. summary: every device below was a libvirtio device behind vhost-user-device"
guest_line() { tr -d '\r' <"$CONSOLE" | sed -n "s/^demo: $1//p" | head -1; }
cat <<EOF
           disk     virtio-blk over vhost-user, QEMU $QEMU_VER ($QEMU_ACCEL), io_uring on a 64 MiB ext4 image:
                    the guest mounted it, read welcome.txt, wrote from-guest.txt; the host read it back (debugfs), e2fsck clean
           network  virtio-net over vhost-user on a TAP in netns $NS:
                    $(guest_line '\[net\]  ping ' | sed 's/^[^:]*: //'); 1 MiB host -> guest (HTTP), 1 MiB guest -> host (nc), sha256 verified both ends
           console  $CONSOLE_RESULT
           guest    Debian Linux $KVER booted, worked and powered off in ${GUEST_SECS} s
           total    $((SECONDS - RC_T0)) s for the showcase
EOF
echo
echo "PASS: libvirtio showcase"
