#!/bin/bash
# SPDX-License-Identifier: MIT
# Configuration reload (SIGHUP) without dropping ports: a guest on port "a" keeps its session and
# its traffic while port "b" is removed and port "c" added; a configuration with an error changes
# nothing; a port whose settings change restarts alone.
source "$(dirname "$0")/lib.sh"
vt_setup_ns
CONF=$WORK/virtap.conf
write_conf() { # ports...
  {
    echo "log-level = debug"
    for p in "$@"; do
      case $p in
        a) printf '[port a]\nsocket = %s\ntap = vtap0\n' "$WORK/a.sock" ;;
        a2) printf '[port a]\nsocket = %s\ntap = vtap0\nbudget = 32\n' "$WORK/a.sock" ;;
        b) printf '[port b]\nsocket = %s\nbackend = sink\n' "$WORK/b.sock" ;;
        c) printf '[port c]\nsocket = %s\nbackend = echo\n' "$WORK/c.sock" ;;
        bad) printf '[port d]\nsocket = %s\nqueues = 99\n' "$WORK/d.sock" ;;
      esac
    done
  } > "$CONF"
}
write_conf a b
vt_start_virtap virtap --config "$CONF"
vt_tap_up vtap0 10.77.0.1/24
vt_boot g "$WORK/a.sock" 10.77.0.2/24 'echo VT_READY; nc -l -p 9999 >/dev/null'
vt_check "guest on port a up" vt_wait_for "$WORK/g.log" VT_READY 60
vt_check "port b listening" test -S "$WORK/b.sock"
ip netns exec "$NS" ping -i 0.1 -W 1 10.77.0.2 > "$WORK/ping.log" 2>&1 &
PING=$!; PIDS+=("$PING")
sleep 1

write_conf a c
kill -HUP "$VT_PID"
vt_check "reload logged: 1 kept, 1 added, 1 removed" \
  vt_wait_for "$WORK/virtap.log" "reloaded: 1 kept, 1 added, 1 removed, 0 restarted" 10
vt_check "port b's socket is gone" bash -c "! test -e '$WORK/b.sock'"
vt_check "port c listening" test -S "$WORK/c.sock"
vt_check "port a kept its frontend (no disconnect)" \
  bash -c "! grep -q 'a: frontend disconnected' '$WORK/virtap.log'"

write_conf a c bad
kill -HUP "$VT_PID"
vt_check "a bad configuration is refused" vt_wait_for "$WORK/virtap.log" "has errors" 10
vt_check "port c still listening after the refused reload" test -S "$WORK/c.sock"
sleep 1
kill -INT "$PING"; wait "$PING" || true
# Judge by the replies, not ping's loss figure: the probe in flight when ping is interrupted
# counts as lost there. Every probe up to the newest answered one must have its reply.
got=$(grep -c 'bytes from' "$WORK/ping.log" || true)
last=$(sed -n 's/.*icmp_seq=\([0-9]*\) .*/\1/p' "$WORK/ping.log" | sort -n | tail -1)
missing=$((${last:-0} - got))
echo "  ping across two reloads: $got replies up to icmp_seq ${last:-none}, $missing missing"
vt_check "guest traffic uninterrupted across the reloads (no ping lost)" \
  test "${last:-0}" -ge 10 -a "$missing" = 0

write_conf a2 c
kill -HUP "$VT_PID"
vt_check "a changed port restarts alone" \
  vt_wait_for "$WORK/virtap.log" "reloaded: 1 kept, 0 added, 0 removed, 1 restarted" 10
vt_check "virtap still running" kill -0 "$VT_PID"
vt_finish
