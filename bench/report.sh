#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Runs the benchmarks and prints their results as the markdown tables of docs/performance.md, with a header saying
# when, where and how they were made. Paste the output into docs/performance.md ("Latest run").
#
#   bash bench/report.sh [BUILD_DIR] [-- HANDOFF_ARGS...]
#
# BUILD_DIR (default build/release) holds bench/openlock-handoff and bench/openlock-bench (the `bench` workflow,
# or `tools/cmake --workflow --preset release` then `tools/cmake --build build/release --target openlock-handoff
# openlock-bench`). Scratch files go to the current directory unless OPENLOCK_BENCH_DIR names another (a local
# file system: the handoff rows need inotify). A full run takes a few minutes and wants an otherwise idle
# machine: on a shared one the numbers say little. For a quick check that the script works:
#
#   OPENLOCK_REPORT_QUICK=1 bash bench/report.sh build/release
#
# (0.3 s per contended row, few pings, stale rounds and waiters, no openlock-bench repetitions: not numbers to
# publish.)
set -euo pipefail

build=${1:-build/release}
[[ $# -gt 0 ]] && shift
[[ ${1:-} == -- ]] && shift
handoff_args=("$@")
bench_args=(--benchmark_repetitions=5 --benchmark_report_aggregates_only=true
            --benchmark_enable_random_interleaving=true --benchmark_min_time=0.5)
if [[ -n ${OPENLOCK_REPORT_QUICK:-} ]]; then
    handoff_args+=(--seconds=0.3 --pings=200 --stale-rounds=3 --waiters=100)
    bench_args=(--benchmark_repetitions=1 --benchmark_min_time=0.05)
fi

handoff=$build/bench/openlock-handoff
bench=$build/bench/openlock-bench
for program in "$handoff" "$bench"; do
    [[ -x $program ]] || { echo "report.sh: $program is not built" >&2; exit 1; }
done

raw=$(mktemp -d)
trap 'rm -rf "$raw"' EXIT
dir=${OPENLOCK_BENCH_DIR:-$PWD}
"$handoff" --dir="$dir" "${handoff_args[@]}" >"$raw/handoff.txt" || echo "(openlock-handoff exited $?)" >&2
(cd "$dir" && "$bench" "${bench_args[@]}" --benchmark_color=false) >"$raw/bench.txt" 2>&1 ||
    echo "(openlock-bench exited $?)" >&2

commit=$(git -C "$(dirname "$0")" rev-parse --short HEAD 2>/dev/null || echo unknown)
echo "Run of $(date -u '+%Y-%m-%d %H:%M UTC'), commit $commit, $(nproc) cores ($(uname -r)), load average" \
     "$(cut -d' ' -f1-3 /proc/loadavg) at the end; $(head -1 "$raw/handoff.txt" | sed 's/^openlock-handoff: //')."
echo "Commands: \`$handoff --dir=$dir${handoff_args[*]:+ ${handoff_args[*]}}\` and \`$bench ${bench_args[*]}\`."
echo

echo "#### Wake-up floors (openlock-handoff)"
echo
echo "| floor | p50 us | p90 us | p99 us |"
echo "|---|---|---|---|"
awk '
/^wake-up floor/     { name = "pipe wake-up" }
/^protocol floor/    { name = "protocol floor (its handoff system calls, no lock logic)" }
/^file floor/        { name = "file floor (unlink -> inotify wake-up -> linkat)" }
name != "" && /p50/  {
    match($0, /p50 [0-9.]+ us, p90 [0-9.]+ us, p99 [0-9.]+ us/)
    split(substr($0, RSTART, RLENGTH), f, /[ ,]+/)
    printf "| %s | %s | %s | %s |\n", name, f[2], f[5], f[8]; name = "" }
' "$raw/handoff.txt"
echo

echo "#### Contended processes (openlock-handoff)"
echo
echo "| loop | lock | K | acq/s | handoffs | p50 us | p99 us | CPU %/proc | acq CPU us | sleeps/acq |"
echo "|---|---|---|---|---|---|---|---|---|---|"
awk '
/^contended:/ { on = 1; next }
on && /^-+$/  { next }
on && /^  [^ ]/ { on = 0 }
on && /^           [^ ]/ {
    # "           %-7s %-18s %2d ...": the lock names hold spaces, so the first two columns go by position.
    loop = substr($0, 12, 7); lock = substr($0, 20, 18); rest = substr($0, 38)
    gsub(/ +$/, "", loop); gsub(/ +$/, "", lock)
    n = split(rest, f, / +/); line = "| " loop " | " lock
    for (i = 1; i <= n; ++i) if (f[i] != "") line = line " | " f[i]
    print line " |" }
' "$raw/handoff.txt"
echo

echo "#### Parked waiters, stale recovery, coroutine waiters, the issue's targets (openlock-handoff)"
echo
echo '```'
sed -n '/^parked waiters/,$p' "$raw/handoff.txt"
echo '```'
echo

echo "#### Uncontended acquire + release (openlock-bench, medians of the interleaved repetitions)"
echo
echo "| claim method / file system | floor ns | openlock ns | ratio |"
echo "|---|---|---|---|"
# The closing table of openlock-bench: "<method>/<fs>  <floor> ns  <openlock> ns  <ratio>x".
awk '
/^acquire\+release, real time/ { on = 1; next }
on && /^-+$/ { next }
on && / ns / { printf "| %s | %s | %s | %s |\n", $1, $2, $4, $6 }
' "$raw/bench.txt"
