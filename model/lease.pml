/* Leases (docs/protocol.md section 11): a holder H whose lease may run out at any moment (a frozen holder, a
 * slow refresh) refreshes it and finally releases it, while BREAKERS other processes break the lock once its
 * lease has expired and take it themselves, as modules/protocol.cpp does (refresh_claim, release_claim and
 * remove_observed under the takeover guard; the breaker re-judges the lease under the guard).
 *
 * One Promela step is one system call (link, rename of the guard, unlink, a read of L, utimensat).
 * `entitled` is true while H may act as the holder: from a refresh that wrote a new end until that end passes.
 * Properties (assertions):
 *   - a breaker in its critical section never overlaps another breaker, nor a holder that is entitled;
 *   - while H is entitled, L is H's (a refresh that reports success left the lock in place);
 *   - H's release never removes a lock file that is not its own.
 *
 * Variants (spin -D...), each of which must fail:
 *   NO_REFRESH_GUARD  refresh checks "still ours" and writes the new end without the guard
 *   NO_REJUDGE        a breaker under the guard compares the bytes but does not judge the lease again
 *   NO_RELEASE_GUARD  H's release checks "still ours" and unlinks without the guard
 */

#ifndef BREAKERS
#define BREAKERS 2
#endif
#ifndef REFRESHES
#define REFRESHES 2
#endif

#define HOLDER 1
#define NOBODY 0

byte lock_owner = HOLDER; /* L: absent (NOBODY) or the record of one acquisition; H holds it at the start */
byte lock_round = 1;      /* with lock_owner: the record's nonce (equal pairs are equal bytes) */
bool expired;             /* L's lease has run out (by more than clock_slop); a new L starts unexpired */
byte guard = NOBODY;      /* L.takeover: absent or held by one process */
bool entitled = true;     /* H's last refresh (or its claim) wrote an end that has not passed yet */
bool holder_done;
byte critical;            /* bit p: breaker p is in its critical section */

#define bit(p) (1 << (p))
#define at_most_one(bits) (((bits) & ((bits) - 1)) == 0)

/* Time passes: any lease end may be reached at any moment (the holder frozen, the refresh late). Only a lease
 * that exists can expire: H's (breakers' own leases never run out here). */
active proctype clock() {
end:
    do
    :: atomic { lock_owner == HOLDER && !expired -> expired = true; entitled = false }
    od
}

/* While H is entitled, the lock file is H's. */
active proctype monitor() {
end:
    atomic { entitled && lock_owner != HOLDER -> assert(false) }
}

inline take_guard(me, got) {
    atomic {
        if
        :: guard == NOBODY -> guard = me; got = true
        :: else -> got = false
        fi
    }
}

active proctype holder() {
    byte refreshes;
    bool got, ours;
    do
    :: refreshes < REFRESHES ->
        refreshes++;
#ifdef NO_REFRESH_GUARD
        ours = (lock_owner == HOLDER && lock_round == 1); /* read L */
        if
        :: ours -> atomic { expired = false; entitled = true } /* utimensat: the new end */
        :: else -> break                                       /* lost */
        fi
#else
        take_guard(HOLDER, got);
        if
        :: got ->
            ours = (lock_owner == HOLDER && lock_round == 1); /* read L under the guard */
            if
            :: ours -> atomic { expired = false; entitled = true } /* utimensat: the new end */
            :: else
            fi;
            guard = NOBODY;
            if
            :: !ours -> break /* lost: refresh reports not_locked */
            :: else
            fi
        :: else /* busy: a breaker is at work; the refresh retries later */
        fi
#endif
    :: else -> break
    od;
    /* release: remove L if it is still ours */
#ifdef NO_RELEASE_GUARD
    ours = (lock_owner == HOLDER && lock_round == 1);
    if
    :: ours -> atomic { assert(lock_owner == HOLDER); lock_owner = NOBODY; entitled = false }
    :: else
    fi;
#else
    do
    :: take_guard(HOLDER, got);
       if
       :: got -> break
       :: else
       fi
    od;
    ours = (lock_owner == HOLDER && lock_round == 1);
    if
    :: ours -> atomic { assert(lock_owner == HOLDER); lock_owner = NOBODY; entitled = false }
    :: else
    fi;
    guard = NOBODY;
#endif
    atomic { entitled = false; holder_done = true }
}

proctype breaker(byte me) {
    byte seen_owner, seen_round;
    bool seen_expired, got, same;
    do
    :: /* look at L */
        atomic { seen_owner = lock_owner; seen_round = lock_round; seen_expired = expired }
        if
        :: seen_owner == NOBODY ->
            if
            /* link: ours, a new file with a fresh lease */
            :: atomic { lock_owner == NOBODY -> lock_owner = me; lock_round = 2; expired = false } -> break
            :: else /* EEXIST: look again */
            fi
        :: seen_owner != NOBODY && !seen_expired -> /* held and not expired: wait for a change */
            (lock_owner != seen_owner || lock_round != seen_round || expired)
        :: seen_owner != NOBODY && seen_expired ->
            take_guard(me, got);
            if
            :: got ->
                same = (lock_owner == seen_owner && lock_round == seen_round);
#ifdef NO_REJUDGE
                if
                :: same -> lock_owner = NOBODY; expired = false
                :: else
                fi;
#else
                if
                :: same && expired -> lock_owner = NOBODY; expired = false
                :: else
                fi;
#endif
                guard = NOBODY
            :: else -> (guard == NOBODY) /* busy: wait for the other takeover */
            fi
        fi
    od;
    /* the critical section: alone among breakers, and H is not entitled */
    atomic { critical = critical | bit(me); assert(at_most_one(critical)); assert(!entitled) }
    critical = critical & ~bit(me);
    /* release (a breaker's own lease never runs out here) */
    do
    :: take_guard(me, got);
       if
       :: got -> break
       :: else
       fi
    od;
    if
    :: lock_owner == me -> lock_owner = NOBODY
    :: else
    fi;
    guard = NOBODY
}

init {
    byte p;
    atomic {
        for (p : 2 .. BREAKERS + 1) {
            run breaker(p)
        }
    }
}
