#!/bin/bash
# SPDX-License-Identifier: MIT
# Multiqueue: a 4-vCPU guest with 4 queue pairs on a multiqueue TAP, one virtap worker per pair;
# parallel TCP streams both ways put traffic on every pair; then the guest enables only 2 pairs
# (ethtool -L) and traffic keeps flowing on those, with the other TAP queues detached. Then the
# same with 2 pairs offered.
source "$(dirname "$0")/lib.sh"
vt_setup_ns

qp_counts() { # prints "rx+tx" per queue pair from a fresh SIGUSR1 stats dump
  local n
  n=$(vt_count "$WORK/virtap.log" "qp0 rx")
  kill -USR1 "$VT_PID"
  vt_wait_count "$WORK/virtap.log" "qp0 rx" $((n + 1)) 5 >/dev/null 2>&1 || sleep 0.5
  grep -E "port0: qp[0-9]+ rx" "$WORK/virtap.log" | tail -n "$1" |
    sed -E 's/.*qp([0-9]+) rx ([0-9]+) pkts [0-9]+ bytes, tx ([0-9]+) pkts.*/\1 \2 \3/'
}

# iperf3 from the host; the guest's server (a slow emulated CPU) needs a moment between tests,
# so a refused connection is retried.
iperf() {
  local try
  for try in 1 2 3 4 5 6 7 8 9 10; do
    ip netns exec "$NS" iperf3 "$@" 2>/dev/null && return 0
    sleep 1
  done
  return 1
}

run_case() { # queues subnet
  local q=$1 sock=$WORK/vu$1.sock name=g$1 net=$2
  vt_start_virtap virtap --socket "$sock" --tap vtap$q --queues "$q" --threads queue --log-level debug
  vt_tap_up vtap$q $net.1/24
  vt_boot $name "$sock" $net.2/24 '
echo "VT_COMBINED $(ethtool -l eth0 | awk "/Combined/ {print \$2}" | tail -1)"
(while true; do iperf3 -s -1 >/dev/null 2>&1; done) & sleep 2; echo VT_READY
nc -l -p 9998 >/dev/null
ethtool -L eth0 combined 2 && echo VT_L2
nc -l -p 9999 >/dev/null' queues=$q smp=$q
  vt_check "$q-pair guest up" vt_wait_for "$WORK/$name.log" VT_READY 90
  vt_check "guest uses all $q pairs" grep -q "VT_COMBINED $q" "$WORK/$name.log"
  iperf -c $net.2 -P 16 -t 3 > /dev/null
  iperf -c $net.2 -P 16 -t 3 -R > /dev/null
  qp_counts "$q" > "$WORK/qp-before"
  cat "$WORK/qp-before" | sed 's/^/  qp /'
  vt_check "traffic on every one of the $q pairs" \
    awk -v q="$q" '$2 + $3 > 0 {n++} END {exit !(n == q)}' "$WORK/qp-before"
  ip netns exec "$NS" sh -c "echo go | nc -q1 $net.2 9998" >/dev/null 2>&1 || true
  vt_check "guest switched to 2 pairs (ethtool -L)" vt_wait_for "$WORK/$name.log" VT_L2 20
  sleep 0.5
  local got
  got=$(iperf -c $net.2 -P 16 -t 3 -J | python3 -c \
    'import json,sys; print(json.load(sys.stdin)["end"]["sum_received"]["bytes"])')
  echo "  16 streams host -> guest on 2 pairs: $got bytes"
  vt_check "all 16 streams still flow on 2 pairs (none stuck on a detached queue)" \
    test "${got:-0}" -gt 1000000
  vt_check "host still pings the guest" ip netns exec "$NS" ping -c 3 -W 2 -q $net.2
  if [ "$q" -gt 2 ]; then
    qp_counts "$q" > "$WORK/qp-after"
    sed 's/^/  after: qp /' "$WORK/qp-after"
    vt_check "after ethtool -L, pairs 0-1 carry the traffic (pairs 2.. under 1% of it)" \
      python3 - "$WORK/qp-before" "$WORK/qp-after" <<'PY'
import sys
b = {l.split()[0]: int(l.split()[1]) + int(l.split()[2]) for l in open(sys.argv[1])}
a = {l.split()[0]: int(l.split()[1]) + int(l.split()[2]) for l in open(sys.argv[2])}
low = sum(a[k] - b[k] for k in a if int(k) < 2)
high = sum(a[k] - b[k] for k in a if int(k) >= 2)
print(f"  new frames: pairs 0-1 {low}, pairs 2.. {high}")
sys.exit(0 if low > 0 and high * 100 < low else 1)
PY
  fi
  ip netns exec "$NS" sh -c "echo done | nc -q1 $net.2 9999" >/dev/null 2>&1 || true
  vt_check "guest finished" vt_guest_rc $name 30
  vt_stop "$VT_PID"
}
run_case 4 10.77.0
run_case 2 10.78.0
vt_finish
