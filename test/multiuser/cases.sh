# SPDX-License-Identifier: MIT
# shellcheck shell=bash
# The cases of test/multiuser/run.sh (sourced): case_<name> NAME, each self-contained, each ending in one pass or
# fail. Set up by lib.sh: $ol (openlock), $olchild, $swapper, $private (alice's 0700 directory), $work.

# as_user USER CMD...: as(), or CMD itself for root.
as_user() {
  local user=$1
  shift
  if [ "$user" = root ]; then (cd / && "$@"); else as "$user" "$@"; fi
}

# ---- 1 data loss through a symlink swap -------------------------------------------------------------------------
# swap_race NAME VICTIM KIND RUNS: bob (a group member, owner of the helper) leaves a stale lock file and a
# leftover of kind KIND (guard: <lock>.takeover; staging: <lock>.takeover.<hex>; claim: <lock>.claim.<hex>;
# token: <lock>.token; stuck: a guard of another host's process, a minute old, that only `break --force`
# removes), each with the record of a dead process of his whose nonce names a bait file of alice's; his
# swapper exchanges the leftover for a symlink to alice's private directory the moment the victim opens a record
# in it. VICTIM runs `run --timeout 0.3 L -- true` (for stuck: `break --force L`) RUNS times, bob re-arming before each. Every bait must stay.
swap_race() {
  local name=$1 victim=$2 kind=$3 runs=$4 dir rec nonce lease=() i status statuses="" lost="" arm chance=1
  local victim_command
  dir=$(group_dir "$name")
  rec=$work/$name.record
  [ "$kind" = token ] && lease=(--lifetime 30)
  dead_record "$bob" "$rec" "${lease[@]}"
  chmod 644 "$rec"
  victim_command=(run --timeout 0.3 "${lease[@]}" "$dir/L" -- true)
  if [ "$kind" = stuck ]; then
    # A guard of another host's process (not live here), older than a minute: only a forced break removes it,
    # after reading its owner file twice (dead owner? stuck?): the swapper races one read in two.
    sed -i 's/^host=.*/host=elsewhere.invalid/' "$rec"
    victim_command=(break --force "$dir/L")
    chance=0.5
  fi
  nonce=$(nonce_of "$rec")
  [ -n "$nonce" ] || {
    fail "$name" "setup: no dead record of bob's ($(oneline "$rec"))"
    return
  }
  bait "$nonce"
  bait bait-token
  case $kind in
  guard) arm='mkdir -p "$1/L.takeover" && { [ -e "$1/L.takeover/$3" ] || cat "$2" >"$1/L.takeover/$3"; }' ;;
  stuck) arm='mkdir -p "$1/L.takeover" && { [ -e "$1/L.takeover/$3" ] || { cat "$2" >"$1/L.takeover/$3" &&
    touch -d "10 minutes ago" "$1/L.takeover/$3"; }; }' ;;
  staging) arm='mkdir -p "$1/L.takeover.$3" && { [ -e "$1/L.takeover.$3/$3" ] || cat "$2" >"$1/L.takeover.$3/$3"; }' ;;
  claim) arm='[ -e "$1/L.claim.$3" ] || cat "$2" >"$1/L.claim.$3"' ;;
  token) arm='[ -e "$1/L.token" ] || echo 5 >"$1/L.token"' ;;
  esac
  arm='{ [ -e "$1/L" ] || cat "$2" >"$1/L"; } && '$arm
  as "$bob" sh -c "$arm" sh "$dir" "$rec" "$nonce"
  spawn_as "$bob" "$swapper" swap "$dir" L "$private" 120 "$chance" >"$work/$name.swapper" 2>&1
  local swapper_pid=$!
  wait_for_line "$work/$name.swapper" watching 10
  for i in $(seq "$runs"); do
    as "$bob" sh -c "$arm" sh "$dir" "$rec" "$nonce" 2>/dev/null
    as_user "$victim" "$ol" "${victim_command[@]}" >>"$work/$name.out" 2>&1
    status=$?
    statuses+=" $status"
    for file in "$nonce" bait-token; do
      [ "$(cat "$private/$file" 2>/dev/null)" = "alice data" ] || lost+=" $file"
    done
    [ -z "$lost" ] || break
  done
  kill -TERM "$swapper_pid" 2>/dev/null
  wait "$swapper_pid" 2>/dev/null
  local swaps
  swaps=$(sed -n 's/^swaps //p' "$work/$name.swapper")
  local odd
  # Sane: one of openlock's own statuses (a symlink planted at a helper name may fairly fail a run with 65, 73
  # or 74), never a crash (a signal: 128+).
  odd=$(tr ' ' '\n' <<<"$statuses" | grep -v -x -e '' -e 0 -e 1 -e 65 -e 73 -e 74 -e 75 | sort | uniq -c |
    tr -s ' \n' ' ')
  if [ -n "$lost" ]; then
    fail "$name" "$victim's attempt $i of $runs (${victim_command[0]}; statuses:$statuses) deleted alice's private file(s)$lost" \
      "($private/$nonce: the dead owner's nonce) through bob's symlink swap; openlock said: $(oneline "$work/$name.out")"
  elif [ -n "$odd" ]; then
    fail "$name" "no file lost, but $victim's runs ended with unexpected statuses ($odd; all:$statuses):" \
      "$(oneline "$work/$name.out")"
  elif [ "${swaps:-0}" -eq 0 ]; then
    # A victim that never opens bob's planted record (it refuses another user's helpers) cannot be raced.
    pass "$name" "$runs runs by $victim, nothing of alice's lost; note: 0 swaps, the victim never opened bob's" \
      "record ($(oneline "$work/$name.swapper"); statuses:$statuses)"
  else
    pass "$name" "$runs runs by $victim, $swaps swaps, nothing of alice's lost; statuses:$(tr ' ' '\n' <<<"$statuses" |
      grep -v '^$' | sort | uniq -c | tr -s ' \n' ' ')"
  fi
}

case_guard_swap() { swap_race "$1" "$alice" guard 40; }
case_guard_swap_root() { swap_race "$1" root guard 40; }
case_stuck_guard_swap() { swap_race "$1" "$alice" stuck 40; }
case_sweep_staging_swap() { swap_race "$1" "$alice" staging 40; }
case_sweep_claim_swap() { swap_race "$1" "$alice" claim 30; }
case_token_swap() { swap_race "$1" "$alice" token 30; }

# ---- 2 run releases while its command still runs (spawning fails after the fork) -------------------------------
# For each number of spare descriptors under `ulimit -n 64` (the rest inherited from the shell): alice runs a
# command of 1 s that logs its start and end, and openlock's own exit is logged after it. Once the command has
# started, bob's `run --timeout 0` must find the lock held (75), and openlock must not exit before the command ends.
emfile_race() {
  local name=$1 close_stderr=$2 dir spare log bad="" probe tried=0 started=0
  dir=$(group_dir "$name")
  for spare in 1 2 3 4 5 6 7 8; do
    log=$dir/log.$spare
    install -m 666 /dev/null "$log"
    # shellcheck disable=SC2016
    spawn_as "$alice" bash -c '
      ulimit -n 64
      for fd in $(seq 3 $((63 - $1))); do eval "exec $fd</dev/null"; done
      if [ "$5" = closed ]; then exec 2>&-; fi
      "$2" run "$3" -- sh -c "echo start \$(date +%s.%N) >>$4; sleep 1; echo end \$(date +%s.%N) >>$4"
      echo "exit $? $(date +%s.%N)" >>"$4"' bash "$spare" "$ol" "$dir/L" "$log" "$close_stderr" \
      2>>"$work/$name.err"
    local deadline=$((SECONDS + 5))
    until grep -q -e '^start' -e '^exit' "$log" || [ "$SECONDS" -ge "$deadline" ]; do sleep 0.01; done
    tried=$((tried + 1))
    if grep -q '^start' "$log"; then
      started=$((started + 1))
      as "$bob" "$ol" run --timeout 0 "$dir/L" -- true 2>/dev/null
      probe=$?
      wait_for_line "$log" exit 5
      wait_for_line "$log" end 5
      local ended exited
      ended=$(sed -n 's/^end //p' "$log")
      exited=$(sed -n 's/^exit [0-9]* //p' "$log")
      [ "$probe" -eq 75 ] || bad+=" [spare $spare: bob's run --timeout 0 during the command exited $probe, not 75]"
      if [ -n "$exited" ] && [ -n "$ended" ] && less "$exited" "$ended"; then
        bad+=" [spare $spare: openlock exited ($(sed -n 's/^exit \([0-9]*\) .*/\1/p' "$log")) at $exited,"
        bad+=" before its command ended at $ended]"
      fi
    fi
    wait_for_line "$log" exit 5
    reap
  done
  if [ "$started" -eq 0 ]; then
    fail "$name" "setup: the command never started with 1..8 spare descriptors"
  elif [ -n "$bad" ]; then
    fail "$name" "$bad; openlock said: $(oneline "$work/$name.err"); logs: $(for spare in 1 2 3 4 5 6 7 8; do printf '{%s: %s} ' "$spare" "$(oneline "$dir/log.$spare")"; done)"
  else
    pass "$name" "$started of $tried descriptor budgets started the command; the lock was held throughout each"
  fi
}
case_emfile_release() { emfile_race "$1" open; }
case_emfile_stderr_closed() { emfile_race "$1" closed; }

# ---- 3 kill -9 of openlock run --------------------------------------------------------------------------------
# alice's `run` is killed by SIGKILL while its command (3 s) runs; bob's command must not start before alice's
# command has ended (or is gone).
case_kill9_overlap() {
  local name=$1 dir log pid status
  dir=$(group_dir "$name")
  log=$dir/log
  install -m 666 /dev/null "$log"
  # shellcheck disable=SC2016
  spawn_as "$alice" "$ol" run "$dir/L" -- sh -c \
    'echo "start $(date +%s.%N) $$" >>"$0"; sleep 3; echo "end $(date +%s.%N)" >>"$0"' "$log" 2>/dev/null
  pid=$!
  wait_for_line "$log" start 5 || {
    fail "$name" "setup: alice's command never started"
    return
  }
  kill -KILL "$pid"
  wait "$pid" 2>/dev/null
  local command_pid
  command_pid=$(awk '/^start /{print $3}' "$log")
  # shellcheck disable=SC2016
  as "$bob" "$ol" run --timeout 10 "$dir/L" -- sh -c \
    'if [ -d /proc/$1 ]; then a=alive; else a=gone; fi; echo "start2 $(date +%s.%N) $a" >>"$0"; echo "end2 $(date +%s.%N)" >>"$0"' \
    "$log" "$command_pid" 2>"$work/$name.err"
  status=$?
  wait_for_line "$log" end 5
  local ended started2 alive
  ended=$(sed -n 's/^end //p' "$log")
  started2=$(awk '/^start2 /{print $2}' "$log")
  alive=$(awk '/^start2 /{print $3}' "$log")
  if [ "$status" -ne 0 ] || [ -z "$started2" ]; then
    fail "$name" "bob's run exited $status ($(oneline "$work/$name.err")); log: $(oneline "$log")"
  elif [ "$alive" = alive ] || { [ -n "$ended" ] && less "$started2" "$ended"; }; then
    fail "$name" "bob's command started at $started2 while alice's command (pid $command_pid) was $alive, ended at" \
      "${ended:-never}: the lock was freed $(awk -v a="$started2" -v b="$(awk '/^start /{print $2}' "$log")" \
        'BEGIN { printf "%.2f", a - b }') s after alice's command started; log: $(oneline "$log")"
  else
    pass "$name" "bob's command started at $started2, after alice's command ended at ${ended:-(killed)}"
  fi
}

# ---- 4 two users alternating run --lifetime ---------------------------------------------------------------------
case_sticky_lifetime_alternate() {
  local name=$1 dir a1 b1 a2 left=no why=""
  dir=$(sticky_dir "$name")
  as "$alice" "$ol" run --lifetime 5 --timeout 2 "$dir/L" -- true 2>"$work/$name.a1"
  a1=$?
  as "$bob" "$ol" run --lifetime 5 --timeout 2 "$dir/L" -- true 2>"$work/$name.b1"
  b1=$?
  [ -e "$dir/L" ] && left="yes ($(stat -c %U "$dir/L"))"
  as "$alice" "$ol" run --lifetime 5 --timeout 2 "$dir/L" -- true 2>"$work/$name.a2"
  a2=$?
  [ "$a1" -eq 0 ] || why+=" alice's first run exited $a1 ($(oneline "$work/$name.a1"));"
  if [ "$left" != no ] && [ "$b1" -ne 74 ]; then
    why+=" bob's run exited $b1 (expected 74) although it left its lock file behind;"
  fi
  if [ "$b1" -ne 0 ] && ! { grep -q "$alice" "$work/$name.b1" && grep -qi group "$work/$name.b1"; }; then
    why+=" bob's error does not name the owner ($alice) and the remedy (a group directory);"
  fi
  if [ "$a2" -ne 0 ] && ! grep -q "$bob" "$work/$name.a2"; then
    why+=" alice is wedged: her next run exited $a2 without naming $bob;"
  fi
  if [ -n "$why" ]; then
    fail "$name" "$why alice: $a1, bob: $b1 ('$(oneline "$work/$name.b1")'), lock file left: $left," \
      "alice again: $a2 ('$(oneline "$work/$name.a2")')"
  else
    pass "$name" "alice $a1, bob $b1 ('$(oneline "$work/$name.b1")'), alice again $a2"
  fi
}

case_group_lifetime_alternate() {
  local name=$1 dir user status statuses="" bad=0
  dir=$(group_dir "$name")
  for user in "$alice" "$bob" "$alice" "$bob" "$alice" "$bob"; do
    as "$user" sh -c 'umask 022; exec "$@"' sh "$ol" run --lifetime 5 --timeout 2 "$dir/L" -- true \
      2>>"$work/$name.err"
    status=$?
    statuses+=" ${user#olmu-}:$status"
    [ "$status" -eq 0 ] || bad=1
  done
  if [ "$bad" -eq 0 ] && [ ! -e "$dir/L" ] && [ ! -s "$work/$name.err" ]; then
    pass "$name" "$statuses"
  else
    fail "$name" "statuses$statuses, lock file left: $([ -e "$dir/L" ] && echo yes || echo no), said:" \
      "$(oneline "$work/$name.err")"
  fi
}

# ---- 5 a member's crashed takeover guard ------------------------------------------------------------------------
# crash_in_guard NAME DIR: alice (umask 022) takes over a stale lock of hers in DIR and is killed by SIGKILL the
# moment her guard DIR/L.takeover is renamed into place (a sweep of 4000 empty claim files keeps her there);
# afterwards DIR/L is a stale lock of hers again. The guard is the library's own, as a crash leaves it. 0 if so.
crash_in_guard() {
  local name=$1 dir=$2 rec=$work/$1.record pid attempt
  dead_record "$alice" "$rec"
  chmod 644 "$rec"
  for attempt in 1 2 3; do
    as "$alice" sh -c 'umask 022; cat "$1" >"$2"' sh "$rec" "$dir/L"
    python3 -c 'import os, sys
for _ in range(4000): open(os.path.join(sys.argv[1], "L.claim." + os.urandom(16).hex()), "w").close()' "$dir"
    # shellcheck disable=SC2016
    spawn_as "$alice" sh -c 'kill -STOP $$; umask 022; exec "$0" run --timeout 5 "$1" -- true' "$ol" "$dir/L" \
      2>/dev/null
    pid=$!
    until [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" = T ]; do sleep 0.01; done
    spawn_as root "$swapper" kill "$dir" L.takeover "$pid" 10 >"$work/$name.killer"
    wait_for_line "$work/$name.killer" watching 5
    kill -CONT "$pid"
    wait_for_line "$work/$name.killer" killed 10
    wait "$pid" 2>/dev/null
    reap
    find "$dir" -maxdepth 1 -name 'L.claim.*' -delete
    [ -e "$dir/L" ] || as "$alice" sh -c 'umask 022; cat "$1" >"$2"' sh "$rec" "$dir/L"
    if [ -d "$dir/L.takeover" ] && [ "$(find "$dir/L.takeover" -mindepth 1 | wc -l)" -eq 1 ]; then
      say "  $name: alice's guard, as her crash left it: $(stat -c '%A %U:%G' "$dir/L.takeover")"
      return 0
    fi
    rm -rf "$dir/L.takeover"
  done
  return 1
}

case_crashed_guard_run() {
  local name=$1 dir from try_took try_said run_took status
  dir=$(group_dir "$name")
  crash_in_guard "$name" "$dir" || {
    fail "$name" "setup: alice was never killed while holding the guard ($(oneline "$work/$name.killer"))"
    return
  }
  from=$EPOCHREALTIME
  try_said=$(as "$bob" "$olchild" try "$dir/L" 2>&1)
  try_took=$(elapsed_since "$from")
  from=$EPOCHREALTIME
  as "$bob" "$ol" run --timeout 0 "$dir/L" -- true 2>"$work/$name.err"
  status=$?
  run_took=$(elapsed_since "$from")
  if [ "$status" -eq 0 ] && [ "$try_said" = acquired ] && less "$run_took" 0.3 && less "$try_took" 0.3 &&
    [ ! -e "$dir/L.takeover" ]; then
    pass "$name" "bob's try_acquire: $try_said in $try_took s; run --timeout 0: 0 in $run_took s"
  else
    fail "$name" "bob's try_acquire said '$try_said' after $try_took s; bob's run --timeout 0 exited $status after" \
      "$run_took s (expected 0, each well under 0.5 s): $(oneline "$work/$name.err"); alice's guard" \
      "$([ -e "$dir/L.takeover" ] && echo "still stands: $(ls -l "$dir/L.takeover" | tail -n +2 | tr -s ' ' | tr '\n' ' ')" || echo "is gone")"
  fi
}

case_crashed_guard_break() {
  local name=$1 dir status force_status
  dir=$(group_dir "$name")
  crash_in_guard "$name" "$dir" || {
    fail "$name" "setup: alice was never killed while holding the guard ($(oneline "$work/$name.killer"))"
    return
  }
  as "$bob" "$ol" break "$dir/L" >"$work/$name.out" 2>&1
  status=$?
  local guard_after_break=no
  [ -e "$dir/L.takeover" ] && guard_after_break=yes
  as "$bob" "$ol" break --force "$dir/L" >"$work/$name.force" 2>&1
  force_status=$?
  local why=""
  [ "$status" -eq 0 ] || why+=" bob's break exited $status;"
  [ "$guard_after_break" = no ] || why+=" alice's dead guard still stands after bob's break;"
  if [ "$guard_after_break" = yes ] && grep -qi 'removed.*guard' "$work/$name.out"; then
    why+=" break said it removed the guard although it still stands;"
  fi
  [ ! -e "$dir/L" ] || why+=" the stale lock file is still there;"
  if [ -n "$why" ]; then
    fail "$name" "$why break said: '$(oneline "$work/$name.out")'; then break --force exited $force_status:" \
      "'$(oneline "$work/$name.force")'"
  else
    pass "$name" "break: $status ('$(oneline "$work/$name.out")')"
  fi
}

# ---- 6 a holder under umask 077 ---------------------------------------------------------------------------------
# umask_holder NAME DIR CHECK_MODE: alice holds DIR/L for 3 s under umask 077; bob's run --timeout 0.5 must wait
# and time out (75), not fail at once with 73. With CHECK_MODE, the lock file must be readable by the group.
umask_holder() {
  local name=$1 dir=$2 check_mode=$3 from took status mode why=""
  # shellcheck disable=SC2016
  spawn_as "$alice" sh -c 'umask 077; exec "$0" run "$1" -- sleep 3' "$ol" "$dir/L" 2>/dev/null
  wait_for "$dir/L" 5 || {
    fail "$name" "setup: alice never acquired"
    return
  }
  mode=$(stat -c %A "$dir/L")
  from=$EPOCHREALTIME
  as "$bob" "$ol" run --timeout 0.5 "$dir/L" -- true 2>"$work/$name.err"
  status=$?
  took=$(elapsed_since "$from")
  [ "$status" -eq 75 ] && ! less "$took" 0.45 || why+=" bob's run --timeout 0.5 exited $status after $took s (expected 75 after 0.5 s);"
  if [ "$check_mode" = yes ] && [ "${mode:4:1}" != r ]; then
    why+=" alice's lock file is $mode in a group directory (expected group read);"
  fi
  if [ -n "$why" ]; then
    fail "$name" "$why bob was told: '$(oneline "$work/$name.err")'"
  else
    pass "$name" "lock file $mode; bob waited $took s and got 75"
  fi
}
case_umask077_group() { umask_holder "$1" "$(group_dir "$1")" yes; }
case_umask077_sticky() { umask_holder "$1" "$(sticky_dir "$1")" no; }

case_umask077_token() {
  local name=$1 dir status token_mode
  dir=$(group_dir "$name")
  as "$alice" sh -c 'umask 077; exec "$@"' sh "$ol" run --lifetime 5 --timeout 2 "$dir/L" -- true 2>"$work/$name.a"
  token_mode=$(stat -c %A "$dir/L.token" 2>/dev/null)
  as "$bob" "$ol" run --lifetime 5 --timeout 2 "$dir/L" -- true 2>"$work/$name.err"
  status=$?
  if [ "$status" -eq 0 ]; then
    pass "$name" "alice's L.token ${token_mode:-absent}; bob's fenced run: 0"
  else
    fail "$name" "alice's L.token is ${token_mode:-absent}; bob's fenced run exited $status (expected 0):" \
      "'$(oneline "$work/$name.err")'"
  fi
}

# ---- 9 stderr closed --------------------------------------------------------------------------------------------
case_stderr_closed() {
  local name=$1 dir status bad
  dir=$(group_dir "$name")
  # shellcheck disable=SC2016
  spawn_as "$alice" sh -c 'exec "$0" run --verbose "$1" -- sleep 1.5 2>&-' "$ol" "$dir/L"
  wait_for "$dir/L" 5 || {
    fail "$name" "setup: alice never acquired"
    return
  }
  sleep 0.3 # the "acquired" line is written at once
  cp "$dir/L" "$work/$name.snapshot"
  as "$bob" "$ol" run --timeout 4 "$dir/L" -- true 2>"$work/$name.err"
  status=$?
  bad=$(python3 -c '
import re, sys
lines = open(sys.argv[1], "rb").read().split(b"\n")
ok = len(lines) >= 3 and lines[-1] == b"" and re.fullmatch(rb"[0-9]+", lines[0]) and \
    all(re.fullmatch(rb"[a-z0-9_-]{1,64}=.*", line) for line in lines[2:-1])
print("" if ok else "not a record")' "$work/$name.snapshot")
  if { [ "$status" -eq 0 ] || [ "$status" -eq 75 ]; } && [ -z "$bad" ]; then
    pass "$name" "bob's run: $status; the held lock file stayed a record"
  else
    fail "$name" "bob's run exited $status (expected 0 or 75, never 65): '$(oneline "$work/$name.err")';" \
      "the held lock file is ${bad:-a record}: $(shown "$work/$name.snapshot")"
  fi
}

# ---- 10 terminal injection --------------------------------------------------------------------------------------
# bob's lock file: a record of another host (held: it cannot be judged here) whose name and host carry an OSC
# title sequence, CSI sequences, a BEL, a C1 CSI (0x9b) and invalid UTF-8.
case_terminal_injection() {
  local name=$1 dir out why=""
  dir=$(group_dir "$name")
  python3 -c '
import os, sys
record = (b"4242\nevil\x1b]0;pwned\x07\x1b[31mname\xff\xfe\x9b2J\n"
          b"version=1\nhost=\x1b[2J\x1b[Hhost\xc3\x28\x9b31m\n"
          b"boot_id=00000000-0000-4000-8000-000000000000\npid_ns=4026531836\nstart_time=1\n"
          b"nonce=" + os.urandom(16).hex().encode() + b"\nacquired=1796668000.000000000\n")
open(sys.argv[1], "wb").write(record)' "$work/$name.record"
  as "$bob" sh -c 'cat "$1" >"$2"' sh "$work/$name.record" "$dir/L"
  out=$work/$name
  as "$alice" "$ol" status "$dir/L" >"$out.status.out" 2>"$out.status.err"
  as "$alice" "$ol" status --json "$dir/L" >"$out.json.out" 2>"$out.json.err"
  as "$alice" "$ol" run --timeout 0.2 --verbose "$dir/L" -- true >"$out.run.out" 2>"$out.run.err"
  local file problem
  for file in "$out".{status,json,run}.{out,err}; do
    problem=$(python3 -c '
import sys
data = open(sys.argv[1], "rb").read()
bad = sorted({"%02x" % b for b in data if (b < 0x20 and b != 0x0a) or b == 0x7f})
text = data.decode("utf-8", "surrogateescape")
bad += sorted({"%04x" % ord(c) for c in text if 0x80 <= ord(c) <= 0x9f or 0xdc80 <= ord(c) <= 0xdc9f})
print(" ".join(bad))' "$file")
    [ -z "$problem" ] || why+=" ${file##*/} has control characters ($problem): $(shown "$file");"
  done
  if ! python3 -c 'import json, sys; json.loads(sys.stdin.buffer.read().decode("utf-8"))' <"$out.json.out" \
    2>"$out.json.check"; then
    why+=" status --json is not valid UTF-8 JSON ($(tail -n 1 "$out.json.check")): $(shown "$out.json.out");"
  fi
  if [ -n "$why" ]; then
    fail "$name" "$why"
  else
    pass "$name" "status: $(oneline "$out.status.out")"
  fi
}
