# SPDX-License-Identifier: MIT
# Scenario 4 of test/fs/run.sh (sourced): "hosts" are UTS + pid + mount namespaces, each with its own FUSE client
# bound at the same path, so PIDs collide across them; "another boot" is a mount namespace with a faked boot id.
# Without a lease a holder elsewhere can never be judged, so it must never be taken over; with one it is taken
# over once the lease plus clock_slop (2 s) has run out.

shared=$work/shared
mkdir -p "$shared"

# Three counting processes in each of two hosts; each host prints its children's pids, which are the same.
hosts_contend() {
  local iterations=50 counter=$backing/hosts.counter from=$EPOCHREALTIME host pids=() pid bad=0
  for host in a b; do
    spawn on_host "host-$host" "$work/$host" "$shared" sh -c '
      pids=""
      for i in 1 2 3; do "$0" count "$1/hosts" "$2" "$3" & pids="$pids $!"; done
      echo "children$pids"
      status=0
      for pid in $pids; do wait "$pid" || status=1; done
      exit $status' "$child" "$shared" "$counter" "$iterations" >"$work/host-$host.out"
    pids+=("$!")
  done
  for pid in "${pids[@]}"; do wait "$pid" || bad=$((bad + 1)); done
  local counted left children_a children_b
  counted=$(cat "$counter" 2>/dev/null)
  left=$(leftovers "$backing" hosts | sed 's/hosts.counter //')
  children_a=$(grep '^children' "$work/host-a.out")
  children_b=$(grep '^children' "$work/host-b.out")
  if [ "$bad" -eq 0 ] && [ "$counted" = $((6 * iterations)) ] && [ -z "$left" ] &&
    [ -n "$children_a" ] && [ "$children_a" = "$children_b" ]; then
    pass "hosts counter: 2 hosts x 3 processes with colliding pids ($children_a), counter $counted," \
      "nothing left over ($(elapsed_since "$from") s)"
  else
    fail "hosts counter: $bad hosts failed, counter ${counted:-none}/$((6 * iterations)), left over:" \
      "${left:-nothing}; host a: $(tr '\n' ' ' <"$work/host-a.out"); host b: $(tr '\n' ' ' <"$work/host-b.out")"
  fi
}

# killed_holder host|boot no_lease|lease: a holder on client a in another host (or boot) is SIGKILLed; a waiter on
# client b in this host checks the lock's state and tries to take it.
killed_holder() {
  local kind=$1 lease=$2 name="killed-$1-$2" lifetime=()
  [ "$lease" = lease ] && lifetime=(--lifetime 1)
  local label="$kind: a killed holder of another $kind, $lease"
  if [ "$kind" = host ]; then
    # The host ends with its pid 1, taking the orphaned command along.
    on_host host-a "$work/a" "$shared" sh -c '
      seen=$1
      shift
      "$0" run "$@" -- sleep 60 & holder=$!
      while [ ! -e "$seen" ]; do sleep 0.02; done
      kill -KILL "$holder"' "$cli" "$backing/$name" "${lifetime[@]}" "$shared/$name"
  else
    # Its own process group, so that the command goes with it.
    spawn in_other_boot "$(cat /proc/sys/kernel/random/uuid)" "$cli" run "${lifetime[@]}" "$work/a/$name" -- sleep 60
    local holder=$!
    wait_for_file "$backing/$name" 10
    kill -KILL -- "-$holder"
    wait "$holder" 2>/dev/null
  fi
  local from=$EPOCHREALTIME waiter=() status_json status took
  [ "$kind" = host ] && waiter=(on_host host-b "$work/b" "$shared") || waiter=(env)
  local where=$work/b
  [ "$kind" = host ] && where=$shared
  status_json=$("${waiter[@]}" "$cli" status --json "$where/$name")
  if [ "$lease" = no_lease ]; then
    "${waiter[@]}" "$cli" run --timeout 3 "$where/$name" -- true 2>/dev/null
    status=$?
    took=$(elapsed_since "$from")
    if [ "$status" -eq 75 ] && [ "$(json_field "$status_json" judged)" = unknown ] && [ -e "$backing/$name" ]; then
      pass "$label: judged unknown, never taken over (waiter timed out after $took s)"
    else
      fail "$label: waiter status $status after $took s (expected 75: timeout), status $status_json"
    fi
  else
    "${waiter[@]}" "$cli" run --timeout 15 "$where/$name" -- true
    status=$?
    took=$(elapsed_since "$from")
    local left
    left=$(leftovers "$backing" "$name")
    if [ "$status" -eq 0 ] && within 1.5 8 "$took" && [ ! -e "$backing/$name" ]; then
      pass "$label: taken over $took s after the kill (lease 1 s + slop 2 s); first judged" \
        "$(json_field "$status_json" judged)${left:+; NOTE left over: $left}"
    else
      fail "$label: waiter status $status after $took s (expected 0 after 1.5..8 s), status $status_json"
    fi
  fi
  rm -f "$backing/$name" "$backing/$name".*
}

# Two pid namespaces with the same host name: a live holder in one (pid 2 there, no such pid in the other) must
# not be broken by a waiter in the other.
live_holder_same_hostname() {
  local name=twin
  spawn on_host twin "$work/a" "$shared" sh -c '"$0" run "$1" -- sleep 6; :' "$cli" "$shared/$name"
  local holder=$!
  wait_for_file "$backing/$name" 10
  local from=$EPOCHREALTIME status took status_json
  status_json=$(on_host twin "$work/b" "$shared" "$cli" status --json "$shared/$name")
  on_host twin "$work/b" "$shared" "$cli" run --timeout 3 "$shared/$name" -- true 2>/dev/null
  status=$?
  took=$(elapsed_since "$from")
  wait "$holder"
  if [ "$status" -eq 75 ] && [ "$(json_field "$status_json" judged)" = unknown ] && [ ! -e "$backing/$name" ]; then
    pass "same host name, another pid namespace: live holder (pid $(json_field "$status_json" pid)) judged" \
      "unknown, never taken over (waiter timed out after $took s)"
  else
    fail "same host name, another pid namespace: waiter status $status after $took s (expected 75), $status_json"
  fi
}
