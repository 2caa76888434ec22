#!/bin/bash
# The main job: boot a small Linux guest whose NIC is served by virtap, ping the host through it,
# run a short iperf3 in both directions, print the figures, tear everything down. Everything runs
# inside a network namespace made for the run; no traffic leaves it. Needs root.
#   scripts/demo.sh            the virtap guest demo
#   scripts/demo.sh loopback   the in-process TAP -> virtio -> TAP loopback benchmark instead
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh --guest
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
ninja -C build virtap vt_loopback >/dev/null
[ "${1:-}" = loopback ] && exec ./build/vt_loopback
export VT_BIN=$PWD/build/virtap
source tests/integration/lib.sh
echo "== virtap demo: guest (QEMU, $(vt_accel)) <-> vhost-user <-> virtap <-> TAP vtap0 (namespace $NS)"
vt_setup_ns
SOCK=$WORK/vu.sock
vt_start_virtap virtap --socket "$SOCK" --tap vtap0
vt_tap_up vtap0 10.77.0.1/24
vt_boot guest "$SOCK" 10.77.0.2/24 '
ping -c 3 10.77.0.1
iperf3 -s -D
echo VT_READY
nc -l -p 9999 >/dev/null'
vt_wait_for "$WORK/guest.log" VT_READY 90 || { echo "guest did not come up"; exit 1; }
echo "== guest -> host ping (from the guest's console)"
sed -n '/PING 10.77.0.1/,/round-trip/p' "$WORK/guest.log"
echo "== host -> guest ping"
ip netns exec "$NS" ping -c 5 -i 0.2 10.77.0.2 | tail -2
for dir in "" -R; do
  ip netns exec "$NS" iperf3 -c 10.77.0.2 -t 3 -J $dir > "$WORK/iperf.json"
  printf '== TCP %s: %s Gbit/s\n' "$([ -z "$dir" ] && echo 'host -> guest' || echo 'guest -> host')" \
    "$(vt_json "$WORK/iperf.json" "round(j['end']['sum_received']['bits_per_second']/1e9, 2)")"
done
ip netns exec "$NS" sh -c 'echo done | nc -q1 10.77.0.2 9999' >/dev/null 2>&1 || true
vt_guest_rc guest 30 || true
kill -USR1 "$VT_PID"; sleep 0.2; kill -TERM "$VT_PID"; wait "$VT_PID" || true
echo "== virtap's own log"
cat "$WORK/virtap.log"
echo "== done; namespace and processes are cleaned up on exit"
