#!/bin/bash
# Build virtap twice (plain, and AddressSanitizer + UndefinedBehaviorSanitizer) and run the whole
# test suite under both, plus the style check. Needs root: tests make TAP devices inside private
# network namespaces of their own. Ends with one line: "N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh || { echo "0 passed, 1 failed"; exit 1; }

passed=0 failed=0
tally() { # tally <ctest log>
  local p t
  t=$(sed -n 's/.*tests passed, \([0-9]*\) tests failed out of \([0-9]*\).*/\1 \2/p' "$1" | tail -1)
  if [ -z "$t" ]; then failed=$((failed + 1)); return; fi
  set -- $t
  failed=$((failed + $1)); passed=$((passed + $2 - $1))
}

for cfg in plain asan; do
  dir=build-ci-$cfg
  extra=()
  [ $cfg = asan ] && extra=(-DVIRTAP_SANITIZE=ON)
  echo "=== $cfg build"
  if ! { cmake -S . -B $dir -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo "${extra[@]}" >/dev/null &&
         ninja -C $dir; }; then
    echo "build ($cfg) FAILED"; failed=$((failed + 1)); continue
  fi
  echo "=== $cfg tests"
  # ASan: leaks are failures too (LeakSanitizer runs at exit of every test program).
  # The guest suite's QEMU 10 twins (it_*_q10) run in the plain pass only: under ASan the
  # guests test virtap's memory safety, which the QEMU version does not change.
  skip=()
  [ $cfg = asan ] && skip=(-E '_q10$')
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1 \
    ctest --test-dir $dir --output-on-failure -j1 "${skip[@]}" 2>&1 | tee $dir/ctest.log
  tally $dir/ctest.log
  # A test that cannot run here says SKIP; on this project's own machines none may skip.
  if grep -q "Not Run\|\*\*\*Skipped" $dir/ctest.log; then
    echo "skipped tests in $cfg run: counted as failures"; failed=$((failed + 1))
  fi
done

echo "=== fuzz smoke (clang, libFuzzer + ASan/UBSan, ${VT_FUZZ_SECONDS:-60} s per fuzzer)"
if CC=clang cmake -S . -B build-ci-fuzz -G Ninja -DVIRTAP_FUZZ=ON >/dev/null &&
   ninja -C build-ci-fuzz $(cd fuzz && ls fuzz_*.c | sed 's/\.c$//'); then
  for src in fuzz/fuzz_*.c; do
    f=$(basename "$src" .c); c=build-ci-fuzz/corpus-${f#fuzz_}
    rm -rf "$c"; cp -r "fuzz/corpus/${f#fuzz_}" "$c"
    if build-ci-fuzz/$f -max_total_time="${VT_FUZZ_SECONDS:-60}" -max_len=80000 \
         -artifact_prefix=build-ci-fuzz/ "$c" > build-ci-fuzz/$f.log 2>&1; then
      echo "$f: $(grep -o 'Done [0-9]* runs' build-ci-fuzz/$f.log)"; passed=$((passed + 1))
    else
      echo "$f FAILED:"; tail -40 build-ci-fuzz/$f.log; failed=$((failed + 1))
    fi
  done
else
  echo "fuzz build FAILED"; failed=$((failed + 1))
fi

echo "=== static analysis (clang-tidy, cppcheck)"
if scripts/lint.sh build-ci-plain; then passed=$((passed + 1)); else failed=$((failed + 1)); fi

echo "=== clang-format"
if find src include tests bench fuzz -name '*.[ch]' -print0 | xargs -0 clang-format --dry-run -Werror; then
  passed=$((passed + 1))
else
  echo "clang-format: files above need formatting (scripts/format.sh)"; failed=$((failed + 1))
fi

echo "$passed passed, $failed failed"
[ $failed -eq 0 ]
