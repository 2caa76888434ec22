#!/bin/bash
# SPDX-License-Identifier: MIT
# Live-migration soak (issue 17, item 4; long, not run in CI): the SAME running guest migrates
# back and forth between two QEMU processes --count times (default 30). Each migration starts a
# fresh destination QEMU with -incoming on the free side (A or B), migrates over QMP, and stops
# the old source. Side A and side B are two TAPs in one bridge in a network namespace made for
# the run (virtap ports a and b, or with --backend tap QEMU's own TAPs), so the guest keeps its
# address and its TCP connections across every switchover. No traffic leaves the namespace.
# With --fresh every migration gets a guest of its own instead, booted, streaming, migrated once
# (the pattern of it_guest_migrate); its streams are hashed when it is retired.
#
# Across all the migrations run:
#  * host -> guest TCP: a helper in the namespace sends a deterministic stream (SHA-256 counter
#    blocks, every 32 bytes different, 2 MiB/s) that the guest hashes as it arrives. This is the
#    direction in which the backend writes guest memory, so a page missing from its dirty log
#    shows up here as a wrong hash. (--rate changes the rate.)
#  * guest -> host TCP: the guest sends `seq` output (1, 2, 3, ... one per line, so every byte is
#    tied to its position) in chunks of 20000 lines every 0.5 s through busybox nc, hashing what
#    it hands to nc; the helper writes what arrives to a file, hashes it and checks it against
#    the expected sequence as it goes (so even the stream of a guest that died is checked up to
#    where it stopped).
#  * load: the guest also runs iperf3 to the host at --load Mbit/s (default 40, 5 s connections
#    back to back; not checked). That is the transfer it_guest_migrate runs, and the one under
#    which Debian 12's QEMU 7.2 loses a migrated guest: without it, 7.2 came through 132
#    migrations clean here, with it about one in six failed.
#  * ping host -> guest every 0.2 s (-D -O: lost answers are dated, so losses are counted per
#    migration window and elsewhere; a few around each switchover are expected, not a failure).
# The streams are rate-limited rather than sized: they run until the last migration is done,
# then both are closed, the guest prints the count and SHA-256 of what it sent and received,
# and they are compared with the helper's. Hashes, not counts, decide.
#
# After every migration: QMP status completed, destination running, no BUG:/Oops/WARNING:/
# general protection/soft lockup/NX-protected/Kernel panic in the serial logs, the destination
# answers ping within 30 s and both streams move again within 30 s. Any of these failing counts
# the migration as failed; the guest (possibly dead: Debian 12's QEMU 7.2 under TCG loses one now
# and then) is then retired, its streams checked as far as they got, and a fresh guest boots to
# carry on, so that the run reports a failure rate over --count attempts.
#
# Ends with one line: "soak: backend=... qemu=... queues=... shared-busy=...: N migrations,
# F failed, stream sha256 match|MISMATCH (...), ping lost K of M"; exit 0 only if no migration
# failed and every stream hash matched. On failure the work directory (serial logs of every QEMU,
# virtap.log, the received stream, ping log) is kept and named.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: scripts/migrate_soak.sh [options]
  --backend virtap|tap   NIC path: virtap ports (default) or QEMU's own -netdev tap (baseline)
  --qemu 10|7.2          QEMU 10 of scripts/qemu10.sh (default) or Debian 12's QEMU 7.2
  --queues N             queue pairs (virtap only; N > 1 gives the guest N vCPUs so that it
                         enables all N pairs)
  --shared-busy          both virtap ports on one shared busy-polling worker (worker=w0,
                         busy-poll=50)
  --count N              migrations (default 30)
  --dwell SEC            how long the guest runs on each side between migrations (default 3)
  --rate KIB             host -> guest stream rate in KiB/s (default 2048)
  --load MBIT            guest -> host iperf3 load in Mbit/s (default 40; 0: none)
  --fresh                a new guest for every migration (each migrated seconds after it
                         booted, as it_guest_migrate does) instead of one guest throughout
  -h, --help             this text
Runs as root; about 10 s per migration under TCG (with --dwell 3). VT_BIN=PATH runs another
virtap binary (default build/virtap; a copy keeps a long soak safe from a rebuild). The work
directory is kept on failure (VT_KEEP_WORK=0 drops it).
EOF
}

BACKEND=virtap QVER=10 QUEUES=1 SHARED=0 COUNT=30 DWELL=3 RATE=2048 LOAD=40 FRESH=0
while [ $# -gt 0 ]; do
  case "$1" in
    --backend) BACKEND=${2:?}; shift 2 ;;
    --qemu) QVER=${2:?}; shift 2 ;;
    --queues) QUEUES=${2:?}; shift 2 ;;
    --shared-busy) SHARED=1; shift ;;
    --count) COUNT=${2:?}; shift 2 ;;
    --dwell) DWELL=${2:?}; shift 2 ;;
    --rate) RATE=${2:?}; shift 2 ;;
    --load) LOAD=${2:?}; shift 2 ;;
    --fresh) FRESH=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown option: $1" >&2; usage >&2; exit 2 ;;
  esac
done
case "$BACKEND" in virtap|tap) ;; *) echo "--backend: virtap or tap" >&2; exit 2 ;; esac
case "$QVER" in 10) Q10=1 ;; 7.2) Q10=0 ;; *) echo "--qemu: 10 or 7.2" >&2; exit 2 ;; esac
[[ "$QUEUES" =~ ^[0-9]+$ ]] && [ "$QUEUES" -ge 1 ] || { echo "--queues: a number >= 1" >&2; exit 2; }
[[ "$COUNT" =~ ^[0-9]+$ ]] && [ "$COUNT" -ge 1 ] || { echo "--count: a number >= 1" >&2; exit 2; }
[[ "$DWELL" =~ ^[0-9]+$ ]] || { echo "--dwell: whole seconds" >&2; exit 2; }
[[ "$RATE" =~ ^[0-9]+$ ]] && [ "$RATE" -ge 1 ] || { echo "--rate: KiB/s, >= 1" >&2; exit 2; }
[[ "$LOAD" =~ ^[0-9]+$ ]] || { echo "--load: Mbit/s, a whole number" >&2; exit 2; }
if [ "$BACKEND" = tap ] && { [ "$QUEUES" -gt 1 ] || [ "$SHARED" = 1 ]; }; then
  echo "--queues > 1 and --shared-busy are virtap variants (vt_boot's tap netdev is single-queue)" >&2
  exit 2
fi

# A soak is run rarely and by hand: keep what a failure left behind unless told otherwise.
export VT_KEEP_WORK=${VT_KEEP_WORK-1}
[ "$VT_KEEP_WORK" = 0 ] && unset VT_KEEP_WORK
source "$(dirname "$0")/../tests/integration/lib.sh"

# lib.sh's exit trap prints the last 40 lines of every log; with a QEMU log per migration that
# buries the point, so this one kills and deletes the same things and names the directory kept.
soak_cleanup() {
  local rc=$?
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  ip netns del "$NS" 2>/dev/null || true
  if { [ $rc -ne 0 ] || [ $FAILS -ne 0 ]; } && [ -n "${VT_KEEP_WORK:-}" ]; then
    echo "kept $WORK"
  else
    rm -rf "$WORK"
  fi
}
trap soak_cleanup EXIT

GUEST_IP=10.77.0.2 HOST_IP=10.77.0.1
SMP=$QUEUES
T_START=$SECONDS

vt_setup_ns
ip -n "$NS" link add br0 type bridge
ip -n "$NS" addr add $HOST_IP/24 dev br0
ip -n "$NS" link set br0 up

declare -A SOCK TAP
if [ "$BACKEND" = virtap ]; then
  extra=""
  [ "$QUEUES" -gt 1 ] && extra=",queues=$QUEUES"
  [ "$SHARED" = 1 ] && extra="$extra,worker=w0,busy-poll=50"
  # debug: the dirty-log and vring-state lines are what a post-mortem of a lost guest needs
  vt_start_virtap virtap --log-level debug \
    --port "socket=$WORK/a.sock,tap=vtapA,name=a$extra" \
    --port "socket=$WORK/b.sock,tap=vtapB,name=b$extra"
  for s in a b; do
    SOCK[$s]=$WORK/$s.sock; TAP[$s]=vtap${s^^}
    i=0
    while ! ip -n "$NS" link show "${TAP[$s]}" >/dev/null 2>&1; do
      i=$((i + 1)); [ $i -gt 100 ] && { echo "virtap's TAP ${TAP[$s]} never appeared"; exit 1; }
      sleep 0.1
    done
    ip -n "$NS" link set "${TAP[$s]}" master br0
  done
  [ "$SHARED" = 1 ] && vt_check "both ports on shared worker w0" \
    test "$(vt_count "$WORK/virtap.log" 'on shared worker w0')" = 2
else
  # QEMU creates (and on exit removes) its TAP: each QEMU on a side makes a new one to bridge.
  SOCK[a]=- SOCK[b]=- TAP[a]=qtapA TAP[b]=qtapB
fi

jget() { python3 -c 'import json,sys; print(json.load(sys.stdin).get(sys.argv[1], ""))' "$1"; }

# The host end of both streams, one instance per guest session (see the top of this file).
# SIGTERM: stop sending, close, wait for the guest's stream to end. SIGUSR1: give up at once
# (the guest is gone). status.json is rewritten every 0.5 s and at the end.
cat > "$WORK/streams.py" <<'PY'
import hashlib, json, os, signal, socket, sys, threading, time
guest, host, rate, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
stop, abort = threading.Event(), threading.Event()
signal.signal(signal.SIGTERM, lambda *a: stop.set())
signal.signal(signal.SIGUSR1, lambda *a: (stop.set(), abort.set()))
st = {"sent": 0, "sent_sha": "", "send_done": False, "send_err": "",
      "recv": 0, "recv_sha": "", "recv_eof": False, "recv_err": "", "mismatch_at": None,
      "recv_lines": 0}
lock = threading.Lock()
def save():
    with lock:
        with open(out + "/status.json.tmp", "w") as f: json.dump(st, f)
        os.replace(out + "/status.json.tmp", out + "/status.json")

def h2g():  # deterministic: block j is sha256("vt-soak:j"), so every 32 bytes differ
    s = None
    try:
        end = time.time() + 180
        while not stop.is_set():  # the guest's nc -l may not be up yet
            try:
                s = socket.create_connection((guest, 5001), timeout=2); break
            except OSError:
                if time.time() > end: raise
                time.sleep(0.5)
        if s is None: return
        s.settimeout(1)
        h, j, t0 = hashlib.sha256(), 0, time.time()
        while not stop.is_set():
            chunk = b"".join(hashlib.sha256(b"vt-soak:%d" % k).digest() for k in range(j, j + 256))
            j += 256
            view = memoryview(chunk)
            while view and not stop.is_set():
                try:
                    n = s.send(view)
                except socket.timeout:
                    continue
                h.update(view[:n]); view = view[n:]
                with lock: st["sent"] += n
            ahead = t0 + st["sent"] / rate - time.time()
            if ahead > 0: stop.wait(ahead)
        with lock: st["sent_sha"] = h.hexdigest()
        if abort.is_set(): return
        s.shutdown(socket.SHUT_WR)
        end = time.time() + 30
        while time.time() < end and not abort.is_set():  # the guest's nc closes when done
            try:
                if not s.recv(4096): break
            except socket.timeout:
                pass
        with lock: st["send_done"] = True
    except OSError as e:
        with lock: st["send_err"] = repr(e)
    finally:
        if s: s.close()

def g2h():  # expected: "1\n2\n3\n..." (the guest's seq chunks, back to back)
    try:
        ls = socket.socket(); ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind((host, 5002)); ls.listen(1); ls.settimeout(1)
        ready.set()
        c = None
        while c is None and not abort.is_set():
            try:
                c, _ = ls.accept()
            except socket.timeout:
                pass
        ls.close()
        if c is None: return
        c.settimeout(1)
        h, nxt, exp, off = hashlib.sha256(), 1, bytearray(), 0
        with open(out + "/g2h.bin", "wb") as f:
            while not abort.is_set():
                try:
                    d = c.recv(1 << 16)
                except socket.timeout:
                    continue
                if not d:
                    with lock: st["recv_eof"] = True
                    break
                f.write(d); h.update(d)
                while len(exp) < len(d):
                    exp += b"".join(b"%d\n" % k for k in range(nxt, nxt + 8192)); nxt += 8192
                if st["mismatch_at"] is None and exp[:len(d)] != d:
                    i = next(i for i in range(len(d)) if d[i] != exp[i])
                    with lock: st["mismatch_at"] = off + i
                del exp[:len(d)]
                off += len(d)
                with lock: st["recv"] = off; st["recv_sha"] = h.hexdigest()
        c.close()
    except OSError as e:
        with lock: st["recv_err"] = repr(e)
    finally:
        ready.set()

ready = threading.Event()
ts = [threading.Thread(target=g2h, daemon=True)]
ts[0].start(); ready.wait(10)
ts.append(threading.Thread(target=h2g, daemon=True)); ts[1].start()
deadline = None
while any(t.is_alive() for t in ts):
    save()
    if stop.is_set() and deadline is None: deadline = time.time() + 90
    if deadline and time.time() > deadline: abort.set()
    time.sleep(0.5)
save()
PY

H2G_RATE=$((RATE * 1024))
GUEST=$(cat <<'EOF'
K=20000
echo "VT_COMBINED $(ethtool -l eth0 2>/dev/null | awk '/Combined/ {print $2}' | tail -1)"
mkfifo /tmp/rxh /tmp/rxc /tmp/txh /tmp/txc
# host -> guest: hash and count what arrives
sha256sum < /tmp/rxh > /tmp/rx.sha &
wc -c < /tmp/rxc > /tmp/rx.cnt &
nc -l -p 5001 < /dev/null | tee /tmp/rxh /tmp/rxc > /dev/null &
# guest -> host: seq in chunks, hashed and counted as handed to nc, until /tmp/stop appears
sha256sum < /tmp/txh > /tmp/tx.sha &
wc -c < /tmp/txc > /tmp/tx.cnt &
(i=0; while [ ! -e /tmp/stop ]; do seq $((i * K + 1)) $((i * K + K)); i=$((i + 1)); sleep 0.5; done) |
  tee /tmp/txh /tmp/txc | nc 10.77.0.1 5002 > /dev/null &
# load (not checked): iperf3 to the host, 5 s connections back to back until told to stop
[ @LOAD@ -gt 0 ] && (while [ ! -e /tmp/stop ]; do
  iperf3 -c 10.77.0.1 -p 5201 -t 5 -b @LOAD@M > /dev/null 2>&1 || sleep 1; done) &
echo VT_READY
nc -l -p 9999 < /dev/null > /dev/null
touch /tmp/stop
wait
echo "VT_TX_SENT $(cat /tmp/tx.cnt) $(cut -d" " -f1 /tmp/tx.sha)"
echo "VT_RX_GOT $(cat /tmp/rx.cnt) $(cut -d" " -f1 /tmp/rx.sha)"
EOF
)
GUEST=${GUEST//@LOAD@/$LOAD}
BAD='BUG:|Oops|WARNING:|general protection|soft lockup|NX-protected|Kernel panic'

QN=0          # QEMU instances started
SESSION=0     # guests booted
CUR=""        # name of the QEMU running the guest now; its side in CUR_SIDE
CUR_SIDE=""
STREAMS_PID=""
declare -A QPID
SESS_RESULTS=()  # one line per session
FAILED=0
HASH_OK=1
G2H_BYTES=0 H2G_BYTES=0

# start_qemu SIDE [incoming]: sets QNAME; the guest's serial log is $WORK/QNAME.log
start_qemu() {
  local side=$1 incoming=${2:-} q
  QN=$((QN + 1)); QNAME=$(printf 'q%02d-%s' "$QN" "$side")
  q="-qmp unix:$WORK/$QNAME.qmp,server=on,wait=off"
  [ -n "$incoming" ] && q="-incoming tcp:127.0.0.1:$incoming $q"
  local -a args=(queues="$QUEUES" smp="$SMP" qemu10="$Q10" qemu="$q")
  [ "$BACKEND" = tap ] && args+=(netdev="tap:${TAP[$side]}")
  vt_boot "$QNAME" "${SOCK[$side]}" $GUEST_IP/24 "$GUEST" "${args[@]}"
  QPID[$QNAME]=$QEMU_PID
  if [ "$BACKEND" = tap ]; then
    local i=0
    while ! ip -n "$NS" link show "${TAP[$side]}" >/dev/null 2>&1; do
      i=$((i + 1)); [ $i -gt 100 ] && { echo "QEMU's TAP ${TAP[$side]} never appeared"; return 1; }
      sleep 0.1
    done
    ip -n "$NS" link set "${TAP[$side]}" master br0
    ip -n "$NS" link set "${TAP[$side]}" up
  fi
}

stop_qemu() { [ -n "${QPID[$1]:-}" ] && vt_stop "${QPID[$1]}" TERM 10; QPID[$1]=""; }

status_of() { # status_of KEY: a field of the current session's status.json
  python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get(sys.argv[2]))' \
    "$WORK/s$SESSION/status.json" "$1" 2>/dev/null || echo 0
}

# boot_session: a fresh guest on side a with its stream helper; returns 1 if it never came up
boot_session() {
  SESSION=$((SESSION + 1))
  mkdir -p "$WORK/s$SESSION"
  ip netns exec "$NS" python3 "$WORK/streams.py" $GUEST_IP $HOST_IP $H2G_RATE "$WORK/s$SESSION" \
    > "$WORK/s$SESSION/helper.out" 2>&1 &
  STREAMS_PID=$!; PIDS+=("$STREAMS_PID")
  sleep 0.5
  start_qemu a
  CUR=$QNAME CUR_SIDE=a
  vt_wait_for "$WORK/$CUR.log" VT_READY 120 || { echo "session $SESSION: guest $CUR never came up"; return 1; }
  local want=$((QUEUES < SMP ? QUEUES : SMP))
  grep -q "VT_COMBINED $want" "$WORK/$CUR.log" ||
    { echo "session $SESSION: guest does not use $want queue pairs:"; grep VT_COMBINED "$WORK/$CUR.log"; }
  # both streams flowing before the first migration of this guest
  local i
  for i in $(seq 60); do
    [ "$(status_of recv)" -gt 0 ] && [ "$(status_of sent)" -gt 0 ] && break
    sleep 0.5
  done
  echo "session $SESSION: guest up on $CUR (streams: sent $(status_of sent) B, received $(status_of recv) B)"
}

# end_session ok|lost: close the streams and record how they compare
end_session() {
  local how=$1 line
  if [ "$how" = ok ]; then
    vt_guest_release $GUEST_IP
    kill -TERM "$STREAMS_PID" 2>/dev/null || true
    vt_wait_exit "$STREAMS_PID" 120 || kill -USR1 "$STREAMS_PID" 2>/dev/null || true
    vt_wait_exit "$STREAMS_PID" 10 || true
    vt_wait_for "$WORK/$CUR.log" 'VT_RX_GOT' 60 || true
    line=$(python3 - "$WORK/s$SESSION/status.json" "$WORK/$CUR.log" <<'PY'
import json, re, sys
st = json.load(open(sys.argv[1])); log = open(sys.argv[2], errors="replace").read()
tx = re.findall(r"VT_TX_SENT (\d+) ([0-9a-f]{64})", log)
rx = re.findall(r"VT_RX_GOT (\d+) ([0-9a-f]{64})", log)
ok = True; parts = []
if tx and int(tx[-1][0]) == st["recv"] and tx[-1][1] == st["recv_sha"] and st["mismatch_at"] is None:
    parts.append(f"g2h match ({st['recv']} B)")
else:
    ok = False
    parts.append(f"g2h MISMATCH (guest sent {tx[-1] if tx else 'nothing printed'}, host got "
                 f"{st['recv']} B {st['recv_sha']}, eof={st['recv_eof']}, first wrong byte at "
                 f"{st['mismatch_at']})")
if rx and int(rx[-1][0]) == st["sent"] and rx[-1][1] == st["sent_sha"]:
    parts.append(f"h2g match ({st['sent']} B)")
else:
    ok = False
    parts.append(f"h2g MISMATCH (host sent {st['sent']} B {st['sent_sha']}, guest got "
                 f"{rx[-1] if rx else 'nothing printed'}, {st['send_err']})")
print(("OK" if ok else "BAD") + f"|{st['recv']}|{st['sent']}|" + ", ".join(parts))
PY
)
  else
    kill -USR1 "$STREAMS_PID" 2>/dev/null || true
    vt_wait_exit "$STREAMS_PID" 15 || true
    line=$(python3 - "$WORK/s$SESSION/status.json" <<'PY'
import json, sys
st = json.load(open(sys.argv[1]))
ok = st["mismatch_at"] is None
print(("LOST" if ok else "BAD") + f"|0|0|guest lost: g2h received {st['recv']} B, "
      + ("all as expected" if ok else f"WRONG from byte {st['mismatch_at']}")
      + f"; h2g sent {st['sent']} B (not checkable: the guest's hash went with it)")
PY
)
  fi
  vt_stop "$STREAMS_PID" KILL 1
  local tag recv sent msg
  IFS='|' read -r tag recv sent msg <<< "$line"
  # a lost guest's streams cannot be compared whole: the summary says "incomplete"
  [ "$tag" = OK ] || HASH_OK=0
  G2H_BYTES=$((G2H_BYTES + ${recv:-0})); H2G_BYTES=$((H2G_BYTES + ${sent:-0}))
  SESS_RESULTS+=("session $SESSION: $msg")
  echo "session $SESSION: $msg"
}

# retire_all: after a failed migration, stop every QEMU (the guest is not trusted any more)
retire_all() {
  local q
  for q in "${!QPID[@]}"; do stop_qemu "$q"; done
  end_session lost
}

bad_in_log() { grep -aE "$BAD" "$WORK/$1.log" 2>/dev/null | head -3; }

echo "soak: backend=$BACKEND qemu=$QVER queues=$QUEUES shared-busy=$SHARED load=$LOAD fresh=$FRESH count=$COUNT work=$WORK"
if [ "$LOAD" -gt 0 ]; then
  ip netns exec "$NS" iperf3 -s -p 5201 > /dev/null 2>&1 &
  PIDS+=($!)
fi
boot_session || { echo "first guest did not come up"; exit 1; }
# from the first guest's boot to the last migration's checks: what it loses is the migrations'
ip netns exec "$NS" ping -D -O -i 0.2 $GUEST_IP > "$WORK/ping.out" 2>&1 &
PING_PID=$!; PIDS+=("$PING_PID")
PORT=47700
for m in $(seq 1 "$COUNT"); do
  if [ -z "$CUR" ]; then
    boot_session || { echo "fresh guest did not come up"; FAILED=$((FAILED + COUNT - m + 1)); break; }
  fi
  # the guest runs (and streams) on this side a while: each migration starts from a steady state
  sleep "$DWELL"
  src=$CUR; from=$CUR_SIDE; to=$([ "$from" = a ] && echo b || echo a)
  t0=$(date +%s.%N); w0=$SECONDS
  nconn=$(vt_count "$WORK/virtap.log" "$to: frontend connected")
  PORT=$((PORT + 1))
  start_qemu "$to" $PORT
  dst=$QNAME
  why=""
  if [ "$BACKEND" = virtap ]; then
    i=0
    while [ "$(vt_count "$WORK/virtap.log" "$to: frontend connected")" -le "$nconn" ]; do
      i=$((i + 1)); [ $i -gt 300 ] && { why="destination never connected to virtap"; break; }
      sleep 0.1
    done
  fi
  sleep 1  # the destination's -incoming listener
  status="" total="" down=""
  if [ -z "$why" ]; then
    if ! vt_qmp "$WORK/$src.qmp" migrate "{\"uri\": \"tcp:127.0.0.1:$PORT\"}" > "$WORK/m$m.migrate"; then
      why="migrate command failed: $(cat "$WORK/m$m.migrate")"
    fi
  fi
  if [ -z "$why" ]; then
    for _ in $(seq 1 360); do
      vt_qmp "$WORK/$src.qmp" query-migrate > "$WORK/m$m.query" 2>/dev/null || true
      status=$(jget status < "$WORK/m$m.query" 2>/dev/null || true)
      case $status in completed|failed|cancelled) break ;; esac
      sleep 0.5
    done
    total=$(jget total-time < "$WORK/m$m.query" 2>/dev/null || true)
    down=$(jget downtime < "$WORK/m$m.query" 2>/dev/null || true)
    [ "$status" = completed ] || why="migration status '${status:-none}'"
  fi
  if [ -z "$why" ]; then
    stop_qemu "$src"
    grep -qE "$BAD" "$WORK/$src.log" && why="source guest log: $(bad_in_log "$src" | tr '\n' ' ')"
  fi
  if [ -z "$why" ]; then
    dst_status=$(vt_qmp "$WORK/$dst.qmp" query-status | jget status || true)
    [ "$dst_status" = running ] || why="destination status '$dst_status'"
  fi
  reach=""
  if [ -z "$why" ]; then
    r0=$SECONDS
    for _ in $(seq 30); do
      ip netns exec "$NS" ping -c 1 -W 1 -q $GUEST_IP >/dev/null 2>&1 && { reach=$((SECONDS - r0)); break; }
    done
    [ -n "$reach" ] || why="destination does not answer ping within 30 s"
  fi
  moved=""
  if [ -z "$why" ]; then
    r1=$(status_of recv); s1=$(status_of sent); r0=$SECONDS
    for _ in $(seq 60); do
      if [ "$(status_of recv)" -gt "$r1" ] && [ "$(status_of sent)" -gt "$((s1 + 65536))" ]; then
        moved=$((SECONDS - r0)); break
      fi
      sleep 0.5
    done
    [ -n "$moved" ] || why="streams did not move within 30 s (g2h $r1 -> $(status_of recv) B, h2g $s1 -> $(status_of sent) B)"
  fi
  if [ -z "$why" ] && grep -qE "$BAD" "$WORK/$dst.log"; then
    why="destination guest log: $(bad_in_log "$dst" | tr '\n' ' ')"
  fi
  t1=$(date +%s.%N)
  echo "$m $t0 $t1" >> "$WORK/windows"
  if [ -z "$why" ]; then
    line="migration $m/$COUNT $from->$to: completed in ${total} ms (downtime ${down} ms), ping after ${reach} s, streams after ${moved} s, wall $((SECONDS - w0)) s"
    CUR=$dst CUR_SIDE=$to
  else
    FAILED=$((FAILED + 1))
    line="migration $m/$COUNT $from->$to: FAILED: $why (wall $((SECONDS - w0)) s; logs $src.log, $dst.log)"
    if grep -qE "$BAD" "$WORK/$dst.log"; then
      echo "--- $dst.log, where the guest's kernel complained:"
      grep -a -m1 -B3 -A25 -E "$BAD" "$WORK/$dst.log" || true
    fi
  fi
  echo "$line"
  if [ -n "$why" ]; then
    retire_all
    CUR="" CUR_SIDE=""
  elif [ "$FRESH" = 1 ] && [ "$m" -lt "$COUNT" ]; then
    end_session ok
    stop_qemu "$CUR"
    CUR="" CUR_SIDE=""
  fi
done

kill -INT "$PING_PID" 2>/dev/null || true
vt_wait_exit "$PING_PID" 5 || true
if [ -n "$CUR" ]; then
  if [ "$BACKEND" = virtap ]; then
    # per-port (and per-queue-pair) counters: which pairs carried the streams
    n=$(wc -l < "$WORK/virtap.log")
    kill -USR1 "$VT_PID" 2>/dev/null || true
    sleep 1
    tail -n +$((n + 1)) "$WORK/virtap.log" | grep -E ' rx [0-9]+ pkts' | sed 's/^/  virtap: /' || true
  fi
  end_session ok
  grep -qE "$BAD" "$WORK/$CUR.log" && { echo "final guest log: $(bad_in_log "$CUR")"; FAILED=$((FAILED + 1)); }
  stop_qemu "$CUR"
fi

# ping: replies by icmp_seq; a seq never answered is lost; -O dates it so it can be placed in
# a migration window (destination start to checks done) or elsewhere.
pingsum=$(python3 - "$WORK/ping.out" "$WORK/windows" <<'PY'
import re, sys
got, noans, tx = set(), {}, None
for l in open(sys.argv[1], errors="replace"):
    m = re.match(r"\[(\d+\.\d+)\] .*icmp_seq=(\d+)", l)
    if m and "bytes from" in l: got.add(int(m.group(2)))
    elif m: noans.setdefault(int(m.group(2)), float(m.group(1)))
    m = re.search(r"(\d+) packets transmitted", l)
    if m: tx = int(m.group(1))
if tx is None: tx = max(got | set(noans) | {0})
lost = {s: noans.get(s) for s in range(1, tx + 1) if s not in got}
wins = [tuple(float(x) for x in l.split()[1:]) + (l.split()[0],) for l in open(sys.argv[2])] \
    if len(sys.argv) > 2 else []
per = {w[2]: 0 for w in wins}; other = 0
for s, t in lost.items():
    for a, b, m in wins:
        if t is not None and a <= t <= b + 1: per[m] += 1; break
    else: other += 1
print(f"{len(lost)} {tx} {other} " + ",".join(f"{m}:{n}" for m, n in per.items()))
PY
) || pingsum="? ? ? -"
read -r plost ptx pother pper <<< "$pingsum"

echo "--- per migration: ping answers lost in its window (destination start to checks done, + 1 s)"
echo "  ${pper//,/ }"
echo "  lost outside the windows (steady state, and fresh guests booting after a failure): $pother"
for l in "${SESS_RESULTS[@]}"; do echo "  $l"; done
[ $SESSION -gt 1 ] && echo "  $SESSION guests were booted (a failed migration retires its guest)"
elapsed=$((SECONDS - T_START))
echo "  wall time $elapsed s for $COUNT migrations ($((elapsed / COUNT)) s each, guest boots included)"

if [ "$HASH_OK" = 1 ]; then
  hash="stream sha256 match ($G2H_BYTES bytes guest->host, $H2G_BYTES bytes host->guest)"
else
  hash="stream sha256 MISMATCH or incomplete (see the session lines)"
fi
[ "$FAILED" -gt 0 ] || [ "$HASH_OK" = 0 ] && FAILS=$((FAILS + 1))
echo "soak: backend=$BACKEND qemu=$QVER queues=$QUEUES shared-busy=$SHARED load=$LOAD fresh=$FRESH: $COUNT migrations, $FAILED failed, $hash, ping lost $plost of $ptx"
[ "$FAILS" -eq 0 ]
