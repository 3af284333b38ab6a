# SPDX-License-Identifier: MIT
# shellcheck shell=bash
# Helpers of test/multiuser/run.sh (sourced): the two users and their group, the scratch tree, running a command
# as a user, processes that are cleaned up, and the verdicts.

passed=0
failed=0
started_at=$EPOCHREALTIME
work=""
spawned=()
alice=olmu-alice
bob=olmu-bob
team=olmu-team

say() { printf '%s\n' "$*"; }
# pass NAME [DETAIL...] / fail NAME WHY...: the verdict of one case (run.sh prints one per case).
pass() {
  local name=$1
  shift
  say "PASS $name${*:+ ($*)}"
  passed=$((passed + 1))
}
fail() {
  local name=$1
  shift
  say "FAIL $name: $*"
  failed=$((failed + 1))
}

# Seconds since $1 (an $EPOCHREALTIME), to three decimals.
elapsed_since() { awk -v from="$1" -v to="$EPOCHREALTIME" 'BEGIN { printf "%.3f", to - from }'; }
# less X Y: true when X < Y (decimal).
less() { awk -v x="$1" -v y="$2" 'BEGIN { exit !(x < y) }'; }

# A file's bytes as a Python bytes literal, at most 600 of them (for FAIL lines): control characters visible.
shown() {
  if [ -e "$1" ]; then python3 -c 'import sys; print(repr(open(sys.argv[1], "rb").read()[:600])[1:])' "$1"; else
    printf '(none)'
  fi
}
# The text of a file on one line (for FAIL lines).
oneline() { [ -e "$1" ] && head -c 600 "$1" | tr '\n' ' ' | tr -d '\000-\010\013-\037'; }

# as USER CMD...: CMD as USER with the user's groups (supplementary too), from /, with the caller's environment.
as() {
  local user=$1
  shift
  (cd / && exec setpriv --reuid="$user" --regid="$(id -g "$user")" --init-groups "$@")
}

# spawn_as USER CMD...: CMD as USER in the background, leading a new session and process group (so that what it
# leaves running, such as a command orphaned by a killed openlock, is killed with it); $! is CMD's pid.
spawn_as() {
  local user=$1
  shift
  (cd / && exec setpriv --reuid="$user" --regid="$(id -g "$user")" --init-groups setsid "$@") &
  spawned+=("$!")
}
# Kills every process group spawned by the current case.
reap() {
  local pid
  for pid in "${spawned[@]}"; do
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  spawned=()
}

cleanup() {
  reap
  [ -n "$work" ] && rm -rf "$work"
  # The doorbells (protocol.md 8.6) that the test users' waiters left for this run's lock paths.
  local user
  for user in "$alice" "$bob"; do
    id -u "$user" >/dev/null 2>&1 && rm -rf "/tmp/openlock-$(id -u "$user")"
  done
}

# wait_for PATH SECONDS: true once PATH exists.
wait_for() {
  local deadline=$((SECONDS + $2))
  while [ ! -e "$1" ]; do
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 0.01
  done
}
# wait_for_line FILE TEXT SECONDS: true once FILE has a line starting with TEXT.
wait_for_line() {
  local deadline=$((SECONDS + $3))
  until grep -q "^$2" "$1" 2>/dev/null; do
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 0.01
  done
}

# The users, the group and the scratch tree. Idempotent: existing users and groups are kept, nothing of the
# host's is removed.
setup() {
  getent group "$team" >/dev/null || groupadd "$team"
  local user
  for user in "$alice" "$bob"; do
    getent passwd "$user" >/dev/null ||
      useradd --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin --user-group "$user"
    id -nG "$user" | tr ' ' '\n' | grep -qx "$team" || usermod -a -G "$team" "$user"
  done
  work=$(mktemp -d /tmp/openlock-multiuser.XXXXXX)
  trap cleanup EXIT
  trap 'exit 130' INT TERM
  chmod 755 "$work"
  # The binaries, where both users may execute them (the build tree may be under a 0700 path).
  mkdir -p "$work/bin"
  cp "$cli" "$work/bin/openlock"
  cp "$child" "$work/bin/openlock-test-child"
  cp "$swapper_build" "$work/bin/openlock-swapper"
  chmod 755 "$work/bin" "$work/bin/"*
  ol=$work/bin/openlock
  olchild=$work/bin/openlock-test-child
  swapper=$work/bin/openlock-swapper
  # Alice's private directory: bait files that a hostile directory must never make anybody delete.
  private=$work/alice-private
  mkdir -p "$private"
  chown "$alice:$alice" "$private"
  chmod 700 "$private"
}

# group_dir NAME: a fresh setgid 2775 directory of the group (where protected_symlinks never applies).
group_dir() {
  local dir=$work/$1
  mkdir -p "$dir"
  chown "root:$team" "$dir"
  chmod 2775 "$dir"
  printf '%s' "$dir"
}
# sticky_dir NAME: a fresh 1777 directory, like /tmp.
sticky_dir() {
  local dir=$work/$1
  mkdir -p "$dir"
  chmod 1777 "$dir"
  printf '%s' "$dir"
}

# dead_record USER FILE [run options...]: FILE (root's) gets the record of a process of USER's that is gone now
# (an openlock run that printed its own lock file), in the library's own format.
dead_record() {
  local user=$1 file=$2 dir
  shift 2
  dir=$(group_dir "records-$user-$RANDOM")
  as "$user" "$ol" run "$@" "$dir/r" -- cat "$dir/r" >"$file"
  rm -rf "$dir"
}
# nonce_of RECORD_FILE: the record's nonce.
nonce_of() { sed -n 's/^nonce=//p' "$1"; }

# bait NAME: a file of alice's in her private directory, named like a helper's nonce.
bait() {
  as "$alice" sh -c 'printf "alice data\n" >"$1"' sh "$private/$1"
}
