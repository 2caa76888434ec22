#!/bin/bash
# SPDX-License-Identifier: MIT
# QEMU killed with SIGKILL in the middle of TCP traffic (host -> guest, then guest -> host): virtap
# survives, logs the disconnect, and serves the next guest on the same socket (pings both ways).
# Twice in a row, and virtap holds no more file descriptors after the second round than after
# the first: nothing leaks across connections.
source "$(dirname "$0")/lib.sh"
vt_setup_ns
SOCK=$WORK/vu.sock
vt_start_virtap virtap --socket "$SOCK" --tap vtap0 --log-level debug
vt_tap_up vtap0 10.77.0.1/24
vt_check "virtap running" vt_wait_for "$WORK/virtap.log" 'running with 1 port' 10

VICTIM_SCRIPT='iperf3 -s -D; sleep 0.3; echo VT_READY; sleep 600'
NEXT_SCRIPT='
ping -c 3 -W 3 10.77.0.1 && echo VT_PING_OK
echo VT_READY
nc -l -p 9999 >/dev/null
'
FDS=()

# fds_settled: virtap's fd count once it stops changing (it logs a disconnect before closing).
fds_settled() {
  local a b end=$((SECONDS + 5))
  b=$(vt_fd_count "$VT_PID")
  while [ $SECONDS -lt $end ]; do
    sleep 0.3
    a=$b; b=$(vt_fd_count "$VT_PID")
    [ "$a" = "$b" ] && break
  done
  echo "$b"
}

# traffic_flowing FILE: iperf3's per-interval lines show data moving (not just a connection).
traffic_flowing() {
  vt_wait_for "$1" '[0-9.]+-[0-9.]+ +sec +[0-9.]+ [KMG]Bytes +[0-9.]+ [KMG]bits/sec' 10 &&
    ! grep -qE 'unable to|error' "$1"
}

# round N DIR: kill a guest during iperf3 traffic in direction DIR ("" or -R), then boot a
# fresh guest on the same socket and check it works.
round() {
  local n=$1 dir=$2 disc qemu client
  local what="round $n (host->guest)"
  if [ "$dir" = -R ]; then what="round $n (guest->host)"; fi
  disc=$(vt_count "$WORK/virtap.log" 'frontend disconnected')
  vt_boot "kill$n" "$SOCK" 10.77.0.2/24 "$VICTIM_SCRIPT"
  qemu=$QEMU_PID
  vt_check "$what: guest up with an iperf3 server" vt_wait_for "$WORK/kill$n.log" VT_READY 60
  ip netns exec "$NS" iperf3 -c 10.77.0.2 -t 20 -i 0.5 --forceflush $dir \
    > "$WORK/iperf$n.out" 2>&1 &
  client=$!
  PIDS+=("$client")
  sleep 2
  vt_check "$what: TCP traffic flowing before the kill" traffic_flowing "$WORK/iperf$n.out"
  vt_kill9 "$qemu"
  vt_check "$what: virtap logged the disconnect" \
    vt_wait_count "$WORK/virtap.log" 'frontend disconnected' $((disc + 1)) 10
  vt_kill9 "$client"
  vt_check "$what: virtap still alive after the kill" kill -0 "$VT_PID"
  FDS+=("$(fds_settled)")

  vt_boot "next$n" "$SOCK" 10.77.0.2/24 "$NEXT_SCRIPT"
  vt_check "$what: next guest boots on the same socket" \
    vt_wait_for "$WORK/next$n.log" VTGUEST_NET_UP 60
  vt_check "$what: next guest pings the host" vt_wait_for "$WORK/next$n.log" VT_PING_OK 30
  vt_check "$what: next guest ready" vt_wait_for "$WORK/next$n.log" VT_READY 30
  vt_check "$what: host pings the next guest" \
    ip netns exec "$NS" ping -c 3 -i 0.2 -W 3 -q 10.77.0.2
  vt_guest_release 10.77.0.2
  vt_check "$what: next guest finished cleanly" vt_guest_rc "next$n" 30
  vt_check "$what: its disconnect logged" \
    vt_wait_count "$WORK/virtap.log" 'frontend disconnected' $((disc + 2)) 10
  vt_wait_exit "$QEMU_PID" 10 || vt_kill9 "$QEMU_PID"
  FDS+=("$(fds_settled)")
}

round 1 ""
round 2 "-R"
echo "  virtap fds after each guest left: ${FDS[*]}"
same_fds() { [ "${#FDS[@]}" -eq 4 ] && [ "${FDS[0]}" = "${FDS[1]}" ] && [ "${FDS[1]}" = "${FDS[2]}" ] &&
  [ "${FDS[2]}" = "${FDS[3]}" ]; }
vt_check "no fd leak: same fd count after every guest left (${FDS[*]})" same_fds
vt_check "virtap still running at the end" kill -0 "$VT_PID"
vt_finish
