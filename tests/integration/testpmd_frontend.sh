#!/bin/bash
# SPDX-License-Identifier: MIT
# The vhost-user protocol proved with a second, independent frontend: DPDK's dpdk-testpmd with a
# net_virtio_user port (no guest, no QEMU) connects to virtap's socket, with mergeable RX buffers
# on and off. Frontend TX reaches the TAP (64, 1518 B and 3-segment frames, counted on the TAP),
# frames written to the TAP reach testpmd's RX (counted by testpmd), io forwarding returns frames
# through the TAP byte-exact (up to 9014 B over mergeable buffers), frames too big for
# non-mergeable buffers are dropped whole, a testpmd killed with SIGKILL mid-traffic (TX and RX)
# leaves virtap serving the next one, and virtap's log shows the protocol messages it answered.
#   VT_TESTPMD_HUGE=1: run the EAL on 2 MiB hugepages (nr_hugepages raised, restored on exit)
#   instead of --no-huge.
source "$(dirname "$0")/lib.sh"
command -v dpdk-testpmd >/dev/null || { echo "SKIP: dpdk-testpmd missing (scripts/deps.sh --guest)"; exit 77; }
command -v python3 >/dev/null || { echo "SKIP: python3 missing"; exit 77; }

TAP=vtap0
SOCK=$WORK/vu.sock
TP_N=0
HUGE_OLD=""
tp_cleanup() {
  local rc=$?
  set +e # a failing (exit) under errexit would end the trap here
  (exit $rc)
  vt_cleanup
  [ -n "$HUGE_OLD" ] && echo "$HUGE_OLD" > /proc/sys/vm/nr_hugepages
  rm -rf /var/run/dpdk/vtpmd$$-* 2>/dev/null || true
}
trap tp_cleanup EXIT

# EAL memory: --in-memory conflicts with --no-huge in DPDK 22.11 ("--legacy-mem is not compatible
# with --in-memory"), so the default (no host-wide state touched) uses --no-shconf instead.
# Lcores: the main one (sleeps between stats) on CPU 0, the busy-polling forwarding one on CPU 1.
LCORES=(-l 0,1)
[ "$(nproc)" -lt 2 ] && LCORES=(--lcores 0@0,1@0)
if [ "${VT_TESTPMD_HUGE:-0}" = 1 ]; then
  HUGE_OLD=$(cat /proc/sys/vm/nr_hugepages)
  [ "$HUGE_OLD" -lt 256 ] && echo 256 > /proc/sys/vm/nr_hugepages
  EAL_MEM=(--in-memory --single-file-segments -m 256)
else
  EAL_MEM=(--no-huge -m 512 --no-shconf --single-file-segments)
fi

# tp_start NAME MRG testpmd-app-args...: testpmd in the namespace, log in $WORK/NAME.log; TP_PID.
tp_start() {
  local name=$1 mrg=$2; shift 2
  TP_N=$((TP_N + 1))
  ip netns exec "$NS" dpdk-testpmd "${LCORES[@]}" --no-pci --no-telemetry "${EAL_MEM[@]}" \
    --file-prefix "vtpmd$$-$TP_N" --log-level=pmd.net.virtio.init:debug \
    --vdev "net_virtio_user0,path=$SOCK,queues=1,mrg_rxbuf=$mrg" -- \
    --stats-period 1 -a --total-num-mbufs=16384 "$@" < /dev/null > "$WORK/$name.log" 2>&1 &
  TP_PID=$!
  PIDS+=("$TP_PID")
  vt_wait_for "$WORK/$name.log" 'packet forwarding - ports=' 30 && return 0
  echo "  testpmd $name did not start forwarding"
  vt_stop "$TP_PID" KILL 1
  return 1
}
# tp_stat NAME RX-packets|TX-packets: from the final "Accumulated forward statistics".
tp_stat() {
  awk -v k="$2:" '/Accumulated forward statistics/ {f = 1} f && $1 == k {print $2; exit}' \
    "$WORK/$1.log"
}
# The features DPDK acked: MRG_RXBUF (bit 15) must follow the devarg.
tp_mrg_ok() {
  local f; f=$(sed -n 's/.*features after negotiate = \([0-9a-fA-F]*\).*/\1/p' "$WORK/$1.log")
  [ -n "$f" ] && [ $(((0x$f >> 15) & 1)) = "$2" ]
}
# tap_ctr FIELD: 2 rx_packets, 10 tx_packets, 12 tx_drop of the TAP (kernel side), in the namespace.
tap_ctr() {
  ip netns exec "$NS" cat /proc/net/dev | sed 's/:/ /' | awk -v d="$TAP" -v f="$1" '$1 == d {print $(f + 1)}'
}
now() { date +%s.%N; }
mpps() { awk -v n="$1" -v a="$2" -v b="$3" 'BEGIN {printf "%.3f", n / (b - a) / 1e6}'; }
no_broken() { ! grep -q "queue broken" "$WORK/virtap.log"; }
wait_count() { # REGEX N SECONDS: until REGEX matches at least N lines of virtap's log
  local end=$((SECONDS + $3))
  while [ "$(vt_count "$WORK/virtap.log" "$1")" -lt "$2" ]; do
    [ $SECONDS -ge $end ] && return 1
    sleep 0.05
  done
}
# too_big: virtap's "drops rx too-big" counter, from the stats line SIGUSR1 makes it log.
too_big() {
  local n; n=$(vt_count "$WORK/virtap.log" 'drops rx too-big')
  kill -USR1 "$VT_PID"
  wait_count 'drops rx too-big' $((n + 1)) 5 || return 1
  sed -n 's/.*drops rx too-big \([0-9]*\).*/\1/p' "$WORK/virtap.log" | tail -1
}
disconnects() { vt_count "$WORK/virtap.log" "frontend disconnected"; }

cat > "$WORK/pkt.py" <<'EOF'
# pkt.py send IFACE N SIZE...   : N frames of each SIZE out of IFACE (ethertype 0x88b5)
# pkt.py echo IFACE N           : N frames of varied sizes (SIZES=a,b,...); frames coming back
#                                 in are compared byte for byte with what was sent
# PACE=K (default 128): pause 0.2 ms every K frames (0: flood). This sender shares a CPU with
# virtap's worker; unpaced, the scheduler lets it run for milliseconds while virtap waits, and the
# TAP's queue overflows in the kernel before virtap ever sees the frames.
import errno, os, socket, struct, sys, time
PACE = int(os.environ.get("PACE", "128"))
ETH = 0x88B5
PAT = bytes(i & 0xFF for i in range(9600))
def frame(seq, size):
    hdr = b"\x02\x00\x00\x00\x00\x02\x02\x00\x00\x00\x00\x01" + struct.pack("!HIH", ETH, seq, size)
    return hdr + PAT[seq & 0xFF:][:size - len(hdr)]
def send(s, f):
    while True:
        try:
            return s.send(f)
        except OSError as e:
            if e.errno != errno.ENOBUFS:
                raise
            time.sleep(0.0005)
mode, ifc, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
tx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
tx.bind((ifc, 0))
if mode == "send":
    sent = 0
    for size in map(int, sys.argv[4:]):
        fr = [frame(i, size) for i in range(256)]
        for i in range(n):
            send(tx, fr[i & 0xFF])
            sent += 1
            if PACE and i % PACE == PACE - 1:
                time.sleep(0.0002)
    print("sent", sent)
    sys.exit(0)
rx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH))
rx.setsockopt(socket.SOL_SOCKET, 33, 32 << 20)  # SO_RCVBUFFORCE
rx.bind((ifc, ETH))
rx.setblocking(False)
sizes = [int(x) for x in os.environ.get("SIZES", "60,64,128,333,512,1000,1514").split(",")]
got, bad = set(), 0
def drain(wait):
    global bad
    end = time.time() + wait
    while True:
        try:
            d, a = rx.recvfrom(65536)
        except BlockingIOError:
            if time.time() >= end:
                return
            time.sleep(0.001)
            continue
        if a[2] == socket.PACKET_OUTGOING:
            continue
        seq, size = struct.unpack("!IH", d[14:20])
        if seq < n and d == frame(seq, sizes[seq % len(sizes)]):
            got.add(seq)
        else:
            bad += 1
for i in range(n):
    send(tx, frame(i, sizes[i % len(sizes)]))
    if i % 64 == 63:
        drain(0)
        time.sleep(0.0002)
drain(1.0)
print("sent", n, "back", len(got), "bad", bad)
EOF

vt_setup_ns
vt_start_virtap virtap --socket "$SOCK" --tap "$TAP" --log-level debug
vt_tap_up "$TAP" 10.77.0.1/24
# Room in the TAP's kernel queue for the scheduling gaps of a loaded 2-CPU machine (default 500).
ip -n "$NS" link set "$TAP" txqueuelen 5000
GRACEFUL=0

# a. frontend TX -> TAP: txonly at 64 and 1518 B; every frame testpmd queued is counted on the
#    TAP's kernel side (up to a ring's worth still in flight when testpmd stops).
tx_case() { # MRG SIZE
  local name=tx$1_$2 r0 r1 c0 c1 t0 t1 tx d
  r0=$(tap_ctr 2)
  tp_start "$name" "$1" --forward-mode=txonly --txpkts="$2" || return 1
  sleep 0.5
  c0=$(tap_ctr 2); t0=$(now)
  sleep 2
  c1=$(tap_ctr 2); t1=$(now)
  vt_stop "$TP_PID" INT 15
  GRACEFUL=$((GRACEFUL + 1))
  r1=$(tap_ctr 2); d=$((r1 - r0)); tx=$(tp_stat "$name" TX-packets)
  echo "  mrg_rxbuf=$1 $2 B: testpmd sent ${tx:-?}, TAP received $d, $(mpps $((c1 - c0)) "$t0" "$t1") Mpps"
  tp_mrg_ok "$name" "$1" || { echo "  MRG_RXBUF not negotiated as asked"; return 1; }
  [ -n "$tx" ] && [ "$d" -gt 10000 ] && [ "$d" -le "$tx" ] && [ "$d" -ge $((tx - 1024)) ] && no_broken
}
for mrg in 1 0; do
  for size in 64 1518; do
    vt_check "a. testpmd TX -> TAP, mrg_rxbuf=$mrg, $size B" tx_case $mrg $size
  done
done

# b. TAP -> frontend RX: frames written to the TAP from the namespace (AF_PACKET), counted by
#    testpmd rxonly.
rx_case() { # MRG
  local name=rx$1 s0 s1 dr0 dr1 sent rx t0 t1
  tp_start "$name" "$1" --forward-mode=rxonly || return 1
  s0=$(tap_ctr 10); dr0=$(tap_ctr 12); t0=$(now)
  sent=$(ip netns exec "$NS" python3 "$WORK/pkt.py" send "$TAP" 100000 60 1514 | awk '{print $2}')
  t1=$(now)
  sleep 1.5
  s1=$(tap_ctr 10); dr1=$(tap_ctr 12)
  vt_stop "$TP_PID" INT 15
  GRACEFUL=$((GRACEFUL + 1))
  rx=$(tp_stat "$name" RX-packets)
  echo "  mrg_rxbuf=$1: sent ${sent:-?} (60 + 1514 B), TAP passed on $((s1 - s0)), dropped $((dr1 - dr0)), testpmd received ${rx:-?} ($(mpps "${rx:-0}" "$t0" "$t1") Mpps offered)"
  tp_mrg_ok "$name" "$1" || { echo "  MRG_RXBUF not negotiated as asked"; return 1; }
  # Every frame the TAP passed on reached testpmd (exact); the kernel's own TAP queue may drop
  # some when the sender starves the 2 cores, so of those sent only most must get through.
  [ -n "$sent" ] && [ -n "$rx" ] && [ "$rx" = $((s1 - s0)) ] && [ "$rx" -ge $((sent / 2)) ] &&
    [ "$rx" -le "$sent" ] && no_broken
}
for mrg in 1 0; do
  vt_check "b. TAP -> testpmd RX, mrg_rxbuf=$mrg" rx_case $mrg
done

# c. io forwarding: frames of 60-1514 B sent into the TAP come back out of it through testpmd
#    (virtap RX -> testpmd -> virtap TX), compared byte for byte.
io_case() { # MRG
  local name=io$1 out
  # A deep TAP queue: the sender and two busy-polling peers share 2 cores, and this case is
  # about bytes, not about the kernel's queue under CPU starvation.
  ip -n "$NS" link set "$TAP" txqueuelen 5000
  tp_start "$name" "$1" --forward-mode=io || return 1
  out=$(ip netns exec "$NS" python3 "$WORK/pkt.py" echo "$TAP" 20000)
  vt_stop "$TP_PID" INT 15
  GRACEFUL=$((GRACEFUL + 1))
  echo "  mrg_rxbuf=$1: $out; testpmd forwarded $(tp_stat "$name" TX-packets)"
  set -- $out
  # Every frame that came back is byte-exact ("bad" 0); a few may be lost to CPU starvation.
  [ "${1:-}" = sent ] && [ "$4" -ge $(($2 * 80 / 100)) ] && [ "$6" = 0 ] && no_broken
}
for mrg in 1 0; do
  vt_check "c. io forwarding TAP -> testpmd -> TAP, mrg_rxbuf=$mrg, byte-exact" io_case $mrg
done

# a/c with larger frames. Multi-segment TX: 3-segment mbufs (64+64+1000 B), which DPDK sends as
# indirect descriptor tables.
txseg_case() {
  local r0 r1 tx
  r0=$(tap_ctr 2)
  tp_start txseg 1 --forward-mode=txonly --txpkts=64,64,1000 --tx-offloads=0x8000 || return 1
  sleep 2
  vt_stop "$TP_PID" INT 15
  GRACEFUL=$((GRACEFUL + 1))
  r1=$(tap_ctr 2); tx=$(tp_stat txseg TX-packets)
  echo "  3-segment 1128 B frames: testpmd sent ${tx:-?}, TAP received $((r1 - r0))"
  [ -n "$tx" ] && [ $((r1 - r0)) -gt 10000 ] && [ $((r1 - r0)) -le "$tx" ] &&
    [ $((r1 - r0)) -ge $((tx - 1024)) ] && no_broken
}
vt_check "a. testpmd multi-segment (indirect) TX -> TAP" txseg_case

ip -n "$NS" link set "$TAP" mtu 9000
# Jumbo frames over mergeable RX buffers: a 9014 B frame spans five 2 KiB buffers
# (num_buffers = 5) and comes back as a multi-segment mbuf chain on TX.
jumbo_io_case() {
  local out
  tp_start jumbo_io 1 --forward-mode=io --max-pkt-len=9018 --enable-scatter || return 1
  out=$(ip netns exec "$NS" env SIZES=4000,9014,60,2100 python3 "$WORK/pkt.py" echo "$TAP" 4000)
  vt_stop "$TP_PID" INT 15
  GRACEFUL=$((GRACEFUL + 1))
  echo "  mrg_rxbuf=1, 60-9014 B: $out; testpmd forwarded $(tp_stat jumbo_io TX-packets)"
  set -- $out
  # Every frame that came back is byte-exact ("bad" 0); a few may be lost to CPU starvation.
  [ "${1:-}" = sent ] && [ "$4" -ge $(($2 * 80 / 100)) ] && [ "$6" = 0 ] && no_broken
}
vt_check "c. jumbo io forwarding over mergeable buffers (60-9014 B), byte-exact" jumbo_io_case
# Without mergeable buffers a frame must fit one buffer: 4000 B frames are dropped (counted, never
# cut), the 60 B frames behind them delivered.
jumbo_nomrg_case() {
  local tb0 tb1 sent rx
  tp_start jumbo_rx 0 --forward-mode=rxonly || return 1
  tb0=$(too_big)
  sent=$(ip netns exec "$NS" python3 "$WORK/pkt.py" send "$TAP" 1000 4000 60 | awk '{print $2}')
  sleep 1.5
  tb1=$(too_big)
  vt_stop "$TP_PID" INT 15
  GRACEFUL=$((GRACEFUL + 1))
  rx=$(tp_stat jumbo_rx RX-packets)
  echo "  mrg_rxbuf=0: sent $sent (1000 x 4000 B, 1000 x 60 B), virtap dropped $((tb1 - tb0)) as too big, testpmd received ${rx:-?}"
  [ -n "$rx" ] && [ $((tb1 - tb0)) = 1000 ] && [ "$rx" -ge 950 ] && [ "$rx" -le 1000 ] && no_broken
}
vt_check "b. 4000 B frames without mergeable buffers dropped whole, small ones delivered" jumbo_nomrg_case
ip -n "$NS" link set "$TAP" mtu 1500

# d. SIGKILL mid-traffic: virtap survives, logs the disconnect, and the next testpmd passes traffic.
kill_tx_case() {
  local n0 r0 r1
  n0=$(disconnects)
  tp_start killtx 1 --forward-mode=txonly --txpkts=64 || return 1
  sleep 1
  vt_stop "$TP_PID" KILL 5
  kill -0 "$VT_PID" || { echo "  virtap died"; return 1; }
  wait_count 'frontend disconnected' $((n0 + 1)) 10 || { echo "  no disconnect logged"; return 1; }
  tp_start killtx2 0 --forward-mode=txonly --txpkts=64 || return 1
  r0=$(tap_ctr 2); sleep 2; r1=$(tap_ctr 2)
  vt_stop "$TP_PID" INT 15
  GRACEFUL=$((GRACEFUL + 1))
  echo "  after the SIGKILL: the next testpmd sent $((r1 - r0)) frames to the TAP in 2 s"
  [ $((r1 - r0)) -gt 10000 ] && no_broken
}
vt_check "d. testpmd SIGKILLed during TX; virtap survives and serves the next one" kill_tx_case

kill_rx_case() {
  local n0 flood sent rx
  n0=$(disconnects)
  tp_start killrx 1 --forward-mode=rxonly || return 1
  ip netns exec "$NS" env PACE=0 python3 "$WORK/pkt.py" send "$TAP" 300000 64 > /dev/null &
  flood=$!
  sleep 0.5
  vt_stop "$TP_PID" KILL 5
  wait "$flood" || true
  kill -0 "$VT_PID" || { echo "  virtap died"; return 1; }
  wait_count 'frontend disconnected' $((n0 + 1)) 10 || { echo "  no disconnect logged"; return 1; }
  tp_start killrx2 0 --forward-mode=rxonly || return 1
  sent=$(ip netns exec "$NS" python3 "$WORK/pkt.py" send "$TAP" 50000 64 | awk '{print $2}')
  sleep 1.5
  vt_stop "$TP_PID" INT 15
  GRACEFUL=$((GRACEFUL + 1))
  rx=$(tp_stat killrx2 RX-packets)
  # Frames the TAP queued while no frontend was there may arrive too (a TAP queue's worth).
  echo "  after the SIGKILL: sent $sent, the next testpmd received ${rx:-?}"
  [ -n "$rx" ] && [ "$rx" -ge $((sent * 95 / 100)) ] && [ "$rx" -le $((sent + 5100)) ] && no_broken
}
vt_check "d. testpmd SIGKILLed during RX flood; virtap survives and serves the next one" kill_rx_case

# e. The protocol as virtap saw it.
L=$WORK/virtap.log
echo "  virtap answered: $(vt_count "$L" 'SET_MEM_TABLE$') SET_MEM_TABLE, $(vt_count "$L" 'ADD_MEM_REG$') ADD_MEM_REG," \
  "$(vt_count "$L" 'SET_VRING_KICK$') SET_VRING_KICK, $(vt_count "$L" 'SET_VRING_ENABLE$') SET_VRING_ENABLE," \
  "$(vt_count "$L" 'GET_VRING_BASE$') GET_VRING_BASE; $(vt_count "$L" 'frontend connected') connections," \
  "$GRACEFUL graceful stops"
vt_check "e. memory table received (SET_MEM_TABLE or ADD_MEM_REG)" \
  test "$(vt_count "$L" 'debug: port0: (SET_MEM_TABLE|ADD_MEM_REG)$')" -ge "$TP_N"
vt_check "e. both rings kicked on every connection (SET_VRING_KICK)" \
  test "$(vt_count "$L" 'debug: port0: SET_VRING_KICK$')" -ge $((2 * TP_N))
vt_check "e. both rings stopped at every graceful shutdown (GET_VRING_BASE)" \
  test "$(vt_count "$L" 'debug: port0: GET_VRING_BASE$')" -ge $((2 * GRACEFUL))
vt_check "e. every testpmd connected and every one disconnected" \
  test "$(vt_count "$L" 'frontend connected')" = "$TP_N" -a "$(disconnects)" = "$TP_N"
vt_check "e. no request rejected, no connection dropped, no error or warning logged" \
  test "$(vt_count "$L" 'not supported|protocol error|dropping the connection| err: | warn: ')" = 0
vt_check "e. no queue broken" no_broken
vt_check "virtap still running" kill -0 "$VT_PID"
echo "  $TP_N testpmd runs, ${SECONDS}s"
vt_finish
