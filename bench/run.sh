#!/bin/bash
# SPDX-License-Identifier: MIT
# The benchmark harness (issue 4, parts 1, 2 and 5), one command; results in bench/results/.
#   vhost: vhost-user loopback, the DPDK test-plan way. dpdk-testpmd with net_virtio_user is the
#          frontend (one core, CPU 0) against (a) dpdk-testpmd with net_vhost, DPDK's vhost
#          library (one core, CPU 1) and (b) virtap (taskset CPU 1, one worker), in busy-poll
#          (--busy-poll 200) and notification mode. Directions: frontend txonly -> backend
#          (vhost rxonly | virtap sink), backend -> frontend rxonly (vhost txonly | virtap
#          source:LEN), and io round trip (both sides reflect: testpmd io | virtap echo; the
#          frontend injects IO_BURSTS x 32 frames that circulate). Frame sizes, mrg_rxbuf 1/0.
#          Rate: the frontend testpmd's own Rx-pps/Tx-pps (--stats-period 1), virtap's counters
#          (SIGUSR1) as a cross-check. Each run measures DPDK then virtap for one row; every
#          figure is bracketed by placement probes (vt_pingpong: ns per cache-line round trip
#          CPU 0 <-> CPU 1, before and after) so that like is compared with like.
#   tap:   the raw TAP ceiling (vt_tap_ceiling: write()/read() with a vnet header, one core;
#          read() timed over batches queued beforehand) vs virtap moving the same frames
#          (vt_loopback --modes rx,tx).
#   scale: 1, 2, 4, 8 ports through one virtap (--backend sink), fed by ONE testpmd with one
#          virtio_user port per virtap port (txonly, one core); aggregate Mpps and virtap's RSS
#          with 0 ports connected vs N. virtap modes: poll (a busy-polling worker per port),
#          shared (every port on one busy-polling worker, worker=pmd0), notify.
# Writes bench/results/{vhost,tap,scale}.md, vhost.png, scale.png, summary.md and the raw
# figures in bench/results/raw/. Builds its own Release tree (build-bench); installs what it
# needs (bench/setup.sh); raises nr_hugepages to 512 for the run and restores it. Root.
# The machine has 2 cores shared with others: run it as
#   flock /tmp/vt-heavy.lock bench/run.sh [options]
# Options: --runs N (3) --seconds S (5, measured per figure) --warmup S (1) --parts LIST
#   (vhost,tap,scale) --sizes LIST (64,512,1518) --mrg LIST (1,0) --dirs LIST (tx,rx,io)
#   --modes LIST (poll,notify: virtap's) --ports LIST (1,2,4,8) --tap-sizes LIST (64,1518)
#   --scale-modes LIST (poll,shared,notify)
#   --quick (1 run of 2 s, for development). VT_BENCH_KEEP=1 keeps the logs;
#   VT_BENCH_RESULTS=DIR writes the results to DIR instead of bench/results.
set -euo pipefail
RUNS=3 DUR=5 WARMUP=1 PARTS=vhost,tap,scale SIZES=64,512,1518 MRGS=1,0 DIRS=tx,rx,io
MODES=poll,notify SCALE_MODES=poll,shared,notify PORTS=1,2,4,8 TAP_SIZES=64,1518 POLL_US=200
# Queued RX batches: the worker idles while the generator queues the next 256 frames (about
# 170 us at 64 B, 220 us at 1518 B here). With the 200 us window it would go back to
# notifications between batches and pay a wake-up inside each timed batch (1518 B: 1.10
# against 1.28 Mpps); the ceiling's reader spins through that gap, so this window covers it.
BATCH_POLL_US=2000
while [ $# -gt 0 ]; do
  case $1 in
    --runs) RUNS=$2; shift ;;
    --seconds) DUR=$2; shift ;;
    --warmup) WARMUP=$2; shift ;;
    --parts) PARTS=$2; shift ;;
    --sizes) SIZES=$2; shift ;;
    --mrg) MRGS=$2; shift ;;
    --dirs) DIRS=$2; shift ;;
    --modes) MODES=$2; shift ;;
    --ports) PORTS=$2; shift ;;
    --scale-modes) SCALE_MODES=$2; shift ;;
    --tap-sizes) TAP_SIZES=$2; shift ;;
    --quick) RUNS=1 DUR=2 ;;
    -h|--help) sed -n '3,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench/run.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
[ "$(id -u)" = 0 ] || { echo "bench/run.sh: needs root (hugepages, TAP devices, namespaces)" >&2; exit 1; }
cd "$(dirname "$0")/.."
TOP=$PWD
RES=${VT_BENCH_RESULTS:-$TOP/bench/results} # VT_BENCH_RESULTS: write the results elsewhere
BUILD=$TOP/build-bench
source bench/lib.sh
bm_hugepages 512
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
ninja -C "$BUILD" virtap vt_loopback vt_pingpong vt_tap_ceiling >/dev/null
mkdir -p "$RES/raw"
has() { [[ ",$1," == *",$2,"* ]]; }
log() { echo "[$(date +%T)] $*"; }
gbps() { awk -v m="$1" -v s="$2" 'BEGIN {if (m == "nan") print "nan"; else printf "%.3f", m * s * 8 / 1000}'; }

# ---- machine -------------------------------------------------------------------------------
{
  echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
  echo "cpu details: $(lscpu | awk -F': *' '/^CPU family/ {f = $2} /^Model:/ {m = $2}
    /^Hypervisor vendor/ {h = $2} /^L2 cache/ {l2 = $2} /^L3 cache/ {l3 = $2}
    END {printf "family %s model %s, hypervisor %s, L2 %s, L3 %s", f, m, h, l2, l3}')"
  echo "cores: $(nproc) (online CPUs $(cat /sys/devices/system/cpu/online))"
  echo "kernel: $(uname -r)"
  echo "os: Debian $(cat /etc/debian_version)"
  echo "dpdk: $(dpkg-query -W -f='${Version}' dpdk) (Debian package dpdk/dpdk-dev)"
  echo "virtap: $("$BUILD/virtap" --version 2>&1 | head -1), CMAKE_BUILD_TYPE=Release"
  echo "eal memory: $EAL_DESC"
  echo "runs: $RUNS; per figure: ${WARMUP} s warm-up, then at least ${DUR} s measured"
  echo "io round trip: $IO_BURSTS bursts of 32 frames injected (start tx_first $IO_BURSTS)"
  echo "virtap busy-poll: --busy-poll $POLL_US (poll), no --busy-poll (notify); TAP queued RX batches: --busy-poll $BATCH_POLL_US"
} > "$RES/raw/machine.txt"
cat "$RES/raw/machine.txt"

# ---- (1) vhost-user loopback ---------------------------------------------------------------
# vhost_one RUN DIR SIZE MRG PEER: one figure, between two placement probes; appends a line to
# $WORK/vhost.csv.
vhost_one() {
  local r=$1 dir=$2 size=$3 mrg=$4 peer=$5 probe probe2
  local name=v$1-$2-$3-m$4-$5 sock=$WORK/vu.sock fe_fwd be_fwd vt_be field xfield hook=""
  local out pps=nan secs=nan mpps=nan xc=nan status=ok spec
  case $dir in
    tx) fe_fwd=txonly be_fwd=rxonly vt_be=sink field=Tx-pps xfield=tx ;;
    rx) fe_fwd=rxonly be_fwd=txonly vt_be=source:$size field=Rx-pps xfield=rx ;;
    io) fe_fwd=io be_fwd=io vt_be=echo field=Rx-pps xfield=rx ;;
  esac
  rm -f "$sock"
  probe=$(bm_probe)
  if [ "$peer" = dpdk ]; then
    bm_be_dpdk "$name-be" "$be_fwd" "$size" "$sock"
  else
    spec="socket=$sock,name=p0,backend=$vt_be"
    [ "$peer" = virtap-poll ] && spec="$spec,busy-poll=$POLL_US"
    bm_be_virtap "$name-be" "$spec"
    hook=bm_usr1
  fi
  if bm_wait_socks 30 "$sock"; then
    bm_fe "$name-fe" "$mrg" "$fe_fwd" "$size" "$sock"
    if out=$(bm_window "$WORK/$name-fe.log" 1 "$field" "$FE_PID" "$hook"); then
      read -r pps secs _ <<< "$out"
      mpps=$(bm_mpps "$pps")
    else
      status=no-stats
    fi
    bm_stop "$FE_PID" INT 15
    [ "$BM_EXIT" = 0 ] || status="$status,frontend-exit-$BM_EXIT"
  else
    status=no-socket
  fi
  if [ "$peer" = dpdk ]; then
    bm_stop "$BE_PID" INT 15
  else
    bm_stop "$BE_PID" TERM 15
    xc=$(bm_vt_rate "$WORK/$name-be.log" 1 "$xfield")
    grep -q "queue broken" "$WORK/$name-be.log" && status="$status,queue-broken"
  fi
  [ "$BM_EXIT" = 0 ] || status="$status,backend-exit-$BM_EXIT"
  probe2=$(bm_probe)
  echo "$r,$dir,$size,$mrg,$peer,$probe,$probe2,$mpps,$(gbps "$mpps" "$size"),$xc,$secs,$status" \
    >> "$WORK/vhost.csv"
  log "run $r $dir ${size} B mrg=$mrg $peer: $mpps Mpps over $secs s (virtap counters $xc; probe $probe/$probe2 ns) $status"
}

if has "$PARTS" vhost; then
  echo "run,dir,size,mrg,peer,probe_ns,probe_after_ns,mpps,gbps,xcheck_mpps,secs,status" > "$WORK/vhost.csv"
  for r in $(seq 1 "$RUNS"); do
    for dir in ${DIRS//,/ }; do
      for size in ${SIZES//,/ }; do
        for mrg in ${MRGS//,/ }; do
          vhost_one "$r" "$dir" "$size" "$mrg" dpdk
          for m in ${MODES//,/ }; do vhost_one "$r" "$dir" "$size" "$mrg" "virtap-$m"; done
        done
      done
    done
  done
  cp "$WORK/vhost.csv" "$RES/raw/vhost.csv"
fi

# ---- (2) TAP path vs the raw ceiling -------------------------------------------------------
if has "$PARTS" tap; then
  echo "run,probe_ns,probe_after_ns,path,mode,size,mpps,gbps,read_pct" > "$WORK/tap.csv"
  for r in $(seq 1 "$RUNS"); do
    probe=$(bm_probe)
    bm_cmdlog "$BUILD/vt_tap_ceiling" --seconds "$DUR" --warmup 0.5 --sizes "$TAP_SIZES" --cpus 1,0 --batch 256
    "$BUILD/vt_tap_ceiling" --seconds "$DUR" --warmup 0.5 --sizes "$TAP_SIZES" --cpus 1,0 --batch 256 \
      > "$WORK/ceiling-$r.log" 2>&1 || log "vt_tap_ceiling failed (see $WORK/ceiling-$r.log)"
    probe1=$(bm_probe)
    for m in ${MODES//,/ }; do
      # virtap's worker where the ceiling's I/O thread is (CPU 1), generator + guest on CPU 0
      lopt=(--cpus 1,0)
      [ "$m" = poll ] && lopt+=(--busy-poll "$POLL_US")
      bm_cmdlog "$BUILD/vt_loopback" --modes rx,tx --sizes "$TAP_SIZES" --seconds "$DUR" "${lopt[@]}"
      "$BUILD/vt_loopback" --modes rx,tx --sizes "$TAP_SIZES" --seconds "$DUR" "${lopt[@]}" \
        > "$WORK/loopback-$r-$m.log" 2>&1 || log "vt_loopback failed (see $WORK/loopback-$r-$m.log)"
      # RX again, timed like the ceiling's read(): batches of 256 queued beforehand
      bopt=(--cpus 1,0)
      [ "$m" = poll ] && bopt+=(--busy-poll "$BATCH_POLL_US")
      bm_cmdlog "$BUILD/vt_loopback" --modes rx --rx-batch 256 --sizes "$TAP_SIZES" --seconds "$DUR" "${bopt[@]}"
      "$BUILD/vt_loopback" --modes rx --rx-batch 256 --sizes "$TAP_SIZES" --seconds "$DUR" "${bopt[@]}" \
        > "$WORK/loopback-$r-$m-batch.log" 2>&1 || log "vt_loopback failed (see $WORK/loopback-$r-$m-batch.log)"
      probe2=$(bm_probe)
      awk -v r="$r" -v p="$probe1,$probe2" -v path="virtap-$m" '$1 ~ /^(rx|tx)$/ && $5 == "Mpps" {
          print r "," p "," path "," $1 "," $2 "," $4 "," $6 "," }' \
        "$WORK/loopback-$r-$m.log" >> "$WORK/tap.csv"
      awk -v r="$r" -v p="$probe1,$probe2" -v path="virtap-$m" '$1 == "rx" && $5 == "Mpps" {
          print r "," p "," path ",rxbatch," $2 "," $4 "," $6 "," }' \
        "$WORK/loopback-$r-$m-batch.log" >> "$WORK/tap.csv"
      probe1=$probe2
    done
    awk -v r="$r" -v p="$probe,$probe1" '$1 ~ /^(write|read)$/ && $5 == "Mpps" {
        e = ($1 == "read") ? $9 : ""; print r "," p ",ceiling," $1 "," $2 "," $4 "," $6 "," e }' \
      "$WORK/ceiling-$r.log" >> "$WORK/tap.csv"
    log "run $r tap (probes $probe/$probe1/$probe2 ns): $(grep -E ',(ceiling|virtap),' "$WORK/tap.csv" |
      awk -F, -v r="$r" '$1 == r {printf "%s %s %s B %s Mpps; ", $4, $5, $6, $7}')"
  done
  cp "$WORK/tap.csv" "$RES/raw/tap.csv"
fi

# ---- (5) scaling: N ports through one daemon -----------------------------------------------
# scale_one RUN N MODE: one testpmd with N virtio_user ports (txonly 64 B, one core)
# against one virtap with N sink ports; RSS before connecting and at the end of the window.
scale_one() {
  local r=$1 n=$2 mode=$3 name=s$1-$2-$3 i out pps=nan secs=nan mpps=nan xc=nan
  local status=ok rss0 rssn probe probe2
  local -a socks=() specs=()
  for ((i = 0; i < n; i++)); do
    socks+=("$WORK/vs$i.sock")
    specs+=("socket=$WORK/vs$i.sock,name=p$i,backend=sink")
    [ "$mode" = poll ] && specs[i]="${specs[i]},busy-poll=$POLL_US"
    [ "$mode" = shared ] && specs[i]="${specs[i]},busy-poll=$POLL_US,worker=pmd0"
    rm -f "$WORK/vs$i.sock"
  done
  probe=$(bm_probe)
  bm_be_virtap "$name-be" "${specs[@]}"
  if bm_wait_socks 30 "${socks[@]}"; then
    sleep 0.5
    rss0=$(bm_rss "$BE_PID")
    bm_fe "$name-fe" 1 txonly 64 "${socks[@]}"
    if out=$(bm_window "$WORK/$name-fe.log" "$n" Tx-pps "$FE_PID" bm_usr1); then
      read -r pps secs _ <<< "$out"
      mpps=$(bm_mpps "$pps")
    else
      status=no-stats
    fi
    rssn=$(bm_rss "$BE_PID")
    bm_stop "$FE_PID" INT 15
    [ "$BM_EXIT" = 0 ] || status="$status,frontend-exit-$BM_EXIT"
  else
    status=no-socket rss0="0 0 0 0" rssn="0 0 0 0"
  fi
  bm_stop "$BE_PID" TERM 15
  [ "$BM_EXIT" = 0 ] || status="$status,virtap-exit-$BM_EXIT"
  xc=$(bm_vt_rate "$WORK/$name-be.log" "$n" tx)
  grep -q "queue broken" "$WORK/$name-be.log" && status="$status,queue-broken"
  probe2=$(bm_probe)
  echo "$r,$n,$mode,$probe,$probe2,$mpps,$xc,${rss0// /,},${rssn// /,},$secs,$status" >> "$WORK/scale.csv"
  log "run $r scale $n ports $mode: $mpps Mpps (virtap counters $xc), RSS $rss0 -> $rssn KiB; probe $probe/$probe2 ns $status"
}

if has "$PARTS" scale; then
  echo "run,ports,mode,probe_ns,probe_after_ns,mpps,xcheck_mpps,rss0_kib,anon0_kib,shmem0_kib,huge0_kib,rssn_kib,anonn_kib,shmemn_kib,hugen_kib,secs,status" \
    > "$WORK/scale.csv"
  for r in $(seq 1 "$RUNS"); do
    for n in ${PORTS//,/ }; do
      for m in ${SCALE_MODES//,/ }; do scale_one "$r" "$n" "$m"; done
    done
  done
  cp "$WORK/scale.csv" "$RES/raw/scale.csv"
fi

cp "$WORK/commands.txt" "$RES/raw/commands.txt"
PY=python3
[ -x /usr/bin/python3 ] && PY=/usr/bin/python3 # Debian's, with python3-matplotlib
"$PY" bench/report.py "$RES"
