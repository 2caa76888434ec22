#!/bin/bash
# SPDX-License-Identifier: MIT
# The guest's driver starts over on a connection that stays up: (1) the guest reboots (QEMU
# resets the machine; the same initramfs boots again) and pings the host after each boot, and
# virtap's log shows the rings stopped (GET_VRING_BASE) and then features renegotiated and rings
# restarted (SET_FEATURES, SET_VRING_KICK); (2) without a reboot, the guest unloads and reloads
# virtio_net, configures eth0 again and pings again, host -> guest too.
source "$(dirname "$0")/lib.sh"
vt_setup_ns
SOCK=$WORK/vu.sock
LOG=$WORK/virtap.log
vt_start_virtap virtap --socket "$SOCK" --tap vtap0 --log-level debug
vt_tap_up vtap0 10.77.0.1/24
vt_check "virtap running" vt_wait_for "$LOG" 'running with 1 port' 10

# in_order FROM REGEX...: after line FROM of virtap's log, each REGEX matches a line after the
# line the previous one matched.
in_order() {
  local at=$1 re; shift
  for re in "$@"; do
    at=$(awk -v f="$at" -v re="$re" 'NR > f && $0 ~ re {print NR; exit}' "$LOG")
    [ -n "$at" ] || { echo "  no '$re' in order in virtap's log"; return 1; }
  done
}
lines() { wc -l < "$LOG"; }

# ---- 1. reboot: QEMU without -no-reboot, the guest reboots itself after each ping ------------
vt_boot reboot "$SOCK" 10.77.0.2/24 'ping -c 2 -W 3 10.77.0.1 && echo VT_PING_OK; reboot -f' reboot=1
QR=$QEMU_PID
vt_check "first boot pings the host" vt_wait_for "$WORK/reboot.log" VT_PING_OK 60
vt_check "the guest boots a second time and pings the host again" \
  vt_wait_count "$WORK/reboot.log" VT_PING_OK 2 90
vt_check "two boots seen (VTGUEST_NET_UP twice or more)" \
  test "$(vt_count "$WORK/reboot.log" VTGUEST_NET_UP)" -ge 2
# Anchored on the messages themselves, not on when the guest's serial output was seen: the
# first boot's rings start (SET_VRING_KICK), then the reboot stops them (GET_VRING_BASE) and the
# next boot negotiates again and restarts them.
vt_check "after the first boot: rings stopped, features renegotiated, rings restarted" \
  in_order 0 'frontend connected' 'SET_VRING_KICK' 'GET_VRING_BASE' 'SET_FEATURES' 'SET_VRING_KICK'
vt_check "the reboots kept the same connection (no disconnect logged)" \
  test "$(vt_count "$LOG" 'frontend disconnected')" = 0
vt_kill9 "$QR"
vt_check "virtap logged the disconnect when QEMU was killed" \
  vt_wait_count "$LOG" 'frontend disconnected' 1 10

# ---- 2. driver reset without a reboot: rmmod/insmod virtio_net -------------------------------
RESET_SCRIPT='
ping -c 2 -W 3 10.77.0.1 && echo VT_PING1_OK
echo VT_RESET_BEGIN
ip link set eth0 down
rmmod virtio_net || echo VT_RMMOD_FAILED
[ -e /sys/class/net/eth0 ] && echo VT_ETH0_STILL_THERE
insmod /lib/modules/virtio_net.ko || echo VT_INSMOD_FAILED
i=0; while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i + 1)); done
ip addr add 10.77.0.2/24 dev eth0
ip link set eth0 up
echo VT_RESET_DONE
ping -c 3 -W 3 10.77.0.1 && echo VT_PING2_OK
echo VT_READY
nc -l -p 9999 >/dev/null
'
before=$(lines)
vt_boot reset "$SOCK" 10.77.0.2/24 "$RESET_SCRIPT"
QS=$QEMU_PID
vt_check "reset guest: ping before the driver reset" vt_wait_for "$WORK/reset.log" VT_PING1_OK 60
vt_check "reset guest: reset begins" vt_wait_for "$WORK/reset.log" VT_RESET_BEGIN 10
vt_check "reset guest: driver reloaded" vt_wait_for "$WORK/reset.log" VT_RESET_DONE 30
nothing_failed() { ! grep -qE 'VT_RMMOD_FAILED|VT_INSMOD_FAILED|VT_ETH0_STILL_THERE' "$WORK/reset.log"; }
vt_check "reset guest: rmmod removed eth0 and insmod brought it back" nothing_failed
vt_check "reset guest: ping after the driver reset" vt_wait_for "$WORK/reset.log" VT_PING2_OK 30
vt_check "reset guest: virtap saw the rings stop, then restart with new features" \
  in_order "$before" 'frontend connected' 'SET_VRING_KICK' 'GET_VRING_BASE' 'SET_FEATURES' \
  'SET_VRING_KICK'
vt_check "reset guest: ready" vt_wait_for "$WORK/reset.log" VT_READY 10
vt_check "host pings the guest after the driver reset" \
  ip netns exec "$NS" ping -c 3 -i 0.2 -W 3 -q 10.77.0.2
vt_check "the driver reset kept the connection (still one disconnect logged)" \
  test "$(vt_count "$LOG" 'frontend disconnected')" = 1
vt_guest_release 10.77.0.2
vt_check "reset guest finished cleanly" vt_guest_rc reset 30
vt_wait_exit "$QS" 10 || true
vt_check "virtap still running" kill -0 "$VT_PID"
vt_finish
