#!/bin/bash
# SPDX-License-Identifier: MIT
# Two guests on two ports of one virtap at the same time: each port has its own TAP and subnet,
# both ports share one busy-polling worker thread (worker=w0), TCP iperf3 runs to both guests at
# once and both move data, and killing one guest's QEMU leaves the other port connected, its
# guest reachable, and the worker serving it.
source "$(dirname "$0")/lib.sh"
vt_setup_ns
SA=$WORK/a.sock SB=$WORK/b.sock
vt_start_virtap virtap --port "socket=$SA,tap=vtap0,name=a,worker=w0,busy-poll=50" \
  --port "socket=$SB,tap=vtap1,name=b,worker=w0,busy-poll=50"
vt_tap_up vtap0 10.77.0.1/24
vt_tap_up vtap1 10.78.0.1/24
vt_check "virtap running with two ports" vt_wait_for "$WORK/virtap.log" 'running with 2 ports' 10
vt_check "both ports on shared worker w0" \
  test "$(vt_count "$WORK/virtap.log" 'on shared worker w0')" = 2
workers() { # threads of virtap named $1
  grep -lx "$1" /proc/"$VT_PID"/task/*/comm 2>/dev/null | wc -l
}

SCRIPT='
ping -c 2 -W 3 "$HOST" && echo VT_PING_OK
iperf3 -s -D
sleep 0.3
echo VT_READY
nc -l -p 9999 >/dev/null
'
vt_boot ga "$SA" 10.77.0.2/24 "HOST=10.77.0.1; $SCRIPT" mac=52:54:00:00:0a:02
QA=$QEMU_PID
vt_boot gb "$SB" 10.78.0.2/24 "HOST=10.78.0.1; $SCRIPT" mac=52:54:00:00:0b:02
QB=$QEMU_PID
vt_check "virtap: port a has its frontend" vt_wait_for "$WORK/virtap.log" ' a: frontend connected' 30
vt_check "virtap: port b has its frontend" vt_wait_for "$WORK/virtap.log" ' b: frontend connected' 30
vt_check "guest A pings its host side (10.77.0.1)" vt_wait_for "$WORK/ga.log" VT_PING_OK 90
vt_check "guest B pings its host side (10.78.0.1)" vt_wait_for "$WORK/gb.log" VT_PING_OK 90
vt_check "guest A ready" vt_wait_for "$WORK/ga.log" VT_READY 30
vt_check "guest B ready" vt_wait_for "$WORK/gb.log" VT_READY 30
mac_is() { ip -n "$NS" neigh show "$1" | grep -qi "lladdr $2"; }
vt_check "vtap0 reaches guest A's MAC only" mac_is 10.77.0.2 52:54:00:00:0a:02
vt_check "vtap1 reaches guest B's MAC only" mac_is 10.78.0.2 52:54:00:00:0b:02

# Both transfers at the same time.
ip netns exec "$NS" iperf3 -c 10.77.0.2 -t 5 -J > "$WORK/ia.json" 2> "$WORK/ia.err" &
IA=$!
ip netns exec "$NS" iperf3 -c 10.78.0.2 -t 5 -J > "$WORK/ib.json" 2> "$WORK/ib.err" &
IB=$!
PIDS+=("$IA" "$IB")
RA=0; wait "$IA" || RA=$?
RB=0; wait "$IB" || RB=$?
got() { # got NAME RC: iperf3 succeeded and more than 1 MB arrived
  [ "$2" = 0 ] || { echo "  iperf3 to guest $1 failed ($2)"; return 1; }
  local recv start
  recv=$(vt_json "$WORK/i$1.json" "j['end']['sum_received']['bytes']")
  start=$(vt_json "$WORK/i$1.json" "j['start']['timestamp']['timesecs']")
  echo "  guest $1: received $recv bytes ($(vt_json "$WORK/i$1.json" \
    "round(j['end']['sum_received']['bits_per_second']/1e9, 3)") Gbit/s), started at $start"
  [ "$recv" -gt 1000000 ]
}
vt_check "TCP to guest A, concurrently with B: > 1 MB" got a "$RA"
vt_check "TCP to guest B, concurrently with A: > 1 MB" got b "$RB"
overlap() { # the two runs really overlapped: their starts are less than 3 s apart (they last 5 s)
  local sa sb
  sa=$(vt_json "$WORK/ia.json" "j['start']['timestamp']['timesecs']")
  sb=$(vt_json "$WORK/ib.json" "j['start']['timestamp']['timesecs']")
  [ $((sa > sb ? sa - sb : sb - sa)) -lt 3 ]
}
vt_check "the two transfers overlapped in time" overlap

# Guest A's QEMU dies; port b must not notice.
vt_kill9 "$QA"
vt_check "virtap: port a logged its disconnect" \
  vt_wait_for "$WORK/virtap.log" ' a: frontend disconnected' 10
vt_check "virtap still running" kill -0 "$VT_PID"
vt_check "guest B still answers ping" ip netns exec "$NS" ping -c 3 -i 0.2 -W 3 -q 10.78.0.2
vt_check "one worker thread served both guests" test "$(workers vtw-w0)" = 1
vt_check "and no port made a worker of its own" \
  sh -c "! grep -q '^vt-' /proc/$VT_PID/task/*/comm"
vt_check "guest A is gone (no answer on 10.77.0.2)" \
  sh -c "! ip netns exec $NS ping -c 1 -W 1 -q 10.77.0.2 >/dev/null"
vt_check "port b never disconnected" test "$(vt_count "$WORK/virtap.log" ' b: frontend disconnected')" = 0
vt_guest_release 10.78.0.2
vt_check "guest B finished cleanly" vt_guest_rc gb 30
vt_wait_exit "$QB" 10 || true
vt_finish
