#!/bin/bash
# SPDX-License-Identifier: MIT
# The same guest image, the same run, two datapaths: QEMU's own -netdev tap (the seed's userspace
# path, vhost=off) and virtap over vhost-user. Interleaved rounds; for each path: TCP throughput
# host -> guest and guest -> host (iperf3, 5 s), and ping round-trip time (median and p99 of
# 100 pings 20 ms apart). Prints a Markdown table with virtap/QEMU ratios and writes it to
# bench/results/guest_compare.md. Usage: bench/guest_compare.sh [rounds] (default 3). Root.
set -euo pipefail
ROUNDS=${1:-3}
cd "$(dirname "$0")/.."
scripts/deps.sh --guest
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null && ninja -C build virtap >/dev/null
export VT_BIN=$PWD/build/virtap
source tests/integration/lib.sh
vt_setup_ns
GUEST='iperf3 -s -D; echo VT_READY; nc -l -p 9999 >/dev/null'

measure() { # path round -> appends "path metric value" lines to $WORK/results
  local path=$1 r=$2 name=g-$1-$2 tap sock=$WORK/vu-$2.sock
  if [ "$path" = virtap ]; then
    tap=vtv$r
    vt_start_virtap "virtap-$r" --socket "$sock" --tap "$tap"
    vt_tap_up "$tap" 10.77.0.1/24
    vt_boot "$name" "$sock" 10.77.0.2/24 "$GUEST"
  else
    tap=vtq$r
    vt_boot "$name" - 10.77.0.2/24 "$GUEST" netdev=tap:$tap
    vt_tap_up "$tap" 10.77.0.1/24
  fi
  vt_wait_for "$WORK/$name.log" VT_READY 90
  sleep 0.5
  local dir
  for dir in "" -R; do
    ip netns exec "$NS" iperf3 -c 10.77.0.2 -t 5 -J $dir > "$WORK/j.json"
    echo "$path tcp${dir:-_h2g} $(vt_json "$WORK/j.json" "j['end']['sum_received']['bits_per_second']/1e9")" \
      >> "$WORK/results"
  done
  ip netns exec "$NS" ping -c 100 -i 0.02 -q 10.77.0.2 > /dev/null
  ip netns exec "$NS" ping -c 100 -i 0.02 10.77.0.2 | sed -n 's/.*time=\([0-9.]*\) ms/\1/p' |
    sort -n > "$WORK/rtt"
  echo "$path rtt_med $(awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}' "$WORK/rtt")" >> "$WORK/results"
  echo "$path rtt_p99 $(awk '{a[NR]=$1} END {print a[int(NR*0.99)]}' "$WORK/rtt")" >> "$WORK/results"
  ip netns exec "$NS" sh -c 'echo done | nc -q1 10.77.0.2 9999' >/dev/null 2>&1 || true
  vt_guest_rc "$name" 30 || true
  if [ "$path" = virtap ]; then kill -TERM "$VT_PID"; wait "$VT_PID" || true; fi
  ip -n "$NS" link del "$tap" 2>/dev/null || true
}

for r in $(seq 1 "$ROUNDS"); do
  measure qemu-tap "$r"
  measure virtap "$r"
done

python3 - "$WORK/results" "$ROUNDS" "$(vt_accel)" <<'PY' | tee bench/results/guest_compare.md
import statistics, sys, collections, platform, subprocess
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    path, metric, val = line.split()
    rows[(path, metric)].append(float(val))
names = {"tcp_h2g": "TCP host -> guest (Gbit/s)", "tcp-R": "TCP guest -> host (Gbit/s)",
         "rtt_med": "ping RTT median (ms)", "rtt_p99": "ping RTT p99 (ms)"}
cpu = subprocess.run("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2", shell=True,
                     capture_output=True, text=True).stdout.strip()
print(f"Guest datapath comparison: {sys.argv[2]} interleaved rounds, QEMU accel {sys.argv[3]}, "
      f"1 vCPU guest, {cpu}, {platform.release()}\n")
print("| metric | QEMU -netdev tap (min/med/max) | virtap (min/med/max) | virtap / QEMU (median) |")
print("|---|---|---|---|")
for m, label in names.items():
    q, v = rows[("qemu-tap", m)], rows[("virtap", m)]
    f = lambda xs: f"{min(xs):.3f} / {statistics.median(xs):.3f} / {max(xs):.3f}"
    ratio = statistics.median(v) / statistics.median(q)
    print(f"| {label} | {f(q)} | {f(v)} | {ratio:.2f}x |")
PY
