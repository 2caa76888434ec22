#!/bin/bash
# SPDX-License-Identifier: MIT
# Backend restart without losing the guest: iperf3 runs host -> guest, virtap is killed with
# SIGKILL and started again; QEMU (listening, server=on) takes the new virtap, resumes its rings
# from the guest's used index, and the guest keeps running: the TCP transfer finishes, ping loss
# is confined to the gap. The TAP is persistent, so it and its address outlive the dead virtap.
source "$(dirname "$0")/lib.sh"
vt_setup_ns
SOCK=$WORK/vu.sock
ip -n "$NS" tuntap add dev vtap0 mode tap vnet_hdr
vt_tap_up vtap0 10.77.0.1/24
vt_boot g "$SOCK" 10.77.0.2/24 'iperf3 -s -D; sleep 1; echo VT_READY; nc -l -p 9999 >/dev/null' server=1
vt_start_virtap virtap1 --client --reconnect-ms 100 --socket "$SOCK" --tap vtap0
vt_check "guest up through the first virtap" vt_wait_for "$WORK/g.log" VT_READY 60
sleep 0.5
ip netns exec "$NS" ping -i 0.1 -W 1 10.77.0.2 > "$WORK/ping.log" 2>&1 &
PING=$!; PIDS+=("$PING")
ip netns exec "$NS" iperf3 -c 10.77.0.2 -t 14 -J > "$WORK/tcp.json" 2>&1 &
IPERF=$!; PIDS+=("$IPERF")
sleep 4
kill -9 "$VT_PID"
t0=$SECONDS
sleep 1
vt_start_virtap virtap2 --client --reconnect-ms 100 --socket "$SOCK" --tap vtap0 --log-level debug
vt_check "the new virtap reconnected to QEMU" vt_wait_for "$WORK/virtap2.log" "frontend connected" 10
vt_check "and QEMU restarted the rings on it" vt_wait_for "$WORK/virtap2.log" "SET_VRING_KICK" 10
vt_check "iperf3 across the restart completed" wait "$IPERF"
if [ -s "$WORK/tcp.json" ] && got=$(vt_json "$WORK/tcp.json" "j['end']['sum_received']['bytes']"); then
  echo "  received $got bytes in 14 s across the restart"
  vt_check "the transfer carried on after the restart (> 20 MB)" test "$got" -gt 20000000
else
  vt_fail "iperf3 reported an error: $(head -c 300 "$WORK/tcp.json")"
fi
kill -INT "$PING"; wait "$PING" || true
sent=$(sed -n 's/^\([0-9]*\) packets transmitted, \([0-9]*\) received.*/\1/p' "$WORK/ping.log")
recv=$(sed -n 's/^\([0-9]*\) packets transmitted, \([0-9]*\) received.*/\2/p' "$WORK/ping.log")
echo "  ping: $recv of $sent answered (10 per second; the gap was about 1-2 s)"
vt_check "ping loss confined to the gap (at most 40 of $sent lost)" test $((sent - recv)) -le 40
vt_check "the guest still runs (no reboot)" bash -c "! grep -q 'VTGUEST_NET_UP.*VTGUEST_NET_UP' <(tr '\n' ' ' < '$WORK/g.log')"
ip netns exec "$NS" sh -c 'echo done | nc -q1 10.77.0.2 9999' >/dev/null 2>&1 || true
vt_check "guest finished cleanly" vt_guest_rc g 30
vt_finish
