#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The root-only rows of docs/reliability.md's matrix (issue 5), driven through the CLI and the test child:
#   1 pid reuse in a pid namespace: a killed holder's pid taken by a process of another name, then by one of the
#     same name (another start time): stale both times, and taken over;
#   2 time namespaces (unshare --time, monotonic and boottime shifted by 100000 s): a holder inside is live from
#     outside and one outside is live from inside (start times are normalised with /proc/self/timens_offsets);
#   3 a read-only tmpfs: run exits 73 with one line, the command never runs, nothing changes;
#   4 ENOSPC on a tiny full tmpfs: run exits 73 with one line, a dead holder's lock is left intact; once space
#     is freed it is taken over;
#   5 a FIFO at the lock path: status says invalid, run exits 65 without blocking, break --force leaves it;
#   6 a sticky world-writable directory as nobody: another user's stale lock cannot be removed (run exits 73
#     with one line, the file is unchanged), a fresh lock name works.
# Needs root, unshare, mount and setpriv, else prints SKIP and exits 0 (rows whose namespace is refused skip
# alone). Usage: test/fs/matrix.sh [BUILD_DIR]  (default build/release: targets openlock-cli and
# openlock-test-child). Exits 1 if any check failed.
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
build=$(cd "${1:-$here/../../build/release}" && pwd)
cli=$build/cli/openlock
child=$build/test/openlock-test-child
# shellcheck source=test/fs/lib.sh
source "$here/lib.sh"

[ "$(id -u)" -eq 0 ] || skip_all "matrix: needs root (namespaces, mounts, setpriv)"
for tool in unshare mount umount setpriv timeout; do
  command -v "$tool" >/dev/null || skip_all "matrix: $tool is missing (apt-get install util-linux coreutils)"
done
for binary in "$cli" "$child"; do
  [ -x "$binary" ] || { say "test/fs/matrix: $binary is missing (build openlock-cli and openlock-test-child)"; exit 2; }
done

make_work
chmod 755 "$work" # nobody must reach the sticky directory of row 6

# mount_tmpfs DIR OPTIONS: a tmpfs that the exit trap unmounts.
mount_tmpfs() {
  mkdir -p "$1"
  mount -t tmpfs -o "$2" tmpfs "$1" || return 1
  mounts+=("$1")
}

# stop PID: kill a spawned process (with its process group if it leads one) and reap it.
stop() {
  kill -KILL -- "-$1" 2>/dev/null || kill -KILL "$1" 2>/dev/null
  wait "$1" 2>/dev/null
}

# wait_for_line FILE PATTERN SECONDS: true once a line of FILE matches PATTERN.
wait_for_line() {
  local deadline=$((SECONDS + $3))
  until grep -q "$2" "$1" 2>/dev/null; do
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 0.02
  done
}

# state_of LOCK: the CLI's state of LOCK (unlocked, held, expired, stale, invalid).
state_of() { json_field "$("$cli" status --json "$1" 2>/dev/null)" state; }

# snapshot DIR: names, kinds, sizes, modes, owners and contents of everything in DIR.
snapshot() {
  (cd "$1" && find . -printf '%p %y %s %m %u\n' | sort && find . -type f -exec md5sum {} + | sort)
}

# one_line FILE: true when FILE holds exactly one non-empty line.
one_line() { [ "$(wc -l <"$1")" -eq 1 ] && [ -s "$1" ]; }

# dead_holder LOCK: the lock of a SIGKILLed holder (a child that exits releases its locks, even leaked ones).
dead_holder() {
  "$child" hold "$1" >"$work/dead-holder.out" &
  local holder=$!
  wait_for_line "$work/dead-holder.out" '^locked' 10
  kill -KILL "$holder"
  wait "$holder" 2>/dev/null
  [ -f "$1" ] || { fail "no dead holder's lock file at $1 (the rows using it prove nothing)"; return 1; }
}

say "== 1 pid reuse in a pid namespace"
# Runs as pid 1 of a new pid namespace, so ns_last_pid is ours alone; prints key=value lines.
reuse_inside() {
  local cli=$1 child=$2 dir=$3 reuser_kind=$4 lock=$3/reuse/$4 holder reuser
  "$child" hold "$lock" >"$dir/holder-$reuser_kind.out" &
  holder=$!
  wait_for_line "$dir/holder-$reuser_kind.out" '^locked' 10 || { echo "error=the holder never acquired"; return; }
  echo "before=$(state_of "$lock")"
  kill -KILL "$holder"
  wait "$holder"
  echo $((holder - 1)) >/proc/sys/kernel/ns_last_pid
  if [ "$reuser_kind" = other_name ]; then
    sleep 30 &
  else
    "$child" hold "$dir/unrelated-$reuser_kind" >/dev/null &
  fi
  reuser=$!
  [ "$reuser" -eq "$holder" ] || { echo "error=pid $holder was not reused (got $reuser)"; return; }
  sleep 0.2 # the reuser has exec'd: its exe is its own
  echo "reuser_name=$(basename "$(readlink "/proc/$reuser/exe")")"
  local status
  status=$("$cli" status --json "$lock")
  echo "after=$(json_field "$status" state)"
  echo "recorded_pid=$(json_field "$status" pid)"
  echo "pid=$holder"
  timeout 10 "$cli" run --timeout 2 "$lock" -- true 2>"$dir/reuse-$reuser_kind.err"
  echo "run=$?"
  echo "left=$(leftovers "$dir/reuse" "$reuser_kind")"
  kill -KILL "$reuser"
}

pid_reuse() {
  local kind=$1 expected_name=$2 result
  mkdir -p "$work/reuse"
  result=$(unshare --pid --fork --mount --mount-proc bash -c \
    "$(declare -f reuse_inside state_of json_field wait_for_line leftovers); reuse_inside \"\$@\"" \
    reuse "$cli" "$child" "$work" "$kind" 2>&1)
  local error before after recorded_pid pid run reuser_name left
  error=$(sed -n 's/^error=//p' <<<"$result")
  before=$(sed -n 's/^before=//p' <<<"$result")
  after=$(sed -n 's/^after=//p' <<<"$result")
  recorded_pid=$(sed -n 's/^recorded_pid=//p' <<<"$result")
  pid=$(sed -n 's/^pid=//p' <<<"$result")
  run=$(sed -n 's/^run=//p' <<<"$result")
  reuser_name=$(sed -n 's/^reuser_name=//p' <<<"$result")
  left=$(sed -n 's/^left=//p' <<<"$result")
  if [ -n "$error" ]; then
    fail "pid reused by $kind: $error"
  elif [ "$before" = held ] && [ "$after" = stale ] && [ "$recorded_pid" = "$pid" ] &&
    [ "$reuser_name" = "$expected_name" ] && [ "$run" = 0 ] && [ -z "$left" ]; then
    pass "pid reused by $kind ($reuser_name as pid $pid): held before the kill, stale after, taken over (run exit 0)"
  else
    fail "pid reused by $kind: expected held, then stale for pid $pid held by $expected_name, run exit 0 and" \
      "nothing left; got $(tr '\n' ' ' <<<"$result")$(tr '\n' ' ' <"$work/reuse-$kind.err" 2>/dev/null)"
  fi
}

if ! unshare --pid --fork --mount --mount-proc true 2>/dev/null; then
  say "SKIP pid reuse: unshare --pid --fork --mount --mount-proc fails here"
else
  pid_reuse other_name sleep
  pid_reuse same_name openlock-test-child
fi

say "== 2 time namespaces (monotonic and boottime +100000 s)"
in_time_namespace=(unshare --time --fork --monotonic 100000 --boottime 100000)
# verdict_across LABEL LOCK RUN_PREFIX...: the lock is held (status and a run that times out), judged by
# the CLI run under RUN_PREFIX.
verdict_across() {
  local label=$1 lock=$2 state run
  shift 2
  state=$(json_field "$("$@" "$cli" status --json "$lock")" state)
  timeout 10 "$@" "$cli" run --timeout 1 "$lock" -- true 2>"$work/time.err"
  run=$?
  if [ "$state" = held ] && [ "$run" -eq 75 ] && [ -e "$lock" ]; then
    pass "$label: held, and run timed out (exit 75) without taking it over"
  else
    fail "$label: expected held and run exit 75; got '$state', run exit $run ($(tr '\n' ' ' <"$work/time.err"))"
  fi
}

if ! "${in_time_namespace[@]}" true 2>/dev/null; then
  say "SKIP time namespaces: unshare --time --monotonic --boottime fails here"
else
  spawn setsid "${in_time_namespace[@]}" "$child" hold "$work/time-inside" \
    >"$work/time-inside.out"
  inside_holder=$!
  if ! wait_for_line "$work/time-inside.out" '^locked' 10; then
    fail "time namespace: the holder inside never acquired"
  else
    holder_pid=$(awk '{ print $2 }' "$work/time-inside.out")
    if [ "$(readlink "/proc/$holder_pid/ns/time")" = "$(readlink /proc/self/ns/time)" ]; then
      fail "time namespace: the holder inside shares our time namespace (the test would prove nothing)"
    else
      verdict_across "a holder in a time namespace, judged from outside" "$work/time-inside"
    fi
  fi
  stop "$inside_holder"
  spawn "$child" hold "$work/time-outside" >"$work/time-outside.out"
  outside_holder=$!
  if wait_for_line "$work/time-outside.out" '^locked' 10; then
    verdict_across "a holder outside, judged from a time namespace" "$work/time-outside" "${in_time_namespace[@]}"
  else
    fail "time namespace: the holder outside never acquired"
  fi
  stop "$outside_holder"
fi

say "== 3 a read-only file system"
read_only() {
  local dir=$work/ro before
  if ! mount_tmpfs "$dir" size=1m; then
    say "SKIP read-only: cannot mount a tmpfs"
    return
  fi
  dead_holder "$dir/stale"
  echo keep >"$dir/other"
  if ! mount -o remount,ro "$dir"; then
    say "SKIP read-only: cannot remount the tmpfs read-only"
    return
  fi
  before=$(snapshot "$dir")
  local lock status
  for lock in fresh stale; do
    timeout 10 "$cli" run --timeout 2 "$dir/$lock" -- touch "$work/ro-ran" 2>"$work/ro.err"
    status=$?
    if [ "$status" -eq 73 ] && one_line "$work/ro.err" && [ ! -e "$work/ro-ran" ] &&
      [ "$(snapshot "$dir")" = "$before" ]; then
      pass "read-only, $lock lock: exit 73 with one line ($(cat "$work/ro.err")), nothing changed"
    else
      fail "read-only, $lock lock: expected exit 73, one line, nothing run or changed; got exit $status," \
        "'$(tr '\n' ' ' <"$work/ro.err")', ran: $([ -e "$work/ro-ran" ] && echo yes || echo no)," \
        "changed: $([ "$(snapshot "$dir")" = "$before" ] && echo no || echo yes)"
    fi
  done
}
read_only

say "== 4 ENOSPC on a tiny full tmpfs"
no_space() {
  local dir=$work/full
  if ! mount_tmpfs "$dir" size=16k,nr_inodes=16; then
    say "SKIP ENOSPC: cannot mount a tiny tmpfs"
    return
  fi
  dead_holder "$dir/lock" || return
  local record files=0
  record=$(md5sum <"$dir/lock")
  # Every block and every inode is used up, so no claim, guard or record can be written.
  dd if=/dev/zero of="$dir/filler" bs=1k 2>/dev/null
  while touch "$dir/inode-$files" 2>/dev/null; do files=$((files + 1)); done
  local before status
  before=$(snapshot "$dir")
  timeout 10 "$cli" run --timeout 2 "$dir/lock" -- touch "$work/full-ran" 2>"$work/full.err"
  status=$?
  if [ "$status" -eq 73 ] && one_line "$work/full.err" && grep -q "No space left" "$work/full.err" &&
    [ ! -e "$work/full-ran" ] && [ "$(md5sum <"$dir/lock")" = "$record" ] && [ "$(snapshot "$dir")" = "$before" ]; then
    pass "ENOSPC: exit 73 with one line ($(cat "$work/full.err")); the dead holder's lock is intact, nothing changed"
  else
    fail "ENOSPC: expected exit 73, one line naming ENOSPC, the dead holder's lock intact; got exit $status," \
      "'$(tr '\n' ' ' <"$work/full.err")', lock file: $([ -e "$dir/lock" ] && md5sum <"$dir/lock" || echo gone)" \
      "(was $record), ran: $([ -e "$work/full-ran" ] && echo yes || echo no)"
  fi
  rm -f "$dir/filler" "$dir"/inode-*
  timeout 10 "$cli" run --timeout 2 "$dir/lock" -- touch "$work/full-ran" 2>"$work/full.err"
  status=$?
  local left
  left=$(leftovers "$dir" lock)
  if [ "$status" -eq 0 ] && [ -e "$work/full-ran" ] && [ -z "$left" ]; then
    pass "ENOSPC: with space freed the dead holder's lock is taken over (exit 0), nothing left"
  else
    fail "ENOSPC, space freed: expected exit 0 and nothing left; got exit $status" \
      "('$(tr '\n' ' ' <"$work/full.err")'), left: ${left:-nothing}"
  fi
}
no_space

say "== 5 a FIFO at the lock path"
fifo() {
  local dir=$work/fifo state run broke
  mkdir -p "$dir"
  mkfifo "$dir/lock"
  state=$(json_field "$(timeout 10 "$cli" status --json "$dir/lock")" state)
  if [ "$state" = invalid ]; then
    pass "FIFO: status says invalid"
  else
    fail "FIFO: status says '$state', expected invalid"
  fi
  local from=$EPOCHREALTIME took
  timeout 10 "$cli" run --timeout 1 "$dir/lock" -- true 2>"$work/fifo.err"
  run=$?
  took=$(elapsed_since "$from")
  if [ "$run" -eq 65 ] && one_line "$work/fifo.err" && within 0 2 "$took"; then
    pass "FIFO: run exits 65 in $took s with one line ($(cat "$work/fifo.err"))"
  else
    fail "FIFO: expected run exit 65 at once; got exit $run after $took s (124: it hung)," \
      "'$(tr '\n' ' ' <"$work/fifo.err")'"
  fi
  timeout 10 "$cli" break --force "$dir/lock" 2>"$work/fifo.err"
  broke=$?
  if [ -p "$dir/lock" ] && [ "$(ls -A "$dir")" = lock ] && [ "$broke" -ne 0 ] && [ "$broke" -ne 124 ]; then
    pass "FIFO: break --force refuses (exit $broke) and leaves the FIFO"
  else
    fail "FIFO: break --force exit $broke ('$(tr '\n' ' ' <"$work/fifo.err")'), the directory holds: $(ls -lA "$dir")"
  fi
}
fifo

say "== 6 a sticky world-writable directory, as nobody"
sticky() {
  local dir=$work/sticky
  mkdir -p "$dir"
  chmod 1777 "$dir"
  # Another user's dead lock: root's dead pid in a file owned by daemon, readable by all, so that nobody can
  # judge it stale and only the removal is refused (the sticky bit: neither the file's nor the directory's owner).
  dead_holder "$dir/theirs" || return
  chown daemon:daemon "$dir/theirs"
  chmod 644 "$dir/theirs"
  local before status
  before=$(snapshot "$dir")
  as_nobody() { setpriv --reuid=nobody --regid=nogroup --clear-groups "$@"; }
  local state
  state=$(json_field "$(as_nobody "$cli" status --json "$dir/theirs")" state)
  timeout 10 setpriv --reuid=nobody --regid=nogroup --clear-groups \
    "$cli" run --timeout 2 "$dir/theirs" -- touch "$work/sticky-ran" 2>"$work/sticky.err"
  status=$?
  if [ "$state" = stale ] && [ "$status" -eq 73 ] && one_line "$work/sticky.err" && [ ! -e "$work/sticky-ran" ] &&
    [ "$(snapshot "$dir")" = "$before" ]; then
    pass "sticky: another user's stale lock (judged $state) cannot be taken over: exit 73 with one line" \
      "($(cat "$work/sticky.err")), the directory is unchanged"
  else
    fail "sticky: expected stale, exit 73, one line, nothing run or changed; got '$state', exit $status," \
      "'$(tr '\n' ' ' <"$work/sticky.err")', ran: $([ -e "$work/sticky-ran" ] && echo yes || echo no)," \
      "directory now: $(snapshot "$dir" | tr '\n' ';')"
  fi
  as_nobody "$cli" run --timeout 2 "$dir/ours" -- true 2>"$work/sticky.err"
  status=$?
  local left
  left=$(leftovers "$dir" ours)
  if [ "$status" -eq 0 ] && [ -z "$left" ]; then
    pass "sticky: as nobody a fresh lock name works (exit 0), nothing left"
  else
    fail "sticky: a fresh lock as nobody: expected exit 0 and nothing left; got exit $status" \
      "('$(tr '\n' ' ' <"$work/sticky.err")'), left: ${left:-nothing}"
  fi
}
if getent passwd daemon >/dev/null && getent passwd nobody >/dev/null && getent group nogroup >/dev/null; then
  sticky
else
  say "SKIP sticky: needs the users daemon and nobody and the group nogroup"
fi

say "test/fs/matrix: $failures failed ($(elapsed_since "$started_at") s)"
[ "$failures" -eq 0 ]
