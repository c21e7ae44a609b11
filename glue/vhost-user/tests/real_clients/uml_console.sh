#!/usr/bin/env bash
# rc-timeout: 300
# Real client: User-mode Linux 6.1 attaches vhost-user-device as a
# virtio-console device (virtio_uml.device=SOCKET:3) and runs Linux's real
# virtio_console driver (hvc0) at native speed, host / as a read-only
# hostfs root. The daemon serves the port with its Unix-socket backend
# (backend=socket=PATH), or with UML_CONSOLE_BACKEND=pty its pty backend
# (uml_console_pty.sh); a small python3 client on the host is the other
# end. Checked, in this order:
#   guest -> host: the guest writes a marker line and 96 KiB of random data
#     (base64, bracketed by markers) to /dev/hvc0; the host decodes it and
#     compares its sha256;
#   host -> guest: the host sends 96 KiB (base64 lines, then END); the
#     guest reads /dev/hvc0 (echo off), decodes and compares the sha256, and
#     reports it back over hvc0, which the host checks too;
#   host hangs up: the host closes its end; a short-lived writer (open,
#     write one line, close) sends a line, and the guest must receive it
#     while nobody holds the host side open (the host watches the guest's
#     console log for it); then the host opens its end again;
#   burst: 1.5 MB in 1000-byte lines, one send each, while the guest sleeps,
#     so the device uses up every receive buffer the driver posted and has
#     to wait for the driver to recycle them; the guest checks the sha256;
#   ping-pong: 20 rounds of one line each way, then a last line each way,
#     each with a 30 s deadline.
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
ROUNDS=${UML_CONSOLE_ROUNDS:-20}
BACKEND=${UML_CONSOLE_BACKEND:-socket}  # or pty
[[ $BACKEND == socket || $BACKEND == pty ]] || fail "UML_CONSOLE_BACKEND=$BACKEND: socket or pty"
# host -> guest burst: BURST_LINES lines of 1000 bytes, sent one by one.
BURST_LINES=${UML_CONSOLE_BURST_LINES:-1500}
python3 -c '
import sys
for i in range(int(sys.argv[1])):
    sys.stdout.write(("B%06d " % i).ljust(999, "abcdefghijklmnopqrstuvwxyz"[i % 26]) + "\n")
' "$BURST_LINES" >"$RC_TMP/burst"
BURST_BYTES=$(stat -c %s "$RC_TMP/burst")
SHA_B=$(sha256sum <"$RC_TMP/burst" | cut -d' ' -f1)

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
IFS= read -r line <&3 || bad "hvc0 read of the short-lived writer's line failed"
[ "\$line" = "AGAIN" ] || bad "short-lived writer's line: got '\$line'"
echo "guest: got the short-lived writer's line"
# A burst of lines, one send each, while the guest is not reading: the
# device fills every receive buffer the driver posted and has to wait for
# the driver to recycle them.
\$bb sleep 3
got=\$(\$bb head -c $BURST_BYTES <&3 | \$bb sha256sum | \$bb cut -d' ' -f1)
[ "\$got" = "$SHA_B" ] || bad "burst from the host differs (sha256 \$got)"
echo "guest: read the $BURST_BYTES-byte burst, sha256 \$got"
echo "BURST-SHA \$got" >&3
# After the bulk transfers: small lines both ways, each answered before the
# next is sent (the receive ring was drained and refilled by the bulk data).
n=0
while [ \$n -lt $ROUNDS ]; do
  IFS= read -r line <&3 || { bad "hvc0 read failed in round \$n"; break; }
  case "\$line" in "PING \$n"*) ;; *) bad "round \$n: got '\$line'"; break ;; esac
  echo "PONG \$n" >&3 || { bad "hvc0 write failed in round \$n"; break; }
  n=\$((n+1))
done
echo "guest: \$n ping-pong rounds done"
IFS= read -r line <&3 || bad "hvc0 read of the last line failed"
[ "\$line" = "LAST-H2G" ] || bad "last host line: got '\$line'"
echo "LAST-G2H" >&3 || bad "hvc0 write of the last line failed"
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
import base64, hashlib, os, select, socket, sys, time
path, token, sha_g, blob_h, sha_h, rounds, burst, sha_b, uml_log = sys.argv[1:10]
rounds = int(rounds)
T0 = time.monotonic()
def say(msg):
    print("host: [%.1fs] %s" % (time.monotonic() - T0, msg), flush=True)
class Pty:
    """The terminal side of the daemon's pty, with the socket calls used here."""
    def __init__(self, path):
        self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
        self.timeout = None
    def settimeout(self, t):
        self.timeout = t
    def recv(self, n):
        if not select.select([self.fd], [], [], self.timeout)[0]:
            raise socket.timeout()
        return os.read(self.fd, n)
    def sendall(self, data):
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view):]
    def close(self):
        os.close(self.fd)
def connect():
    if path.startswith("/dev/"):
        return Pty(path)
    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    for _ in range(100):
        try:
            c.connect(path)
            return c
        except OSError:
            time.sleep(0.05)
    sys.exit("host: cannot connect to the console socket")
s = connect()
s.settimeout(100)
buf = b""
def until(marker):
    global buf
    while marker not in buf:
        d = s.recv(65536)
        if not d:
            sys.exit("host: console closed before %r (have %d bytes: %r)" % (marker, len(buf), buf[-300:]))
        buf += d
def expect(marker, what):
    try:
        until(marker)
    except socket.timeout:
        sys.exit("host: [%.1fs] %s: %r not received within %s s (have %r)" % (time.monotonic() - T0, what, marker, s.timeout if isinstance(s, Pty) else s.gettimeout(), buf[-300:]))
def line_after(marker):
    """The rest of the line after marker; drops everything up to its end."""
    global buf
    expect(marker, marker.decode())
    expect(b"\n", marker.decode())
    rest = buf.split(marker, 1)[1]
    line, buf = rest.split(b"\n", 1)
    return line.strip().decode()

expect(b"G2H-END", "the guest's data")
text = buf.replace(b"\r", b"")
if token.encode() not in text:
    sys.exit("host: token %s not seen" % token)
say("saw the guest's token")
body = base64.b64decode(text.split(b"G2H-BEGIN\n", 1)[1].split(b"G2H-END", 1)[0])
if hashlib.sha256(body).hexdigest() != sha_g:
    sys.exit("host: guest -> host data differs: sha256 %s != %s" % (hashlib.sha256(body).hexdigest(), sha_g))
say("guest -> host %d bytes verified" % len(body))
buf = b""
data = base64.encodebytes(open(blob_h, "rb").read()) + b"END\n"
s.sendall(data)
say("sent %d bytes of base64" % len(data))
line = line_after(b"H2G-SHA ")
if line != sha_h:
    sys.exit("host: guest reports sha256 %s, sent %s" % (line, sha_h))
say("guest confirmed the host -> guest data")

# Hang up; a short-lived writer sends one line while nobody holds the host
# side open. The guest can only answer through its console log then.
s.close()
time.sleep(0.5)
w = connect()
w.sendall(b"AGAIN\n")
w.close()
deadline = time.monotonic() + 30
while b"guest: got the short-lived writer's line" not in open(uml_log, "rb").read():
    if time.monotonic() > deadline:
        sys.exit("host: [%.1fs] the guest did not get the short-lived writer's line within 30 s" % (time.monotonic() - T0))
    time.sleep(0.1)
say("the guest got the short-lived writer's line")
s = connect()
s.settimeout(30)
buf = b""

lines = open(burst, "rb").read().splitlines(keepends=True)
for l in lines:
    s.sendall(l)
say("sent the burst: %d lines" % len(lines))
line = line_after(b"BURST-SHA ")
if line != sha_b:
    sys.exit("host: guest reports burst sha256 %s, sent %s" % (line, sha_b))
say("guest confirmed the burst")
for i in range(rounds):
    s.sendall(b"PING %d\n" % i)
    expect(b"PONG %d\n" % i, "round %d" % i)
say("%d ping-pong rounds done" % rounds)
s.sendall(b"LAST-H2G\n")
expect(b"LAST-G2H\n", "last line")
say("last line each way delivered")
PY

SOCK=$RC_TMP/console.sock CSOCK=$RC_TMP/hvc0.sock
# The daemon's deadline is past UML's: a stalled guest shows as a stall. (A
# daemon that exits first breaks UML's connection: UML then logs
# "vu_interrupt: read returned 0" for its call fds and hvc0 fails with EIO,
# which hides the stall behind it.)
if [[ $BACKEND == pty ]]; then
  rc_bg daemon timeout -k 5 200 "$DAEMON" --socket "$SOCK" --no_packed \
    --device "console,backend=pty"
else
  rc_bg daemon timeout -k 5 200 "$DAEMON" --socket "$SOCK" --no_packed \
    --device "console,backend=socket=$CSOCK"
fi
DPID=$RC_LAST_PID
rc_wait_socket "$SOCK" || { cat "$RC_TMP/daemon.log"; fail "daemon did not listen"; }
if [[ $BACKEND == pty ]]; then
  CSOCK=$(sed -n 's/.*pty at \(\/dev\/pts\/[0-9]*\).*/\1/p' "$RC_TMP/daemon.log" | head -1)
  [[ -c $CSOCK ]] || { cat "$RC_TMP/daemon.log"; fail "no pty path in the daemon's log"; }
else
  rc_wait_socket "$CSOCK" || { cat "$RC_TMP/daemon.log"; fail "console socket $CSOCK never appeared"; }
fi
rc_bg host timeout 150 python3 "$RC_TMP/host.py" "$CSOCK" "$TOKEN" "$SHA_G" \
  "$RC_TMP/blob_h" "$SHA_H" "$ROUNDS" "$RC_TMP/burst" "$SHA_B" "$RC_TMP/uml.log"
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
[[ -e $SOCK ]] && fail "daemon left its vhost-user socket behind"
[[ $BACKEND == socket && -e $CSOCK ]] && fail "daemon left the console socket behind"
echo "PASS: user-mode-linux virtio_console (hvc0) over vhost-user, $BACKEND backend: 96 KiB each way, a line from a short-lived writer, a $BURST_BYTES-byte burst, $ROUNDS ping-pong rounds, verified"
