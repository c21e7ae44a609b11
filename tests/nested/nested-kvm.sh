#!/usr/bin/env bash
# nested-kvm.sh — runs a command where /dev/kvm works.
#
#   nested-kvm.sh [options] -- CMD [ARGS...]
#
# With a usable /dev/kvm here, this execs CMD. Otherwise it boots Debian's
# kernel under QEMU TCG with an emulated AMD SVM CPU (-cpu max), loads
# kvm_amd there (a real KVM on nested paging), mounts this machine's root
# filesystem read-only over virtio-9p with a tmpfs overlay on top, and runs
# CMD in it, in the same working directory, with this environment's
# essentials. CMD's stdout and stderr come back here as they are written;
# the exit status is CMD's. See tests/nested/README.md.
#
# Options:
#   --cache DIR        kernel, initramfs and package downloads, kept between
#                      runs (default: $NESTED_CACHE, else ~/.cache/libvirtio-nested)
#   --rw DIR           make DIR (which must exist) writable inside, for
#                      results and logs that must survive; repeatable.
#                      Everything else written inside is lost at exit.
#   --env NAME[=VAL]   pass this variable too (besides PATH, HOME, USER,
#                      LOGNAME, LANG, LC_*, TERM, TZ, *SAN_OPTIONS, GTEST_*)
#   --timeout SECS     deadline for CMD once the outer VM is up (default 900)
#   --boot-timeout SECS  deadline for the outer VM to come up (default 120)
#   --mem MIB          outer VM memory (default 1536)
#   --nested           go nested even with a usable /dev/kvm (to test this)
#   --keep             keep the temporary directory (console log, job files)
#
# Batching (how ctest runs many KVM tests in one outer boot, see README.md):
#   --batch-run DIR -- CMD   boot once, run CMD (e.g. ctest selecting the
#                      tests) with DIR writable;
#                      exit 0 whenever CMD ran, whatever its status (each
#                      test reports its own), non-zero if the boot failed.
#   --batch DIR --name NAME -- CMD   one test of such a batch. Inside the
#                      outer VM (NESTED_KVM=1): run CMD and record its output
#                      and status as DIR/NAME.*. Outside, without /dev/kvm:
#                      report the recorded result (once; it is consumed);
#                      with none recorded, boot an outer VM for CMD alone.
#
# Exit status: CMD's; 77 (ctest's skip) when neither /dev/kvm nor QEMU and
# the Debian kernel can be had, with the reason printed; 1 when the nested
# machinery failed (boot or run deadline, panic: the console log is shown).
set -uo pipefail

usage() { sed -n '2,/^set -uo/p' "$0" | sed '$d;s/^# \{0,1\}//'; }
skip() { echo "nested-kvm: SKIP: $*"; exit 77; }
die() { echo "nested-kvm: FAIL: $*"; exit 1; }

cache=${NESTED_CACHE:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/libvirtio-nested}
rw_dirs=() extra_env=() timeout=900 boot_timeout=120 mem=1536 force=0 keep=0
batch='' batch_run='' name=''
while [[ $# -gt 0 ]]; do
  case $1 in
    --cache) cache=${2:?--cache needs a directory}; shift 2 ;;
    --rw) rw_dirs+=("${2:?--rw needs a directory}"); shift 2 ;;
    --env) extra_env+=("${2:?--env needs NAME[=VALUE]}"); shift 2 ;;
    --timeout) timeout=${2:?}; shift 2 ;;
    --boot-timeout) boot_timeout=${2:?}; shift 2 ;;
    --mem) mem=${2:?}; shift 2 ;;
    --nested) force=1; shift ;;
    --keep) keep=1; shift ;;
    --batch) batch=${2:?--batch needs a directory}; shift 2 ;;
    --batch-run) batch_run=${2:?--batch-run needs a directory}; shift 2 ;;
    --name) name=${2:?--name needs a test name}; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    --) shift; break ;;
    *) echo "nested-kvm: unknown option $1 (try --help)" >&2; exit 2 ;;
  esac
done
[[ $# -gt 0 ]] || { echo "nested-kvm: no command given (try --help)" >&2; exit 2; }
[[ $timeout =~ ^[0-9]+$ && $boot_timeout =~ ^[0-9]+$ && $mem =~ ^[0-9]+$ ]] ||
  { echo "nested-kvm: --timeout, --boot-timeout and --mem take numbers" >&2; exit 2; }

[[ -z $batch || $name =~ ^[A-Za-z0-9_.-]+$ ]] ||
  { echo "nested-kvm: --batch needs --name NAME (letters, digits, _.-)" >&2; exit 2; }

# "Usable" means a character device we may open read-write (tested without
# opening it: bash's <> would create a plain file where none exists). A KVM
# that opens but cannot make a VM is the command's to report (every KVM
# test here skips on that).
if [[ $force == 0 && -c /dev/kvm && -r /dev/kvm && -w /dev/kvm ]]; then
  if [[ -n $batch_run ]]; then
    # The tests will find /dev/kvm themselves: nothing to prepare.
    echo "nested-kvm: /dev/kvm is usable here; the tests run directly, no batch"
    exit 0
  fi
  if [[ -n $batch && ${NESTED_KVM:-} == 1 ]]; then
    # Inside a batch's outer VM: run, and record for the test outside.
    # No process besides CMD (no tee, date, mkdir): under TCG each one
    # costs ~0.2 s, and this runs once per test. The output is shown by
    # the test outside, so the inner ctest gets none.
    t_start=$EPOCHREALTIME
    "$@" >"$batch/$name.out" 2>&1
    rc=$?
    echo "$t_start $EPOCHREALTIME" >"$batch/$name.time"
    echo "$rc" >"$batch/$name.rc"
    exit "$rc"
  fi
  exec "$@"
fi

if [[ -n $batch && -f $batch/$name.rc ]]; then
  # A record older than a file the command names (the binaries under test,
  # say, rebuilt since) is stale: a batch that ran in an earlier ctest
  # whose tests were not all reported (ctest -R pulls the whole batch in).
  for arg in "$@"; do
    if [[ -f $arg && $arg -nt $batch/$name.rc ]]; then
      echo "nested-kvm: the batch's record for $name is older than $arg; not reporting it"
      rm -f "$batch/$name".{rc,out,time}
      break
    fi
  done
fi
if [[ -n $batch && -f $batch/$name.rc ]]; then
  # Consumed, so that a later run without the batch (ctest -FS, --repeat)
  # runs the test itself instead of reporting an old result.
  rc=$(cat "$batch/$name.rc")
  { read -r t1 t2 <"$batch/$name.time"; } 2>/dev/null
  secs=$(awk -v a="${t1:-0}" -v b="${t2:-0}" 'BEGIN { printf "%.2f", b - a }')
  echo "nested-kvm: no usable /dev/kvm here; ran under QEMU TCG + kvm_amd in the batch's outer VM ($secs s there, see the nested_kvm.batch test): $*"
  cat "$batch/$name.out"
  rm -f "$batch/$name".{rc,out,time}
  echo "nested-kvm: exit status $rc (recorded in the batch)"
  exit "$rc"
fi
if [[ -n $batch && -f $batch/status ]]; then
  echo "nested-kvm: the batch ran ($(cat "$batch/status")) but recorded no result for $name; running it in an outer VM of its own"
fi

# --- Nested: the pieces --------------------------------------------------------
# Sourced only here: inside the outer VM every file read is a 9p round trip
# under TCG, and the direct paths above need none of it.
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
source "$here/lib.sh"
nested_need_pkgs "$cache" qemu-system-x86 qemu-system-common busybox-static ||
  skip "$NESTED_ERR"
command -v qemu-system-x86_64 >/dev/null || skip "qemu-system-x86_64 is not installed"
nested_get_kernel "$cache" || skip "$NESTED_ERR"

# Modules: the 9p root and overlay, kvm_amd, and what network tests need.
# The order file and cpio are rebuilt only when this list, init.sh, lib.sh
# or the kernel change.
mods="virtio_pci 9p 9pnet_virtio overlay kvm_amd tun veth bridge"
key=$( (echo "$mods $NESTED_KVER"; cat "$here/init.sh" "$here/lib.sh") | md5sum | cut -c1-12)
initrd=$cache/initramfs-kvm-$key.cpio
if [[ ! -f $initrd ]]; then
  (
    flock -w 300 9 || exit 1
    [[ -f $initrd ]] && exit 0
    rm -f "$cache"/initramfs-kvm-*.cpio
    nested_initramfs "$initrd" "$here/init.sh" "$NESTED_KMODS" "$mods"
  ) 9>"$cache/initramfs.lock" || die "building the outer VM's initramfs failed"
fi

tmp=$(mktemp -d /tmp/nested-kvm.XXXXXX) || die "mktemp failed"
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [[ -n ${NESTED_QEMU_PID:-} ]]; then
    kill -KILL -- "-$NESTED_QEMU_PID" 2>/dev/null
    wait "$NESTED_QEMU_PID" 2>/dev/null
  fi
  if [[ $keep == 1 ]]; then
    echo "nested-kvm: kept $tmp" >&2
  else
    rm -rf "$tmp"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
job=$tmp/job
mkdir -p "$job"

if [[ -n $batch_run ]]; then
  # Old results are never reported for this batch.
  mkdir -p "$batch_run" || die "cannot create $batch_run"
  rm -f "$batch_run"/*.rc "$batch_run"/*.out "$batch_run"/*.time "$batch_run"/status
  rw_dirs+=("$batch_run")
fi

# run.sh: the command with its environment, as bash runs it inside.
{
  names=(PATH HOME USER LOGNAME LANG TERM TZ)
  while read -r n; do names+=("$n"); done < <(compgen -e | grep -E '^(LC_[A-Z]+|[A-Z]+SAN_OPTIONS|GTEST_[A-Z_]+)$')
  for n in "${names[@]}"; do
    [[ -n ${!n+x} ]] && printf 'export %s=%q\n' "$n" "${!n}"
  done
  for e in "${extra_env[@]}"; do
    if [[ $e == *=* ]]; then
      printf 'export %s=%q\n' "${e%%=*}" "${e#*=}"
    elif [[ -n ${!e+x} ]]; then
      printf 'export %s=%q\n' "$e" "${!e}"
    fi
  done
  printf 'export NESTED_KVM=1\n'
  printf 'cd %q || exit 126\n' "$PWD"
  printf 'exec'; printf ' %q' "$@"; printf '\n'
} >"$job/run.sh"
echo "$job" >"$job/path"
echo /dev/kvm >"$job/require"

# Read-write exports: one 9p device each, tag rwN, mounted at the same path.
qemu_rw=()
: >"$job/mounts"
for i in "${!rw_dirs[@]}"; do
  d=$(readlink -f "${rw_dirs[i]}")
  [[ -n $d && -d $d ]] || die "--rw ${rw_dirs[i]}: not a directory"
  echo "rw$i $d" >>"$job/mounts"
  # QEMU's option syntax: a comma inside a value is written twice.
  qemu_rw+=(-virtfs "local,path=${d//,/,,},mount_tag=rw$i,security_model=none,multidevs=remap")
done

echo "nested-kvm: no usable /dev/kvm here; running under QEMU TCG + kvm_amd (kernel $NESTED_KVER): $*"

# Relays what CMD wrote so far (called while QEMU runs and once after).
out_off=0 err_off=0
relay() {
  local n
  if [[ -f $job/stdout ]]; then
    n=$(stat -c %s "$job/stdout")
    if ((n > out_off)); then
      tail -c +$((out_off + 1)) "$job/stdout" | head -c $((n - out_off))
      out_off=$n
    fi
  fi
  if [[ -f $job/stderr ]]; then
    n=$(stat -c %s "$job/stderr")
    if ((n > err_off)); then
      tail -c +$((err_off + 1)) "$job/stderr" | head -c $((n - err_off)) >&2
      err_off=$n
    fi
  fi
}
NESTED_POLL_HOOK=relay

t0=$SECONDS
# -smp 1: with two host cores, a second vCPU thread only competes with the
# first (and with whatever else runs). The console gets errors only.
nested_run_qemu "$tmp/console.log" "$boot_timeout" '^nested-init: ready' \
    "$job/rc" "$timeout" -- \
  qemu-system-x86_64 -machine q35 -accel tcg -cpu max -smp 1 -m "$mem" \
    -nodefaults -no-user-config -display none -no-reboot \
    -serial "file:$tmp/console.log" \
    -kernel "$NESTED_KERNEL" -initrd "$initrd" \
    -append "console=ttyS0 quiet loglevel=3 panic=-1" \
    -virtfs "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap" \
    -virtfs "local,path=$job,mount_tag=job,security_model=none,multidevs=remap" \
    "${qemu_rw[@]}"
qrc=$?
relay
if [[ -f $job/error ]]; then
  [[ -n $batch_run ]] && echo "failed: $(cat "$job/error")" >"$batch_run/status"
  die "outer VM: $(cat "$job/error")"
fi
if [[ $qrc != 0 ]]; then
  [[ -n $batch_run ]] && echo "failed: $NESTED_ERR" >"$batch_run/status"
  die "$NESTED_ERR"
fi
rc=$(cat "$job/rc")
echo "nested-kvm: outer VM ready after ${NESTED_READY_AT}s, command done after ${NESTED_DONE_AT}s, total $((SECONDS - t0))s; exit status $rc"
if [[ -n $batch_run ]]; then
  echo "done, exit status $rc" >"$batch_run/status"
  exit 0
fi
exit "$rc"
