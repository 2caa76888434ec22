#!/bin/bash
# SPDX-License-Identifier: MIT
# The same guest image, the same run, two datapaths: QEMU's own -netdev tap (its userspace path,
# vhost=off) and virtap over vhost-user (notification mode, one worker). Parts 3 and 4 of issue 4.
# Per round, one boot per path, the two paths in alternating order; per boot:
#   latency     ping RTT (PINGS pings 10 ms apart) and UDP request/response (vt_udp_rr: RR_COUNT
#               round trips of 64 B, one outstanding at a time, host client, echo server in the
#               guest), both measured before any flood
#   TCP         iperf3 host -> guest and guest -> host, SECONDS each
#   UDP 64 B    iperf3 -u -l 64 -b 0 (unlimited: as fast as the sender can), host -> guest and
#               guest -> host, SECONDS each, and host -> guest at 100 kpps offered (a host sender
#               that leaves the guest some CPU); packets per second the receiving iperf3
#               actually got, what the sender sent, and the loss
#   CPU         during each iperf3 figure: QEMU's vCPU thread (running, and runnable but waiting
#               for a CPU), QEMU's other threads, virtap, the host-side iperf3
# Writes the Markdown table to bench/results/guest_compare.md and every figure of every boot to
# bench/results/raw/guest_compare.txt. Everything runs in a network namespace of its own
# (tests/integration/lib.sh); no traffic leaves the machine. Root. The machine is shared: run it
# under `flock /tmp/vt-heavy.lock`.
#
#   bench/guest_compare.sh [--rounds N] [--seconds S] [--pings N] [--rr-count N]
#   defaults: 3 rounds, 5 s per iperf3 figure, 500 pings, 10000 round trips
#   (a bare number as the only argument is the number of rounds, as before)
#   VT_GC_NICE=N|off: autogroup nice of this session while it runs (default -10; see below)
#   VT_BUILD=DIR: the CMake build directory to use (default build/)
set -euo pipefail
ROUNDS=3 SECONDS_PER=5 PINGS=500 RR_COUNT=10000
usage() { sed -n '/^#   bench/,/^#   VT_BUILD/p' "$0" | sed 's/^#  //'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) ROUNDS=$2; shift 2 ;;
    --seconds) SECONDS_PER=$2; shift 2 ;;
    --pings) PINGS=$2; shift 2 ;;
    --rr-count) RR_COUNT=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    [0-9]*) ROUNDS=$1; shift ;;
    *) usage >&2; exit 2 ;;
  esac
done
cd "$(dirname "$0")/.."
scripts/deps.sh --guest
BUILD=${VT_BUILD:-build}
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
ninja -C "$BUILD" virtap vt_udp_rr >/dev/null
export VT_BIN=$PWD/$BUILD/virtap
RR=$PWD/$BUILD/vt_udp_rr
source tests/integration/lib.sh
# With autogroup scheduling (Debian's default), CPU time is shared between sessions first and
# nice only orders the processes within a session, so background work at nice 19 in another
# session (a fuzz campaign) still takes an equal share from the guest's vCPU thread: up to half
# of the machine here. Our session's autogroup gets nice VT_GC_NICE (default -10; "off": leave
# it) while the comparison runs, and its old value back on exit.
AG_OLD=""
if [ "${VT_GC_NICE:=-10}" != off ] && [ -w /proc/self/autogroup ]; then
  AG_OLD=$(sed -n 's/.* nice \(-\?[0-9]*\).*/\1/p' /proc/self/autogroup)
  echo "$VT_GC_NICE" > /proc/self/autogroup
  trap 'rc=$?; echo "$AG_OLD" > /proc/self/autogroup; (exit $rc); vt_cleanup' EXIT
fi
vt_setup_ns
GUEST='iperf3 -s -D; vt_udp_rr server --port 7777 & echo VT_READY; nc -l -p 9999 >/dev/null'
OUT=$WORK/results
QNAME="qemu=-name guest,debug-threads=on" # thread names: "CPU 0/TCG" is the vCPU
T0=$(date -u '+%Y-%m-%d %H:%M UTC')
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
AG=$(cat /proc/self/autogroup 2>/dev/null || echo "no autogroup")
REV="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
[ -n "$(git status --porcelain -- src include CMakeLists.txt 2>/dev/null)" ] && REV="$REV + uncommitted changes in src/"

put() { [ -n "$4" ] && echo "$1 $2 $3 $4" >> "$OUT"; return 0; } # path round metric value

# iperf3 client in the namespace, JSON to $WORK/j.json; a run that fails or hangs leaves no figure.
iperf() {
  local secs=$1; shift
  timeout $((secs + 30)) ip netns exec "$NS" iperf3 -c 10.77.0.2 -t "$secs" -J "$@" \
    > "$WORK/j.json" 2> "$WORK/iperf.err" && return 0
  echo "  iperf3 $* failed: $(head -c 300 "$WORK/iperf.err") $(grep -m1 '"error"' "$WORK/j.json")" >&2
  return 1
}

# threads PID KIND: "tid name run-ns wait-ns KIND" per thread of PID (spaces in names -> _), from
# schedstat: time on a CPU, and time runnable but waiting for one.
threads() {
  local t
  for t in /proc/"$1"/task/*; do
    echo "${t##*/} $(tr ' ' _ < "$t/comm" 2>/dev/null) $(cut -d' ' -f1,2 "$t/schedstat" 2>/dev/null) $2"
  done
}
snap() { # snap FILE: threads of QEMU and, when running, virtap
  { threads "$QEMU_PID" qemu
    if [ "$CUR" = virtap ]; then threads "$VT_PID" virtap; fi; } > "$1"
}

# cpu_put path round tag SECONDS BEFORE AFTER: CPU use over a window, % of one CPU, from two
# snaps: QEMU's vCPU thread ("CPU 0/TCG"; under TCG it runs the whole guest) on a CPU and
# waiting for one, QEMU's other threads (main loop: with -netdev tap it also does the TAP I/O),
# virtap's threads.
cpu_put() {
  local path=$1 r=$2 tag=$3 secs=$4 v vw q w
  awk -v s="$secs" '
    FNR == 1 { f++ }
    f == 1 { b[$1] = $3; bw[$1] = $4; next }
    { d = $3 - b[$1]
      if ($5 == "qemu" && $2 ~ /^CPU_/) { v += d; vw += $4 - bw[$1] }
      else if ($5 == "qemu") q += d; else w += d }
    END { k = 100 / 1e9 / s; printf "%.0f %.0f %.0f %.0f\n", v * k, vw * k, q * k, w * k }' \
    "$5" "$6" > "$WORK/cpu"
  read -r v vw q w < "$WORK/cpu"
  put "$path" "$r" "cpu_vcpu_$tag" "$v"
  put "$path" "$r" "cpu_vcpuwait_$tag" "$vw"
  put "$path" "$r" "cpu_qemuio_$tag" "$q"
  [ "$path" = virtap ] && put "$path" "$r" "cpu_virtap_$tag" "$w"
  return 0
}

measure() { # path round
  local path=$1 r=$2 name=g-$1-$2 tap sock=$WORK/vu-$2.sock dir tag t0 t1
  CUR=$path
  if [ "$path" = virtap ]; then
    tap=vtv$r
    vt_start_virtap "virtap-$r" --socket "$sock" --tap "$tap"
    vt_tap_up "$tap" 10.77.0.1/24
    vt_boot "$name" "$sock" 10.77.0.2/24 "$GUEST" "$QNAME"
  else
    tap=vtq$r
    vt_boot "$name" - 10.77.0.2/24 "$GUEST" netdev=tap:$tap "$QNAME"
    vt_tap_up "$tap" 10.77.0.1/24
  fi
  vt_wait_for "$WORK/$name.log" VT_READY 90 || { echo "guest $name did not come up" >&2; return 1; }
  sleep 1
  echo "round $r, $path" >&2

  # Latency first, on a guest that has not been flooded yet.
  ip netns exec "$NS" ping -c 20 -i 0.01 -q 10.77.0.2 > /dev/null || true
  ip netns exec "$NS" ping -c "$PINGS" -i 0.01 10.77.0.2 |
    sed -n 's/.*time=\([0-9.]*\) ms/\1/p' | sort -n > "$WORK/rtt" || true
  if [ -s "$WORK/rtt" ]; then
    put "$path" "$r" ping_med "$(awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}' "$WORK/rtt")"
    put "$path" "$r" ping_p99 "$(awk '{a[NR]=$1} END {i=int(NR*0.99+0.999999); print a[i]}' "$WORK/rtt")"
    put "$path" "$r" ping_lost $((PINGS - $(wc -l < "$WORK/rtt")))
  fi
  local rr
  if rr=$(ip netns exec "$NS" "$RR" client 10.77.0.2 --port 7777 --size 64 --count "$RR_COUNT" \
    --warmup 200 --timeout-ms 500); then
    echo "  udp_rr: $rr" >&2
    for k in median_us p90_us p99_us max_us timeouts; do
      put "$path" "$r" "rr_$k" "$(sed -n "s/.*\b$k=\([0-9.]*\).*/\1/p" <<< "$rr")"
    done
  fi

  # tag, then iperf3's arguments (after -c 10.77.0.2 -t SECONDS -J)
  local fig args
  for fig in "tcp_h2g" "tcp_g2h -R" "udp_h2g -u -l 64 -b 0" "udp_g2h -u -l 64 -b 0 -R" \
    "udp_h2g100k -u -l 64 -b $((100000 * 64 * 8))"; do
    tag=${fig%% *}; args=${fig#"$tag"}
    snap "$WORK/s0"; t0=$(date +%s.%N)
    # shellcheck disable=SC2086
    if iperf "$SECONDS_PER" $args; then
      snap "$WORK/s1"; t1=$(date +%s.%N)
      cpu_put "$path" "$r" "$tag" "$(awk "BEGIN {print $t1 - $t0}")" "$WORK/s0" "$WORK/s1"
      put "$path" "$r" "cpu_iperfhost_$tag" "$(vt_json "$WORK/j.json" "j['end']['cpu_utilization_percent']['host_total']")"
      if [ "${tag#tcp}" != "$tag" ]; then
        put "$path" "$r" "$tag" "$(vt_json "$WORK/j.json" "j['end']['sum_received']['bits_per_second'] / 1e9")"
      else
        # sum_received: the receiving iperf3's count (packets by sequence number, lost among them)
        put "$path" "$r" "${tag}_rx" "$(vt_json "$WORK/j.json" "(j['end']['sum_received']['packets'] \
          - j['end']['sum_received']['lost_packets']) / j['end']['sum_received']['seconds'] / 1e3")"
        put "$path" "$r" "${tag}_tx" "$(vt_json "$WORK/j.json" \
          "j['end']['sum_sent']['packets'] / j['end']['sum_sent']['seconds'] / 1e3")"
        put "$path" "$r" "${tag}_loss" "$(vt_json "$WORK/j.json" "j['end']['sum_received']['lost_percent']")"
      fi
    fi
    sleep 1 # let the receiver drain before the next figure
  done

  vt_guest_release 10.77.0.2
  vt_guest_rc "$name" 30 || true
  vt_stop "$QEMU_PID" TERM 5
  if [ "$path" = virtap ]; then vt_stop "$VT_PID"; fi
  ip -n "$NS" link del "$tap" 2>/dev/null || true
}

for r in $(seq 1 "$ROUNDS"); do
  if [ $((r % 2)) = 1 ]; then order="qemu-tap virtap"; else order="virtap qemu-tap"; fi
  for p in $order; do measure "$p" "$r"; done
done

mkdir -p bench/results/raw
{
  echo "# bench/guest_compare.sh --rounds $ROUNDS --seconds $SECONDS_PER --pings $PINGS --rr-count $RR_COUNT"
  echo "# started $T0, load average $LOAD0; ended $(date -u '+%H:%M UTC'), load average $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "# this session's $AG (VT_GC_NICE=$VT_GC_NICE); virtap built from $REV in $BUILD"
  echo "# path round metric value"
  cat "$OUT"
} > bench/results/raw/guest_compare.txt
python3 - "$OUT" "$ROUNDS" "$(vt_accel)" "$T0" "$SECONDS_PER" "$PINGS" "$RR_COUNT" \
  "$(qemu-system-x86_64 --version | head -1)" "$(iperf3 --version | head -1)" "$AG" "$LOAD0" <<'PY' |
import statistics, sys, collections, platform, subprocess
out, rounds, accel, t0, secs, pings, rrn, qemu, iperf, ag, load = sys.argv[1:]
rows = collections.defaultdict(list)
for line in open(out):
    path, r, metric, val = line.split()
    if val:
        rows[(path, metric)].append(float(val))
cpu = subprocess.run("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2", shell=True,
                     capture_output=True, text=True).stdout.strip()
ncpu = subprocess.run("nproc", capture_output=True, text=True).stdout.strip()
print(f"Guest datapath comparison, {t0}: {rounds} interleaved rounds (one boot per path per round, "
      f"order alternating), 1 vCPU guest under QEMU accel {accel} ({qemu}), {iperf}; "
      f"host {cpu}, {ncpu} CPUs, kernel {platform.release()}. iperf3 figures {secs} s each; "
      f"{pings} pings 10 ms apart; {rrn} UDP request/response round trips of 64 B "
      f"(vt_udp_rr, host client, echo server in the guest). "
      "min / median / max over the rounds; ratio = virtap median / QEMU median "
      "(above 1 is better for rates, below 1 is better for times and loss). "
      f"Load average at the start {load}; the harness's session ran at autogroup {ag}.\n")
print("| metric | QEMU -netdev tap | virtap vhost-user | virtap / QEMU |")
print("|---|---|---|---|")
names = [
    ("tcp_h2g", "TCP host → guest (Gbit/s)", 3),
    ("tcp_g2h", "TCP guest → host (Gbit/s)", 3),
    ("udp_h2g_rx", "UDP 64 B host → guest: received by the guest (kpps)", 1),
    ("udp_h2g_tx", "UDP 64 B host → guest: sent by the host (kpps)", 1),
    ("udp_h2g_loss", "UDP 64 B host → guest: loss (%)", 1),
    ("udp_h2g100k_rx", "UDP 64 B host → guest, 100 kpps offered: received by the guest (kpps)", 1),
    ("udp_h2g100k_tx", "UDP 64 B host → guest, 100 kpps offered: sent by the host (kpps)", 1),
    ("udp_h2g100k_loss", "UDP 64 B host → guest, 100 kpps offered: loss (%)", 1),
    ("udp_g2h_rx", "UDP 64 B guest → host: received by the host (kpps)", 1),
    ("udp_g2h_tx", "UDP 64 B guest → host: sent by the guest (kpps)", 1),
    ("udp_g2h_loss", "UDP 64 B guest → host: loss (%)", 2),
    ("ping_med", "ping RTT median (ms)", 3),
    ("ping_p99", "ping RTT p99 (ms)", 3),
    ("rr_median_us", "UDP request/response 64 B, median (µs)", 0),
    ("rr_p90_us", "UDP request/response 64 B, p90 (µs)", 0),
    ("rr_p99_us", "UDP request/response 64 B, p99 (µs)", 0),
    ("rr_max_us", "UDP request/response 64 B, max (µs)", 0),
    ("rr_timeouts", "UDP request/response: timeouts (> 500 ms) per boot", 0),
]
for m, label, nd in names:
    q, v = rows[("qemu-tap", m)], rows[("virtap", m)]
    f = lambda xs: (f"{min(xs):.{nd}f} / {statistics.median(xs):.{nd}f} / {max(xs):.{nd}f}"
                    f"{'' if len(xs) == int(rounds) else f' ({len(xs)} of {rounds})'}") if xs else "—"
    mq = statistics.median(q) if q else 0
    ratio = f"{statistics.median(v) / mq:.2f}x" if q and v and mq else "—"
    print(f"| {label} | {f(q)} | {f(v)} | {ratio} |")
print("\nCPU use during the iperf3 figures, % of one host CPU (median over the rounds), from "
      "/proc/PID/task/*/schedstat before and after each iperf3 run (its whole duration, connection "
      "set-up included): QEMU's vCPU thread (TCG: the whole guest) on a CPU, and runnable but "
      "waiting for a CPU (vCPU waiting), QEMU's other threads (main "
      "loop; with -netdev tap it also reads and writes the TAP), virtap's threads; and the host-side "
      "iperf3's own CPU figure (host_total in its JSON; sender for host → guest, receiver for "
      "guest → host).\n")
print("| figure | QEMU tap: vCPU | vCPU waiting | QEMU other | iperf3 host "
      "| virtap: vCPU | vCPU waiting | QEMU other | virtap | iperf3 host |")
print("|---|---|---|---|---|---|---|---|---|---|")
md = lambda xs: f"{statistics.median(xs):.0f}" if xs else "—"
for t, label in [("tcp_h2g", "TCP host → guest"), ("tcp_g2h", "TCP guest → host"),
                 ("udp_h2g", "UDP 64 B host → guest, unlimited"),
                 ("udp_h2g100k", "UDP 64 B host → guest, 100 kpps offered"),
                 ("udp_g2h", "UDP 64 B guest → host, unlimited")]:
    c = [md(rows[(p, f"cpu_{k}_{t}")]) for p, k in
         [("qemu-tap", "vcpu"), ("qemu-tap", "vcpuwait"), ("qemu-tap", "qemuio"),
          ("qemu-tap", "iperfhost"), ("virtap", "vcpu"), ("virtap", "vcpuwait"),
          ("virtap", "qemuio"), ("virtap", "virtap"), ("virtap", "iperfhost")]]
    print(f"| {label} | " + " | ".join(c) + " |")
PY
  tee bench/results/guest_compare.md
