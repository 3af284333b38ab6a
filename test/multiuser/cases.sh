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
# token: <lock>.token), each with the record of a dead process of his whose nonce names a bait file of alice's; his
# swapper exchanges the leftover for a symlink to alice's private directory the moment the victim opens a record
# in it. VICTIM runs `run --timeout 0.3 L -- true` RUNS times, bob re-arming before each. Every bait must stay.
swap_race() {
  local name=$1 victim=$2 kind=$3 runs=$4 dir rec nonce lease=() i status statuses="" lost="" arm
  dir=$(group_dir "$name")
  rec=$work/$name.record
  [ "$kind" = token ] && lease=(--lifetime 30)
  dead_record "$bob" "$rec" "${lease[@]}"
  chmod 644 "$rec"
  nonce=$(nonce_of "$rec")
  [ -n "$nonce" ] || {
    fail "$name" "setup: no dead record of bob's ($(oneline "$rec"))"
    return
  }
  bait "$nonce"
  bait bait-token
  case $kind in
  guard) arm='mkdir -p "$1/L.takeover" && { [ -e "$1/L.takeover/$3" ] || cat "$2" >"$1/L.takeover/$3"; }' ;;
  staging) arm='mkdir -p "$1/L.takeover.$3" && { [ -e "$1/L.takeover.$3/$3" ] || cat "$2" >"$1/L.takeover.$3/$3"; }' ;;
  claim) arm='[ -e "$1/L.claim.$3" ] || cat "$2" >"$1/L.claim.$3"' ;;
  token) arm='[ -e "$1/L.token" ] || echo 5 >"$1/L.token"' ;;
  esac
  arm='{ [ -e "$1/L" ] || cat "$2" >"$1/L"; } && '$arm
  as "$bob" sh -c "$arm" sh "$dir" "$rec" "$nonce"
  spawn_as "$bob" "$swapper" swap "$dir" L "$private" 120 >"$work/$name.swapper" 2>&1
  local swapper_pid=$!
  sleep 0.3 # the swapper watches its helpers
  for i in $(seq "$runs"); do
    as "$bob" sh -c "$arm" sh "$dir" "$rec" "$nonce" 2>/dev/null
    as_user "$victim" "$ol" run --timeout 0.3 "${lease[@]}" "$dir/L" -- true >>"$work/$name.out" 2>&1
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
    fail "$name" "$victim's run $i of $runs (statuses:$statuses) deleted alice's private file(s)$lost" \
      "($private/$nonce: the dead owner's nonce) through bob's symlink swap; openlock said: $(oneline "$work/$name.out")"
  elif [ -n "$odd" ]; then
    fail "$name" "no file lost, but $victim's runs ended with unexpected statuses ($odd; all:$statuses):" \
      "$(oneline "$work/$name.out")"
  elif [ "${swaps:-0}" -eq 0 ]; then
    fail "$name" "the swapper never swapped: the race was not exercised ($(oneline "$work/$name.swapper"))"
  else
    pass "$name" "$runs runs by $victim, $swaps swaps, nothing of alice's lost; statuses:$(tr ' ' '\n' <<<"$statuses" |
      grep -v '^$' | sort | uniq -c | tr -s ' \n' ' ')"
  fi
}

case_guard_swap() { swap_race "$1" "$alice" guard 40; }
case_guard_swap_root() { swap_race "$1" root guard 40; }
case_sweep_staging_swap() { swap_race "$1" "$alice" staging 40; }
case_sweep_claim_swap() { swap_race "$1" "$alice" claim 30; }
case_token_swap() { swap_race "$1" "$alice" token 30; }
