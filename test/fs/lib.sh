# SPDX-License-Identifier: MIT
# Helpers of test/fs/run.sh (sourced): the scratch area, FUSE clients, a loopback sshd, "hosts", processes that
# are cleaned up on exit, and the verdicts. Recipes: /work/shared/docs/testbeds.md.

failures=0
started_at=$EPOCHREALTIME
work=""
mounts=()
spawned=()

say() { printf '%s\n' "$*"; }
pass() { say "PASS $*"; }
fail() {
  say "FAIL $*"
  failures=$((failures + 1))
}
skip_all() {
  say "SKIP test/fs: $*"
  exit 0
}

# Seconds since $1 (an $EPOCHREALTIME), to two decimals.
elapsed_since() { awk -v from="$1" -v to="$EPOCHREALTIME" 'BEGIN { printf "%.2f", to - from }'; }
# within LOW HIGH X: true when LOW <= X <= HIGH (decimal seconds).
within() { awk -v low="$1" -v high="$2" -v x="$3" 'BEGIN { exit !(low <= x && x <= high) }'; }

# A background process that the exit trap kills, with its process group if it leads one.
spawn() {
  "$@" &
  spawned+=("$!")
}

cleanup() {
  local pid mount
  for pid in "${spawned[@]}"; do
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  for mount in "${mounts[@]}"; do
    fusermount3 -u -z "$mount" 2>/dev/null || umount -l "$mount" 2>/dev/null || true
  done
  [ -n "$work" ] && rm -rf "$work"
}

make_work() {
  work=$(mktemp -d /tmp/openlock-fs.XXXXXX)
  trap cleanup EXIT
  trap 'exit 130' INT TERM
}

# bindfs BACKING MOUNTPOINT: a FUSE client that caches attributes, entries and absent names for 5 s, like NFS.
mount_bindfs() {
  mkdir -p "$2"
  bindfs -o attr_timeout=5,entry_timeout=5,negative_timeout=5 "$1" "$2"
  mounts+=("$2")
}

# start_sshd: a loopback sshd on a free port whose root key is $work/ssh/key; sets sshd_port. Fails if it
# does not answer.
start_sshd() {
  local dir=$work/ssh
  mkdir -p "$dir" /run/sshd
  chmod 700 "$dir"
  ssh-keygen -q -t ed25519 -N '' -f "$dir/host_key"
  ssh-keygen -q -t ed25519 -N '' -f "$dir/key"
  cp "$dir/key.pub" "$dir/authorized_keys"
  sshd_port=$((20000 + RANDOM % 20000))
  cat >"$dir/sshd_config" <<EOF
ListenAddress 127.0.0.1
Port $sshd_port
HostKey $dir/host_key
AuthorizedKeysFile $dir/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PidFile none
Subsystem sftp internal-sftp
EOF
  spawn /usr/sbin/sshd -D -e -f "$dir/sshd_config" 2>"$dir/sshd.log"
  for _ in $(seq 50); do
    ssh -p "$sshd_port" -i "$dir/key" -o BatchMode=yes -o StrictHostKeyChecking=no \
      -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR root@127.0.0.1 true 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

# sshfs BACKING MOUNTPOINT over the loopback sshd: link counts always read 1, mtimes are whole seconds.
mount_sshfs() {
  mkdir -p "$2"
  sshfs -o "port=$sshd_port,IdentityFile=$work/ssh/key,StrictHostKeyChecking=no,UserKnownHostsFile=/dev/null" \
    -o attr_timeout=5,entry_timeout=5,negative_timeout=5,LogLevel=ERROR "root@127.0.0.1:$1" "$2"
  mounts+=("$2")
}

# on_host NAME CLIENT SHARED CMD...: CMD as pid 1's child in a new UTS, pid and mount namespace named NAME,
# where the FUSE client CLIENT is bound at SHARED (the same path on every "host").
on_host() {
  local name=$1 client=$2 shared=$3
  shift 3
  unshare --uts --pid --fork --mount --mount-proc \
    sh -c 'hostname "$0" && mount --bind "$1" "$2" && shift 2 && exec "$@"' "$name" "$client" "$shared" "$@"
}

# in_other_boot BOOT_ID CMD...: CMD in a new mount namespace that sees BOOT_ID as the boot id (same host name,
# same pid namespace: the boot is the only difference). Execs: run it in the background, where it becomes
# CMD, leading its own process group.
in_other_boot() {
  local boot_id=$1
  shift
  printf '%s\n' "$boot_id" >"$work/boot_id"
  exec setsid unshare --mount sh -c 'mount --bind "$0" /proc/sys/kernel/random/boot_id && exec "$@"' "$work/boot_id" "$@"
}

# wait_for_file PATH SECONDS: true once PATH exists.
wait_for_file() {
  local deadline=$((SECONDS + $2))
  while [ ! -e "$1" ]; do
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 0.02
  done
}

# Names that the library leaves beside LOCK in DIR (the lock itself, claim files, takeover guards); empty when
# everything was cleaned up.
# The fencing token file (NAME.token) stays beside a lock by design: it is not a leftover.
leftovers() { (cd "$1" && find . -maxdepth 1 -name "$2*" ! -name '*.token' -printf '%f ' | sort); }

# json_field JSON KEY: the string or number value of KEY in openlock status --json's one-line object.
json_field() { sed -n "s/.*\"$2\":\"\{0,1\}\([^\",}]*\).*/\1/p" <<<"$1"; }
