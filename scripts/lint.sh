#!/bin/bash
# Static analysis of the project's own code: clang-tidy (checks in .clang-tidy) and cppcheck.
# Usage: scripts/lint.sh [build-dir-with-compile_commands.json] (default: build-ci-plain)
set -uo pipefail
cd "$(dirname "$0")/.."
bdir=${1:-build-ci-plain}
[ -f "$bdir/compile_commands.json" ] || cmake -S . -B "$bdir" -G Ninja >/dev/null
rc=0
# gcc's LTO flags in compile_commands.json mean nothing to clang: not a finding. The output is
# collected first, so that a finding counts whatever clang-tidy's own exit status is.
out=$(find src -name '*.c' -print0 |
  xargs -0 clang-tidy -p "$bdir" --quiet --extra-arg=-Wno-ignored-optimization-argument 2>&1)
if grep -E "(warning|error):" <<<"$out"; then rc=1; fi
cppcheck --quiet --enable=warning,performance,portability --std=c11 --inline-suppr \
  -D_GNU_SOURCE -Iinclude --error-exitcode=1 src || rc=1
[ $rc -eq 0 ] && echo "lint: clang-tidy and cppcheck clean"
exit $rc
