#!/usr/bin/env bash
# rc-timeout: 300
# Real client: User-mode Linux 6.1 attaches vhost-user-device as a
# virtio-console device (virtio_uml.device=SOCKET:3) and runs Linux's real
# virtio_console driver (hvc0) at native speed, host / as a read-only
# hostfs root. The daemon serves the port with its Unix-socket backend
# (backend=socket=PATH); a small python3 client on the host is the other
# end. Checked, both directions:
#   guest -> host: the guest writes a marker line and 96 KiB of random data
#     (base64, bracketed by markers) to /dev/hvc0; the host decodes it and
#     compares its sha256;
#   host -> guest: the host sends 96 KiB (base64 lines, then END); the
#     guest reads /dev/hvc0 (echo off), decodes and compares the sha256, and
#     reports it back over hvc0, which the host checks too.
# The daemon runs with --no_packed (UML 6.1 cannot drive packed rings).
#
# usage: uml_console.sh PATH/TO/vhost-user-device CACHE_DIR
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
rc_init "$@"

rc_need_pkgs user-mode-linux busybox-static python3
rc_uml_prepare
MODS=$(rc_mod_closure "$UML_KMODS" virtio_console | sed "s|^|$UML_KMODS/|" | tr '\n' ' ')
[[ -n $MODS ]] || skip "UML $UML_VER has no virtio_console module"

BLOB=$((96 * 1024))
head -c "$BLOB" /dev/urandom >"$RC_TMP/blob_g"   # guest -> host (read over hostfs)
head -c "$BLOB" /dev/urandom >"$RC_TMP/blob_h"   # host -> guest
SHA_G=$(sha256sum <"$RC_TMP/blob_g" | cut -d' ' -f1)
SHA_H=$(sha256sum <"$RC_TMP/blob_h" | cut -d' ' -f1)
TOKEN=hello-from-guest-$$-$RANDOM

cat >"$RC_TMP/init" <<EOF2
#!/bin/busybox sh
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
bb=/bin/busybox
\$bb mount -t proc proc /proc
\$bb mount -t sysfs sys /sys
\$bb mount -t devtmpfs dev /dev 2>/dev/null
\$bb mount -t tmpfs tmp /mnt
RESULT=OK
bad() { echo "guest: FAIL: \$*"; RESULT="FAIL (\$*)"; }
run() {
for m in $MODS; do \$bb insmod \$m || bad "insmod \$m"; done
i=0; while [ ! -c /dev/hvc0 ] && [ \$i -lt 100 ]; do \$bb sleep 0.1; i=\$((i+1)); done
[ -c /dev/hvc0 ] || { bad "/dev/hvc0 never appeared"; return; }
[ -e /sys/bus/virtio/drivers/virtio_console/virtio0 ] || bad "virtio0 is not bound to virtio_console"
p=\$(\$bb cut -c35 /sys/bus/virtio/devices/virtio0/features)
echo "guest: hvc0 up on virtio_console, packed=\$p"
[ "\$p" = 0 ] || bad "packed ring negotiated (UML 6.1 cannot drive it)"
exec 3<>/dev/hvc0
\$bb stty -F /dev/hvc0 -echo -onlcr || bad "stty"
{ echo "$TOKEN"; echo G2H-BEGIN; \$bb base64 $RC_TMP/blob_g; echo G2H-END; } >&3
echo "guest: wrote token and blob_g to hvc0"
: >/mnt/in.b64
while IFS= read -r line <&3; do
  case "\$line" in END*) break ;; esac
  echo "\$line" >>/mnt/in.b64
done
\$bb base64 -d /mnt/in.b64 >/mnt/in || bad "base64 -d of the host's data"
got=\$(\$bb sha256sum </mnt/in | \$bb cut -d' ' -f1)
echo "guest: read \$(\$bb stat -c %s /mnt/in) bytes from hvc0, sha256 \$got"
[ "\$got" = "$SHA_H" ] || bad "data from the host differs (sha256)"
echo "H2G-SHA \$got" >&3
# Give the host time to read it before powering off (the host checks it).
\$bb sleep 2
exec 3<&-
}
run
echo "RC-RESULT: \$RESULT"
\$bb sync
\$bb poweroff -f
EOF2
chmod +x "$RC_TMP/init"

cat >"$RC_TMP/host.py" <<'PY'
import base64, hashlib, socket, sys, time
path, token, sha_g, blob_h, sha_h = sys.argv[1:6]
T0 = time.monotonic()
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
for _ in range(100):
    try:
        s.connect(path)
        break
    except OSError:
        time.sleep(0.05)
else:
    sys.exit("host: cannot connect to the console socket")
s.settimeout(100)
buf = b""
def until(marker):
    global buf
    while marker not in buf:
        d = s.recv(65536)
        if not d:
            sys.exit("host: console socket closed before %r (have %d bytes: %r)" % (marker, len(buf), buf[-300:]))
        buf += d
try:
    until(b"G2H-END")
except socket.timeout:
    sys.exit("host: timed out waiting for the guest's data (have %d bytes: %r)" % (len(buf), buf[:200]))
text = buf.replace(b"\r", b"")
if token.encode() not in text:
    sys.exit("host: token %s not seen" % token)
print("host: [%.1fs] saw the guest's token" % (time.monotonic() - T0), flush=True)
body = text.split(b"G2H-BEGIN\n", 1)[1].split(b"G2H-END", 1)[0]
got = hashlib.sha256(base64.b64decode(body)).hexdigest()
if got != sha_g:
    sys.exit("host: guest -> host data differs: sha256 %s != %s" % (got, sha_g))
print("host: [%.1fs] guest -> host %d bytes verified" % ((time.monotonic() - T0,) + (len(base64.b64decode(body)),)), flush=True)
buf = b""
data = base64.encodebytes(open(blob_h, "rb").read()) + b"END\n"
s.sendall(data)
print("host: [%.1fs] sent %d bytes of base64" % ((time.monotonic() - T0,) + (len(data),)), flush=True)
try:
    until(b"H2G-SHA ")
    until(b"\n")
except socket.timeout:
    sys.exit("host: timed out waiting for the guest's checksum (got %r)" % buf[-300:])
line = buf.split(b"H2G-SHA ", 1)[1].split(b"\n", 1)[0].strip().decode()
if line != sha_h:
    sys.exit("host: guest reports sha256 %s, sent %s" % (line, sha_h))
print("host: [%.1fs] guest confirmed the host -> guest data" % (time.monotonic() - T0), flush=True)

PY

SOCK=$RC_TMP/console.sock CSOCK=$RC_TMP/hvc0.sock
rc_bg daemon timeout -k 5 120 "$DAEMON" --socket "$SOCK" --no_packed \
  --device "console,backend=socket=$CSOCK"
DPID=$RC_LAST_PID
rc_wait_socket "$SOCK" || { cat "$RC_TMP/daemon.log"; fail "daemon did not listen"; }
rc_wait_socket "$CSOCK" || { cat "$RC_TMP/daemon.log"; fail "console socket $CSOCK never appeared"; }
rc_bg host timeout 150 python3 "$RC_TMP/host.py" "$CSOCK" "$TOKEN" "$SHA_G" "$RC_TMP/blob_h" "$SHA_H"
HPID=$RC_LAST_PID

log "booting UML $UML_VER"
rc_bg uml env TMPDIR=/dev/shm "${UML_WRAP[@]}" "$UML" mem=256M \
  root=/dev/root rootfstype=hostfs rootflags=/ ro \
  init="$RC_TMP/init" con=null con0=null,fd:1 \
  virtio_uml.device="$SOCK:3" "${UML_EXTRA[@]}"
rc_watch "$RC_LAST_PID" 120 "$RC_FATAL_RE|Kernel panic|ptrace set fp regs failed" "$RC_TMP/uml.log" "$RC_TMP/daemon.log"
urc=$?
log "UML exited with $urc"
show() {
  echo "--- UML console"; tail -60 "$RC_TMP/uml.log"
  echo "--- host client"; cat "$RC_TMP/host.log"
  echo "--- daemon"; cat "$RC_TMP/daemon.log"
}
[[ $urc == 124 ]] && { show; fail "UML did not power off within 120 s"; }
[[ $urc == 125 ]] && { show; fail "stopped UML early: $RC_WATCH_HIT"; }
wait "$HPID"; hrc=$?
grep 'guest:' "$RC_TMP/uml.log"; cat "$RC_TMP/host.log"
[[ -n ${RC_VERBOSE:-} ]] && show
grep -q '^RC-RESULT: OK' "$RC_TMP/uml.log" ||
  { show; fail "guest: $(grep RC-RESULT "$RC_TMP/uml.log" || echo 'no result')"; }
[[ $hrc == 0 ]] || { show; fail "host side of the console failed (exit $hrc)"; }
rc_stop_daemon "$DPID" "$RC_TMP/daemon.log"
[[ -e $SOCK || -e $CSOCK ]] && fail "daemon left a socket behind"
echo "PASS: user-mode-linux virtio_console (hvc0) over vhost-user, socket backend: 96 KiB each way verified"
