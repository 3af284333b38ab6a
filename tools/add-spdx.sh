#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Licence lines: puts `// SPDX-License-Identifier: MIT` first in every tracked .cpp, .cppm, .hpp and .h, and
# `# SPDX-License-Identifier: MIT` first (after the shebang, if any) in every tracked .sh, .py, CMakeLists.txt and
# extensionless script that starts with a `#!` shebang (.ci/run, tools/cmake, tools/wine-run). Idempotent: a file
# whose first three lines hold a `// SPDX-License-Identifier: ` or `# SPDX-License-Identifier: ` line is left alone.
#
#   bash tools/add-spdx.sh           add the line where it is missing; prints each file it changed
#   bash tools/add-spdx.sh --check   change nothing; list the files without it and exit 1 if there are any
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

check=false
case ${1:-} in
  --check) check=true ;;
  "") ;;
  *) echo "usage: bash tools/add-spdx.sh [--check]" >&2; exit 64 ;;
esac

slash_line='// SPDX-License-Identifier: MIT'
hash_line='# SPDX-License-Identifier: MIT'

# style FILE: "slash", "hash" or nothing (the file takes no line).
style() {
  case ${1##*/} in
    *.cpp | *.cppm | *.hpp | *.h) echo slash ;;
    *.sh | *.py | CMakeLists.txt) echo hash ;;
    *.*) ;; # any other extension: data, docs, corpora, presets
    *) if head -c 2 -- "$1" | grep -q '^#!'; then echo hash; fi ;;
  esac
}

# The script adds its own line too: bash reads a script as it runs, so all the work is in main, and the line that
# calls it also exits, before bash would read on at a shifted offset.
main() {
  missing=0
  changed=0
  while IFS= read -r -d '' file; do
    [ -f "$file" ] && [ ! -L "$file" ] || continue
    kind=$(style "$file")
    [ -n "$kind" ] || continue
    head -n 3 -- "$file" | grep -qE '^(//|#) SPDX-License-Identifier: ' && continue
    if $check; then
      echo "$file"
      missing=$((missing + 1))
      continue
    fi
    line=$slash_line
    [ "$kind" = hash ] && line=$hash_line
    tmp=$(mktemp)
    if [ "$kind" = hash ] && head -c 2 -- "$file" | grep -q '^#!'; then
      { head -n 1 -- "$file"; printf '%s\n' "$line"; tail -n +2 -- "$file"; } >"$tmp"
    else
      { printf '%s\n' "$line"; cat -- "$file"; } >"$tmp"
    fi
    cat -- "$tmp" >"$file" # in place: keeps the file's mode (scripts stay executable)
    rm -f -- "$tmp"
    echo "$file"
    changed=$((changed + 1))
  done < <(git ls-files -z)

  if $check; then
    if [ "$missing" -gt 0 ]; then
      echo "tools/add-spdx.sh: $missing files lack '$slash_line' / '$hash_line' (run bash tools/add-spdx.sh)" >&2
      exit 1
    fi
    echo "tools/add-spdx.sh: every file has its SPDX line"
  else
    echo "tools/add-spdx.sh: added the SPDX line to $changed files"
  fi
}
main "$@"; exit $?
