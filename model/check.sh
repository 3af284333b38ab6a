#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Model-checks openlock.pml and lease.pml with spin (Debian package `spin`, installed by tools/bootstrap.sh; this script installs
# nothing). The protocol as implemented must pass: mutual exclusion and its other assertions, no invalid end
# state (nobody waits forever), no cycle without progress. Each broken variant must fail the way it should, so
# that the check provably can fail; the naive delete-then-create variant's counterexample is printed.
# Exits non-zero if the protocol fails or any broken variant passes. Usage: bash model/check.sh
set -euo pipefail
models=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cc=$(command -v gcc || command -v clang || command -v clang-19) || { echo "model/check.sh: no C compiler" >&2; exit 2; }
command -v spin >/dev/null || { echo "model/check.sh: spin is missing (bash tools/bootstrap.sh)" >&2; exit 2; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp "$models/openlock.pml" "$models/lease.pml" "$work/"
model_file=openlock.pml
cd "$work"

failures=0
mutual_exclusion='assertion violated (((critical&'

# verify NAME EXPECTATION SPIN_DEFINES -- PAN_CFLAGS -- PAN_ARGS
# EXPECTATION: "pass", or the text spin's error report must contain.
verify() {
  local name=$1 expectation=$2 defines=() cflags=() args=()
  shift 2
  while [ "$1" != -- ]; do defines+=("$1"); shift; done; shift
  while [ "$1" != -- ]; do cflags+=("$1"); shift; done; shift
  args=("$@")
  rm -f pan pan.* ./*.trail
  spin "${defines[@]}" -a "$model_file" >/dev/null
  "$cc" -O2 -w "${cflags[@]}" -o pan pan.c
  local started=$SECONDS output
  output=$(./pan -m100000 "${args[@]}" 2>&1) || true
  local errors states summary
  errors=$(sed -n 's/.*errors: \([0-9]*\).*/\1/p' <<<"$output")
  states=$(sed -n 's/^ *\([0-9.e+]*\) states, stored.*/\1/p' <<<"$output")
  summary="$name: ${states:-?} states, errors: ${errors:-?}, $((SECONDS - started)) s"
  if grep -q 'max search depth too small' <<<"$output"; then
    echo "FAIL $summary: search depth too small"; failures=$((failures + 1)); return
  fi
  if [ "$expectation" = pass ]; then
    if [ "$errors" = 0 ]; then
      echo "ok   $summary"
    else
      echo "FAIL $summary"; grep -E '^pan:' <<<"$output" | head -3
      spin -t "${defines[@]}" "$model_file" 2>&1 | grep -E 'MSC:|Error|text of failed' | sed 's/^ *MSC: /  /'
      failures=$((failures + 1))
    fi
  else
    if [ "${errors:-0}" != 0 ] && grep -qF "$expectation" <<<"$output"; then
      echo "ok   $summary (fails as it must: $(grep -m1 -E '^pan:1: ' <<<"$output" | sed 's/^pan:1: //'))"
    else
      echo "FAIL $summary: expected a counterexample with '$expectation'"; failures=$((failures + 1))
    fi
  fi
}

echo "== the protocol as implemented (3 processes, up to 2 die at any step)"
verify "safety (assertions, invalid end states)" pass -- -DSAFETY --
verify "progress (no cycle without an acquisition)" pass -- -DNP -- -l
verify "exclusive_create (L empty until written), 1 death" pass -DEXCLUSIVE_CREATE -DCRASHES=1 -- -DSAFETY --

echo "== broken variants: each must fail"
verify "naive delete-then-create" "$mutual_exclusion" -DNAIVE -DEXCLUSION_ONLY -- -DSAFETY --
echo "   its counterexample:"
spin -t -DNAIVE -DEXCLUSION_ONLY openlock.pml 2>&1 | grep -E 'MSC:' | sed 's/^ *MSC: /     /'
verify "guard without the re-read" "$mutual_exclusion" -DNO_RECHECK -DEXCLUSION_ONLY -- -DSAFETY --
verify "re-read without the guard" "$mutual_exclusion" -DNO_GUARD -DEXCLUSION_ONLY -- -DSAFETY --
verify "no recovery of a dead process's guard" "non-progress cycle" -DNO_RECOVERY -- -DNP -- -l

echo "== leases (lease.pml): refresh, release and breakers of an expired lock, 3 breakers, 3 refreshes"
model_file=lease.pml
verify "lease: safety (assertions, invalid end states)" pass -DBREAKERS=3 -DREFRESHES=3 -- -DSAFETY --
verify "lease: refresh without the guard" "assertion violated" -DNO_REFRESH_GUARD -- -DSAFETY --
verify "lease: breaker that does not judge the lease again under the guard" "assertion violated" -DNO_REJUDGE -- -DSAFETY --
verify "lease: release without the guard" "assertion violated" -DNO_RELEASE_GUARD -- -DSAFETY --

if [ "$failures" -ne 0 ]; then
  echo "model/check.sh: $failures check(s) FAILED" >&2
  exit 1
fi
echo "model/check.sh: all checks passed"
