#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Builds the libFuzzer targets (configure preset `fuzz`: ASan+UBSan, coverage-instrumented library) into
# build/fuzz and runs each for its share of SECONDS (default 60 in all), starting from the seed corpus in
# fuzz/corpus/<target>/. Exits non-zero on the first crash, leak, sanitizer report or broken property; the input
# that did it is left in build/fuzz/artifacts/. Usage: bash fuzz/run.sh [SECONDS]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

total_seconds=${1:-60}
targets=(record_parse record_serialize cli_seconds)
build=build/fuzz
per_target=$((total_seconds / ${#targets[@]}))
[ "$per_target" -ge 1 ] || per_target=1

tools/cmake --preset fuzz >/dev/null
tools/cmake --build "$build" --target fuzzers -- -j2

mkdir -p "$build/artifacts"
for target in "${targets[@]}"; do
  # New inputs go to the build directory's corpus; the committed seeds are only read.
  corpus="$build/corpus/$target"
  mkdir -p "$corpus"
  options=(-max_total_time="$per_target" -print_final_stats=1 -timeout=10 -rss_limit_mb=2048
    -artifact_prefix="$build/artifacts/$target-")
  [ -f "fuzz/$target.dict" ] && options+=(-dict="fuzz/$target.dict")
  echo "fuzz/run.sh: $target for ${per_target}s"
  if ! "$build/fuzz/fuzz-$target" "${options[@]}" "$corpus" "fuzz/corpus/$target" 2>"$build/$target.log"; then
    tail -n 60 "$build/$target.log"
    echo "fuzz/run.sh: $target FAILED; the input is in $build/artifacts/" >&2
    exit 1
  fi
  grep -E '^stat::(number_of_executed_units|average_exec_per_sec|new_units_added|peak_rss_mb)' \
    "$build/$target.log" | sed "s/^/  /"
done
echo "fuzz/run.sh: no crash in ${#targets[@]} targets"
