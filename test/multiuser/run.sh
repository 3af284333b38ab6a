#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Two users and a group against one lock, as a hostile second user would (run as root, in CI by .ci/run).
# Users olmu-alice and olmu-bob, both in group olmu-team (made if missing, never removed); a setgid 2775 group
# directory, a sticky 1777 directory and a private 0700 directory of alice's, in a fresh mktemp -d tree with a copy
# of the binaries. Each case is self-contained (its own directory, its own processes, killed when it ends) and
# prints "PASS name" or "FAIL name: why"; the last line is "N passed, N failed", and the exit status is 1 if any
# case failed.
#
#   guard-swap, guard-swap-root     bob's dead takeover guard, swapped for a symlink to alice's private directory
#                                   (inotify + renameat2(RENAME_EXCHANGE)) between the victim's read of the owner
#                                   file and its unlink: alice (or root) running `run --timeout 0.3` in a loop must
#                                   never delete a file of alice's
#   stuck-guard-swap                the same through `break --force` of a stuck guard (another host's, a minute old)
#   sweep-staging-swap              the same through the sweep of a dead staging directory <lock>.takeover.<hex>
#   sweep-claim-swap                the same through the sweep of a dead claim file <lock>.claim.<hex>
#   token-swap                      the same through the fencing token <lock>.token (run --lifetime)
#   emfile-release                  spawning the command fails after the fork (ulimit -n, inherited descriptors):
#                                   the lock must stay held while the command lives
#   emfile-stderr-closed            the same with stderr closed
#   kill9-overlap                   openlock run killed by SIGKILL: another user's command must not start before
#                                   the first command ended
#   sticky-lifetime-alternate       alice then bob `run --lifetime` in a sticky directory: no exit 0 with the lock
#                                   left behind, an error naming the owner, no silent wedge of alice
#   group-lifetime-alternate        the same in a group directory: alternating users just work
#   crashed-guard-run               alice killed while she holds the takeover guard: bob recovers it at once
#                                   (`run --timeout 0` exits 0, in well under 0.5 s; try_acquire as fast)
#   crashed-guard-break             the same with `break`: exit 0, and "removed" only when it was
#   umask077-group                  a holder under umask 077 in a group directory: others wait (75), never 73
#   umask077-sticky                 the same in a sticky directory
#   umask077-token                  a 0600 <lock>.token of alice's: bob's fenced run in the group directory works
#   stderr-closed                   `run --verbose ... 2>&-`: the lock file stays a valid record, waiters never 65
#   terminal-injection              ESC sequences, C1 bytes and invalid UTF-8 in another user's record never reach
#                                   alice's terminal raw; status --json stays valid UTF-8 JSON
#
# Usage: test/multiuser/run.sh BUILD_DIR [case...]  (BUILD_DIR, default build/release, has the targets
# openlock-cli, openlock-test-child and openlock-swapper). Needs root, setpriv, useradd, python3.
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
build=$(cd "${1:-$here/../../build/release}" && pwd)
shift || true
cli=$build/cli/openlock
child=$build/test/openlock-test-child
swapper_build=$build/test/multiuser/openlock-swapper
# shellcheck source=test/multiuser/lib.sh
source "$here/lib.sh"

[ "$(id -u)" -eq 0 ] || {
  say "test/multiuser: needs root (it creates users and runs commands as them)"
  exit 2
}
for tool in setpriv setsid useradd groupadd usermod python3; do
  command -v "$tool" >/dev/null || {
    say "test/multiuser: $tool is missing (tools/bootstrap.sh installs it)"
    exit 2
  }
done
for binary in "$cli" "$child" "$swapper_build"; do
  [ -x "$binary" ] || {
    say "test/multiuser: $binary is missing (build openlock-cli, openlock-test-child and openlock-swapper)"
    exit 2
  }
done

setup
# shellcheck source=test/multiuser/cases.sh
source "$here/cases.sh"

all_cases=(guard-swap guard-swap-root stuck-guard-swap sweep-staging-swap sweep-claim-swap token-swap emfile-release
  emfile-stderr-closed kill9-overlap sticky-lifetime-alternate group-lifetime-alternate crashed-guard-run
  crashed-guard-break umask077-group umask077-sticky umask077-token stderr-closed terminal-injection)
selected=("$@")
[ ${#selected[@]} -gt 0 ] || selected=("${all_cases[@]}")
for name in "${selected[@]}"; do
  function=case_${name//-/_}
  if ! declare -F "$function" >/dev/null; then
    fail "$name" "no such case (cases: ${all_cases[*]})"
    continue
  fi
  # The shell's notes about killed background jobs go to a file, not between the verdicts.
  {
    "$function" "$name"
    reap
  } 2>>"$work/shell-notes"
done

say "test/multiuser: $(elapsed_since "$started_at") s"
say "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
