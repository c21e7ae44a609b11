#!/usr/bin/env bash
# rc-timeout: 600
# Real client: DPDK 22.11 dpdk-testpmd with its virtio-user PMD
# (--vdev net_virtio_user0,path=SOCK) as the vhost-user front-end of
# vhost-user-device's net device on its loopback backend (every frame the
# guest transmits comes back on its receive queue). testpmd runs io
# forwarding with "start tx_first": one burst goes out, and every frame that
# comes back is sent again, for a few seconds; the test checks that frames
# went round (RX and TX counts well past the first burst, nothing dropped
# as errors). Run twice against the same daemon: split ring, then
# packed_vq=1 (which also checks the daemon takes a second front-end).
#
# Skips with "daemon has no net device yet" when vhost-user-device does not
# serve --device net,backend=loopback.
#
# usage: dpdk_net.sh PATH/TO/vhost-user-device CACHE_DIR
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
rc_init "$@"

SPEC="net,backend=loopback,queue-size=1024"
# Does this daemon serve net at all? (Refused spec: exits at once.)
if ! out=$(timeout -k 2 1 "$DAEMON" --socket "$RC_TMP/probe.sock" --device "$SPEC" 2>&1); then
  if grep -qiE "not served|unknown type|unknown property|unknown backend|needs backend" <<<"$out"; then
    echo "$out" | head -3
    skip "daemon has no net device yet (--device $SPEC refused)"
  fi
fi
rm -f "$RC_TMP/probe.sock"

rc_need_pkgs dpdk-dev
TESTPMD=$(command -v dpdk-testpmd) || skip "dpdk-testpmd missing after installing dpdk-dev"
# testpmd loads its PMDs from the plugin dir (librte-net-virtioNN, which
# the `dpdk` package pulls in).
have_virtio_pmd() { compgen -G "/usr/lib/*/dpdk/pmds-*/librte_net_virtio.so*" >/dev/null; }
have_virtio_pmd || rc_need_pkgs dpdk
have_virtio_pmd || skip "DPDK's virtio PMD (librte_net_virtio) is not installed and cannot be had"

SOCK=$RC_TMP/net.sock
rc_bg daemon timeout -k 5 120 "$DAEMON" --socket "$SOCK" --device "$SPEC"
DPID=$RC_LAST_PID
rc_wait_socket "$SOCK" || { cat "$RC_TMP/daemon.log"; fail "daemon did not listen"; }

run_testpmd() {  # NAME EXTRA_VDEV_ARGS
  local name=$1 extra=$2 logf=$RC_TMP/testpmd-$1.log
  # EAL keeps its runtime files in /var/run/dpdk/PREFIX (--in-memory would
  # avoid them but refuses --no-huge): removed by the EXIT trap.
  local prefix=vu-rc-$$-$name
  RC_CLEAN_PATHS+=("/var/run/dpdk/$prefix" "${XDG_RUNTIME_DIR:-/nonexistent}/dpdk/$prefix")
  log "testpmd ($name): io forwarding, tx_first, 2 s"
  # Commands on stdin; testpmd -i reads them. --no-huge: no hugepages needed.
  { sleep 2; echo "start tx_first"; sleep 2; echo "stop"; sleep 0.5; echo "quit"; } |
    timeout -k 5 40 "$TESTPMD" -l 0-1 -n 1 --no-huge -m 256 --no-pci \
      --file-prefix="$prefix" \
      --log-level=pmd.net.virtio.*:notice \
      --vdev "net_virtio_user0,path=$SOCK,queues=1,queue_size=1024$extra" \
      -- -i --nb-cores=1 --rxd=1024 --txd=1024 --total-num-mbufs=16384 --forward-mode=io \
      >"$logf" 2>&1
  local rc=$?
  show() { echo "--- testpmd ($name)"; tail -60 "$logf"; echo "--- daemon"; cat "$RC_TMP/daemon.log"; }
  [[ $rc == 124 || $rc == 137 ]] && { show; fail "testpmd ($name) did not finish within 40 s"; }
  # "Accumulated forward statistics for all ports" block, printed by stop.
  local acc rx tx drop
  acc=$(sed -n '/Accumulated forward statistics/,/^ *+\{10,\}/p' "$logf")
  rx=$(grep -o 'RX-packets: *[0-9]*' <<<"$acc" | head -1 | grep -o '[0-9]*$')
  tx=$(grep -o 'TX-packets: *[0-9]*' <<<"$acc" | head -1 | grep -o '[0-9]*$')
  drop=$(grep -o 'TX-dropped: *[0-9]*' <<<"$acc" | head -1 | grep -o '[0-9]*$')
  log "testpmd ($name): RX-packets=$rx TX-packets=$tx TX-dropped=$drop (exit $rc)"
  [[ -n $rx && -n $tx ]] || { show; fail "testpmd ($name) printed no forward statistics"; }
  # tx_first sends one burst of 32; io forwarding must keep them circulating.
  (( rx > 10000 && tx > 10000 )) ||
    { show; fail "testpmd ($name): too few frames went round the loopback (rx $rx, tx $tx)"; }
  grep -qi "protocol error" "$RC_TMP/daemon.log" &&
    { show; fail "daemon logged a protocol error during $name"; }
  grep -q "Bye" "$logf" || { show; fail "testpmd ($name) did not quit cleanly"; }
}

run_testpmd split ""
run_testpmd packed ",packed_vq=1"
rc_stop_daemon "$DPID" "$RC_TMP/daemon.log"
[[ -e $SOCK ]] && fail "daemon left its socket behind"
echo "PASS: dpdk-testpmd net_virtio_user (split and packed) against the net loopback device"
