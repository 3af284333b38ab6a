/* openlock's claim / judge / guarded takeover / release protocol (docs/protocol.md sections 4-7), as
 * modules/protocol.cpp and modules/file_lock.cpp implement it, for WORKERS processes that each acquire and
 * release the lock ROUNDS times, any of which may die at any step (at most CRASHES of them).
 *
 * One Promela step is one system call (link, rename, unlink, rmdir, a read of a file or a directory).
 * Properties: mutual exclusion; nobody removes a live holder's lock file or a live process's guard (all three
 * assertions); no invalid end state, i.e. no live process waits forever.
 *
 * Variants (spin -D...), each of which must fail, so that the check provably can:
 *   NAIVE        judge stale -> unlink(L) -> claim: no guard, no re-read (Python openlock's history)
 *   NO_RECHECK   the guard, but unlink(L) without re-reading it under the guard
 *   NO_GUARD     the re-read and exact comparison, but no guard around them
 *   NO_RECOVERY  a dead process's guard is never removed: waiters wait forever (an invalid end state)
 * EXCLUSIVE_CREATE models claim_method::exclusive_create (L visible empty until written); it must pass.
 */

#ifndef WORKERS
#define WORKERS 3
#endif
#ifndef ROUNDS
#define ROUNDS 1
#endif
#ifndef CRASHES
#define CRASHES 2
#endif
#define TRIES 2 /* options::tries: looks at one unchanged half-written lock file before invalid_lock_file */

#ifdef EXCLUSIVE_CREATE
#define WRITTEN_BY_CREATE false
#else
#define WRITTEN_BY_CREATE true /* link and linkat make L appear with the whole record */
#endif

/* The lock file L: absent (lock_owner == 0) or the record of acquisition (lock_owner, lock_round). The pair
 * stands for the record's 128-bit nonce, unique per acquisition: equal pairs are equal bytes. */
byte lock_owner;
byte lock_round;
bool lock_written = true; /* false only between exclusive_create's open(O_EXCL) and its write */

/* The guard directory L.takeover: absent, empty, or holding the one owner file of process `guard` (the file is
 * named by that process's guard nonce; a process judged dead never takes the guard again, so its pid will do). */
#define NO_GUARD_DIR 0
#define EMPTY_GUARD_DIR 15
byte guard = NO_GUARD_DIR;

byte dead;     /* bit p: process p has died (for good: the judge is a perfect failure detector, assumption F) */
byte finished; /* bit p: process p has finished all its rounds */
byte crashes;
byte critical; /* bit p: process p is in its critical section (a dead process is in none) */

#define bit(p) (1 << (p))
#define is_dead(p) ((dead & bit(p)) != 0)
#define at_most_one(bits) (((bits) & ((bits) - 1)) == 0)

/* Any running process may die between any two system calls of the others. */
#define may_kill(p) \
    :: d_step { crashes < CRASHES && p <= WORKERS && (dead & bit(p)) == 0 && (finished & bit(p)) == 0 -> \
                dead = dead | bit(p); crashes++; printf("MSC: P%d dies\n", p) }

active proctype killer() {
end:
    do
    may_kill(1)
    may_kill(2)
    may_kill(3)
    may_kill(4)
    od
}

proctype worker(byte me) {
    byte round;
    byte seen_owner, seen_round; /* what Observe(L) returned after the claim failed */
    bool seen_written, now_written;
    byte now_owner, now_round;   /* the re-read under the guard */
    byte guard_seen;             /* whose guard the failed rename ran into */
    byte renames;                /* takeover_guard::try_hold makes at most two attempts */
    byte unreadable_looks;       /* exclusive_create: looks at one unchanged half-written file */
    byte unreadable_owner;
    bool ours;

    {
    do
    :: round < ROUNDS ->
        round++;
        unreadable_looks = 0;
claim:
        guard_seen = NO_GUARD_DIR;
        /* try_claim: link(claim file, L) / linkat(fd, L) / open(L, O_CREAT|O_EXCL): atomic, EEXIST while L
         * exists as anything */
        if
        :: atomic { lock_owner == 0 -> lock_owner = me; lock_round = round; lock_written = WRITTEN_BY_CREATE;
                    printf("MSC: P%d claims L (round %d)\n", me, round) };
#ifdef EXCLUSIVE_CREATE
            lock_written = true; /* the write: a step of its own, so L can be seen empty before it */
#endif
            goto acquired
        :: else
        fi;
        /* EEXIST: Observe(L) */
        d_step {
            seen_owner = lock_owner; seen_round = lock_round; seen_written = lock_written;
            printf("MSC: P%d: EEXIST, reads L: P%d round %d\n", me, seen_owner, seen_round)
        }
        if
        :: seen_owner == 0 -> goto claim /* released in between: claim again */
        :: else
        fi;
        if
        :: !seen_written -> /* an empty (half-written) lock file: looks retry_period apart, at most TRIES */
            if
            :: seen_owner != unreadable_owner -> unreadable_looks = 0; unreadable_owner = seen_owner
            :: else
            fi;
            unreadable_looks++;
            if
            :: unreadable_looks >= TRIES -> goto gave_up /* invalid_lock_file */
            :: else -> goto claim
            fi
        :: else
        fi;
        /* judge(record) */
        if
        :: !is_dead(seen_owner) -> goto wait /* live: wait for a change */
        :: else
        fi;

#if defined(NAIVE)
        d_step { /* unlink(L) */
            printf("MSC: P%d unlinks L (P%d round %d) as stale\n", me, lock_owner, lock_round);
            lock_owner = 0; lock_round = 0; lock_written = true
        }
        goto claim;
#elif defined(NO_GUARD)
        goto guarded;
#else
        /* remove_observed: take the guard. Staging (mkdir L.takeover.G, write G's record into it) is private. */
        renames = 0;
take_guard:
        atomic { /* rename(L.takeover.G, L.takeover): fails while L.takeover holds a file */
            if
            :: guard == NO_GUARD_DIR || guard == EMPTY_GUARD_DIR -> guard = me; guard_seen = me;
                printf("MSC: P%d takes the guard\n", me)
            :: else -> guard_seen = guard
            fi
        }
        if
        :: guard_seen == me -> goto guarded
        :: else
        fi;
#ifdef NO_RECOVERY
        goto wait;
#endif
        /* ENOTEMPTY. Guard recovery (remove_dead_owner_directory): readdir lists exactly one name... */
        if
        :: guard == guard_seen -> skip
        :: else -> goto wait /* busy (the wait ends at once: the guard changed) */
        fi;
        /* ...read L.takeover/<name> and judge its record */
        if
        :: guard == guard_seen && is_dead(guard_seen) -> skip
        :: else -> goto wait /* busy */
        fi;
        d_step { /* unlink(L.takeover/<name>): exact, only that dead process's file */
            if
            :: guard == guard_seen -> guard = EMPTY_GUARD_DIR;
                printf("MSC: P%d removes the guard of dead P%d\n", me, guard_seen)
            :: else
            fi
        }
        d_step { /* rmdir(L.takeover): only while empty */
            if
            :: guard == EMPTY_GUARD_DIR -> guard = NO_GUARD_DIR
            :: else
            fi
        }
        renames++;
        if
        :: renames < 2 -> goto take_guard
        :: else -> goto wait /* busy */
        fi;
#endif

guarded:
#ifdef NO_RECHECK
        now_owner = seen_owner; now_round = seen_round; now_written = seen_written;
#else
        atomic { now_owner = lock_owner; now_round = lock_round; now_written = lock_written } /* Observe(L) */
#endif
        /* the same bytes (the nonce: the same acquisition), a whole record, judged stale now */
        if
        :: now_owner != 0 && now_written && now_owner == seen_owner && now_round == seen_round &&
           is_dead(now_owner) ->
            d_step { /* unlink(L): whatever L is now */
                printf("MSC: P%d unlinks L (P%d round %d) as stale\n", me, lock_owner, lock_round);
                lock_owner = 0; lock_round = 0; lock_written = true
            }
        :: else /* changed: remove nothing */
        fi;
#ifndef NO_GUARD
        d_step { /* release the guard: unlink(L.takeover/G) */
#ifndef EXCLUSION_ONLY
            assert(guard == me); /* nobody removed a live process's guard */
#endif
            guard = EMPTY_GUARD_DIR; printf("MSC: P%d releases the guard\n", me)
        }
        d_step { /* rmdir(L.takeover): fails harmlessly if another process renamed its staging dir onto it */
            if
            :: guard == EMPTY_GUARD_DIR -> guard = NO_GUARD_DIR
            :: else
            fi
        }
#endif
        goto claim;

wait:   /* until what the decision rested on changes: inotify on L and L.takeover, the holder's exit (pidfd),
         * and the retry_period safety net for a guard holder's death. An unchanged state would decide alike. */
        (lock_owner != seen_owner || lock_round != seen_round ||
         (guard_seen == NO_GUARD_DIR && is_dead(seen_owner)) ||
         (guard_seen != NO_GUARD_DIR && (guard != guard_seen || is_dead(guard_seen))));
        goto claim;

acquired:
progress_acquired:
        atomic {
            critical = critical | bit(me);
            printf("MSC: P%d enters the critical section\n", me);
            assert(at_most_one(critical & ~dead)) /* mutual exclusion among the living */
        }
        d_step { critical = critical & ~bit(me); printf("MSC: P%d leaves the critical section\n", me) }
        /* release_claim: lstat(L) and compare the pinned identity (or read and compare the nonce); unlink */
        ours = (lock_owner == me && lock_round == round);
#ifndef EXCLUSION_ONLY
        assert(ours); /* nobody removed or replaced a live holder's lock file */
#endif
        if
        :: ours -> d_step { lock_owner = 0; lock_round = 0; lock_written = true; printf("MSC: P%d releases L\n", me) }
        :: else
        fi;
gave_up:
progress_gave_up:
        skip
    :: else -> break
    od;
    finished = finished | bit(me)
    } unless { is_dead(me) } /* a dead process takes no further step */
}

init {
    byte p = 1;
    atomic {
        do
        :: p <= WORKERS -> run worker(p); p++
        :: else -> break
        od
    }
}
