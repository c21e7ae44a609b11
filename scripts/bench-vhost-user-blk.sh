#!/usr/bin/env bash
# vhost-user-blk IOPS: our vhost-user-device versus qemu-storage-daemon,
# driven by bench/vhost_user_blk_bench (libvirtio::vhost_user_frontend, no VM
# in the way), alternating A/B for several rounds; prints median IOPS and
# the ratio ours / qsd for each case.
#
# Usage: bash scripts/bench-vhost-user-blk.sh [--rounds N] [--min-time SEC]
#            [--build-dir DIR] [--backings "null shm ram"] [--no-busy-poll]
#            [--kinds "ours qsd ..."] [--base-daemon PATH] [--filter RE]
#            [--verbose] [--guest] [--depths "1 32"] [--csv FILE]
#            [--cpus "CLIENT,BACKEND" | --no-pin]
#
# Cases (4 KiB random reads, queue 0, ring size 256; 512 at qd 128):
#   qd 1 and 32; client waiting on the call eventfd (poll:0, like a guest
#   waiting for its interrupt) or spinning on the used ring (poll:1);
#   split ring on both back-ends, packed ring on ours only (qsd's
#   libvhost-user has no packed rings).
#   --depths "1 2 4 8 16 32 64 128": the queue-depth sweep (the depths
#   other than 1 and 32 exist with poll:0 only).
# Besides IOPS, every run reports (same runs, medians over rounds):
#   the back-end's CPU time per request (all its threads, read by the
#   bench from /proc/PID/task/*/schedstat before and after the timed
#   loop), printed as CPU-seconds per million requests, and requests per
#   back-end CPU-second relative to qsd; the client's own CPU per request;
#   p50/p99 request latency (bench's histogram).
# --cpus "C,B" (default "0,1" when the machine has two CPUs or more): the
#   bench client runs on CPU C and every thread of the back-end (ours or
#   qsd alike) on CPU B. Unpinned, the scheduler sometimes puts both on
#   one CPU for a whole case, and the same case then differs 1.5x between
#   runs; --no-pin leaves placement to the scheduler.
# --csv FILE: also write the medians, one line per back-end/backing/case
#   (scripts/bench-plots.py draws from it).
# Backings (the same on both sides):
#   null  ours backend=null (reads zero-fill)  | qsd driver=null-co,read-zeroes=on
#   shm   ours path=/dev/shm/IMG (io_uring)    | qsd driver=file,aio=io_uring on IMG
#   ram   ours backend=ram (in-process memory) | qsd the shm file above (its
#         nearest in-memory equivalent: there is no RAM block driver)
# Back-ends: "ours" (defaults: epoll workers with a 50 us poll window),
#   "ours-bp" (--busy-poll), "qsd"; with --kinds also "ours-p0" (--poll-us=0:
#   sleep in epoll at once), "base" / "base-bp" (--base-daemon PATH, e.g. an
#   older build, run like ours / ours-bp: A/B against a previous version).
#   Default kinds: "ours qsd ours-bp" ("ours qsd" with --no-busy-poll).
# --filter: a regex on the case name (qd:1/packed:0/poll:0), e.g. 'poll:0'.
# --verbose: also print every round's IOPS (to see the spread).
# poll:1 and ours-bp spin a thread each: they need idle cores, and on a busy
# 2-core machine their numbers swing several-fold between rounds.
# --guest: afterwards, a sanity check through a real guest: QEMU (TCG) boots
#   Debian's kernel and runs fio (randread 4k, libaio, direct, qd 1 and 32,
#   5 s each) on a vhost-user-blk-pci disk served by ours, then by qsd (null
#   backing both); prints the guest's IOPS (TCG: the guest is the limit).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/lib.sh

rounds=5
min_time=1
build=build/release
backings="null shm ram"
busy_poll=1
guest=0
kinds=""
base_daemon=""
case_filter=""
verbose=0
depths="1 32"
csv=""
cpus=""
pin=1
while [[ $# -gt 0 ]]; do
  case $1 in
    --rounds) rounds=$2; shift 2 ;;
    --min-time) min_time=$2; shift 2 ;;
    --build-dir) build=$2; shift 2 ;;
    --backings) backings=$2; shift 2 ;;
    --no-busy-poll) busy_poll=0; shift ;;
    --kinds) kinds=$2; shift 2 ;;
    --base-daemon) base_daemon=$2; shift 2 ;;
    --filter) case_filter=$2; shift 2 ;;
    --verbose) verbose=1; shift ;;
    --guest) guest=1; shift ;;
    --depths) depths=$2; shift 2 ;;
    --csv) csv=$2; shift 2 ;;
    --cpus) cpus=$2; shift 2 ;;
    --no-pin) pin=0; shift ;;
    -h|--help) sed -n '2,50p' "$0"; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done

banner "1/3 dependencies"
if ! command -v qemu-storage-daemon >/dev/null; then
  sudo=""
  [[ $(id -u) -eq 0 ]] || sudo=sudo
  $sudo apt-get install -y --no-install-recommends qemu-system-common ||
    die "qemu-storage-daemon is needed (Debian package qemu-system-common)"
fi
qemu-storage-daemon --version | head -1
command -v python3 >/dev/null || die "python3 is needed to summarize results"

banner "2/3 build (release) in $build"
if [[ ! -f $build/CMakeCache.txt ]]; then
  cmake --preset release -B "$build"
fi
cmake --build "$build" -j "$LIBVIRTIO_JOBS" --target vhost-user-device vhost_user_blk_bench
daemon=$build/glue/vhost-user/vhost-user-device
be_pin=() cl_pin=()
if [[ $pin == 1 ]]; then
  [[ -n $cpus ]] || { (( $(nproc) >= 2 )) && cpus="0,1"; }
  if [[ -n $cpus ]]; then
    cl_pin=(taskset -c "${cpus%,*}")
    be_pin=(taskset -c "${cpus#*,}")
    echo "client on CPU ${cpus%,*}, back-end on CPU ${cpus#*,}"
  else
    echo "one CPU: client and back-end unpinned"
  fi
fi
bench=$build/bench/vhost_user_blk_bench
[[ -x $daemon && -x $bench ]] || die "build did not produce $daemon and $bench"

banner "3/3 run: $rounds rounds, min time ${min_time}s per case"
work=$(mktemp -d /tmp/vu-blk-bench.XXXXXX)
img=/dev/shm/vu-blk-bench-$$.img
disk_bytes=$((1 << 30))
pid=""
cleanup() {
  [[ -n $pid ]] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
  rm -rf "$work" "$img"
}
trap cleanup EXIT

# Real pages behind the whole image, so reads copy memory, not holes.
dd if=/dev/urandom of="$img" bs=1M count=$((disk_bytes >> 20)) status=none

start_backend() {  # kind backing socket
  local kind=$1 backing=$2 sock=$3
  rm -f "$sock"
  case $kind in
    ours|ours-bp|ours-p0|base|base-bp)
      local spec
      case $backing in
        null) spec="backend=null,size=$disk_bytes" ;;
        shm) spec="path=$img" ;;
        ram) spec="backend=ram,size=$disk_bytes" ;;
      esac
      local extra=() bin=$daemon
      [[ $kind == *-bp ]] && extra=(--busy-poll)
      [[ $kind == ours-p0 ]] && extra=(--poll-us=0)
      [[ $kind == base* ]] && bin=$base_daemon
      "${be_pin[@]}" "$bin" --socket "$sock" --device "blk,$spec" "${extra[@]}" \
        2>>"$work/$kind.log" &
      ;;
    qsd)
      local bd
      case $backing in
        null) bd="driver=null-co,node-name=n0,size=$disk_bytes,read-zeroes=on" ;;
        shm|ram) bd="driver=file,node-name=n0,filename=$img,aio=io_uring" ;;
      esac
      "${be_pin[@]}" qemu-storage-daemon --blockdev "$bd" \
        --export "type=vhost-user-blk,id=e0,node-name=n0,addr.type=unix,addr.path=$sock,writable=on" \
        2>>"$work/qsd.log" &
      ;;
  esac
  pid=$!
  for _ in $(seq 200); do
    [[ -S $sock ]] && return 0
    kill -0 "$pid" 2>/dev/null || die "$kind ($backing) exited; see $work/$kind.log"
    sleep 0.05
  done
  die "$kind ($backing) did not create $sock"
}

stop_backend() {
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  pid=""
}

if [[ -z $kinds ]]; then
  kinds="ours qsd"
  [[ $busy_poll == 1 ]] && kinds="ours qsd ours-bp"
fi
for kind in $kinds; do
  case $kind in
    ours|ours-bp|ours-p0|qsd) ;;
    base|base-bp) [[ -x $base_daemon ]] || die "$kind needs --base-daemon PATH" ;;
    *) die "unknown kind $kind" ;;
  esac
done
depth_re=$(tr -s ' ' '|' <<<"$depths" | sed 's/^|//; s/|$//')
for round in $(seq "$rounds"); do
  for backing in $backings; do
    for kind in $kinds; do
      filter="randread/qd:($depth_re)/"
      [[ $kind == qsd ]] && filter="randread/qd:($depth_re)/packed:0/"
      # (qsd then also tries the packed:1 cases, which it skips at once)
      [[ -n $case_filter ]] && filter="randread/qd:($depth_re)/.*($case_filter)"
      sock=$work/$kind.sock
      start_backend "$kind" "$backing" "$sock"
      out=$work/$backing.$kind.$round.json
      VHOST_USER_BLK_SOCKET=$sock VHOST_USER_BLK_BACKEND_PID=$pid \
        "${cl_pin[@]}" "$bench" --benchmark_filter="$filter" \
        --benchmark_min_time="$min_time" --benchmark_format=json \
        --benchmark_out="$out" --benchmark_out_format=json >/dev/null 2>&1 ||
        echo "  (bench exited with $? for $kind/$backing)"
      stop_backend
      printf '  round %s  %-5s %-8s done\n' "$round" "$backing" "$kind"
    done
  done
done

python3 - "$work" "$backings" "$kinds" "$verbose" "$csv" <<'EOF'
import glob, json, os, re, statistics, sys
work, backings, kinds = sys.argv[1], sys.argv[2].split(), sys.argv[3].split()
verbose = sys.argv[4] == "1"
csv_path = sys.argv[5]
runs = {}  # (backing, kind, case) -> [iops per round]
per_round = {}  # (backing, kind, case) -> [(round, iops)]
extra = {}  # (backing, kind, case, counter) -> [value per round]
COUNTERS = ("backend_ns", "client_ns", "p50_us", "p99_us")
for path in glob.glob(os.path.join(work, "*.json")):
    backing, kind, rnd, _ = os.path.basename(path).split(".")
    try:
        data = json.load(open(path))
    except (OSError, ValueError):
        continue
    for b in data.get("benchmarks", []):
        if b.get("error_occurred") or "items_per_second" not in b:
            continue
        case = re.sub(r"^randread/|/real_time$", "", b["name"])
        runs.setdefault((backing, kind, case), []).append(b["items_per_second"])
        per_round.setdefault((backing, kind, case), []).append(
            (int(rnd), b["items_per_second"]))
        for k in COUNTERS:
            if k in b:
                extra.setdefault((backing, kind, case, k), []).append(b[k])

def med(backing, kind, case):
    v = runs.get((backing, kind, case))
    return statistics.median(v) if v else None

def fmt(x):
    return "%9.1fk" % (x / 1000) if x else "        -"

def ratio(a, b):
    return "%6.2f" % (a / b) if a and b else "     -"

print()
print("4 KiB random read IOPS, median of rounds (k = thousand); ratio = kind / qsd split")
others = [k for k in kinds if k != "qsd"]
cols = [k for k in kinds]
hdr = "%-6s %-26s" % ("back", "case") + "".join("%10s" % k for k in cols)
if "qsd" in kinds:
    hdr += "".join("%9s" % (k[:6] + "/q") for k in others)
print(hdr)
cases = sorted({c for (_, _, c) in runs},
               key=lambda c: [int(x) for x in re.findall(r"\d+", c)][::-1])
for backing in backings:
    for case in cases:
        qcase = case.replace("packed:1", "packed:0")
        vals = {k: med(backing, k, qcase if k == "qsd" else case) for k in cols}
        if not any(vals[k] for k in others):
            continue
        line = "%-6s %-26s" % (backing, case) + "".join(
            "%10s" % fmt(vals[k]) for k in cols)
        if "qsd" in kinds:
            line += "".join("%9s" % ratio(vals[k], vals["qsd"]) for k in others)
        if "base" in kinds and "ours" in kinds:
            line += "  ours/base %s" % ratio(vals["ours"], vals["base"])
        print(line)
if verbose:
    print()
    print("per round (k IOPS, in round order):")
    for backing in backings:
        for case in cases:
            for k in cols:
                c = case.replace("packed:1", "packed:0") if k == "qsd" else case
                v = sorted(per_round.get((backing, k, c), []))
                if v and (k != "qsd" or "packed:1" not in case):
                    print("  %-6s %-24s %-8s %s" % (backing, case, k,
                          " ".join("%.0f" % (x / 1000) for _, x in v)))
def xmed(backing, kind, case, k):
    v = extra.get((backing, kind, case, k))
    return statistics.median(v) if v else None

def qcase_of(kind, case):
    return case.replace("packed:1", "packed:0") if kind == "qsd" else case

def f1(x, w=8, p=2):
    return "%*.*f" % (w, p, x) if x is not None else "%*s" % (w, "-")

print()
print("back-end CPU per request, median of rounds: CPU-seconds per million")
print("requests (= us per request, all back-end threads); client = the bench's")
print("own thread; eff = (requests per back-end CPU-second) kind / qsd split")
hdr = "%-6s %-26s" % ("back", "case") + "".join("%9s" % k[:9] for k in cols)
hdr += "%9s" % "client"
if "qsd" in kinds:
    hdr += "".join("%9s" % ("eff " + k[:4]) for k in others)
print(hdr)
for backing in backings:
    for case in cases:
        vals = {k: xmed(backing, k, qcase_of(k, case), "backend_ns") for k in cols}
        if not any(vals[k] for k in others):
            continue
        cl = xmed(backing, cols[0], qcase_of(cols[0], case), "client_ns")
        line = "%-6s %-26s" % (backing, case) + "".join(
            f1(vals[k] / 1000 if vals[k] else None, 9) for k in cols)
        line += f1(cl / 1000 if cl else None, 9)
        if "qsd" in kinds:
            line += "".join(f1(vals["qsd"] / vals[k] if vals[k] and vals["qsd"]
                               else None, 9) for k in others)
        print(line)

print()
print("request latency, median over rounds of each run's p50 / p99, us")
print("%-6s %-26s" % ("back", "case") + "".join("%16s" % k for k in cols))
for backing in backings:
    for case in cases:
        if not case.startswith("qd:1/") and not case.startswith("qd:32/"):
            continue
        cells, any_ours = [], False
        for k in cols:
            p50 = xmed(backing, k, qcase_of(k, case), "p50_us")
            p99 = xmed(backing, k, qcase_of(k, case), "p99_us")
            if p50 is not None and k != "qsd":
                any_ours = True
            cells.append("%16s" % ("%.1f / %.1f" % (p50, p99) if p50 is not None
                                   else "-"))
        if any_ours:
            print("%-6s %-26s" % (backing, case) + "".join(cells))

if csv_path:
    with open(csv_path, "w") as f:
        f.write("backing,kind,case,qd,packed,poll,rounds,iops,backend_ns,"
                "client_ns,p50_us,p99_us\n")
        for (backing, kind, case), v in sorted(runs.items()):
            m = re.match(r"qd:(\d+)/packed:(\d)/poll:(\d)", case)
            if not m:
                continue
            xs = [xmed(backing, kind, case, k) for k in COUNTERS]
            f.write("%s,%s,%s,%s,%s,%s,%d,%.0f,%s\n" % (
                backing, kind, case, m.group(1), m.group(2), m.group(3),
                len(v), statistics.median(v),
                ",".join("" if x is None else "%.3f" % x for x in xs)))
    print()
    print("wrote", csv_path)

print()
print("targets: ours/qsd >= 1.2 at qd 32, >= 1.0 at qd 1 (IOPS); eff >= 1.2 at qd 1 and 32")
EOF

[[ $guest == 1 ]] || exit 0

banner "guest sanity check: fio in a QEMU (TCG) guest, ours vs qsd"
stop_backend
# The real-client helpers (kernel download, initramfs, process groups) in a
# subshell: they install their own EXIT trap.
(
  # common.sh checks each step itself; its cleanup trap expects no set -e.
  set +e
  source glue/vhost-user/tests/real_clients/common.sh
  rc_init "$daemon" "${LIBVIRTIO_REAL_CLIENTS_CACHE:-$build/real_clients_cache}"
  rc_need_pkgs qemu-system-x86 busybox-static fio
  rc_get_kernel
  QEMU=$(command -v qemu-system-x86_64) || skip "qemu-system-x86_64 missing"
  cat >"$RC_TMP/test.sh" <<'T'
RESULT=OK
i=0; while [ ! -b /dev/vda ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
[ -b /dev/vda ] || { RESULT="FAIL (no /dev/vda)"; return; }
for qd in 1 32; do
  out=$(fio --name=r --filename=/dev/vda --direct=1 --ioengine=libaio \
        --rw=randread --bs=4k --iodepth=$qd --runtime=5 --time_based \
        --output-format=terse 2>&1) || RESULT="FAIL (fio qd $qd)"
  # terse v3: field 8 is read IOPS
  echo "guest: qd=$qd iops=$(echo "$out" | tail -1 | cut -d';' -f8)"
done
T
  rc_write_init "$RC_TMP/init"
  rc_initramfs "$RC_TMP/initrd" "$RC_TMP/init" "$RC_TMP/test.sh" \
    "virtio_pci virtio_blk" fio
  for kind in ours qsd; do
    sock=$RC_TMP/$kind.sock
    if [[ $kind == ours ]]; then
      rc_bg "d_$kind" "$DAEMON" --socket "$sock" --device "blk,backend=null,size=1G"
    else
      rc_bg "d_$kind" qemu-storage-daemon \
        --blockdev driver=null-co,node-name=n0,size=1073741824,read-zeroes=on \
        --export "type=vhost-user-blk,id=e0,node-name=n0,addr.type=unix,addr.path=$sock,writable=on"
    fi
    dpid=$RC_LAST_PID
    rc_wait_socket "$sock" || fail "$kind did not listen"
    rc_bg "qemu_$kind" "$QEMU" -machine q35,accel=tcg -cpu qemu64 -smp 1 -m 512M \
      -object memory-backend-memfd,id=mem,size=512M,share=on -numa node,memdev=mem \
      -nodefaults -no-user-config -display none -no-reboot \
      -serial "file:$RC_TMP/console_$kind.log" \
      -kernel "$QEMU_KERNEL" -initrd "$RC_TMP/initrd" \
      -append "console=ttyS0 panic=-1 quiet loglevel=4" \
      -chardev socket,id=c0,path="$sock" \
      -device vhost-user-blk-pci,chardev=c0,num-queues=1
    rc_watch "$RC_LAST_PID" 180 "$RC_FATAL_RE" "$RC_TMP/qemu_$kind.log" ||
      { tail -30 "$RC_TMP/console_$kind.log"; fail "guest run against $kind failed"; }
    kill -TERM "$dpid" 2>/dev/null; wait "$dpid" 2>/dev/null
    grep "guest:" "$RC_TMP/console_$kind.log" | sed "s/^/  $kind /"
    grep -q '^RC-RESULT: OK' "$RC_TMP/console_$kind.log" ||
      fail "$kind: $(grep RC-RESULT "$RC_TMP/console_$kind.log" || echo 'no result')"
  done
  python3 - "$RC_TMP" <<'EOF2'
import re, sys
iops = {}
for kind in ("ours", "qsd"):
    for line in open(f"{sys.argv[1]}/console_{kind}.log", errors="replace"):
        m = re.search(r"guest: qd=(\d+) iops=([\d.]+)", line)
        if m:
            iops[(kind, m.group(1))] = float(m.group(2))
for qd in ("1", "32"):
    o, q = iops.get(("ours", qd)), iops.get(("qsd", qd))
    r = "%.2f" % (o / q) if o and q else "-"
    print(f"  guest fio randread 4k qd {qd}: ours {o} qsd {q} ratio {r}")
EOF2
)
