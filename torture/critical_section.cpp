// SPDX-License-Identifier: MIT
// The critical section every holder runs, and the accounting for holders that were killed inside it
// (README.md, "Why the count is exact").
#include "shared_state.hpp"

#include <cerrno>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

namespace torture {
namespace {

void record_violation(shared_state& shared, failure_kind what, token mine, token other) {
    if (shared.violations.fetch_add(1) == 0) {
        shared.failure_token_mine.store(mine);
        shared.failure_token_other.store(other);
        shared.first_failure.store(static_cast<std::uint32_t>(what));
    }
}

// The read-modify-write is deliberately not atomic, and the pause makes the window between load and store
// wide enough that two holders inside at once lose an update almost every time.
void pause_inside(std::uint64_t seed, std::uint32_t hold_us) {
    if (hold_us != 0) {
        ::usleep(hold_us);
        return;
    }
    if (seed % 16 == 0) {
        sched_yield();
        return;
    }
    for (std::uint64_t i = 0, n = 200 + seed % 800; i < n; ++i)
        asm volatile("" ::: "memory");
}

bool killed_before(slot_state const& slot, std::uint32_t generation, std::int64_t acquired_ns) {
    auto const at = generation % slot_state::kill_history;
    if (slot.killed_generation[at].load(std::memory_order_acquire) != generation) return false;
    return slot.kill_sent_ns[at].load() <= acquired_ns;
}

// `previous` is still in the detector: its holder never left. That is only legitimate if the supervisor had
// sent it SIGKILL before our acquire returned; otherwise it was alive while we held the lock. If it was
// killed, decide from its own records and the counter whether its increment happened (exactly one of: it
// finished counting, it wrote the counter, it never wrote); a counter that fits none of these was moved by a
// third party.
void account_for_dead_holder(shared_state& shared, token previous, token mine, std::int64_t acquired_ns) {
    auto const dead_slot = slot_of(previous);
    if (dead_slot >= max_slots) {
        record_violation(shared, failure_kind::overlap, mine, previous);
        return;
    }
    auto const& slot = shared.slots[dead_slot];
    if (!killed_before(slot, generation_of(previous), acquired_ns)) {
        record_violation(shared, failure_kind::overlap, mine, previous);
        return;
    }
    bool const read_known = slot.read_token.load(std::memory_order_acquire) == previous;
    auto const read = slot.read_value.load();
    auto const now = shared.counter.load();
    enum { after_completion, after_write, before_write } verdict;
    if (slot.completed.load() >= section_of(previous)) {
        if (!read_known || now != read + 1)
            record_violation(shared, failure_kind::counter_moved, mine, previous);
        verdict = after_completion;
    } else if (read_known && now == read + 1) {
        verdict = after_write;
    } else if (!read_known || now == read) {
        verdict = before_write;
    } else {
        record_violation(shared, failure_kind::counter_moved, mine, previous);
        return;
    }
    // Exactly once, even if a resolver before us was killed after deciding but before handing over
    // `occupant`.
    std::uint64_t const key = (std::uint64_t{generation_of(previous) & 0xffff} << 32) | section_of(previous);
    auto& resolution = shared.slots[dead_slot].resolution;
    auto current = resolution.load();
    do {
        if ((current >> 16) == key) return;
    } while (!resolution.compare_exchange_weak(
        current, (key << 16) | ((current + (verdict == after_write ? 1 : 0)) & 0xffff)));
    (verdict == after_write        ? shared.killed_after_write
     : verdict == after_completion ? shared.killed_after_completion
                                   : shared.killed_before_write)
        .fetch_add(1);
}

} // namespace

shared_state* map_shared_state(char const* path, bool create) {
    int const fd = ::open(path, create ? O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC : O_RDWR | O_CLOEXEC, 0600);
    if (fd < 0) return nullptr;
    if (create && ::ftruncate(fd, sizeof(shared_state)) != 0) {
        ::close(fd);
        return nullptr;
    }
    void* memory = ::mmap(nullptr, sizeof(shared_state), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    ::close(fd);
    if (memory == MAP_FAILED) return nullptr;
    return create ? new (memory) shared_state{} : static_cast<shared_state*>(memory);
}

void critical_section(shared_state& shared, std::uint32_t slot_index, std::uint32_t generation,
                      std::int64_t acquired_ns) {
    auto& me = shared.slots[slot_index];
    auto const section = static_cast<std::uint32_t>(me.completed.load() + 1);
    auto const mine = make_token(slot_index, generation, section);

    // Account for a dead occupant before taking its place, so that its token stays in `occupant` until its
    // section is accounted for, whoever of its successors gets killed.
    auto previous = shared.occupant.load();
    if (previous != 0) account_for_dead_holder(shared, previous, mine, acquired_ns);
    if (!shared.occupant.compare_exchange_strong(previous, mine))
        record_violation(shared, failure_kind::overlap, mine, previous); // someone entered meanwhile

    auto const value = shared.counter.load(std::memory_order_relaxed);
    me.read_value.store(value);
    me.read_token.store(mine, std::memory_order_release);
    pause_inside(value ^ mine, shared.hold_us.load());
    shared.counter.store(value + 1);
    me.completed.store(section);

    auto expected = mine;
    if (!shared.occupant.compare_exchange_strong(expected, 0))
        record_violation(shared, failure_kind::occupant_overwritten, mine, expected);
}

} // namespace torture
