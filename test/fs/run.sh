#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# openlock over NFS-like caching clients and across "hosts" (issue 3), driven through the CLI and the test child:
#   1 two bindfs clients of one directory (attribute, entry and absent-name caches of 5 s): FUSE is detected as a
#     shared file system (hard_link claims), processes on both contend, the counter is exact, nothing is left over;
#   2 the same over two sshfs clients of a loopback sshd (link counts always read 1, whole-second mtimes);
#   3 leases across clients: a holder frozen past its lease is broken from the other client, and learns it when
#     thawed; a holder whose keep-alive runs is never broken although the other client's stat() is 5 s stale;
#   4 hosts (UTS + pid + mount namespaces, PIDs colliding; a faked boot id): contention is exact, a killed holder
#     of another host or boot is never taken over without a lease and is taken over once its lease has run out.
# The counter and its "someone is inside" marker live in the backing directory, read and written directly: only
# the lock goes through the caching clients, so a wrong count or a marker violation can only mean two holders
# (a counter read through a FUSE client may see a size cached 5 s ago, a test-bed artefact, not a lock failure).
# Needs root, /dev/fuse, bindfs, fusermount3 and unshare, else prints SKIP and exits 0; sshfs/sshd likewise skip
# scenario 2 only. Usage: test/fs/run.sh [BUILD_DIR]  (default build/release: targets openlock-cli and
# openlock-test-child). Exits 1 if any check failed.
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
build=$(cd "${1:-$here/../../build/release}" && pwd)
cli=$build/cli/openlock
child=$build/test/openlock-test-child
# shellcheck source=test/fs/lib.sh
source "$here/lib.sh"

[ "$(id -u)" -eq 0 ] || skip_all "needs root (FUSE mounts, namespaces, bind mounts)"
[ -c /dev/fuse ] || skip_all "no /dev/fuse"
for tool in bindfs fusermount3 unshare; do
  command -v "$tool" >/dev/null || skip_all "$tool is missing (apt-get install bindfs fuse3 util-linux)"
done
for binary in "$cli" "$child"; do
  [ -x "$binary" ] || { say "test/fs: $binary is missing (build openlock-cli and openlock-test-child)"; exit 2; }
done

make_work
backing=$work/backing
mkdir -p "$backing"
mount_bindfs "$backing" "$work/a"
mount_bindfs "$backing" "$work/b"

# The same child under a longer name writes longer records: a client that cached the size of the previous
# holder's lock file must still read the next one whole.
long_child=$work/openlock-test-child-under-a-much-longer-program-name
cp "$child" "$long_child"

# contend LABEL LOCK_NAME ITERATIONS CLIENT_DIR... : three processes per client, ITERATIONS increments each.
contend() {
  local label=$1 name=$2 iterations=$3 client pids=() pid bad=0 from=$EPOCHREALTIME programs=("$child" "$long_child")
  shift 3
  rm -f "$backing/$name.counter"
  for client in "$@" "$@" "$@"; do
    spawn "${programs[${#pids[@]} % 2]}" count "$client/$name" "$backing/$name.counter" "$iterations" \
      >>"$work/$name.out" 2>&1
    pids+=("$!")
  done
  for pid in "${pids[@]}"; do wait "$pid" || bad=$((bad + 1)); done
  local expected=$((${#pids[@]} * iterations)) counted left
  counted=$(cat "$backing/$name.counter" 2>/dev/null)
  left=$(leftovers "$backing" "$name" | sed "s/$name.counter //")
  if [ "$bad" -eq 0 ] && [ "$counted" = "$expected" ] && [ -z "$left" ]; then
    pass "$label: ${#pids[@]} processes, counter $counted/$expected, nothing left over ($(elapsed_since "$from") s)"
  else
    fail "$label: $bad processes failed ($(tr '\n' ' ' <"$work/$name.out")), counter ${counted:-none}/$expected," \
      "left over: ${left:-nothing}"
  fi
}

# claims_by_link LABEL CLIENT_DIR: FUSE is judged shared, so automatic claims are hard links (a claim file shows).
claims_by_link() {
  local listing
  listing=$("$cli" run "$2/detect" -- ls -a "$backing")
  if grep -qx 'detect\.claim\.[0-9a-f]\{32\}' <<<"$listing"; then
    pass "$1: a shared file system, claimed by hard_link"
  else
    fail "$1: no claim file while held (f_type 0x$(stat -f -c %t "$2") not judged shared?): $(tr '\n' ' ' <<<"$listing")"
  fi
}

# frozen_holder LABEL HOLDER_DIR WAITER_DIR: a holder with a 1 s lease is stopped; the other client breaks it
# once the lease plus clock_slop (2 s) has run out, and the thawed holder says it lost the lock.
frozen_holder() {
  local label=$1 name=frozen
  spawn setsid "$cli" run --lifetime 1 "$2/$name" -- sh -c 'echo $$ >"$0"; exec sleep 60' "$work/frozen.command" \
    2>"$work/frozen.err"
  local holder=$!
  wait_for_file "$backing/$name" 10 || { fail "$label: the holder never acquired"; return; }
  sleep 0.5 # a few keep-alive refreshes
  kill -STOP "$holder"
  local from=$EPOCHREALTIME status took
  "$cli" run --timeout 15 "$3/$name" -- true
  status=$?
  took=$(elapsed_since "$from")
  kill -CONT "$holder"
  sleep 1 # the thawed keep-alive looks within a third of the lifetime
  kill -KILL "$(cat "$work/frozen.command")" # the holder then releases
  wait "$holder"
  local left
  left=$(leftovers "$backing" "$name")
  if [ "$status" -eq 0 ] && within 1.5 8 "$took" && grep -q "lost the lock" "$work/frozen.err" && [ -z "$left" ]; then
    pass "$label: broken ${took} s after the holder froze (lease 1 s + slop 2 s); the thawed holder reported the loss"
  else
    fail "$label: waiter status $status after $took s (expected 0 after 1.5..8 s); holder said:" \
      "'$(tr '\n' ' ' <"$work/frozen.err")'; left over: ${left:-nothing}"
  fi
}

# kept_alive LABEL HOLDER_DIR WAITER_DIR: a holder refreshing its 1 s lease for 8 s is never broken by a waiter
# on the other client, whose cached attributes of the lock file are up to 5 s old.
kept_alive() {
  local label=$1 name=kept
  spawn "$cli" run --lifetime 1 "$2/$name" -- sleep 8 2>"$work/kept.err"
  local holder=$!
  wait_for_file "$backing/$name" 10 || { fail "$label: the holder never acquired"; return; }
  local from=$EPOCHREALTIME status took holder_status
  "$cli" run --timeout 6 "$3/$name" -- true 2>"$work/kept-waiter.err"
  status=$?
  took=$(elapsed_since "$from")
  wait "$holder"
  holder_status=$?
  if [ "$status" -eq 75 ] && [ "$holder_status" -eq 0 ] && [ ! -s "$work/kept.err" ]; then
    pass "$label: the waiter timed out after $took s; the refreshed lease was never broken"
  else
    fail "$label: waiter status $status after $took s (expected 75: timeout), holder status $holder_status," \
      "holder said: '$(tr '\n' ' ' <"$work/kept.err")'"
  fi
}

say "== 1 two bindfs clients (attr/entry/negative_timeout=5) of one directory"
claims_by_link "bindfs" "$work/a"
contend "bindfs counter" bindfs 60 "$work/a" "$work/b"

say "== 3 leases across bindfs clients"
frozen_holder "bindfs frozen holder" "$work/a" "$work/b"
kept_alive "bindfs kept-alive holder" "$work/a" "$work/b"

say "== 2 two sshfs clients (link count always 1, whole-second mtimes)"
if ! command -v sshfs >/dev/null || [ ! -x /usr/sbin/sshd ]; then
  say "SKIP sshfs: sshfs or openssh-server is missing (apt-get install sshfs openssh-server)"
elif ! start_sshd; then
  say "SKIP sshfs: the loopback sshd does not answer ($(tail -n 3 "$work/ssh/sshd.log" | tr '\n' ' '))"
else
  mount_sshfs "$backing" "$work/sa"
  mount_sshfs "$backing" "$work/sb"
  claims_by_link "sshfs" "$work/sa"
  contend "sshfs counter" sshfs 40 "$work/sa" "$work/sb"
  frozen_holder "sshfs frozen holder" "$work/sa" "$work/sb"
  kept_alive "sshfs kept-alive holder" "$work/sa" "$work/sb"
fi

say "== 4 hosts: UTS + pid + mount namespaces over the two bindfs clients; a faked boot id"
source "$here/hosts.sh"
if ! unshare --uts --pid --fork --mount --mount-proc true 2>/dev/null; then
  say "SKIP hosts: unshare --uts --pid --fork --mount --mount-proc fails here"
else
  hosts_contend
  killed_holder "host" no_lease
  killed_holder "host" lease
  killed_holder "boot" no_lease
  killed_holder "boot" lease
  live_holder_same_hostname
fi

say "test/fs: $failures failed ($(elapsed_since "$started_at") s)"
[ "$failures" -eq 0 ]
