#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Runs the thread and async tests of a ThreadSanitizer build (preset tsan: `tools/cmake --workflow --preset tsan`)
# and fails on any failed test or TSan report. Usage: bash tools/tsan-tests.sh [BUILD_DIR]  (default build/tsan)
#
# Which tests: doctest ANDs its filters, so three disjoint runs select "thread or async" three ways, robust to test
# files being split or moved and to cases being grouped into TEST_SUITEs:
#   1 every case in a source file whose path contains "thread" or "async" (test/threads_test.cpp,
#     test/async_test.cpp: most async cases do not say "async" in their names);
#   2 every case of a TEST_SUITE whose name contains "thread" or "async", in any other file;
#   3 every case whose name contains "thread" or "async", in any other file and suite.
# The first run must select at least one case (a rename that loses every test is an error, not a green run).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${1:-$here/build/tsan}
tests=$build/test/openlock-tests
[ -x "$tests" ] || { echo "tools/tsan-tests.sh: $tests is missing (tools/cmake --workflow --preset tsan)" >&2; exit 2; }

# Every report is printed with its stacks and the run then exits 66. second_deadlock_stack gives both stacks of a
# lock-order inversion. tools/tsan.supp holds known third-party false positives only, each with its reason.
export TSAN_OPTIONS="exitcode=66 second_deadlock_stack=1 history_size=4 suppressions=$here/tools/tsan.supp ${TSAN_OPTIONS:-}"

pattern='*thread*,*async*'
runs=(
  "-sf=$pattern"
  "-ts=$pattern -sfe=$pattern"
  "-tc=$pattern -tse=$pattern -sfe=$pattern"
)
total=0
for filters in "${runs[@]}"; do
  echo "tools/tsan-tests.sh: openlock-tests $filters"
  # shellcheck disable=SC2086 # the filters are separate words
  output=$(cd "$build/test" && ./openlock-tests $filters --no-intro=true --no-colors=true 2>&1) || {
    echo "$output"
    echo "tools/tsan-tests.sh: FAILED ($filters)" >&2
    exit 1
  }
  echo "$output" | tail -n 3
  count=$(sed -n 's/^\[doctest\] test cases: *\([0-9]*\).*/\1/p' <<<"$output" | tail -n 1)
  if [ "$total" -eq 0 ] && [ "${count:-0}" -eq 0 ]; then
    echo "tools/tsan-tests.sh: no test case matched $filters (were the thread and async tests renamed?)" >&2
    exit 1
  fi
  total=$((total + ${count:-0}))
done
echo "tools/tsan-tests.sh: $total test cases, no ThreadSanitizer report"
