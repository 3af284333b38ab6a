#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The openlock demo: several processes contend for one lock file through `openlock run`; every line says who holds
# the lock and when. Then a holder is killed with SIGKILL: the lock stays held while its command runs (as flock(1)'s
# would), and once the command is killed too, a waiting process takes over the stale lock.
# Usage: examples/demo.sh [path/to/openlock]
set -euo pipefail
openlock=${1:-openlock}
workers=${DEMO_WORKERS:-4}
turns=${DEMO_TURNS:-3}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
lock=$dir/demo.lock
export DEMO_START_NS=$(date +%s%N)

# Runs as the locked command: prints one line while holding the lock, then works for 0.1 s.
# mkdir of "inside" fails if another holder is inside at the same time: the demo checks its own claim.
turn='mkdir "$2.inside" 2>/dev/null || { echo "  VIOLATION: two holders at once"; touch "$2.violation"; }
      printf "  %+8.3fs  worker %s holds %s (holder: openlock pid %s), turn %s\n" \
        "$(( $(date +%s%N) - DEMO_START_NS ))e-9" "$1" "$(basename "$2")" "$PPID" "$3"; sleep 0.1
      rmdir "$2.inside"'

echo "openlock demo: $workers processes contend for $lock, $turns turns each"
for w in $(seq 1 "$workers"); do
  (for t in $(seq 1 "$turns"); do "$openlock" run "$lock" -- bash -c "$turn" turn "$w" "$lock" "$t/$turns"; done) &
done
wait
if [ -e "$lock.violation" ]; then echo "  two holders were inside at once"; exit 1; fi
echo "  every turn was exclusive: $((workers * turns)) turns, one holder at a time"

echo
echo "openlock demo: a holder is killed with SIGKILL while it holds the lock"
# The command records its process group (its own pid: openlock starts it as a group leader).
"$openlock" run "$lock" -- bash -c 'echo $$ > "$2.group"; '"$turn"'; exec sleep 30' turn doomed "$lock" 1/1 \
  2>/dev/null &
doomed=$!
while ! "$openlock" status "$lock" | grep -q "held by" || [ ! -s "$lock.group" ]; do sleep 0.01; done
group=$(cat "$lock.group")
"$openlock" run --timeout 10 "$lock" -- bash -c "$turn" turn waiter "$lock" 1/1 &
waiter=$!
sleep 0.3
echo "  $("$openlock" status "$lock")"
{ kill -KILL "$doomed" && wait "$doomed"; } 2>/dev/null || true
printf "  %+8.3fs  killed openlock pid %s; its command (process group %s) still runs, so the lock stays held\n" \
  "$(( $(date +%s%N) - DEMO_START_NS ))e-9" "$doomed" "$group"
sleep 0.5
echo "  $("$openlock" status "$lock")"
kill -KILL -- "-$group" 2>/dev/null || true
printf "  %+8.3fs  killed the command's process group %s\n" "$(( $(date +%s%N) - DEMO_START_NS ))e-9" "$group"
wait "$waiter"
echo "  the waiter took over the stale lock; $("$openlock" status "$lock")"
