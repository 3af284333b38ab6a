# SPDX-License-Identifier: MIT
"""The Python side of test/flufl/run.sh: Debian's python3-flufl.lock, used as its users use it.

  count LOCK COUNTER N       N times: lock, check that nobody else is inside, counter += 1, unlock
  hold LOCK LIFETIME SECONDS lock with that lease, say "locked", sleep without refreshing, then say whether
                             the lock is still ours ("held", then unlock) or was broken ("lost")
  acquire LOCK TIMEOUT       lock (breaking an expired lock as flufl.lock does), say "acquired <epoch seconds>",
                             unlock

Only flufl.lock's pause between two attempts is shortened (0-50 ms instead of 0-2 s) for `count`, so that the
Python processes contend as often as the C++ ones; the protocol is flufl.lock's own.
"""
import os
import random
import sys
import time

from flufl.lock import Lock


class BriskLock(Lock):
    def _sleep(self):
        time.sleep(random.random() * 0.05)


def inside(counter):
    marker = counter + ".inside"
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        print("violation: another holder is inside", flush=True)
        sys.exit(2)
    os.close(fd)
    with open(counter) as f:
        value = int(f.read().strip() or 0)
    with open(counter, "w") as f:
        f.write("%d\n" % (value + 1))
    os.unlink(marker)


def main(argv):
    command = argv[1]
    if command == "count":
        lock_file, counter, n = argv[2], argv[3], int(argv[4])
        for _ in range(n):
            lock = BriskLock(lock_file, lifetime=30)
            lock.lock(timeout=120)
            inside(counter)
            lock.unlock()
            time.sleep(random.random() * 0.01)
    elif command == "hold":
        lock_file, lifetime, seconds = argv[2], int(argv[3]), float(argv[4])
        lock = Lock(lock_file, lifetime=lifetime)
        lock.lock(timeout=30)
        print("locked", flush=True)
        time.sleep(seconds)
        if lock.is_locked:
            print("held", flush=True)
            lock.unlock()
        else:
            print("lost", flush=True)
            lock.unlock(unconditionally=True)
    elif command == "acquire":
        lock_file, timeout = argv[2], int(argv[3])
        lock = Lock(lock_file, lifetime=15)
        lock.lock(timeout=timeout)
        print("acquired %.3f" % time.time(), flush=True)
        lock.unlock()
    else:
        sys.exit("unknown command " + command)


if __name__ == "__main__":
    main(sys.argv)
