#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Source-based coverage (clang -fprofile-instr-generate -fcoverage-mapping) of src/, twice: what
# the fuzzers alone execute (every fuzz/fuzz_*.c replaying its seed corpus, plus a larger corpus
# from a long campaign where one exists), and the fuzzers plus the unit and adversarial tests
# (ctest, without the guest integration tests). Prints both as markdown tables (lines and
# branches per file) for SECURITY.md, checks the fuzzers-alone line coverage of src/virtio,
# src/net and src/vhost against the 90 % target (PASS or BELOW; the exit status stays 0), and
# lists the functions in those directories that no fuzzer runs. Needs root (the tests make TAP
# devices in network namespaces of their own).
#
#   scripts/coverage.sh         # corpora: fuzz/corpus/<name>, build-fuzz-long/corpus-<name>
#   scripts/coverage.sh DIR...  # also DIR/corpus-<name> of each DIR
#
# Builds in build-cov-fuzz (libFuzzer + ASan/UBSan, as the fuzz smoke) and build-cov-test (plain);
# profiles and reports go to build-cov-report/. VT_COV_JOBS (default 2) is ninja's -j,
# VT_SOAK_SECONDS (here default 10) the many-ports soak.
set -u
cd "$(dirname "$0")/.."
scripts/deps.sh || exit 1

jobs=${VT_COV_JOBS:-2}
out=build-cov-report
target=90
core_dirs="src/virtio src/net src/vhost"

ver=$(clang --version | sed -n 's/.*clang version \([0-9]*\).*/\1/p' | head -1)
tool() { # the llvm tool matching clang's version, else the unversioned one
  local t
  for t in "llvm-$1-$ver" "llvm-$1"; do
    command -v "$t" >/dev/null && { echo "$t"; return 0; }
  done
  echo "coverage: llvm-$1 is missing (Debian package llvm-$ver; scripts/deps.sh installs it)" >&2
  return 1
}
profdata=$(tool profdata) || exit 1
cov=$(tool cov) || exit 1

flags="-fprofile-instr-generate -fcoverage-mapping"
fuzzers=()
for s in fuzz/fuzz_*.c; do fuzzers+=("$(basename "$s" .c)"); done

echo "=== build: fuzzers (build-cov-fuzz) and tests (build-cov-test), clang with coverage" >&2
if ! { CC=clang cmake -S . -B build-cov-fuzz -G Ninja -DVIRTAP_FUZZ=ON -DCMAKE_C_FLAGS="$flags" \
         -DCMAKE_EXE_LINKER_FLAGS="-fprofile-instr-generate" >/dev/null &&
       ninja -j "$jobs" -C build-cov-fuzz "${fuzzers[@]}" >&2; }; then
  echo "coverage: fuzz build failed" >&2; exit 1
fi
if ! { CC=clang cmake -S . -B build-cov-test -G Ninja -DCMAKE_C_FLAGS="$flags" \
         -DCMAKE_EXE_LINKER_FLAGS="-fprofile-instr-generate" >/dev/null &&
       ninja -j "$jobs" -C build-cov-test >&2; }; then
  echo "coverage: test build failed" >&2; exit 1
fi

rm -rf "$out"
mkdir -p "$out/prof-fuzz" "$out/prof-test"

echo "=== fuzzers: replay of each corpus (-runs=0: every input once)" >&2
for f in "${fuzzers[@]}"; do
  n=${f#fuzz_}
  dirs=("fuzz/corpus/$n")
  for root in build-fuzz-long "$@"; do
    [ -d "$root/corpus-$n" ] && dirs+=("$root/corpus-$n")
  done
  # -max_len: never cut an input the corpus holds (libFuzzer's default is the largest seed).
  # A crash ends the replay before the profile is written: that fuzzer's coverage is missing.
  if ! LLVM_PROFILE_FILE="$PWD/$out/prof-fuzz/$n-%p.profraw" build-cov-fuzz/"$f" -runs=0 \
      -max_len=1048576 -artifact_prefix="$out/" "${dirs[@]}" >"$out/$f.log" 2>&1; then
    echo "coverage: $f failed on its corpus (a crash?), its coverage is missing; $out/$f.log" >&2
  fi
  echo "$f: $(find "${dirs[@]}" -type f | wc -l) inputs from ${dirs[*]}" >&2
done

echo "=== unit and adversarial tests (ctest, guest integration tests excluded)" >&2
LLVM_PROFILE_FILE="$PWD/$out/prof-test/%p.profraw" VT_SOAK_SECONDS=${VT_SOAK_SECONDS:-10} \
  ctest --test-dir build-cov-test -E '^it_' -j1 --output-on-failure >"$out/ctest.log" 2>&1
grep -a "tests passed" "$out/ctest.log" >&2 || tail -20 "$out/ctest.log" >&2

shopt -s nullglob
fz=("$out"/prof-fuzz/*.profraw)
ts=("$out"/prof-test/*.profraw)
[ ${#fz[@]} -gt 0 ] || { echo "coverage: the fuzzers wrote no profile" >&2; exit 1; }
"$profdata" merge -sparse "${fz[@]}" -o "$out/fuzz.profdata" || exit 1
"$profdata" merge -sparse "$out/fuzz.profdata" "${ts[@]}" -o "$out/all.profdata" || exit 1

# Every binary that holds src/ code, so both tables count the same lines: a function only the
# tests' binaries contain counts as unreached in the fuzzers' table.
objs=()
for f in "${fuzzers[@]}"; do objs+=(-object "build-cov-fuzz/$f"); done
for t in build-cov-test/test_* build-cov-test/virtap; do [ -x "$t" ] && objs+=(-object "$t"); done
ignore='^(.*/)?(tests|fuzz|bench|include)/|^/usr/'
for p in fuzz all; do
  "$cov" export -summary-only -instr-profile="$out/$p.profdata" \
    -ignore-filename-regex="$ignore" "${objs[@]}" >"$out/$p-summary.json" \
    2>"$out/$p-export.err" || { cat "$out/$p-export.err" >&2; exit 1; }
done
"$cov" export -skip-expansions -instr-profile="$out/fuzz.profdata" \
  -ignore-filename-regex="$ignore" "${objs[@]}" >"$out/fuzz-full.json" \
  2>>"$out/fuzz-export.err" || exit 1
# "mismatched data": a function compiled differently in the two builds (a source file changed
# between them); llvm-cov then leaves its counts from one of them out.
sort -u "$out"/*-export.err | sed 's/^/coverage: llvm-cov: /' >&2

python3 - "$PWD" "$out" "$target" $core_dirs <<'EOF' | tee "$out/coverage.md"
import json, os, sys

root, out, target, core = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4:]


def files(name):
    with open(os.path.join(out, name)) as f:
        data = json.load(f)["data"][0]["files"]
    # Files with no code of their own (headers of declarations only) have no row.
    return {os.path.relpath(x["filename"], root): x["summary"] for x in data
            if os.path.relpath(x["filename"], root).startswith("src/")
            and x["summary"]["lines"]["count"]}


def pct(c, n):
    return f"{100.0 * c / n:.1f} %" if n else "-"


def table(title, summ):
    print(f"### {title}\n")
    print("| file | lines | line coverage | branches | branch coverage |")
    print("|---|---:|---:|---:|---:|")
    tl = [0, 0]
    tb = [0, 0]
    for f in sorted(summ):
        l, b = summ[f]["lines"], summ[f]["branches"]
        print(f"| {f} | {l['covered']}/{l['count']} | {pct(l['covered'], l['count'])} "
              f"| {b['covered']}/{b['count']} | {pct(b['covered'], b['count'])} |")
        tl[0] += l["covered"]; tl[1] += l["count"]
        tb[0] += b["covered"]; tb[1] += b["count"]
    print(f"| **src/ total** | {tl[0]}/{tl[1]} | **{pct(*tl)}** | {tb[0]}/{tb[1]} "
          f"| **{pct(*tb)}** |\n")


fz, al = files("fuzz-summary.json"), files("all-summary.json")
table("Fuzzers alone", fz)
table("Fuzzers + tests", al)

incore = lambda f: any(f.startswith(d + "/") for d in core)
c = sum(s["lines"]["covered"] for f, s in fz.items() if incore(f))
n = sum(s["lines"]["count"] for f, s in fz.items() if incore(f))
p = 100.0 * c / n if n else 0.0
print(f"Fuzzers alone, {' + '.join(core)}: {c}/{n} lines = {p:.1f} % "
      f"(target {target:.0f} %): {'PASS' if p >= target else 'BELOW'}\n")

with open(os.path.join(out, "fuzz-full.json")) as f:
    funcs = json.load(f)["data"][0]["functions"]
zero = sorted({(os.path.relpath(fn["filenames"][0], root), fn["name"].split(":")[-1])
               for fn in funcs if fn["count"] == 0 and fn["filenames"]
               and incore(os.path.relpath(fn["filenames"][0], root))})
print(f"Functions in {', '.join(core)} that no fuzzer runs ({len(zero)}):\n")
for f, name in zero:
    print(f"- {f}: `{name}`")
if not zero:
    print("- none")
EOF
