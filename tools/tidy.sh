#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# clang-tidy-19 (checks: .clang-tidy) over every unit of a build's compile_commands.json that lies in this source
# tree, two at a time; every finding is an error (WarningsAsErrors), and the run exits 1 if any unit had one.
# Usage: bash tools/tidy.sh [BUILD_DIR] [FILE...]   (default build/dev; FILEs: only those units)
#
# The build must be built (not only configured): clang-tidy reads the module interface units (.cppm),
# the implementation units (`module openlock;`) and the units that `import openlock;` through the same
# -fmodule-file= maps the compiler used (the @...modmap response files named in compile_commands.json), so it must
# be clang-tidy of the compiler's exact version (clang-tidy-19 and clang++-19 are both 19.1.7 here; a BMI of
# another clang version is refused: not tried here). A unit whose target was not built has no modmap yet: "error:
# no such file or directory: '@torture/CMakeFiles/openlock-torture.dir/main.cpp.o.modmap'" and "error: module 'openlock' not
# found". CMAKE_EXPORT_COMPILE_COMMANDS is ON in CMakeLists.txt for every preset.
#
# What it cannot read, and so does not check (not in the Linux dev build's compile_commands.json):
#   platform/windows/*.cpp   Windows only (preset windows-cross; mingw headers, no compile database kept for it)
#   fuzz/*.cpp               only in preset fuzz (-fsanitize=fuzzer compile options; fuzz/run.sh's build)
#   examples/consumer/       a separate project (the CI consumer section builds it against the installed package)
#   *.hpp                    headers have no entry of their own: they are checked through the units that include
#                            them (HeaderFilterRegex in .clang-tidy)
set -euo pipefail
# All of the run is in main, called together with exit on the last line: an edit of this file during a run
# (bash reads a script as it runs) cannot make it run shifted text.
main() {
  here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  build=$(cd "${1:-$here/build/dev}" && pwd)
  shift || true
  db=$build/compile_commands.json
  tidy=${CLANG_TIDY:-clang-tidy-19}
  jobs=${TIDY_JOBS:-2}

  command -v "$tidy" >/dev/null || { echo "tools/tidy.sh: $tidy is missing (tools/bootstrap.sh installs it)" >&2; exit 2; }
  [ -f "$db" ] || { echo "tools/tidy.sh: $db is missing (configure the build)" >&2; exit 2; }
  [ -n "$(find "$build" -name openlock.pcm -print -quit)" ] ||
    { echo "tools/tidy.sh: no openlock.pcm in $build (build it first: tools/cmake --build $build)" >&2; exit 2; }

  if [ $# -gt 0 ]; then
    units=()
    for file in "$@"; do units+=("$(cd "$(dirname "$file")" && pwd)/$(basename "$file")"); done
  else
    mapfile -t units < <(python3 - "$db" "$here" "$build" <<'PY'
import json, os, sys
db, source, build = sys.argv[1:]
files = {os.path.realpath(os.path.join(e["directory"], e["file"])) for e in json.load(open(db))}
for f in sorted(files):
    if f.startswith(source + "/") and not f.startswith(build + "/"):
        print(f)
PY
    )
  fi
  [ ${#units[@]} -gt 0 ] || { echo "tools/tidy.sh: no units in $db" >&2; exit 2; }

  logs=$(mktemp -d)
  trap 'rm -rf "$logs"' EXIT
  export tidy build logs here
  tidy_one() {
    local unit=$1 log started
    log=$logs/$(echo "${unit#"$here"/}" | tr / _).log
    started=$SECONDS
    if "$tidy" -p "$build" --quiet "$unit" >"$log" 2>&1; then
      printf 'tidy: ok    %-40s %3ds\n' "${unit#"$here"/}" $((SECONDS - started))
    else
      printf 'tidy: FAIL  %-40s %3ds\n' "${unit#"$here"/}" $((SECONDS - started))
      echo "${unit#"$here"/}" >"$log.failed"
    fi
  }
  export -f tidy_one

  started=$SECONDS
  printf '%s\0' "${units[@]}" | xargs -0 -n 1 -P "$jobs" bash -c 'tidy_one "$1"' tidy_one
  failed=0
  for marker in "$logs"/*.failed; do
    [ -e "$marker" ] || continue
    unit=$(head -n 1 "$marker")
    failed=$((failed + 1))
    echo
    echo "---- $unit:"
    grep -v -e '^[0-9]* warnings\? generated\.$' -e '^[0-9]* warnings\? and [0-9]* errors\? generated\.$' \
      "${marker%.failed}" || true
  done
  echo "tools/tidy.sh: ${#units[@]} units in $((SECONDS - started))s, $failed with findings"
  [ "$failed" -eq 0 ]
}
main "$@"; exit $?
