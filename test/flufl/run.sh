#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# openlock and Python's flufl.lock (Debian's python3-flufl.lock 5) on one lock file (issue 3):
#   1 mixed contention: openlock processes (`openlock run --format flufl`) and flufl.lock processes share an
#     exact counter with a "someone is inside" marker; nothing is left over;
#   2 openlock breaks flufl.lock's expired lock: a Python holder with a 1 s lease that never refreshes is
#     broken after lease + clock slop (not before), its claim file goes with it, and the holder learns it lost;
#   3 flufl.lock breaks openlock's expired lock: an openlock holder frozen (SIGSTOP) past its lease is broken by
#     flufl.lock after lease + flufl's 10 s slop (not before), and when thawed it reports that it lost the lock.
# Skips (exit 0) when python3-flufl.lock is missing. Usage: test/flufl/run.sh [BUILD_DIR] (default
# build/release; target openlock-cli). Exits 1 if any check failed.
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
build=$(cd "${1:-$here/../../build/release}" && pwd)
cli=$build/cli/openlock
python=/usr/bin/python3
peer=$here/peer.py
# shellcheck source=test/fs/lib.sh
source "$here/../fs/lib.sh"

"$python" -c 'import flufl.lock' 2>/dev/null ||
  { say "SKIP test/flufl: $python has no flufl.lock (apt-get install python3-flufl.lock)"; exit 0; }
[ -x "$cli" ] || { say "test/flufl: $cli is missing (build openlock-cli)"; exit 2; }
make_work

# The critical section of an openlock process: the same marker and counter as peer.py's.
cat >"$work/bump.sh" <<'BUMP'
set -C
counter=$1
: >"$counter.inside" 2>/dev/null || { echo "violation: another holder is inside"; exit 2; }
n=$(cat "$counter")
echo $((n + 1)) >|"$counter"
rm -f "$counter.inside"
BUMP

# --- 1: mixed contention
dir=$work/mixed
mkdir -p "$dir"
echo 0 >"$dir/counter"
openlock_rounds=40
python_rounds=15
loop_openlock() {
  local i
  for ((i = 0; i < openlock_rounds; i++)); do
    "$cli" run --format flufl --lifetime 30 --timeout 120 "$dir/shared.lock" -- sh "$work/bump.sh" "$dir/counter" ||
      { echo "openlock run failed ($?)"; return 1; }
  done
}
began=$EPOCHREALTIME
pids=()
for _ in 1 2 3; do
  loop_openlock >"$dir/openlock.$_.log" 2>&1 &
  pids+=($!)
  "$python" "$peer" count "$dir/shared.lock" "$dir/counter" "$python_rounds" >"$dir/python.$_.log" 2>&1 &
  pids+=($!)
done
statuses=0
for pid in "${pids[@]}"; do wait "$pid" || statuses=$((statuses + 1)); done
expected=$((3 * openlock_rounds + 3 * python_rounds))
counted=$(cat "$dir/counter")
leftovers=$(cd "$dir" && ls -A | grep -v -e '^counter$' -e '\.log$' | tr '\n' ' ')
if [ "$statuses" -eq 0 ] && [ "$counted" -eq "$expected" ] && [ -z "$leftovers" ] &&
  ! grep -q violation "$dir"/*.log; then
  pass "mixed contention: 3 openlock x $openlock_rounds + 3 flufl.lock x $python_rounds, counter $counted of $expected, nothing left ($(elapsed_since "$began") s)"
else
  fail "mixed contention: counter $counted of $expected, $statuses processes failed, left: '$leftovers'"
  tail -n 5 "$dir"/*.log
fi

# --- 2: openlock breaks an expired flufl.lock lock
dir=$work/python-holder
mkdir -p "$dir"
coproc holder { exec "$python" "$peer" hold "$dir/shared.lock" 1 6; }
holder_pid=$holder_PID
spawned+=("$holder_pid")
read -r -t 10 line <&"${holder[0]}"
if [ "${line:-}" != locked ]; then
  fail "openlock breaks flufl.lock: the Python holder did not lock ('${line:-}')"
else
  python_claim=$(cat "$dir/shared.lock")
  lease_end=$(stat -c %.9Y "$dir/shared.lock") # flufl.lock's whole second
  # Default clock slop 2 s: broken 2 s after the lease's end, not sooner.
  "$cli" run --format flufl --lifetime 10 --timeout 20 "$dir/shared.lock" -- \
    sh -c "date +%s.%N >'$dir/acquired_at'" 2>"$dir/run.err"
  status=$?
  late=$(awk -v end="$lease_end" -v at="$(cat "$dir/acquired_at" 2>/dev/null || echo 0)" \
    'BEGIN { printf "%.2f", at - end }')
  read -r -t 10 verdict <&"${holder[0]}"
  if [ "$status" -eq 0 ] && within 2 4 "$late" && [ ! -e "$python_claim" ] && [ "${verdict:-}" = lost ] &&
    [ -z "$(ls -A "$dir" | grep -v -e run.err -e acquired_at)" ]; then
    pass "openlock broke flufl.lock's expired lock $late s after its lease ended (clock slop 2 s), removed its claim file; the Python holder saw 'lost'"
  else
    fail "openlock breaks flufl.lock: status $status, $late s after the lease, claim $( [ -e "$python_claim" ] && echo kept || echo removed), holder said '${verdict:-}'"
    cat "$dir/run.err"; ls -A "$dir"
  fi
fi
wait "$holder_pid" 2>/dev/null

# --- 3: flufl.lock breaks an expired openlock lock (the holder frozen past its lease)
dir=$work/openlock-holder
mkdir -p "$dir"
"$cli" run --format flufl --lifetime 1 "$dir/shared.lock" -- sleep 25 2>"$dir/run.err" &
holder_pid=$!
spawned+=("$holder_pid")
for _ in $(seq 100); do [ -e "$dir/shared.lock" ] && break; sleep 0.05; done
our_claim=$(cat "$dir/shared.lock" 2>/dev/null)
# flufl.lock's layout: the lock file names a claim file "<lock>|<host>|<pid>|<random>" that holds that name.
claim_ok=no
[[ "$our_claim" == "$dir/shared.lock|"*"|$holder_pid|"* ]] && [ "$(cat "$our_claim")" = "$our_claim" ] &&
  [ "$(stat -c %h "$dir/shared.lock")" = 2 ] && claim_ok=yes
kill -STOP "$holder_pid"
sleep 0.1 # a refresh under way when stopped has finished (or never started)
lease_end=$(stat -c %.9Y "$dir/shared.lock")
answer=$("$python" "$peer" acquire "$dir/shared.lock" 30 2>&1)
late=$(awk -v end="$lease_end" -v at="${answer#acquired }" 'BEGIN { printf "%.2f", at - end }')
kill -CONT "$holder_pid"
sleep 1
pkill -TERM -P "$holder_pid" sleep
wait "$holder_pid"
if [[ "$answer" == acquired* ]] && within 10 15 "$late" && [ "$claim_ok" = yes ] && [ ! -e "$our_claim" ] &&
  grep -q "lost the lock" "$dir/run.err" && [ -z "$(ls -A "$dir" | grep -v run.err)" ]; then
  pass "flufl.lock broke the frozen openlock holder's lock $late s after its lease ended (flufl's slop 10 s); thawed, the holder reported the loss"
else
  fail "flufl.lock breaks openlock: '$answer', $late s after the lease, our claim '$our_claim' (flufl's layout: $claim_ok) $( [ -e "$our_claim" ] && echo kept || echo removed)"
  cat "$dir/run.err"; ls -A "$dir"
fi

say "test/flufl: $failures failed ($(elapsed_since "$started_at") s)"
[ "$failures" -eq 0 ]
