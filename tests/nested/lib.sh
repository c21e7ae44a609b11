# shellcheck shell=bash
# Reusable pieces for running things inside an outer VM under QEMU TCG
# (sourced, not run): nested-kvm.sh uses them for a nested KVM, and a
# nested Xen environment can use the same kernel fetch, module closure and
# initramfs builder. Nothing here is installed on the host: Debian packages
# are unpacked with `apt-get download` + `dpkg -x` into a cache directory.
#
# Conventions: every function returns non-zero and prints one line saying
# why on failure (it never exits the caller's shell); NESTED_ERR holds that
# line too, so the caller can decide between "skip" (77) and "fail".
# Functions that build something reuse it when the inputs did not change.
#
# Functions:
#   nested_log MSG...                  timestamped line on stderr
#   nested_have_pkg PKG                is the Debian package installed?
#   nested_need_pkgs CACHE PKG...      apt-get install the missing ones
#   nested_get_kernel CACHE            Debian's kernel, unpacked: sets
#                                      NESTED_KVER, NESTED_VMLINUZ,
#                                      NESTED_KERNEL (what to give -kernel),
#                                      NESTED_KMODS
#   nested_mod_closure MODDIR MOD...   module files in load order
#   nested_initramfs OUT INIT MODDIR MODS [SRC=DEST...]
#                                      busybox + modules + /init as a cpio
#   nested_run_qemu ...                runs QEMU with deadlines and watches
#                                      its console (see the function)

NESTED_T0=${NESTED_T0:-$SECONDS}
NESTED_ERR=

nested_log() { echo "nested: [t+$((SECONDS - NESTED_T0))s] $*" >&2; }

# _nested_err MSG: records and prints MSG, returns 1.
_nested_err() {
  NESTED_ERR=$*
  echo "nested: $*" >&2
  return 1
}

nested_have_pkg() {
  [[ $(dpkg-query -W -f='${Status}' "$1" 2>/dev/null) == "install ok installed" ]]
}

# nested_need_pkgs CACHE PKG...: installs the missing Debian packages
# (apt-get, no recommends; needs root). CACHE holds the lock file that keeps
# parallel tests from running apt at once. Fails when one cannot be had.
nested_need_pkgs() {
  local cache=$1; shift
  local missing=() p
  for p in "$@"; do nested_have_pkg "$p" || missing+=("$p"); done
  [[ ${#missing[@]} == 0 ]] && return 0
  command -v apt-get >/dev/null || _nested_err "needs ${missing[*]} and there is no apt-get" || return
  [[ $(id -u) == 0 ]] || _nested_err "needs ${missing[*]} (installing needs root)" || return
  mkdir -p "$cache" || _nested_err "cannot create $cache" || return
  nested_log "installing ${missing[*]}"
  local out=$cache/apt.log
  (
    flock -w 900 9 || exit 1
    export DEBIAN_FRONTEND=noninteractive
    timeout -k 5 600 apt-get install -y -q --no-install-recommends \
        -o DPkg::Lock::Timeout=300 "${missing[@]}" >"$out" 2>&1 ||
      { timeout -k 5 300 apt-get update -q >>"$out" 2>&1 &&
        timeout -k 5 600 apt-get install -y -q --no-install-recommends \
          -o DPkg::Lock::Timeout=300 "${missing[@]}" >>"$out" 2>&1; }
  ) 9>"$cache/apt.lock"
  for p in "${missing[@]}"; do
    if ! nested_have_pkg "$p"; then
      tail -5 "$out" >&2
      _nested_err "Debian package $p cannot be installed (apt-get log: $out)"
      return
    fi
  done
}

# nested_get_kernel CACHE: Debian's linux-image-amd64, downloaded and
# unpacked (never installed) once into CACHE/kernel. Sets NESTED_KVER,
# NESTED_VMLINUZ (the bzImage), NESTED_KMODS (its lib/modules/<version>)
# and NESTED_KERNEL: the uncompressed ELF vmlinux when it could be
# extracted, because QEMU boots that through the PVH entry point and under
# TCG skips the ~8 s that SeaBIOS and the bzImage decompressor cost;
# otherwise the bzImage.
nested_get_kernel() {
  local cache=$1 kdir=$1/kernel
  mkdir -p "$cache" || _nested_err "cannot create $cache" || return
  (
    flock -w 900 9 || { echo "timed out waiting for $cache/kernel.lock"; exit 2; }
    [[ -f $kdir/.ok ]] && exit 0
    rm -rf "$kdir" "$cache/dl"; mkdir -p "$kdir" "$cache/dl"
    local pkg
    pkg=$(apt-cache depends linux-image-amd64 2>/dev/null |
          awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
    if [[ -z $pkg ]]; then
      timeout -k 5 300 apt-get update -q >/dev/null 2>&1
      pkg=$(apt-cache depends linux-image-amd64 2>/dev/null |
            awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
    fi
    [[ -n $pkg ]] || { echo "apt-cache knows no linux-image-amd64"; exit 2; }
    # apt-get download drops to the _apt user when it can: give it a
    # directory it may write.
    chmod 777 "$cache/dl" 2>/dev/null
    (cd "$cache/dl" && timeout -k 5 600 apt-get download "$pkg") >"$cache/dl/log" 2>&1 ||
      { tail -3 "$cache/dl/log"; echo "apt-get download $pkg failed"; exit 2; }
    dpkg -x "$cache"/dl/"$pkg"_*.deb "$kdir" || { echo "dpkg -x $pkg failed"; exit 2; }
    rm -rf "$cache/dl"
    # The vmlinux inside the bzImage: an xz stream (Debian's choice of
    # compression) that decompresses to an ELF file.
    local vmlinuz off
    vmlinuz=$(ls "$kdir"/boot/vmlinuz-* 2>/dev/null | head -1)
    off=$(LC_ALL=C grep -obUaP '\xfd7zXZ\x00' "$vmlinuz" | head -1 | cut -d: -f1)
    if [[ -n $off ]]; then
      # xz complains about the bytes after the stream: the ELF magic decides.
      tail -c +$((off + 1)) "$vmlinuz" | xz -dc >"$kdir/vmlinux" 2>/dev/null
      [[ $(head -c 4 "$kdir/vmlinux" | od -An -tx1 | tr -d ' ') == 7f454c46 ]] ||
        rm -f "$kdir/vmlinux"
    fi
    touch "$kdir/.ok"
  ) 9>"$cache/kernel.lock" >&2
  [[ $? == 0 ]] || _nested_err "Debian's kernel (linux-image-amd64) cannot be had" || return
  NESTED_VMLINUZ=$(ls "$kdir"/boot/vmlinuz-* 2>/dev/null | head -1)
  [[ -n $NESTED_VMLINUZ ]] || _nested_err "no vmlinuz in $kdir (delete it to refetch)" || return
  NESTED_KVER=${NESTED_VMLINUZ##*/vmlinuz-}
  NESTED_KERNEL=$NESTED_VMLINUZ
  [[ -f $kdir/vmlinux ]] && NESTED_KERNEL=$kdir/vmlinux
  NESTED_KMODS=$kdir/lib/modules/$NESTED_KVER
  [[ -d $NESTED_KMODS/kernel ]] || _nested_err "no modules in $NESTED_KMODS" || return
  return 0
}

# nested_mod_closure MODDIR MOD...: prints the module files (relative to
# MODDIR) that loading MOD... needs, dependencies first, each once. Reads
# each module's "depends=" modinfo string, because the package ships no
# modules.dep (depmod runs at install time). A module built into the kernel
# (listed in MODDIR/modules.builtin) prints nothing; an unknown one fails.
nested_mod_closure() {
  local moddir=$1; shift
  local -A path=() seen=() builtin=()
  local f n
  while read -r f; do
    n=${f##*/}; n=${n%%.ko*}; n=${n//-/_}
    path[$n]=$f
  done < <(cd "$moddir" && find kernel -name '*.ko*')
  if [[ -f $moddir/modules.builtin ]]; then
    while read -r f; do
      n=${f##*/}; n=${n%%.ko*}; n=${n//-/_}
      builtin[$n]=1
    done <"$moddir/modules.builtin"
  fi
  local order=() bad=
  _nested_visit() {
    local m=${1//-/_} f deps d
    [[ -n ${seen[$m]:-} ]] && return 0
    seen[$m]=1
    f=${path[$m]:-}
    if [[ -z $f ]]; then
      [[ -n ${builtin[$m]:-} ]] || bad+=" $m"
      return 0
    fi
    case $f in
      *.xz) deps=$(xz -dc "$moddir/$f" | grep -a -o 'depends=[a-z0-9_,-]*') ;;
      *.zst) deps=$(zstd -qdc "$moddir/$f" | grep -a -o 'depends=[a-z0-9_,-]*') ;;
      *.gz) deps=$(gzip -dc "$moddir/$f" | grep -a -o 'depends=[a-z0-9_,-]*') ;;
      *) deps=$(grep -a -o 'depends=[a-z0-9_,-]*' "$moddir/$f") ;;
    esac
    deps=${deps#depends=}
    for d in ${deps//,/ }; do _nested_visit "$d"; done
    order+=("$f")
  }
  for n in "$@"; do _nested_visit "$n"; done
  [[ -z $bad ]] || _nested_err "kernel modules not found in $moddir:$bad" || return
  printf '%s\n' "${order[@]}"
}

# nested_initramfs OUT INIT MODDIR "MOD..." [SRC=DEST...]: writes OUT, an
# uncompressed newc cpio (under TCG, gunzip costs more than reading a bigger
# file) holding static busybox as /bin/busybox (+ /bin/sh), INIT as /init,
# the modules MOD... (space-separated names) with their dependencies,
# decompressed into /lib/modules/ with their load order in
# /lib/modules/order (one file name a line: `insmod /lib/modules/$m`), and
# each extra file SRC at DEST. Needs busybox-static on the host.
nested_initramfs() {
  local out=$1 init=$2 moddir=$3 mods=$4; shift 4
  local root f b list
  # Not `busybox --list | grep -q`: under pipefail, grep leaving early makes
  # busybox die of SIGPIPE on a later write (1 run in 10 here).
  local applets
  applets=$(/bin/busybox --list 2>/dev/null)
  [[ $'\n'$applets$'\n' == *$'\ncpio\n'* ]] ||
    _nested_err "no static /bin/busybox with cpio (install busybox-static)" || return
  # The busybox binary must run without a loader: the initramfs has none.
  if ldd /bin/busybox >/dev/null 2>&1; then
    _nested_err "/bin/busybox is dynamically linked (install busybox-static)"
    return
  fi
  list=$(nested_mod_closure "$moddir" $mods) || return
  root=$(mktemp -d "${out}.root.XXXXXX") || _nested_err "mktemp failed" || return
  mkdir -p "$root"/{bin,dev,proc,sys,tmp,mnt,lib/modules,etc}
  cp /bin/busybox "$root/bin/busybox" && ln -s busybox "$root/bin/sh" &&
    cp "$init" "$root/init" && chmod 755 "$root/init" ||
    { rm -rf "$root"; _nested_err "populating the initramfs failed"; return; }
  : >"$root/lib/modules/order"
  while read -r f; do
    [[ -n $f ]] || continue
    b=${f##*/}
    case $b in
      *.ko.xz) xz -dc "$moddir/$f" >"$root/lib/modules/${b%.xz}"; b=${b%.xz} ;;
      *.ko.zst) zstd -qdc "$moddir/$f" >"$root/lib/modules/${b%.zst}"; b=${b%.zst} ;;
      *.ko.gz) gzip -dc "$moddir/$f" >"$root/lib/modules/${b%.gz}"; b=${b%.gz} ;;
      *) cp "$moddir/$f" "$root/lib/modules/$b" ;;
    esac || { rm -rf "$root"; _nested_err "cannot unpack module $f"; return; }
    echo "$b" >>"$root/lib/modules/order"
  done <<<"$list"
  for f in "$@"; do
    mkdir -p "$root/$(dirname "${f#*=}")" && cp -a "${f%%=*}" "$root/${f#*=}" ||
      { rm -rf "$root"; _nested_err "cannot add ${f%%=*} to the initramfs"; return; }
  done
  (cd "$root" && find . | LC_ALL=C sort | /bin/busybox cpio -o -H newc 2>/dev/null) \
    >"$out.tmp" && mv "$out.tmp" "$out"
  local rc=$?
  rm -rf "$root"
  [[ $rc == 0 ]] || _nested_err "writing $out failed"
}

# nested_run_qemu CONSOLE BOOT_SECS READY_RE DONE_FILE RUN_SECS -- QEMU ARGS...
# Starts QEMU (in its own process group, output into CONSOLE.qemu) with the
# serial console going to CONSOLE (pass `-serial file:CONSOLE` yourself) and
# watches it:
#   - boot deadline: a line matching READY_RE (grep -E) must appear in
#     CONSOLE within BOOT_SECS;
#   - run deadline: DONE_FILE must then appear within RUN_SECS;
#   - after DONE_FILE, QEMU gets 15 s to power off before it is killed;
#   - a kernel panic or a QEMU that exits early ends the wait at once.
# Sets NESTED_QEMU_PID while running; calls the function named by
# NESTED_POLL_HOOK (if set) on every poll, e.g. to relay output files. Returns 0 when DONE_FILE appeared,
# 124 on a missed deadline (which NESTED_ERR names), 125 on a panic or an
# early exit. On every non-zero return the tail of CONSOLE is printed.
# Records NESTED_READY_AT / NESTED_DONE_AT (seconds since the start).
nested_run_qemu() {
  local console=$1 boot_secs=$2 ready_re=$3 done_file=$4 run_secs=$5
  shift 5
  [[ $1 == -- ]] && shift
  : >"$console"
  local t0=$SECONDS
  NESTED_READY_AT='' NESTED_DONE_AT=''
  setsid "$@" >"$console.qemu" 2>&1 </dev/null &
  NESTED_QEMU_PID=$!
  local pid=$NESTED_QEMU_PID phase=boot deadline=$((t0 + boot_secs)) rc=0
  while :; do
    [[ -n ${NESTED_POLL_HOOK:-} ]] && "$NESTED_POLL_HOOK"
    if [[ $phase == boot ]] && grep -qE "$ready_re" "$console" 2>/dev/null; then
      phase=run NESTED_READY_AT=$((SECONDS - t0)) deadline=$((SECONDS + run_secs))
    fi
    if [[ $phase != off && -e $done_file ]]; then
      phase=off NESTED_DONE_AT=$((SECONDS - t0)) deadline=$((SECONDS + 15))
      [[ -z $NESTED_READY_AT ]] && NESTED_READY_AT=$NESTED_DONE_AT
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
      wait "$pid" 2>/dev/null
      [[ $phase == off ]] && break
      rc=125
      _nested_err "QEMU exited during the $phase phase ($(tail -1 "$console.qemu" 2>/dev/null))"
      break
    fi
    if grep -q 'Kernel panic' "$console" 2>/dev/null; then
      rc=125
      _nested_err "the outer kernel panicked"
      break
    fi
    if ((SECONDS >= deadline)); then
      [[ $phase == off ]] && break  # the result is in; just slow to halt
      rc=124
      case $phase in
        boot) _nested_err "the outer VM did not get ready within ${boot_secs}s" ;;
        run) _nested_err "the command did not finish within ${run_secs}s" ;;
      esac
      break
    fi
    sleep 0.2
  done
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM -- "-$pid" 2>/dev/null; sleep 0.5
    kill -KILL -- "-$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
  fi
  NESTED_QEMU_PID=
  if [[ $rc != 0 ]]; then
    echo "---- outer VM console (last 40 lines of $console) ----" >&2
    tail -n 40 "$console" >&2
    if [[ -s $console.qemu ]]; then
      echo "---- QEMU output ----" >&2
      tail -n 10 "$console.qemu" >&2
    fi
    echo "----" >&2
  fi
  return "$rc"
}
