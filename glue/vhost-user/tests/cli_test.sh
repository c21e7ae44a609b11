#!/usr/bin/env bash
# vhost-user-device's command line: every way building the device can fail
# ends in one "vhost-user-device: ..." line naming the problem and exit
# status 2, never a crash (a half-built device used to segfault while it was
# destroyed: exit 139). --help succeeds; a second --device without a socket
# of its own is refused rather than silently replacing the first.
#
# usage: cli_test.sh PATH/TO/vhost-user-device
set -u
daemon=${1:?usage: cli_test.sh PATH/TO/vhost-user-device}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
img=$tmp/disk.img
truncate -s 1M "$img"
sock=$tmp/s.sock
fail=0
checks=0

# expect STATUS MESSAGE_SUBSTRING ARGS...: runs the daemon (it must exit
# by itself within 10 s) and checks its exit status and stderr.
expect() {
  local want=$1 msg=$2
  shift 2
  local rc=0
  timeout 10 "$daemon" "$@" >"$tmp/out" 2>"$tmp/err" || rc=$?
  checks=$((checks + 1))
  if [[ $rc != "$want" ]]; then
    echo "FAIL: exit status $rc, want $want: $*"
    sed 's/^/    /' "$tmp/err"
    fail=1
    return
  fi
  if [[ -n $msg ]] && ! grep -qF -- "$msg" "$tmp/err" "$tmp/out"; then
    echo "FAIL: no '$msg' in the output of: $*"
    sed 's/^/    /' "$tmp/err"
    fail=1
  fi
}

# A device spec that must be refused with MESSAGE.
bad() { expect 2 "$2" --socket "$sock" --device "$1"; }

# --- the command line itself ---
expect 0 "--device" --help
expect 0 "--socket" -h
expect 2 "--socket-path PATH (or --fd N, or socket activation) is required" --device rng
expect 2 "--device SPEC is required" --socket "$sock"
expect 2 "unexpected argument 'extra'" --socket "$sock" --device rng extra
expect 2 "2 devices and --socket-path, which names one socket" --socket "$sock" \
  --device rng --device "blk,path=$img"
expect 2 "--device rng: with 2 devices each names its own socket" \
  --device=rng --device="blk,path=$img,socket-path=$sock"
expect 2 "two devices on one socket" --device="rng,socket-path=$sock" \
  --device="blk,path=$img,socket-path=$sock"
expect 2 "socket= names a console's backend" --socket "$sock" \
  --device "blk,path=$img,socket=$sock"

# --- where the front-end comes from (QEMU's backend program conventions,
# systemd socket activation) and the socket's permissions ---
expect 2 "--socket is another name for --socket-path" --socket "$sock" \
  --socket-path "$tmp/other.sock" --device rng
expect 2 "--fd and --socket-path are incompatible" --fd 0 \
  --socket-path "$sock" --device rng
expect 2 "--fd=-2: not a file descriptor number" --fd=-2 --device rng
expect 2 "--fd=99: not an open file descriptor" --fd=99 --device rng
expect 2 "--fd=0: not a socket" --fd=0 --device rng
expect 2 "--client connects to --socket-path" --client --fd=0 --device rng
expect 2 "apply to a socket the daemon creates; with --client" --client \
  --socket-path "$sock" --socket-mode 0660 --device rng
expect 2 "apply to a socket the daemon creates; an inherited one" --fd=0 \
  --socket-group 0 --device rng
expect 2 "--socket-mode=0x1 is not an octal permission mode" \
  --socket-path "$sock" --socket-mode 0x1 --device rng
expect 2 "--socket-mode=0066: the owner needs read and write" \
  --socket-path "$sock" --socket-mode 0066 --device rng
expect 2 "--socket-mode=0600 gives group 0 no read and write" \
  --socket-path "$sock" --socket-mode 0600 --socket-group 0 --device rng
expect 2 "--socket-group=no-such-group-here: no such group" \
  --socket-path "$sock" --socket-group no-such-group-here --device rng
# LISTEN_FDS meant for another process (LISTEN_PID) is not ours...
LISTEN_FDS=1 LISTEN_PID=1 expect 2 "--socket-path PATH (or --fd N" --device rng
# ... but when ours (the daemon's pid: a shell that execs it) it must be
# usable.
activated() {
  local want=$1 fds=$2
  shift 2
  local rc=0
  LISTEN_FDS=$fds timeout 10 bash -c 'export LISTEN_PID=$$; exec "$@"' \
    activated "$daemon" "$@" >"$tmp/out" 2>"$tmp/err" 3</dev/null || rc=$?
  checks=$((checks + 1))
  if [[ $rc != 2 ]] || ! grep -qF -- "$want" "$tmp/err"; then
    echo "FAIL: LISTEN_FDS=$fds $*: exit $rc, want 2 and '$want'"
    sed 's/^/    /' "$tmp/err"
    fail=1
  fi
}
activated "LISTEN_FDS=x is not a number of sockets" x --device rng
activated "socket activation (LISTEN_FDS) fd 3: not a socket" 1 --device rng
expect 2 "--blk-file and --device both name the device" \
  --socket-path "$sock" --blk-file "$img" --device rng
expect 2 "--read-only goes with --blk-file" --socket-path "$sock" \
  --read-only --device rng
expect 2 "--print-capabilities needs a device type" --print-capabilities
expect 2 "--print-capabilities: 'scsi' names no device type" \
  --print-capabilities --device scsi
expect 0 '{"type": "rng", "features": []}' --print-capabilities --device rng
expect 0 '"type": "block"' --print-capabilities --blk-file "$img"

# --- logging ---
expect 2 "--log=file: not stderr, syslog or journald" --socket-path "$sock" \
  --log file --device rng
expect 2 "--log-level=verbose: not error, warning, info or debug" \
  --socket-path "$sock" --log-level verbose --device rng
if [[ ! -S /run/systemd/journal/socket ]]; then
  expect 2 "--log=journald: cannot reach the journal" --socket-path "$sock" \
    --log journald --device rng
fi

# --- parsing a spec ---
bad "" "--device SPEC is required"
bad ",a=b" "empty device type"
bad "blk,path" "'path' is not key=value"
bad "blk,=x" "'=x' is not key=value"
bad "blk,path=$img,path=$img" "'path' given twice"
bad "scsi" "unknown type 'scsi'"

# --- blk ---
bad "blk" "blk: needs path=FILE or backend=ram|null,size=BYTES"
bad "blk,path=$img,bogus=1" "unknown key 'bogus' for blk"
bad "blk,path=$img,readonly=maybe" "'readonly=maybe' is not on/off"
bad "blk,path=$img,direct=2" "'direct=2' is not on/off"
bad "blk,path=$img,packed=x" "'packed=x' is not on/off"
bad "blk,path=$img,num-queues=x" "'num-queues=x' is not a number"
bad "blk,path=$img,num-queues=65" "'num-queues=65' is not a number in 1..64"
bad "blk,path=$img,num-queues=0" "'num-queues=0' is not a number in 1..64"
bad "blk,path=$img,queues=2,num-queues=2" "'num-queues' and 'queues' are the same key"
bad "blk,path=$img,queue-size=0" "'queue-size=0' is not a number in 1..32768"
bad "blk,path=$img,queue-size=1" "queue_size 1 not in 2..32768"
bad "blk,path=$img,queue-size=32769" "not a number in 1..32768"
bad "blk,path=$img,serial=123456789012345678901" "longer than 20 bytes"
bad "blk,backend=file" "blk,backend=file: backend=file needs path="
bad "blk,path=$img,size=1M" "size= is for backend=ram or null"
bad "blk,path=$tmp/missing.img" "missing.img"
bad "blk,path=$tmp" ""
bad "blk,backend=ram,path=$img" "path= is for backend=file"
bad "blk,backend=ram" "backend=ram needs size="
bad "blk,backend=null" "backend=null needs size="
bad "blk,backend=ram,size=100" "capacity 100 is not a non-zero multiple"
bad "blk,backend=null,size=1Q" "'size=1Q' is not a number"
bad "blk,backend=tape,size=1M" "unknown backend 'tape'"

# --- net ---
bad "net,backend=" "unknown backend '' (loopback, tap, null, generator)"
bad "net,backend=ether" "unknown backend 'ether'"
bad "net,backend=null,mtu=10" "mtu 10 below 68"
bad "net,backend=null,mtu=65536" "'mtu=65536' is not a number"
bad "net,backend=null,queue-pairs=0" "'queue-pairs=0' is not a number in 1..256"
bad "net,backend=null,queue-pairs=257" "not a number in 1..256"
bad "net,backend=null,queue-pairs=2,ctrl-vq=off" "queue-pairs > 1 needs ctrl-vq=on"
bad "net,backend=null,queue-size=1" "not in 2..32768"
bad "net,backend=null,queue-size=0" "'queue-size=0' is not a number in 1..32768"
bad "net,backend=null,mac=01:02:03" "'mac=01:02:03' is not a MAC address xx:xx:xx:xx:xx:xx"
bad "net,backend=null,mac=01:02:03:04:05:zz" "is not a MAC address xx:xx:xx:xx:xx:xx"
bad "net,backend=null,ifname=x" "ifname= is for backend=tap"
bad "net,backend=null,frame-len=64" "frame-len= is for backend=generator"
bad "net,backend=generator,frame-len=99999" "'frame-len=99999' is not a number"
bad "net,backend=null,ctrl-vq=sure" "'ctrl-vq=sure' is not on/off"
bad "net,backend=null,colour=red" "unknown key 'colour' for net"

# --- console ---
bad "console,backend=" "unknown backend '' (stdio, pty, socket=PATH, file=PATH)"
bad "console,backend=serial" "unknown backend 'serial'"
bad "console,backend=socket" "backend=socket needs a path"
bad "console,backend=file" "backend=file needs a path"
bad "console,backend=stdio,path=$tmp/x" "a path is for backend=socket or backend=file"
bad "console,backend=socket=$tmp/a,path=$tmp/b" "give the path once"
bad "console,backend=stdio,queue-size=3" "queue size 3 is not a power of two"
bad "console,backend=stdio,queue-size=0" "'queue-size=0' is not a number in 1..32768"
bad "console,backend=file=$tmp/no/such/dir/out" "no/such/dir"
bad "console,backend=stdio,volume=11" "unknown key 'volume' for console"

# --- rng ---
bad "rng,queue-size=0" "'queue-size=0' is not a number in 1..32768"
bad "rng,rate=fast" "'rate=fast' is not a number"
bad "rng,packed=maybe" "'packed=maybe' is not on/off"
bad "rng,seed=1" "unknown key 'seed' for rng"

# --- a running daemon: its log lines name the connection they belong to
if command -v python3 >/dev/null; then
  "$daemon" --socket "$sock" --device rng 2>"$tmp/run.log" &
  dpid=$!
  for _ in $(seq 100); do [[ -S $sock ]] && break; sleep 0.05; done
  for _ in 1 2; do
    python3 -c 'import socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.close()' "$sock"
  done
  for _ in $(seq 100); do
    grep -q "connection #2 closed" "$tmp/run.log" && break
    sleep 0.05
  done
  # SIGUSR1: a queue state dump (here: nobody connected).
  kill -USR1 "$dpid"
  for _ in $(seq 100); do
    grep -q "queue state dump requested" "$tmp/run.log" && break
    sleep 0.05
  done
  kill "$dpid"; wait "$dpid"
  checks=$((checks + 2))
  if ! grep -q "queue state dump requested: no front-end connected" "$tmp/run.log"; then
    echo "FAIL: SIGUSR1 did not log a queue state dump:"
    sed 's/^/    /' "$tmp/run.log"
    fail=1
  fi
  for n in 1 2; do
    if ! grep -q "\[#$n\] .*front-end disconnected" "$tmp/run.log"; then
      echo "FAIL: no '[#$n] ... front-end disconnected' line:"
      sed 's/^/    /' "$tmp/run.log"
      fail=1
    fi
  done
else
  echo "(python3 missing: connection-number log check left out)"
fi

# --control-socket and --query: statistics as JSON naming the device, the
# commands' errors, resize of a file-backed disk (grow; shrink refused),
# SIGHUP, and the control socket removed on exit.
expect 2 "cannot connect to the control socket" --query "$tmp/none.sock"
expect 2 "--query takes one command" --query "$tmp/none.sock" stats disk0 extra
if command -v python3 >/dev/null; then
  ctl=$tmp/ctl.sock
  cimg=$tmp/ctl.img
  truncate -s 1M "$cimg"
  "$daemon" --socket "$tmp/c.sock" --control-socket "$ctl" \
    --device "blk,path=$cimg,id=ctl-disk" 2>"$tmp/ctl.log" &
  cpid=$!
  for _ in $(seq 100); do [[ -S $ctl ]] && break; sleep 0.05; done
  # query EXPECTED_STATUS COMMAND: runs --query and checks its exit status.
  query() {
    local want=$1 rc=0
    shift
    "$daemon" --query "$ctl" "$@" >"$tmp/q.out" 2>"$tmp/q.err" || rc=$?
    checks=$((checks + 1))
    if [[ $rc != "$want" ]]; then
      echo "FAIL: --query $* exited $rc, want $want"
      sed 's/^/    /' "$tmp/q.out" "$tmp/q.err"
      fail=1
    fi
  }
  query 0 stats
  checks=$((checks + 1))
  if ! python3 -m json.tool "$tmp/q.out" >/dev/null ||
    ! python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["device"]["name"] == "ctl-disk" and d["device"]["type"] == "blk" and d["device"]["capacity_sectors"] == 2048 and len(d["queues"]) == 1, d' "$tmp/q.out"; then
    echo "FAIL: --query stats is not JSON naming the device:"
    sed 's/^/    /' "$tmp/q.out"
    fail=1
  fi
  query 0 # stats by default
  query 0 help
  query 1 no-such-command
  checks=$((checks + 1))
  if ! grep -qF '{"error":"unknown command' "$tmp/q.out"; then
    echo "FAIL: an unknown command is not an error reply:"
    sed 's/^/    /' "$tmp/q.out"
    fail=1
  fi
  truncate -s 2M "$cimg"
  query 0 resize
  checks=$((checks + 1))
  if ! grep -qF '"old_capacity_sectors":2048,"new_capacity_sectors":4096' "$tmp/q.out"; then
    echo "FAIL: resize did not grow 2048 -> 4096 sectors:"
    sed 's/^/    /' "$tmp/q.out"
    fail=1
  fi
  truncate -s 3M "$cimg"
  kill -HUP "$cpid"
  for _ in $(seq 100); do
    grep -q "resized (SIGHUP) from 4096 to 6144 sectors" "$tmp/ctl.log" && break
    sleep 0.05
  done
  checks=$((checks + 1))
  if ! grep -q "resized (SIGHUP) from 4096 to 6144 sectors" "$tmp/ctl.log"; then
    echo "FAIL: SIGHUP did not resize:"
    sed 's/^/    /' "$tmp/ctl.log"
    fail=1
  fi
  truncate -s 1M "$cimg"
  query 1 resize
  checks=$((checks + 1))
  if ! grep -qF 'shrinking is refused' "$tmp/q.out"; then
    echo "FAIL: a shrink was not refused:"
    sed 's/^/    /' "$tmp/q.out"
    fail=1
  fi
  kill "$cpid"; wait "$cpid"
  checks=$((checks + 1))
  if [[ -e $ctl ]]; then
    echo "FAIL: the control socket was left behind"
    fail=1
  fi
fi

if [[ $fail != 0 ]]; then
  echo "FAILED ($checks checks)"
  exit 1
fi
echo "PASS: $checks command lines"
