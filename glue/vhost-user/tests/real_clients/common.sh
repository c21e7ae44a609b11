# Shared helpers for the real-client tests (sourced, not run).
#
# Each test script is called as  SCRIPT PATH/TO/vhost-user-device CACHE_DIR
# and exits 0 (pass), 1 (fail) or 77 (skip, with a printed reason: a
# package that cannot be had, or a kernel/host that lacks something).
# CACHE_DIR (under the build tree) keeps the extracted Debian kernel and
# other downloads between runs; everything else lives in a private temp dir
# that the EXIT trap removes after killing every process the test started.
set -u
set -o pipefail

RC_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
RC_T0=$SECONDS

log() { echo "[t+$((SECONDS - RC_T0))s] $*"; }
skip() { echo "SKIP: $*"; exit 77; }
fail() { echo "FAIL: $*"; exit 1; }

RC_PIDS=()
RC_CLEAN_PATHS=()  # removed on exit too (files a client leaves elsewhere)
rc_cleanup() {
  local rc=$? p
  trap - EXIT INT TERM
  # Each rc_bg process leads its own process group (setsid): signal the
  # group, so helpers it forked (UML's, QEMU's) go too.
  for p in "${RC_PIDS[@]}"; do kill -TERM -- "-$p" "$p" 2>/dev/null; done
  # Give them a moment, then insist.
  for _ in $(seq 20); do
    local alive=0
    for p in "${RC_PIDS[@]}"; do
      kill -0 -- "-$p" 2>/dev/null && alive=1
      kill -0 "$p" 2>/dev/null && alive=1
    done
    [[ $alive == 0 ]] && break
    sleep 0.1
  done
  for p in "${RC_PIDS[@]}"; do kill -KILL -- "-$p" "$p" 2>/dev/null; done
  # Reap without blocking on anything still stuck (no bare `wait`).
  sleep 0.1
  for p in "${RC_PIDS[@]}"; do kill -0 "$p" 2>/dev/null || wait "$p" 2>/dev/null; done
  for p in "${RC_CLEAN_PATHS[@]}"; do rm -rf -- "$p"; done
  if [[ -n ${RC_TMP:-} && -d $RC_TMP ]]; then
    if [[ $rc != 0 && $rc != 77 && -n ${RC_KEEP_TMP:-} ]]; then
      echo "kept $RC_TMP (RC_KEEP_TMP set)"
    else
      rm -rf "$RC_TMP"
    fi
  fi
  exit "$rc"
}

# rc_init "$@": parses DAEMON CACHE, makes the temp dir, installs the trap.
rc_init() {
  DAEMON=${1:?usage: $0 PATH/TO/vhost-user-device CACHE_DIR}
  CACHE=${2:?usage: $0 PATH/TO/vhost-user-device CACHE_DIR}
  [[ -x $DAEMON ]] || fail "daemon $DAEMON is not executable"
  DAEMON=$(readlink -f "$DAEMON")
  mkdir -p "$CACHE" || fail "cannot create cache dir $CACHE"
  CACHE=$(readlink -f "$CACHE")
  # Short path: unix socket paths are limited to 107 bytes.
  RC_TMP=$(mktemp -d /tmp/vu-rc.XXXXXX) || fail "mktemp failed"
  trap rc_cleanup EXIT
  trap 'exit 1' INT TERM
  cd "$RC_TMP" || fail "cd $RC_TMP"
}

# rc_bg NAME CMD...: runs CMD in the background in a new session (its pid
# is its process group), output to $RC_TMP/NAME.log; sets RC_LAST_PID.
# The EXIT trap kills its whole process group.
rc_bg() {
  local name=$1; shift
  setsid "$@" >"$RC_TMP/$name.log" 2>&1 </dev/null &
  RC_LAST_PID=$!
  RC_PIDS+=("$RC_LAST_PID")
}

# rc_watch PID SECS REGEX FILE...: waits for PID (started with rc_bg) to
# exit within SECS. Meanwhile, a line matching REGEX (grep -E) in any FILE
# (a front-end or daemon log) means the guest can only hang from here on:
# PID is killed at once. Returns PID's exit status, 124 on timeout, or 125
# on a REGEX hit (the line is in RC_WATCH_HIT).
RC_WATCH_HIT=
rc_watch() {
  local pid=$1 secs=$2 re=$3; shift 3
  local i rc
  for ((i = 0; i < secs * 4; i++)); do
    if ! kill -0 "$pid" 2>/dev/null; then
      wait "$pid"; return $?
    fi
    RC_WATCH_HIT=$(grep -hE "$re" "$@" 2>/dev/null | head -1)
    if [[ -n $RC_WATCH_HIT ]]; then
      # Grace period: a front-end that is shutting down anyway may log
      # such a line on its way out; if it exits by itself, its status
      # (and the guest's result) decides.
      local j
      for ((j = 0; j < 12; j++)); do
        kill -0 "$pid" 2>/dev/null || { wait "$pid"; return $?; }
        sleep 0.25
      done
      kill -TERM -- "-$pid" "$pid" 2>/dev/null; sleep 0.5
      kill -KILL -- "-$pid" "$pid" 2>/dev/null
      wait "$pid" 2>/dev/null
      return 125
    fi
    sleep 0.25
  done
  kill -TERM -- "-$pid" "$pid" 2>/dev/null; sleep 0.5
  kill -KILL -- "-$pid" "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
  return 124
}

# rc_guest_result QRC SECS: the verdict on a QEMU guest that ran under
# rc_watch (QRC its status, SECS its limit) and reports RC-RESULT on its
# console: fails unless QEMU exited 0 and the guest said OK, calling the
# script's own show() first so the logs are in the failure. Prints the
# guest's "guest:" lines (everything with RC_VERBOSE).
rc_guest_result() {
  local qrc=$1 secs=$2
  log "QEMU exited with $qrc"
  [[ $qrc == 124 ]] && { show; fail "guest did not power off within $secs s"; }
  [[ $qrc == 125 ]] && { show; fail "stopped the guest early: $RC_WATCH_HIT"; }
  [[ $qrc == 0 ]] || { show; fail "QEMU exited with $qrc"; }
  grep "guest:" "$RC_TMP/console.log"; [[ -n ${RC_VERBOSE:-} ]] && show
  grep -q '^RC-RESULT: OK' "$RC_TMP/console.log" ||
    { show; fail "guest: $(grep RC-RESULT "$RC_TMP/console.log" || echo 'no result')"; }
}

# Lines after which a guest never finishes: front-end gave up on the
# back-end, or the daemon dropped/broke the device.
RC_FATAL_RE='vhost.*(start )?failed|Failed to (get|set|read|write)|protocol error|device needs reset|closed after an error|Unexpected|assertion'

# rc_wait_socket PATH [SECONDS]: waits until PATH is a listening socket.
rc_wait_socket() {
  local path=$1 secs=${2:-10} i
  for ((i = 0; i < secs * 20; i++)); do
    [[ -S $path ]] && return 0
    sleep 0.05
  done
  return 1
}

# rc_stop_daemon PID LOG [first]: SIGTERM, waits (10 s max); fails on a bad
# exit or a protocol error in LOG ("first": in its first connection only).
rc_stop_daemon() {
  local pid=$1 logf=$2 only_first=${3:-} rc i
  kill -TERM "$pid" 2>/dev/null
  for ((i = 0; i < 100; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then
    echo "--- daemon log ($logf)"; cat "$logf"
    fail "daemon $pid did not stop within 10 s of SIGTERM"
  fi
  wait "$pid"; rc=$?
  if [[ $rc != 0 ]]; then
    echo "--- daemon log ($logf)"; cat "$logf"
    fail "daemon exited with $rc"
  fi
  local checked=$logf
  if [[ $only_first == first ]]; then
    checked=$RC_TMP/daemon-first-connection.log
    sed '/connection #1 closed/q' "$logf" >"$checked"
  fi
  if grep -qi "protocol error" "$checked"; then
    echo "--- daemon log ($logf)"; cat "$logf"
    fail "daemon logged a protocol error"
  fi
}

rc_have_pkg() {
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"
}

# rc_need_pkgs PKG...: installs the missing ones (Debian apt, no
# recommends); skips the test with the reason if they cannot be had.
rc_need_pkgs() {
  local missing=() p
  for p in "$@"; do rc_have_pkg "$p" || missing+=("$p"); done
  [[ ${#missing[@]} == 0 ]] && return 0
  command -v apt-get >/dev/null || skip "needs ${missing[*]} and there is no apt-get"
  [[ $(id -u) == 0 ]] || skip "needs ${missing[*]} (not installed; installing needs root)"
  log "installing ${missing[*]}"
  local out=$RC_TMP/apt.log
  (
    flock -w 600 9 || exit 1
    export DEBIAN_FRONTEND=noninteractive
    timeout -k 5 600 apt-get install -y --no-install-recommends \
        -o DPkg::Lock::Timeout=300 "${missing[@]}" >"$out" 2>&1 ||
      { timeout -k 5 300 apt-get update >>"$out" 2>&1 &&
        timeout -k 5 600 apt-get install -y --no-install-recommends \
          -o DPkg::Lock::Timeout=300 "${missing[@]}" >>"$out" 2>&1; }
  ) 9>"$CACHE/apt.lock"
  for p in "${missing[@]}"; do
    if ! rc_have_pkg "$p"; then
      tail -5 "$out"
      skip "Debian package $p cannot be installed (apt-get failed, see above)"
    fi
  done
}

# rc_get_kernel: Debian's linux-image-amd64 kernel, downloaded and extracted
# (not installed) once into $CACHE/kernel. Sets KVER, VMLINUZ, KMODS.
rc_get_kernel() {
  local kdir=$CACHE/kernel
  (
    flock -w 600 9 || exit 1
    [[ -f $kdir/.ok ]] && exit 0
    rm -rf "$kdir" "$CACHE/dl"; mkdir -p "$kdir" "$CACHE/dl"
    local pkg
    pkg=$(apt-cache depends linux-image-amd64 2>/dev/null |
          awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
    if [[ -z $pkg ]]; then
      timeout -k 5 300 apt-get update >/dev/null 2>&1
      pkg=$(apt-cache depends linux-image-amd64 2>/dev/null |
            awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
    fi
    [[ -n $pkg ]] || { echo "apt-cache knows no linux-image-amd64"; exit 2; }
    # apt-get download runs as _apt when it can: give it a writable dir.
    chmod 777 "$CACHE/dl" 2>/dev/null
    (cd "$CACHE/dl" && timeout -k 5 600 apt-get download "$pkg") >"$CACHE/dl/log" 2>&1 ||
      { tail -5 "$CACHE/dl/log"; echo "apt-get download $pkg failed"; exit 2; }
    dpkg -x "$CACHE"/dl/"$pkg"_*.deb "$kdir" || exit 2
    rm -rf "$CACHE/dl"
    touch "$kdir/.ok"
  ) 9>"$CACHE/kernel.lock"
  [[ $? == 0 ]] || skip "Debian kernel linux-image-amd64 cannot be had"
  VMLINUZ=$(ls "$kdir"/boot/vmlinuz-* 2>/dev/null | head -1)
  [[ -n $VMLINUZ ]] || fail "no vmlinuz in $kdir"
  KVER=${VMLINUZ##*/vmlinuz-}
  # QEMU boots the uncompressed ELF vmlinux through its PVH entry point:
  # under TCG that saves the ~8 s that SeaBIOS + the bzImage decompressor
  # take. Extracted once (the xz payload of the bzImage); the bzImage is
  # the fallback. QEMU_KERNEL is what to pass to -kernel.
  QEMU_KERNEL=$VMLINUZ
  if [[ ! -f $kdir/vmlinux.ok ]]; then
    (
      flock -w 600 9 || exit 1
      [[ -f $kdir/vmlinux.ok ]] && exit 0
      local off
      off=$(LC_ALL=C grep -obUaP '\xfd7zXZ\x00' "$VMLINUZ" | head -1 | cut -d: -f1)
      [[ -n $off ]] || exit 1
      tail -c +$((off + 1)) "$VMLINUZ" | xz -dc >"$kdir/vmlinux.tmp" 2>/dev/null
      [[ $(head -c 4 "$kdir/vmlinux.tmp" | od -An -tx1 | tr -d ' ') == 7f454c46 ]] || exit 1
      mv "$kdir/vmlinux.tmp" "$kdir/vmlinux" && touch "$kdir/vmlinux.ok"
    ) 9>"$CACHE/kernel.lock"
  fi
  [[ -f $kdir/vmlinux.ok ]] && QEMU_KERNEL=$kdir/vmlinux
  KMODS=$kdir/lib/modules/$KVER
  [[ -d $KMODS/kernel ]] || fail "no modules in $KMODS"
}

# rc_mod_closure MODDIR MOD...: prints the module files (relative to
# MODDIR) to load, dependencies first, each once. Reads each module's
# "depends=" modinfo (the package ships no modules.dep: depmod runs at
# install time); modules built into the kernel are skipped.
rc_mod_closure() {
  local moddir=$1; shift
  local -A path=() seen=()
  local f n
  while read -r f; do
    n=${f##*/}; n=${n%%.ko*}; n=${n//-/_}
    path[$n]=$f
  done < <(cd "$moddir" && find kernel -name '*.ko*')
  _rc_visit() {
    local m=${1//-/_} f deps d
    [[ -n ${seen[$m]:-} ]] && return
    seen[$m]=1
    f=${path[$m]:-}
    [[ -n $f ]] || return 0   # built in (or absent): nothing to load
    case $f in
      *.xz) deps=$(xz -dc "$moddir/$f" | grep -a -o 'depends=[a-z0-9_,-]*') ;;
      *.zst) deps=$(zstd -qdc "$moddir/$f" | grep -a -o 'depends=[a-z0-9_,-]*') ;;
      *) deps=$(grep -a -o 'depends=[a-z0-9_,-]*' "$moddir/$f") ;;
    esac
    deps=${deps#depends=}
    for d in ${deps//,/ }; do _rc_visit "$d"; done
    echo "$f"
  }
  for n in "$@"; do _rc_visit "$n"; done
}

# rc_initramfs OUT INIT TESTSCRIPT MODULES [EXTRA_BINARIES...]: a newc cpio
# with static busybox, the kernel modules MODULES (space-separated names,
# with dependencies, decompressed), /init, /test.sh and each extra binary
# with its shared-library closure; files in $RC_TMP/extra/ go to its root.
rc_initramfs() {
  local out=$1 init=$2 test=$3 mods=$4; shift 4
  local root=$RC_TMP/initramfs f
  rm -rf "$root"
  mkdir -p "$root"/{bin,dev,proc,sys,tmp,lib/modules,etc}
  cp /bin/busybox "$root/bin/busybox" || fail "no /bin/busybox"
  ln -s busybox "$root/bin/sh"
  cp "$init" "$root/init"; chmod +x "$root/init"
  cp "$test" "$root/test.sh"
  : >"$root/modules.order"
  while read -r f; do
    [[ -n $f ]] || continue
    local b=${f##*/}
    case $b in
      *.ko.xz) xz -dc "$KMODS/$f" >"$root/lib/modules/${b%.xz}"; b=${b%.xz} ;;
      *.ko.zst) zstd -qdc "$KMODS/$f" >"$root/lib/modules/${b%.zst}"; b=${b%.zst} ;;
      *.ko.gz) gzip -dc "$KMODS/$f" >"$root/lib/modules/${b%.gz}"; b=${b%.gz} ;;
      *) cp "$KMODS/$f" "$root/lib/modules/$b" ;;
    esac
    echo "$b" >>"$root/modules.order"
  done < <(rc_mod_closure "$KMODS" $mods)
  for f in "$@"; do
    local bin
    bin=$(command -v "$f") || fail "no $f on the host"
    mkdir -p "$root/$(dirname "$bin")"; cp "$bin" "$root/$bin"
    local lib
    while read -r lib; do
      [[ -f $lib ]] || continue
      mkdir -p "$root/$(dirname "$lib")"; cp -L "$lib" "$root/$lib"
    done < <(ldd "$bin" 2>/dev/null | grep -o '/[^ ]*')
  done
  [[ -d $RC_TMP/extra ]] && cp -a "$RC_TMP/extra/." "$root/"
  # Uncompressed: gunzip under TCG costs more than reading a bigger file.
  (cd "$root" && find . | sort |
     /bin/busybox cpio -o -H newc 2>/dev/null >"$out") ||
    fail "building the initramfs failed"
}

# The /init shared by the QEMU tests: mounts, loads modules, runs /test.sh
# (which sets RESULT), prints "RC-RESULT: ..." and powers off.
rc_write_init() {
  cat >"$1" <<'INIT'
#!/bin/sh
/bin/busybox --install -s /bin
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
for m in $(cat /modules.order); do
  insmod /lib/modules/$m || echo "insmod $m failed"
done
RESULT="FAIL (test.sh did not set RESULT)"
. /test.sh
echo "RC-RESULT: $RESULT"
sync
poweroff -f
INIT
}

# rc_uml_prepare: finds Debian's User-mode Linux (rc_need_pkgs
# user-mode-linux first) and sets UML (the linux.uml binary), UML_VER,
# UML_KMODS (its module tree, for rc_mod_closure), and the arrays UML_WRAP
# (a command to start linux.uml under) and UML_EXTRA (extra words for its
# command line). On a host with AMX, UML 6.1 panics at its first guest
# process (machine.md): then UML_WRAP is the NT_X86_XSTATE seccomp filter,
# built here, and UML_EXTRA keeps guest programs off AVX. Detected, not
# assumed; RC_UML_XSTATE_WORKAROUND=1 forces it. Skips when UML is unusable.
rc_uml_prepare() {
  UML=$(command -v linux.uml) || skip "linux.uml missing (install user-mode-linux)"
  UML_VER=$(ls /usr/lib/uml/modules/ 2>/dev/null | sort -V | tail -1)
  [[ -n $UML_VER ]] || skip "user-mode-linux ships no modules dir"
  UML_KMODS=/usr/lib/uml/modules/$UML_VER
  [[ -w /dev/shm ]] || skip "UML keeps guest memory in /dev/shm, which is not writable here"
  UML_WRAP=() UML_EXTRA=()
  if grep -qw amx_tile /proc/cpuinfo || [[ -n ${RC_UML_XSTATE_WORKAROUND:-} ]]; then
    log "host has AMX (or forced): running UML under the NT_X86_XSTATE seccomp filter, no AVX in the guest"
    command -v cc >/dev/null || skip "host has AMX and no C compiler for the UML seccomp wrapper"
    cc -O2 -o "$RC_TMP/uml_xstate_seccomp" "$RC_DIR/uml_xstate_seccomp.c" ||
      fail "building uml_xstate_seccomp failed"
    UML_WRAP=("$RC_TMP/uml_xstate_seccomp")
    UML_EXTRA=("GLIBC_TUNABLES=glibc.cpu.hwcaps=-AVX,-AVX2,-AVX_VNNI,-AVX512F,-AVX512CD,-AVX512BW,-AVX512DQ,-AVX512VL,-AVX512_VNNI,-AVX512_BF16,-AVX512_FP16,-AMX_BF16,-AMX_TILE,-AMX_INT8,-FMA,-FMA4,-F16C,-XOP")
  fi
}

# rc_qemu_pick_accel QEMU: KVM only where a probe boot of the Debian kernel
# (rc_get_kernel first) reaches its init under accel=kvm within
# RC_KVM_PROBE_SECS (default 15 s); TCG otherwise. On these machines the
# nested KVM cannot run a stock Linux kernel (machine.md), so a failed probe
# is remembered in $CACHE (per host kernel, QEMU and guest kernel; delete
# $CACHE/kvm-probe.* to probe again). RC_QEMU_ACCEL=kvm|tcg forces a choice.
# Sets QEMU_ACCEL (kvm|tcg), QEMU_CPU and QEMU_ACCEL_WHY (one line).
rc_qemu_pick_accel() {
  local qemu=$1 secs=${RC_KVM_PROBE_SECS:-15}
  QEMU_ACCEL=tcg QEMU_CPU=qemu64
  case ${RC_QEMU_ACCEL:-} in
    tcg) QEMU_ACCEL_WHY="TCG (RC_QEMU_ACCEL=tcg)"; return 0 ;;
    kvm) QEMU_ACCEL=kvm QEMU_CPU=host QEMU_ACCEL_WHY="KVM (RC_QEMU_ACCEL=kvm)"; return 0 ;;
  esac
  if [[ ! -r /dev/kvm || ! -w /dev/kvm ]]; then
    QEMU_ACCEL_WHY="TCG (no usable /dev/kvm)"
    return 0
  fi
  local qver key
  qver=$("$qemu" --version 2>/dev/null | head -1 | grep -o '[0-9][0-9.]*' | head -1)
  key="$CACHE/kvm-probe.$(uname -r).qemu-$qver.$KVER"
  if [[ -f $key ]]; then
    QEMU_ACCEL_WHY="TCG (an earlier probe boot under KVM failed: $(cat "$key"); rm $key to retry)"
    return 0
  fi
  local root=$RC_TMP/kvm-probe
  rm -rf "$root"; mkdir -p "$root"/{bin,dev,proc}
  cp /bin/busybox "$root/bin/busybox" || fail "no /bin/busybox"
  printf '#!/bin/busybox sh\n/bin/busybox echo RC-KVM-PROBE-OK\n/bin/busybox poweroff -f\n' >"$root/init"
  chmod +x "$root/init"
  (cd "$root" && find . | sort | /bin/busybox cpio -o -H newc 2>/dev/null >"$RC_TMP/kvm-probe.cpio") ||
    fail "building the KVM probe initramfs failed"
  rc_bg kvm-probe "$qemu" -machine q35,accel=kvm -cpu host -smp 1 -m 256M \
    -nodefaults -no-user-config -display none -no-reboot \
    -serial "file:$RC_TMP/kvm-probe.console" \
    -kernel "$QEMU_KERNEL" -initrd "$RC_TMP/kvm-probe.cpio" \
    -append "console=ttyS0 panic=-1 quiet loglevel=1"
  # 2>/dev/null: bash's own report of a QEMU that aborted, which is
  # summarised below.
  rc_watch "$RC_LAST_PID" "$secs" 'RC-KVM-PROBE-OK' "$RC_TMP/kvm-probe.console" 2>/dev/null
  local prc=$?
  if grep -q RC-KVM-PROBE-OK "$RC_TMP/kvm-probe.console" 2>/dev/null; then
    QEMU_ACCEL=kvm QEMU_CPU=host
    QEMU_ACCEL_WHY="KVM (a probe boot reached init)"
    return 0
  fi
  local why="no init within ${secs} s"
  [[ $prc != 124 ]] && why="QEMU exited with $prc before init ($(tail -1 "$RC_TMP/kvm-probe.log" 2>/dev/null))"
  echo "$why" >"$key"
  QEMU_ACCEL_WHY="TCG (a probe boot under KVM failed: $why)"
}
