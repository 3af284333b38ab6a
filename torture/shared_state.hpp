// SPDX-License-Identifier: MIT
// The memory the supervisor and every worker share (a file mapped MAP_SHARED: it survives exec and SIGKILL).
// Only std::atomic members with lock-free 32/64-bit types live here, so a process killed at any instruction
// leaves every field either old or new, never torn. README.md has the counting argument these fields serve.
#pragma once
#include <atomic>
#include <cstdint>
#include <ctime>

namespace torture {

inline constexpr int max_slots = 32; ///< workers, plus the supervisor's own slot for the final acquisition

/// The identity of one critical section: slot, generation of the process in that slot, and the section's
/// number (the slot's completed count + 1). Never 0, so 0 in `occupant` means "nobody inside".
using token = std::uint64_t;
inline token make_token(std::uint32_t slot, std::uint32_t generation, std::uint32_t section) {
    return (std::uint64_t{slot + 1} << 56) | (std::uint64_t{generation & 0xffffff} << 32) | section;
}
inline std::uint32_t slot_of(token t) {
    return static_cast<std::uint32_t>(t >> 56) - 1;
}
inline std::uint32_t generation_of(token t) {
    return static_cast<std::uint32_t>(t >> 32) & 0xffffff;
}
inline std::uint32_t section_of(token t) {
    return static_cast<std::uint32_t>(t);
}

enum class failure_kind : std::uint32_t {
    none,
    overlap,              ///< the occupant was a live process: two holders
    occupant_overwritten, ///< our token vanished from `occupant` while we were inside
    counter_moved,        ///< the counter changed under a dead holder's critical section
};

struct slot_state {
    std::atomic<std::int32_t> pid{0};
    std::atomic<std::uint32_t> generation{0}; ///< bumped by the supervisor after it reaped the slot's process
    // Written by the supervisor before it sends SIGKILL, at [generation % kill_history]: the time first, then
    // the generation (release). A history, because a slot may be respawned and killed again before anyone
    // looks at the section its earlier process died in.
    static constexpr int kill_history = 64;
    std::atomic<std::int64_t> kill_sent_ns[kill_history]{};
    std::atomic<std::uint32_t> killed_generation[kill_history]{};
    /// between acquire returning and release starting; 2: waiting to die
    std::atomic<std::uint32_t> holding{0};
    std::atomic<std::uint32_t> kill_request{0}; ///< set by the supervisor: stop while holding, to be killed
    std::atomic<std::uint64_t> acquisitions{0};
    std::atomic<std::uint64_t> completed{0}; ///< critical sections whose counter write is done (cumulative)
    // The value read in the critical section `read_token`: value first, then token (release).
    std::atomic<std::uint64_t> read_value{0};
    std::atomic<std::uint64_t> read_token{0};
    // How this slot's killed sections were accounted for, in one word so that a resolver killed halfway
    // leaves it old or new: generation (low 16 bits) << 48 | section << 16 | count of killed sections that
    // had written the counter (low 16 bits).
    std::atomic<std::uint64_t> resolution{0};
    std::atomic<std::uint64_t> timeouts{0}; ///< acquire(timeout) / try_acquire that did not get it
    std::atomic<std::uint64_t> errors{0};   ///< acquire failures other than contention
    std::atomic<std::uint64_t> release_errors{0};
    std::atomic<std::uint64_t> lost_while_held{0}; ///< release said not_locked: someone removed our lock file
    std::atomic<std::uint64_t> invalid_lock_file{0};
    std::atomic<std::int64_t> last_error_value{0}; ///< errno-like code of the last error (diagnosis)
};

struct shared_state {
    std::atomic<std::uint32_t> stop{0};
    std::atomic<std::uint32_t> hold_us{0}; ///< sleep this long inside (0: a short spin)
    std::atomic<token> occupant{0};        ///< the overlap detector
    std::atomic<std::uint64_t> counter{0}; ///< incremented non-atomically: load, pause, store
    // Statistics only (a resolver killed halfway may miss one); the count check uses the slots' `resolution`.
    std::atomic<std::uint64_t> killed_after_write{0};      ///< dead holders whose increment is in the counter
    std::atomic<std::uint64_t> killed_before_write{0};     ///< dead holders that never wrote
    std::atomic<std::uint64_t> killed_after_completion{0}; ///< died after counting, before leaving
    std::atomic<std::uint64_t> violations{0};
    std::atomic<std::uint32_t> first_failure{0}; ///< failure_kind of the first violation
    std::atomic<token> failure_token_mine{0};
    std::atomic<token> failure_token_other{0};
    slot_state slots[max_slots];
};

inline std::int64_t monotonic_ns() {
    timespec now{};
    clock_gettime(CLOCK_MONOTONIC, &now);
    return std::int64_t{now.tv_sec} * 1'000'000'000 + now.tv_nsec;
}

/// Maps the shared file (creating and sizing it when `create`); nullptr on failure (errno set).
shared_state* map_shared_state(char const* path, bool create);

/// The critical section: the overlap detector, the non-atomic increment, and the resolution of a holder that
/// died inside its own critical section. `acquired_ns` is when our acquire returned.
void critical_section(shared_state& shared, std::uint32_t slot, std::uint32_t generation,
                      std::int64_t acquired_ns);

} // namespace torture
