# Helpers for the real-Xen test (sourced by run.sh, not run).
#
# Everything comes from Debian 12 packages: the hypervisor and the kernel
# are `apt-get download`ed and unpacked into the cache (never installed
# into /boot); the dom0 toolstack and qemu-system-xen are installed on the
# host with apt-get, because dom0 runs on the host's own root filesystem
# (shared read-only over virtio-9p, with a tmpfs overlay on top).
set -u
set -o pipefail

XT_T0=$SECONDS
xt_log() { echo "[t+$((SECONDS - XT_T0))s] $*"; }
xt_skip() { echo "SKIP: $*"; exit 77; }
xt_fail() { echo "FAIL: $*"; exit 1; }

xt_have_pkg() {
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"
}

# xt_need_pkgs PKG...: installs what is missing (no recommends). On a host
# without Xen the packages' services do not start (their init scripts and
# units look for /proc/xen). Skips with the reason when they cannot be had.
xt_need_pkgs() {
  local missing=() p
  for p in "$@"; do xt_have_pkg "$p" || missing+=("$p"); done
  [[ ${#missing[@]} == 0 ]] && return 0
  command -v apt-get >/dev/null || xt_skip "needs ${missing[*]} and there is no apt-get"
  [[ $(id -u) == 0 ]] || xt_skip "needs ${missing[*]} (not installed; installing needs root)"
  xt_log "installing ${missing[*]}"
  local out=$XT_CACHE/apt.log
  (
    flock -w 900 9 || exit 1
    export DEBIAN_FRONTEND=noninteractive
    timeout -k 5 900 apt-get install -y -q --no-install-recommends \
        -o DPkg::Lock::Timeout=300 "${missing[@]}" >"$out" 2>&1 ||
      { timeout -k 5 300 apt-get update >>"$out" 2>&1 &&
        timeout -k 5 900 apt-get install -y -q --no-install-recommends \
          -o DPkg::Lock::Timeout=300 "${missing[@]}" >>"$out" 2>&1; }
  ) 9>"$XT_CACHE/apt.lock"
  for p in "${missing[@]}"; do
    xt_have_pkg "$p" && continue
    tail -5 "$out"
    xt_skip "Debian package $p cannot be installed (apt-get failed, see above)"
  done
}

# xt_unpack NAME PKG: downloads PKG (a .deb, not installed) and unpacks it
# once into $XT_CACHE/NAME; prints nothing, fails with 2.
xt_unpack() {
  local name=$1 pkg=$2 dir=$XT_CACHE/$1
  (
    flock -w 900 9 || exit 1
    [[ -f $dir/.ok ]] && exit 0
    rm -rf "$dir" "$XT_CACHE/dl-$name"; mkdir -p "$dir" "$XT_CACHE/dl-$name"
    # apt-get download runs as _apt when it can: give it a writable dir.
    chmod 777 "$XT_CACHE/dl-$name"
    (cd "$XT_CACHE/dl-$name" && timeout -k 5 900 apt-get download "$pkg") \
      >"$XT_CACHE/dl-$name.log" 2>&1 || {
      timeout -k 5 300 apt-get update >/dev/null 2>&1
      (cd "$XT_CACHE/dl-$name" && timeout -k 5 900 apt-get download "$pkg") \
        >>"$XT_CACHE/dl-$name.log" 2>&1
    } || { tail -3 "$XT_CACHE/dl-$name.log"; exit 2; }
    dpkg -x "$XT_CACHE/dl-$name"/*.deb "$dir" || exit 2
    rm -rf "$XT_CACHE/dl-$name"
    touch "$dir/.ok"
  ) 9>"$XT_CACHE/$name.lock"
}

# xt_get_images: Debian's Xen 4.17 (XEN_IMG: the multiboot ELF) and
# kernel (VMLINUZ, KVER, KMODS). The same kernel serves as PV dom0 and as
# the HVM guest.
xt_get_images() {
  xt_unpack xen xen-hypervisor-4.17-amd64 ||
    xt_skip "xen-hypervisor-4.17-amd64 cannot be downloaded"
  XEN_IMG=$XT_CACHE/xen/xen.elf
  if [[ ! -s $XEN_IMG ]]; then
    zcat "$XT_CACHE"/xen/boot/xen-4.17-amd64.gz >"$XEN_IMG.tmp" &&
      mv "$XEN_IMG.tmp" "$XEN_IMG" || xt_fail "cannot decompress the Xen image"
  fi
  local pkg
  pkg=$(apt-cache depends linux-image-amd64 2>/dev/null |
        awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
  if [[ -z $pkg ]]; then
    timeout -k 5 300 apt-get update >/dev/null 2>&1
    pkg=$(apt-cache depends linux-image-amd64 2>/dev/null |
          awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
  fi
  [[ -n $pkg ]] || xt_skip "apt-cache knows no linux-image-amd64"
  xt_unpack "kernel-${pkg#linux-image-}" "$pkg" || xt_skip "$pkg cannot be downloaded"
  local kdir=$XT_CACHE/kernel-${pkg#linux-image-}
  VMLINUZ=$(ls "$kdir"/boot/vmlinuz-* 2>/dev/null | head -1)
  [[ -n $VMLINUZ ]] || xt_fail "no vmlinuz in $kdir"
  KVER=${VMLINUZ##*/vmlinuz-}
  KMODS=$kdir/lib/modules/$KVER
  [[ -d $KMODS/kernel ]] || xt_fail "no modules in $KMODS"
}

# xt_mod_closure MODDIR MOD...: the module files (relative to MODDIR) to
# load, dependencies first, each once, from each module's own "depends="
# (the unpacked package has no modules.dep). Built-in modules are skipped.
xt_mod_closure() {
  local moddir=$1; shift
  local -A path=() seen=()
  local f n
  while read -r f; do
    n=${f##*/}; n=${n%%.ko*}; n=${n//-/_}
    path[$n]=$f
  done < <(cd "$moddir" && find kernel -name '*.ko*')
  _xt_visit() {
    local m=${1//-/_} f deps d
    [[ -n ${seen[$m]:-} ]] && return 0
    seen[$m]=1
    f=${path[$m]:-}
    [[ -n $f ]] || return 0
    case $f in
      *.xz) deps=$(xz -dc "$moddir/$f" | grep -a -o 'depends=[a-z0-9_,-]*' | head -1) ;;
      *.zst) deps=$(zstd -qdc "$moddir/$f" | grep -a -o 'depends=[a-z0-9_,-]*' | head -1) ;;
      *) deps=$(grep -a -o 'depends=[a-z0-9_,-]*' "$moddir/$f" | head -1) ;;
    esac
    deps=${deps#depends=}
    for d in ${deps//,/ }; do _xt_visit "$d"; done
    echo "$f"
  }
  for n in "$@"; do _xt_visit "$n"; done
}

# xt_initramfs OUT INIT MODULES [FILE:DEST...]: a newc cpio with static
# busybox, the modules MODULES (names, with their dependencies,
# decompressed, listed in load order in /modules.order), INIT as /init and
# extra files. Uncompressed: decompressing under TCG costs more than
# reading a bigger file.
xt_initramfs() {
  local out=$1 init=$2 mods=$3; shift 3
  local root=$out.d f b
  rm -rf "$root"
  mkdir -p "$root"/{bin,dev,proc,sys,tmp,mnt,lib/modules,etc}
  cp /bin/busybox "$root/bin/busybox" || xt_fail "no /bin/busybox (busybox-static)"
  ln -s busybox "$root/bin/sh"
  cp "$init" "$root/init" && chmod +x "$root/init"
  : >"$root/modules.order"
  while read -r f; do
    [[ -n $f ]] || continue
    b=${f##*/}
    case $b in
      *.ko.xz) xz -dc "$KMODS/$f" >"$root/lib/modules/${b%.xz}"; b=${b%.xz} ;;
      *.ko.zst) zstd -qdc "$KMODS/$f" >"$root/lib/modules/${b%.zst}"; b=${b%.zst} ;;
      *) cp "$KMODS/$f" "$root/lib/modules/$b" ;;
    esac
    echo "$b" >>"$root/modules.order"
  done < <(xt_mod_closure "$KMODS" $mods)
  for f in "$@"; do
    mkdir -p "$root/$(dirname "${f#*:}")"
    cp "${f%%:*}" "$root/${f#*:}"
  done
  (cd "$root" && find . | sort | /bin/busybox cpio -o -H newc 2>/dev/null >"$out") ||
    xt_fail "building $out failed"
  rm -rf "$root"
}
