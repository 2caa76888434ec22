#!/bin/bash
# SPDX-License-Identifier: MIT
# virtap in client mode (--client): QEMU listens on the socket (server=on,wait=off) and virtap
# connects. The guest reaches the host; SIGTERM makes virtap exit 0 quickly without removing
# QEMU's socket or the TAP it did not create; a new virtap connects to the same, still-running
# QEMU and the guest reaches the host again. And a client started before QEMU exists keeps
# retrying (saying so once) and connects when QEMU appears.
source "$(dirname "$0")/lib.sh"
vt_setup_ns
SOCK=$WORK/qemu.sock

# The TAP belongs to the test (persistent, made before virtap): virtap attaches to it, and must
# leave it, and its address, in place when it exits.
ip -n "$NS" tuntap add dev vtap0 mode tap
vt_tap_up vtap0 10.77.0.1/24

# The guest pings the host every 0.2 s and reports each change: VT_LINK_up N / VT_LINK_down N.
WATCH='
state=none; k=0
while :; do
  if ping -c 1 -W 1 10.77.0.1 >/dev/null 2>&1; then s=up; else s=down; fi
  if [ $s != $state ]; then k=$((k + 1)); echo "VT_LINK_$s $k"; state=$s; fi
  sleep 0.2
done
'
wait_sock() { # wait_sock PATH SECONDS: a listening socket appears
  local end=$((SECONDS + $2))
  while [ $SECONDS -lt $end ]; do [ -S "$1" ] && return 0; sleep 0.1; done
  return 1
}
# sigterm_exit PID: SIGTERM, then exit status 0 within 5 s
sigterm_exit() {
  kill -TERM "$1"
  vt_wait_exit "$1" 5 || { echo "  still running 5 s after SIGTERM"; return 1; }
  echo "  exit status $VT_EXIT"
  [ "$VT_EXIT" = 0 ]
}

# ---- 1. QEMU first, then virtap connects ------------------------------------------------------
vt_boot g1 "$SOCK" 10.77.0.2/24 "$WATCH" server=1
Q1=$QEMU_PID
vt_check "QEMU listens on the socket" wait_sock "$SOCK" 30
vt_start_virtap vt1 --socket "$SOCK" --tap vtap0 --client --reconnect-ms 200 --log-level debug
V1=$VT_PID
vt_check "virtap (client) connected to QEMU" vt_wait_for "$WORK/vt1.log" 'frontend connected' 10
vt_check "guest booted" vt_wait_for "$WORK/g1.log" VTGUEST_NET_UP 60
vt_check "guest pings the host through the client-mode virtap" \
  vt_wait_for "$WORK/g1.log" 'VT_LINK_up' 30
vt_check "host pings the guest" ip netns exec "$NS" ping -c 3 -i 0.2 -W 3 -q 10.77.0.2

vt_check "SIGTERM: virtap exits 0 within 5 s" sigterm_exit "$V1"
vt_check "virtap logged the shutdown" vt_wait_for "$WORK/vt1.log" 'shutting down' 1
vt_check "QEMU's socket is still there (not virtap's to remove)" test -S "$SOCK"
vt_check "the test's TAP is still there, with its address" \
  sh -c "ip -n $NS addr show dev vtap0 | grep -q 10.77.0.1/24"
vt_check "QEMU is still running" kill -0 "$Q1"
k=$(sed -n 's/.*VT_LINK_up \([0-9]*\).*/\1/p' "$WORK/g1.log" | tail -1)
vt_check "the guest loses the host while no backend is connected" \
  vt_wait_for "$WORK/g1.log" "VT_LINK_down $((k + 1))" 15

# A new virtap connects to the same QEMU. QEMU 7.2 (vhost-user netdev, server=on chardev) takes
# the new backend: it sets the NIC's link up and starts vhost again with the features the guest
# driver negotiated before, so the guest reaches the host without rebooting.
vt_start_virtap vt2 --socket "$SOCK" --tap vtap0 --client --reconnect-ms 200 --log-level debug
V2=$VT_PID
vt_check "a new virtap connects to the still-running QEMU" \
  vt_wait_for "$WORK/vt2.log" 'frontend connected' 10
vt_check "QEMU restarted the rings on the new backend (SET_VRING_KICK)" \
  vt_wait_for "$WORK/vt2.log" 'SET_VRING_KICK' 15
vt_check "the guest reaches the host again, without a reboot" \
  vt_wait_for "$WORK/g1.log" "VT_LINK_up $((k + 2))" 30
vt_check "the guest did not reboot" test "$(vt_count "$WORK/g1.log" VTGUEST_NET_UP)" = 1
vt_check "host pings the guest again" ip netns exec "$NS" ping -c 3 -i 0.2 -W 3 -q 10.77.0.2
vt_kill9 "$Q1"
vt_check "virtap noticed QEMU going away" vt_wait_for "$WORK/vt2.log" 'frontend disconnected' 10
vt_check "and retries, still running" vt_wait_for "$WORK/vt2.log" 'retrying every 200 ms' 10
vt_check "SIGTERM while retrying: exit 0 within 5 s" sigterm_exit "$V2"

# ---- 2. virtap first: it retries until QEMU appears ------------------------------------------
SOCK2=$WORK/later.sock
vt_start_virtap vt3 --socket "$SOCK2" --tap vtap0 --client --reconnect-ms 200
V3=$VT_PID
vt_check "client started before QEMU says it is retrying" \
  vt_wait_for "$WORK/vt3.log" "cannot connect to $SOCK2 .*retrying every 200 ms" 10
sleep 1.5 # several retry intervals with nothing to connect to
vt_check "still running, not connected, the failure logged once (not every retry)" \
  sh -c "kill -0 $V3 && ! grep -q 'frontend connected' '$WORK/vt3.log' &&
         [ \$(grep -c 'cannot connect' '$WORK/vt3.log') = 1 ]"
vt_boot g2 "$SOCK2" 10.77.0.2/24 "$WATCH" server=1
Q2=$QEMU_PID
vt_check "virtap connects once QEMU listens" vt_wait_for "$WORK/vt3.log" 'frontend connected' 30
vt_check "guest pings the host" vt_wait_for "$WORK/g2.log" 'VT_LINK_up' 60
vt_check "host pings the guest" ip netns exec "$NS" ping -c 3 -i 0.2 -W 3 -q 10.77.0.2
vt_check "SIGTERM: exit 0 within 5 s" sigterm_exit "$V3"
vt_check "QEMU's socket is still there" test -S "$SOCK2"
vt_kill9 "$Q2"
vt_finish
