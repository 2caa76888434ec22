# SPDX-License-Identifier: MIT
# shellcheck shell=bash disable=SC2034 # (variables for the sourcing script)
# Shared by the benchmark scripts (sourced, after BUILD, DUR and WARMUP are set): a work
# directory, the peers (dpdk-testpmd as the virtio-user frontend on CPU 0; dpdk-testpmd with
# net_vhost or virtap as the backend on CPU 1), the measurement window over testpmd's periodic
# statistics, virtap's own counters (SIGUSR1) and the placement probe. Everything started here is
# killed, and nr_hugepages restored (HUGE_OLD), when the script exits.
set -euo pipefail
WORK=$(mktemp -d /tmp/vt-bench.XXXXXX)
PIDS=()
HUGE_OLD=""
EAL_FE=()
EAL_BE=()
IO_BURSTS=${IO_BURSTS:-8}

bm_cleanup() {
  local rc=$? p
  set +e
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
  [ -n "$HUGE_OLD" ] && echo "$HUGE_OLD" > /proc/sys/vm/nr_hugepages
  if [ $rc -ne 0 ] || [ "${VT_BENCH_KEEP:-0}" = 1 ]; then
    echo "bench: logs kept in $WORK" >&2
  else
    rm -rf "$WORK"
  fi
  return $rc
}
trap bm_cleanup EXIT

# bm_hugepages N: at least N 2 MiB hugepages (bench/setup.sh), old count restored on exit. Picks
# the EAL memory options: hugepages with --in-memory when they are there, else --no-huge (memfd).
# virtio-user shares its memory with the backend as one fd per memory segment list, which needs
# --single-file-segments (or --no-huge's single memfd); the vhost side maps what it is sent.
bm_hugepages() {
  local line old total free
  line=$(bench/setup.sh --hugepages "$1" | grep '^HUGEPAGES')
  read -r _ old total free <<< "$line"
  HUGE_OLD=$old
  if [ "$free" -ge "$1" ]; then
    EAL_FE=(--in-memory --single-file-segments -m 256)
    EAL_BE=(--in-memory -m 256)
    EAL_DESC="2 MiB hugepages ($total in the pool), both testpmds --in-memory -m 256, frontend --single-file-segments"
  else
    EAL_FE=(--no-huge -m 512 --no-shconf --single-file-segments)
    EAL_BE=(--no-huge -m 512 --no-shconf)
    EAL_DESC="no hugepages (only $free of $1 free): --no-huge -m 512 --no-shconf (memfd)"
  fi
}

# bm_cmdlog ARGS...: note the exact command line of everything the benchmark starts.
bm_cmdlog() { echo "$*" >> "$WORK/commands.txt"; }

# bm_stop PID [SIGNAL] [SECONDS]: signal a process we started (default TERM), wait up to SECONDS
# (default 15) for it to end, SIGKILL it if it has not; sets BM_EXIT to its exit status, or to
# "killed" if it had to be SIGKILLed.
bm_stop() {
  local pid=$1 sig=${2:-TERM} end=$((SECONDS + ${3:-15})) p
  local -a keep=()
  BM_EXIT=0
  kill -s "$sig" "$pid" 2>/dev/null || true
  while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $end ]; do
    [ "$(ps -o stat= -p "$pid" | cut -c1)" = Z ] && break
    sleep 0.1
  done
  if [ "$(ps -o stat= -p "$pid" | cut -c1)" != Z ] && kill -0 "$pid" 2>/dev/null; then
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    BM_EXIT=killed
  else
    wait "$pid" 2>/dev/null || BM_EXIT=$?
  fi
  for p in "${PIDS[@]}"; do [ "$p" = "$pid" ] || keep+=("$p"); done
  PIDS=("${keep[@]}")
}

# bm_probe: ns per cache-line round trip between CPU 0 and CPU 1 (the vCPUs' placement).
bm_probe() { "$BUILD/vt_pingpong" --rounds 100000 --batches 7 --cpus 0,1 | awk '{print $1}'; }

# bm_wait_socks SECONDS SOCK...: wait for every socket file to exist.
bm_wait_socks() {
  local end=$((SECONDS + $1)) s; shift
  for s in "$@"; do
    while [ ! -S "$s" ]; do [ $SECONDS -ge $end ] && return 1; sleep 0.05; done
  done
}

# bm_fe NAME MRG FWD SIZE SOCK...: the frontend: dpdk-testpmd on CPU 0 (main and forwarding
# lcore both there) with one net_virtio_user port per SOCK, forwarding mode FWD, SIZE-byte frames
# for txonly. io mode starts with IO_BURSTS bursts of 32 frames (testpmd's "start tx_first N")
# that then circulate. Log in $WORK/NAME.log; sets FE_PID.
bm_fe() {
  local name=$1 mrg=$2 fwd=$3 size=$4 i=0 s; shift 4
  local -a vdevs=() extra=()
  for s in "$@"; do
    vdevs+=(--vdev "net_virtio_user$i,path=$s,queues=1,mrg_rxbuf=$mrg${FE_VDEV_EXTRA:-}")
    i=$((i + 1))
  done
  if [ "$fwd" = io ]; then
    echo "start tx_first $IO_BURSTS" > "$WORK/$name.cmds"
    extra=(--port-topology=loop "--cmdline-file=$WORK/$name.cmds")
  fi
  local -a cmd=(dpdk-testpmd --lcores "0@0,1@0" --no-pci --no-telemetry "${EAL_FE[@]}"
    --file-prefix "vtb$$fe" "${vdevs[@]}" -- "--forward-mode=$fwd" "--txpkts=$size"
    --stats-period 1 -a --total-num-mbufs=32768 "${extra[@]}")
  bm_cmdlog "${cmd[@]}"
  stdbuf -oL "${cmd[@]}" < /dev/null > "$WORK/$name.log" 2>&1 &
  FE_PID=$!
  PIDS+=("$FE_PID")
}

# bm_be_dpdk NAME FWD SIZE SOCK: DPDK's vhost library as the backend: dpdk-testpmd on CPU 1 with
# one net_vhost port (server) on SOCK. Sets BE_PID.
bm_be_dpdk() {
  local name=$1 fwd=$2 size=$3 sock=$4
  local -a cmd=(dpdk-testpmd --lcores "0@1,1@1" --no-pci --no-telemetry "${EAL_BE[@]}"
    --file-prefix "vtb$$be" --vdev "net_vhost0,iface=$sock,queues=1" --
    "--forward-mode=$fwd" "--txpkts=$size" --port-topology=loop --stats-period 1 -a
    --total-num-mbufs=32768)
  bm_cmdlog "${cmd[@]}"
  stdbuf -oL "${cmd[@]}" < /dev/null > "$WORK/$name.log" 2>&1 &
  BE_PID=$!
  PIDS+=("$BE_PID")
}

# bm_be_virtap NAME PORTSPEC...: virtap pinned to CPU 1 (its workers inherit the mask), one
# --port per PORTSPEC. Sets BE_PID.
bm_be_virtap() {
  local name=$1 p; shift
  local -a cmd=(taskset -c 1 "$BUILD/virtap")
  for p in "$@"; do cmd+=(--port "$p"); done
  bm_cmdlog "${cmd[@]}"
  "${cmd[@]}" > "$WORK/$name.log" 2>&1 &
  BE_PID=$!
  PIDS+=("$BE_PID")
}

# bm_usr1 start|end: the window hook for virtap: log its counters now.
bm_usr1() { kill -USR1 "$BE_PID" 2>/dev/null || true; }

# bm_window LOG NPORTS FIELD PID [HOOK]: follow testpmd's periodic statistics in LOG (one
# "FIELD: N" line per port per period; FIELD is Rx-pps or Tx-pps, testpmd's own rate over the
# period since the previous print). The window starts at the first print at least WARMUP s
# after forwarding began and ends at the first print at least DUR s after that; HOOK runs with
# "start" and "end" there. Prints "PPS SECONDS PERIODS": the mean over the periods in the
# window of FIELD summed over the ports. Fails if PID exits or nothing shows up in time.
bm_window() {
  local log=$1 nports=$2 field=$3 pid=$4 hook=${5:-}
  local fd line partial="" v nlines=0 sum=0 start=-1 i n tot
  local deadline=$((SECONDS + 60 + ${DUR%.*} * 3)) w_us d_us
  local -a ts=() val=()
  w_us=$(awk -v w="$WARMUP" 'BEGIN {printf "%d", (w - 0.25) * 1e6}')
  d_us=$(awk -v d="$DUR" 'BEGIN {printf "%d", (d - 0.25) * 1e6}')
  exec {fd}< "$log"
  while :; do
    while IFS= read -r line <&$fd; do
      line=$partial$line
      partial=""
      case $line in
        *"$field:"*)
          v=${line#*"$field:"}
          v=${v#"${v%%[! ]*}"}
          v=${v%% *}
          sum=$((sum + v))
          nlines=$((nlines + 1))
          if [ $((nlines % nports)) = 0 ]; then
            ts+=("${EPOCHREALTIME/./}")
            val+=("$sum")
            sum=0
          fi
          ;;
      esac
    done
    partial+=$line
    n=${#ts[@]}
    if [ $start -lt 0 ]; then
      for ((i = 1; i < n; i++)); do
        if [ $((ts[i] - ts[0])) -ge "$w_us" ]; then
          start=$i
          [ -n "$hook" ] && $hook start
          break
        fi
      done
    fi
    if [ $start -ge 0 ]; then
      for ((i = start + 1; i < n; i++)); do
        if [ $((ts[i] - ts[start])) -ge "$d_us" ]; then
          [ -n "$hook" ] && $hook end
          tot=0
          for ((v = start + 1; v <= i; v++)); do tot=$((tot + val[v])); done
          exec {fd}<&-
          echo "$((tot / (i - start))) $(awk -v a="${ts[start]}" -v b="${ts[i]}" \
            'BEGIN {printf "%.2f", (b - a) / 1e6}') $((i - start))"
          return 0
        fi
      done
    fi
    if ! kill -0 "$pid" 2>/dev/null || [ $SECONDS -ge $deadline ]; then
      exec {fd}<&-
      return 1
    fi
    sleep 0.2
  done
}

# bm_vt_rate LOG NPORTS rx|tx: virtap's own rate (Mpps) between its first two counter dumps
# (SIGUSR1), summed over NPORTS ports, timed by its log's timestamps.
bm_vt_rate() {
  awk -v n="$2" -v f="$3" '
    / (up|waiting) rx [0-9]+ pkts/ {
      split($1, hms, ":"); t = hms[1] * 3600 + hms[2] * 60 + hms[3]
      for (i = 1; i <= NF; i++) if ($i == f) { v = $(i + 1); break }
      k++; d = int((k - 1) / n); sum[d] += v; tt[d] = t
    }
    END {
      if (k < 2 * n) { print "nan"; exit }
      dt = tt[1] - tt[0]; if (dt < 0) dt += 86400
      if (dt <= 0) { print "nan"; exit }
      printf "%.3f\n", (sum[1] - sum[0]) / dt / 1e6
    }' "$1"
}

# bm_rss PID: "VmRSS RssAnon RssShmem HugetlbPages" of PID, in KiB.
bm_rss() {
  awk '$1 == "VmRSS:" {a = $2} $1 == "RssAnon:" {b = $2} $1 == "RssShmem:" {c = $2}
       $1 == "HugetlbPages:" {d = $2} END {print a + 0, b + 0, c + 0, d + 0}' "/proc/$1/status"
}

# bm_mpps PPS: packets per second as Mpps with 3 decimals.
bm_mpps() { awk -v p="$1" 'BEGIN {printf "%.3f", p / 1e6}'; }
