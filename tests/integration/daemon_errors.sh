#!/bin/bash
# SPDX-License-Identifier: MIT
# What a person sees when they get virtap wrong, and how it answers signals (no guest): usage
# errors exit 2 and point at --help; --help and --version exit 0; a socket directory that does
# not exist, an unprivileged user and a TUN device where a TAP was asked for each fail with a
# message that names the problem; SIGTERM exits 0 and removes the listening socket; SIGUSR1
# logs the counters.
source "$(dirname "$0")/lib.sh"
vt_setup_ns

# run_vt NAME [--as-nobody] args... : run virtap to completion in the namespace (10 s at most);
# output in $WORK/NAME.log, exit status in RC.
run_vt() {
  local name=$1; shift
  local -a pre=()
  if [ "${1:-}" = --as-nobody ]; then
    pre=(setpriv --reuid=65534 --regid=65534 --clear-groups); shift
  fi
  RC=0
  ip netns exec "$NS" timeout 10 "${pre[@]}" "$VT_BIN" "$@" > "$WORK/$name.log" 2>&1 || RC=$?
  echo "  virtap $*: exit $RC: $(head -c 300 "$WORK/$name.log" | head -n 2 | tr '\n' ' ')"
}
rc_is() { [ "$RC" = "$1" ]; }
rc_nonzero() { [ "$RC" != 0 ] && [ "$RC" != 124 ]; } # 124: timeout killed it, not an error exit
log_has() { grep -qiE -e "$2" "$WORK/$1.log"; }
no_link() { ! ip -n "$NS" link show "$1" >/dev/null 2>&1; }

run_vt noargs
vt_check "no arguments: exit 2" rc_is 2
vt_check "no arguments: the message points at --help" log_has noargs '--help'

run_vt queues0 --socket "$WORK/q.sock" --tap vtq0 --queues 0
vt_check "--queues 0: exit 2" rc_is 2
vt_check "--queues 0: the message names --queues and its range" log_has queues0 "--queues.*1-16"
vt_check "--queues 0: no TAP was created" no_link vtq0

run_vt unknown --socket "$WORK/u.sock" --tap vtu0 --frobnicate
vt_check "unknown option: exit 2" rc_is 2
vt_check "unknown option: the message names it" log_has unknown "unknown option --frobnicate"

run_vt help --help
vt_check "--help: exit 0" rc_is 0
vt_check "--help: prints Usage" log_has help '^Usage: virtap'

run_vt version --version
vt_check "--version: exit 0" rc_is 0
vt_check "--version: prints the version" log_has version '^virtap [0-9]+\.[0-9]+'

run_vt nodir --socket "$WORK/no/such/dir/vu.sock" --tap vtnd0
vt_check "socket in a missing directory: non-zero exit" rc_nonzero
vt_check "socket in a missing directory: 'cannot listen' with the path and the reason" \
  log_has nodir "cannot listen on $WORK/no/such/dir/vu.sock: No such file or directory"

# The socket directory is writable by anyone, so what stops the unprivileged user is the TAP.
mkdir -m 1777 "$WORK/pub"
chmod 711 "$WORK"
run_vt nobody --as-nobody --socket "$WORK/pub/vu.sock" --tap vtnb0
vt_check "unprivileged user: non-zero exit" rc_nonzero
vt_check "unprivileged user: the message says permission denied" log_has nobody 'permission denied'
vt_check "unprivileged user: no TAP was created" no_link vtnb0
vt_check "unprivileged user: no socket left behind" test ! -e "$WORK/pub/vu.sock"

ip -n "$NS" tuntap add dev vtun0 mode tun
run_vt tun --socket "$WORK/t.sock" --tap vtun0
vt_check "TUN device given as the TAP: non-zero exit" rc_nonzero
vt_check "TUN device given as the TAP: the message says it is not a TAP" log_has tun 'not a TAP'
vt_check "TUN device given as the TAP: the TUN device is left alone" \
  sh -c "ip -d -n $NS link show vtun0 | grep -q 'tun type tun'"

# A running daemon: SIGUSR1 logs the counters, SIGTERM exits 0 and removes the socket.
SOCK=$WORK/run.sock
vt_start_virtap run --socket "$SOCK" --tap vtrun0
vt_check "virtap starts and reports running" vt_wait_for "$WORK/run.log" 'running with 1 port' 10
vt_check "the listening socket exists" test -S "$SOCK"
kill -USR1 "$VT_PID"
vt_check "SIGUSR1: a stats line in the log" \
  vt_wait_for "$WORK/run.log" 'port0: waiting rx [0-9]+ pkts [0-9]+ bytes, tx [0-9]+ pkts' 5
vt_check "SIGUSR1: virtap keeps running" kill -0 "$VT_PID"
kill -TERM "$VT_PID"
term_rc=0
end=$((SECONDS + 5))
while kill -0 "$VT_PID" 2>/dev/null && [ $SECONDS -lt $end ]; do sleep 0.1; done
if kill -0 "$VT_PID" 2>/dev/null; then term_rc=timeout; else wait "$VT_PID" || term_rc=$?; fi
echo "  SIGTERM: exit $term_rc"
vt_check "SIGTERM: exit 0 within 5 s" test "$term_rc" = 0
vt_check "SIGTERM: logged the shutdown" log_has run 'Terminated: shutting down'
vt_check "SIGTERM: the listening socket is removed" test ! -e "$SOCK"
vt_finish
