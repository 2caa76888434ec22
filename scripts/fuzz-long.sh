#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Long fuzzing campaign: every fuzzer in fuzz/ runs until it has used VT_FUZZ_CPU_SECONDS of CPU
# time (default 3600, one CPU-hour each), at nice 19 so it soaks up idle cores without slowing
# anything else. All fuzzers run at once, each on its own growing corpus under build-fuzz-long/.
#
# At the end it prints, per fuzzer: CPU seconds used, wall seconds, executions, coverage edges
# (cov) and features (ft) from libFuzzer's last status line, corpus size, and crashes. A crash
# input is copied into fuzz/corpus/<name>/ (as crash-*) so the CI fuzz smoke replays it from then
# on: every crash found becomes a regression test. The summary is also written to
# build-fuzz-long/summary.md.
#
#   scripts/fuzz-long.sh                 # all fuzzers, 1 CPU-hour each
#   VT_FUZZ_CPU_SECONDS=600 scripts/fuzz-long.sh vu vring
set -u
cd "$(dirname "$0")/.."
cpu_target=${VT_FUZZ_CPU_SECONDS:-3600}
# nice alone is not enough: with autogroup scheduling every session gets an equal share first and
# nice only ranks threads inside it. Lower this session's group too, so idle cores are all the
# fuzzers take.
echo 19 > /proc/self/autogroup 2>/dev/null || true
out=build-fuzz-long
names=("$@")
if [ ${#names[@]} -eq 0 ]; then
  for s in fuzz/fuzz_*.c; do n=$(basename "$s" .c); names+=("${n#fuzz_}"); done
fi

command -v clang >/dev/null || { echo "fuzz-long: clang is missing (run scripts/deps.sh)" >&2; exit 2; }
CC=clang cmake -S . -B "$out" -G Ninja -DVIRTAP_FUZZ=ON >/dev/null || exit 1
ninja -C "$out" $(printf 'fuzz_%s ' "${names[@]}") || exit 1

hz=$(getconf CLK_TCK)
cpu_of() { # utime + stime of a pid, in seconds
  awk -v hz="$hz" '{ sub(/^.*\) /, ""); print int(($12 + $13) / hz) }' "/proc/$1/stat" 2>/dev/null || echo -1
}

declare -A pid start
for n in "${names[@]}"; do
  c=$out/corpus-$n
  mkdir -p "$c" "$out/crash-$n"
  cp -n fuzz/corpus/"$n"/* "$c"/ 2>/dev/null
  # -max_total_time is a wall-clock backstop only; the CPU budget below is what ends a run.
  nice -n 19 "$out/fuzz_$n" -max_len=80000 -max_total_time=$((cpu_target * 8)) \
    -artifact_prefix="$out/crash-$n/" -print_final_stats=1 "$c" >"$out/$n.log" 2>&1 &
  pid[$n]=$!
  start[$n]=$(date +%s)
  echo "fuzz-long: $n started (pid ${pid[$n]}), log $out/$n.log"
done

declare -A cpu wall
running=${#names[@]}
while [ "$running" -gt 0 ]; do
  sleep 10
  running=0
  for n in "${names[@]}"; do
    p=${pid[$n]}
    [ -n "$p" ] || continue
    if ! kill -0 "$p" 2>/dev/null; then
      wait "$p"; pid[$n]=""; continue
    fi
    cpu[$n]=$(cpu_of "$p")
    wall[$n]=$(($(date +%s) - start[$n]))
    if [ "${cpu[$n]}" -ge "$cpu_target" ]; then
      kill -INT "$p"; wait "$p"; pid[$n]=""; continue
    fi
    running=$((running + 1))
  done
done

{
  echo "| fuzzer | CPU s | wall s | executions | cov | ft | corpus | crashes |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|"
  for n in "${names[@]}"; do
    last=$(grep -aE '^#[0-9]+' "$out/$n.log" | tail -1)
    # -print_final_stats' count is exact; the last status line is only the last power-of-two
    # pulse or new input before the end.
    execs=$(grep -a 'stat::number_of_executed_units' "$out/$n.log" | awk '{print $2}')
    [ -n "$execs" ] || execs=$(sed -E 's/^#([0-9]+).*/\1/' <<<"$last")
    cov=$(grep -oE 'cov: [0-9]+' <<<"$last" | cut -d' ' -f2)
    ft=$(grep -oE 'ft: [0-9]+' <<<"$last" | cut -d' ' -f2)
    ncorp=$(ls "$out/corpus-$n" | wc -l)
    ncrash=$(ls "$out/crash-$n" | wc -l)
    echo "| $n | ${cpu[$n]:-?} | ${wall[$n]:-?} | ${execs:-?} | ${cov:-?} | ${ft:-?} | $ncorp | $ncrash |"
  done
} | tee "$out/summary.md"

crashes=0
for n in "${names[@]}"; do
  for f in "$out/crash-$n"/*; do
    [ -e "$f" ] || continue
    crashes=$((crashes + 1))
    cp "$f" "fuzz/corpus/$n/crash-$(sha1sum "$f" | cut -c1-16)"
    echo "fuzz-long: $n crashed on $f (copied into fuzz/corpus/$n/ as a regression input)"
  done
done
[ "$crashes" -eq 0 ]
