#!/usr/bin/env bash
# Real-Xen test of xen-virtio-backend: boots Debian's Xen 4.17 under
# qemu-system-x86_64 -accel tcg with Debian's kernel as PV dom0 (root = this
# host's own filesystem over virtio-9p, read-only, tmpfs overlay), brings
# the toolstack up and runs HVM guests (qemu-xen as device model) whose
# virtio-pci devices are served by xen-virtio-backend from dom0.
#
#   run.sh BACKEND CACHE_DIR [GUEST...]
#
# BACKEND: the xen-virtio-backend binary (a host path: dom0 sees the host's
# tree). CACHE_DIR keeps the downloaded Xen and kernel. Each GUEST is
#   NAME|BACKEND ARGS|TESTS|IRQS|RINGS[|EXTRA KERNEL ARGS]
# (TESTS: comma-separated guest checks, in order, see guest-init.sh; IRQS
# SLOT.FN:msix|intx,... and RINGS SLOT.FN:split|packed,... per device;
# @IMG@ in BACKEND ARGS is replaced by a fresh ext4 image in dom0; ";;"
# separates the arguments of several backend processes; xt_disagg=SLOT.FN
# in the kernel args stops the backend of that function mid-stream, see
# dom0.sh).
# Default: the guests of the `xen_real` ctest (see DEFAULT_GUESTS).
#
# Exit 0 pass, 1 fail, 77 skip (with the reason). Every step has a deadline;
# QEMU is stopped as soon as Xen powers off, panics or dom0 dies. Logs are
# kept in XT_KEEP_DIR (default CACHE_DIR/last-run) whatever the outcome.
set -u
set -o pipefail
XT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$XT_DIR/lib.sh"

BACKEND=${1:?usage: $0 BACKEND CACHE_DIR [GUEST...]}
XT_CACHE=${2:?usage: $0 BACKEND CACHE_DIR [GUEST...]}
shift 2
DEFAULT_GUESTS=(
  # One HVM guest, four devices from two backend processes beside QEMU:
  # rng (INTx, split ring) and blk (ext4 image in dom0, MSI-X, packed)
  # from the first, console (Unix socket in dom0, MSI-X, split) and net
  # (TAP in dom0, MSI-X, packed) from the second. After console and net
  # pass, the second is stopped while the guest streams through its net
  # device; rng and blk are checked after that, on the first.
  "hvm|--device rng,addr=00:05.0,msix=off,packed=off --device blk,path=@IMG@,addr=00:06.0 ;; --device console,backend=socket,path=/tmp/xt-con.sock,addr=00:07.0,packed=off --device net,backend=tap,ifname=xt0,addr=00:08.0|console,net,disagg,rng,blk|05.0:intx,06.0:msix,07.0:msix,08.0:msix|05.0:split,06.0:packed,07.0:split,08.0:packed|xt_disagg=08.0"
)
GUESTS=("$@")
[[ ${#GUESTS[@]} -gt 0 ]] || GUESTS=("${DEFAULT_GUESTS[@]}")

[[ -x $BACKEND ]] || xt_fail "backend $BACKEND is not executable"
BACKEND=$(readlink -f "$BACKEND")
mkdir -p "$XT_CACHE" || xt_fail "cannot create $XT_CACHE"
XT_CACHE=$(readlink -f "$XT_CACHE")
[[ $(uname -m) == x86_64 ]] || xt_skip "needs an x86_64 host (Xen and dom0 are amd64 packages)"
[[ $(id -u) == 0 ]] || xt_skip "needs root (QEMU shares / over 9p with host permissions; apt-get)"

# --- packages, images ------------------------------------------------------------
# Host side: QEMU, busybox for the initramfs. Dom0 side (dom0 runs on the
# host's root): the toolstack, xenstore tools, qemu-xen for HVM guests,
# e2fsprogs to make and check the guest's disk, python3 for the console
# and TCP peers, iproute2 for the TAP.
xt_need_pkgs qemu-system-x86 qemu-system-common qemu-system-data seabios busybox-static zstd \
  xen-utils-4.17 xen-utils-common xenstore-utils qemu-system-xen e2fsprogs xz-utils cpio \
  python3 iproute2 procps util-linux
QEMU=$(command -v qemu-system-x86_64) || xt_skip "no qemu-system-x86_64"
xt_get_images
xt_log "Xen $XEN_IMG, kernel $KVER"

OUT=${XT_KEEP_DIR:-$XT_CACHE/last-run}
rm -rf "$OUT"; mkdir -p "$OUT" || xt_fail "cannot create $OUT"
QEMU_PID=
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [[ -n $QEMU_PID ]] && kill -0 "$QEMU_PID" 2>/dev/null; then
    kill -TERM "$QEMU_PID"; sleep 1; kill -KILL "$QEMU_PID" 2>/dev/null
  fi
  [[ -n $QEMU_PID ]] && wait "$QEMU_PID" 2>/dev/null
  echo "logs: $OUT"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

# dom0: Xen, 9p, overlay and TAP modules. Guest: virtio over PCI, ext4
# and crc32c (a soft dependency of ext4 that depends= does not list:
# without it mounting a metadata_csum filesystem fails with ENOENT).
xt_initramfs "$OUT/dom0.cpio" "$XT_DIR/dom0-init.sh" \
  "xen-evtchn xen-gntdev xen-gntalloc xen-privcmd xenfs 9p 9pnet_virtio virtio_pci overlay tun"
xt_initramfs "$OUT/guest.cpio" "$XT_DIR/guest-init.sh" \
  "virtio_pci virtio_rng virtio_blk virtio_console virtio_net ext4 crc32c_generic"
cp "$XT_DIR/dom0.sh" "$OUT/dom0.sh"
{
  echo "BACKEND=$BACKEND"
  echo "GUEST_KERNEL=$VMLINUZ"
  echo "GUEST_INITRD=/xtout/guest.cpio"
  echo "GUEST_DEADLINE=${XT_GUEST_DEADLINE:-1500}"
  echo "GUESTS=("
  for g in "${GUESTS[@]}"; do
    IFS='|' read -r n b t i r e <<<"$g"
    printf '  %q\n' "$n $(printf '%q' "$b") $t $i $r $(printf '%q' "${e:-}")"
  done
  echo ")"
} >"$OUT/config.sh"

# --- boot ----------------------------------------------------------------------------
# Commas separate multiboot modules in -initrd: none inside the command lines.
XEN_ARGS="console=com1 com1=115200 dom0_mem=1024M,max:1024M dom0_max_vcpus=1 dom0_vcpus_pin loglvl=all guest_loglvl=all noreboot"
DOM0_ARGS="console=hvc0 earlyprintk=xen rdinit=/init panic=-1 loglevel=4"
xt_log "booting Xen under QEMU (TCG)"
"$QEMU" -machine q35 -accel tcg -cpu qemu64,+svm,+npt -m 3G -smp 2 \
  -nodefaults -no-user-config -display none -no-reboot \
  -serial "file:$OUT/serial.log" \
  -kernel "$XEN_IMG" -append "$XEN_ARGS" \
  -initrd "$VMLINUZ $DOM0_ARGS,$OUT/dom0.cpio" \
  -virtfs local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap \
  -virtfs local,path="$OUT",mount_tag=xtout,security_model=none,multidevs=remap \
  >"$OUT/qemu.log" 2>&1 </dev/null &
QEMU_PID=$!

# Milestones (host wall time when first seen) and deadlines (seconds since
# QEMU started) for each. Idle, they come at ~20 s, ~25 s, ~60 s and
# ~6-7 min; the deadlines allow for a host that slows everything 3-4x
# (other jobs on the 2 cores). dom0 gives up on a guest after
# GUEST_DEADLINE, or sooner when the guest's CPU time stops growing, and
# still reports; the last deadline is for dom0 itself.
declare -A SEEN=()
milestones=(
  "XT-DOM0-INIT:300"
  "XT-TOOLSTACK-UP:420"
  "XT-GUEST-UNPAUSED:720"
  "XT-RESULT:${XT_TOTAL_DEADLINE:-2000}"
)
T0=$SECONDS
verdict=
while :; do
  now=$((SECONDS - T0))
  if ! kill -0 "$QEMU_PID" 2>/dev/null; then
    verdict="QEMU exited"; break
  fi
  for m in "${milestones[@]}"; do
    key=${m%%:*} limit=${m##*:}
    if [[ -z ${SEEN[$key]:-} ]]; then
      if grep -aq "$key" "$OUT/serial.log" 2>/dev/null; then
        SEEN[$key]=$now
        xt_log "$key at ${now}s: $(grep -a -m1 "$key" "$OUT/serial.log" | tr -d '\r')"
      elif ((now > limit)); then
        verdict="deadline: no $key within ${limit}s"
      fi
      break  # one milestone at a time, in order
    fi
  done
  [[ -n $verdict ]] && break
  if [[ -n ${SEEN[XT-RESULT]:-} ]] && ((now > SEEN[XT-RESULT] + 60)); then
    verdict="no power-off within 60 s of the result"; break
  fi
  # Xen is done (or dead): it never makes QEMU exit by itself.
  hit=$(grep -a -m1 -E "Entering ACPI S5 state|Hardware Dom0 crashed|Manual reset required|Panic on CPU|XT-DOM0-FATAL" \
    "$OUT/serial.log" 2>/dev/null)
  if [[ -n $hit ]]; then
    verdict="Xen: $hit"; break
  fi
  sleep 0.5
done
xt_log "stopping QEMU ($verdict)"
kill -TERM "$QEMU_PID" 2>/dev/null; sleep 0.5; kill -KILL "$QEMU_PID" 2>/dev/null
wait "$QEMU_PID" 2>/dev/null
QEMU_PID=

tr -d '\r' <"$OUT/serial.log" | grep -a -E '^XT-(GUEST|BACKEND|FAIL|DISK|RESULT|BACKEND-EXIT|GUEST-END|DISAGG|GUARDIAN|PLACEMENT)' |
  sed 's/^/  /'
result=$(tr -d '\r' <"$OUT/serial.log" | grep -a -m1 '^XT-RESULT:')
xt_log "done in $((SECONDS - T0))s (QEMU wall time); milestones: $(for k in "${!SEEN[@]}"; do printf '%s=%ss ' "$k" "${SEEN[$k]}"; done)"
case $result in
  "XT-RESULT: PASS") echo "PASS"; exit 0 ;;
  XT-RESULT:*) tail -40 "$OUT/serial.log" | tr -d '\r'; xt_fail "${result#XT-RESULT: }" ;;
  *) tail -60 "$OUT/serial.log" | tr -d '\r'; xt_fail "no result from dom0 ($verdict)" ;;
esac
