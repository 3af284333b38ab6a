// SPDX-License-Identifier: MIT
// The end of a run: one more holder killed while holding, the supervisor's own takeover, the lock directory
// that must be empty (documented clutter told apart), and the exact count of counter increments.
#include "supervisor.hpp"

#include "report.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <sys/wait.h>
#include <system_error>
#include <thread>

import openlock;

namespace torture::detail {

using namespace std::chrono_literals;

// One more holder that is killed while holding, then our own acquire must take the lock over and leave a
// directory with nothing in it: no lock file, no claim files, no takeover guard or staging directory.
void supervisor::finish() {
    auto const hold = final_holder_slot();
    spawn(hold, true);
    auto& s = shared_->slots[hold];
    auto const give_up = monotonic_ns() + 25'000'000'000;
    while (s.holding.load() == 0 && monotonic_ns() < give_up) {
        int status = 0;
        if (::waitpid(s.pid.load(), &status, WNOHANG) > 0) {
            s.pid.store(0);
            break;
        }
        std::this_thread::sleep_for(1ms);
    }
    if (s.holding.load() == 0) {
        result_.final_acquire_failed = true;
        result_.known_final = !known_stall().empty();
        std::printf("  LEAKED LOCK: a fresh process could not take the lock after all workers were killed\n");
        if (s.pid.load() > 0) send_kill(hold);
    } else {
        send_kill(hold);
    }
    if (s.pid.load() > 0) ::waitpid(s.pid.load(), nullptr, 0);
    s.pid.store(0);

    if (!result_.final_acquire_failed) {
        auto settings = openlock::get_defaults();
        settings.method = config_.method == "hard_link"          ? openlock::claim_method::hard_link
                          : config_.method == "exclusive_create" ? openlock::claim_method::exclusive_create
                                                                 : openlock::claim_method::anonymous_link;
        openlock::file_lock lock{lock_file(), std::nullopt, settings};
        std::error_code error;
        lock.acquire(20s, error);
        if (error) {
            result_.final_acquire_failed = true;
            result_.known_final = !known_stall().empty();
            std::printf("  LEAKED LOCK: the final acquire after killing the last holder failed: %s\n",
                        error.message().c_str());
        } else {
            auto& own = shared_->slots[own_slot()];
            own.generation.store(1);
            own.acquisitions.fetch_add(1);
            critical_section(*shared_, own_slot(), 1, monotonic_ns());
            lock.release(error);
            if (error) std::printf("  final release failed: %s\n", error.message().c_str());
        }
    }
    auto const leftovers = describe_directory(lock_directory());
    count_leftovers();
    if (result_.final_acquire_failed || !leftovers.empty()) {
        if (result_.known_leftovers != 0)
            std::printf("  %zu of %zu leftovers are documented clutter (empty claim files or staging "
                        "directories, docs/protocol.md R1)\n",
                        result_.known_leftovers, result_.leftovers);
        std::printf("  %s in %s (seed %llu, method %s, faults %s):\n",
                    leftovers.empty() ? "directory" : "LEFTOVERS", lock_directory().c_str(),
                    static_cast<unsigned long long>(config_.seed), config_.method.c_str(),
                    faults_text().c_str());
        for (std::size_t i = 0; i < leftovers.size() && i < 20; ++i)
            std::printf("    %s\n", leftovers[i].c_str());
        if (leftovers.size() > 20) std::printf("    ... and %zu more\n", leftovers.size() - 20);
    }
}

bool supervisor::is_nonce(std::string_view text) {
    return text.size() == 32 && text.find_first_not_of("0123456789abcdef") == std::string_view::npos;
}

// Documented clutter (docs/protocol.md R1): an empty claim file, or a staging directory that is empty or
// holds only its owner's empty file. Such names cannot be attributed to a process, so no sweep removes
// them.
bool supervisor::is_documented_clutter(fs::directory_entry const& entry) {
    std::error_code error;
    auto const name = entry.path().filename().string();
    constexpr std::string_view claim = "torture.lock.claim.";
    constexpr std::string_view staging = "torture.lock.takeover.";
    if (name.starts_with(claim) && is_nonce(std::string_view{name}.substr(claim.size())))
        return entry.is_regular_file(error) && entry.file_size(error) == 0;
    if (!name.starts_with(staging) || !is_nonce(std::string_view{name}.substr(staging.size())) ||
        !entry.is_directory(error))
        return false;
    std::vector<fs::directory_entry> inside{fs::directory_iterator{entry.path(), error}, {}};
    return inside.empty() ||
           (inside.size() == 1 && inside.front().path().filename() == name.substr(staging.size()) &&
            inside.front().is_regular_file(error) && inside.front().file_size(error) == 0);
}

void supervisor::count_leftovers() {
    std::error_code error;
    for (auto const& entry : fs::directory_iterator{lock_directory(), error}) {
        ++result_.leftovers;
        bool const empty_lock_file = result_.known_final && entry.path() == lock_file();
        if (empty_lock_file || is_documented_clutter(entry)) ++result_.known_leftovers;
    }
}

// Every increment of the counter is either a completed critical section or one whose holder was killed
// after writing it (README.md): anything else is a lost or a phantom update.
void supervisor::check_count() {
    std::uint64_t completed = 0;
    for (auto const& s : shared_->slots)
        completed += s.completed.load();
    std::uint64_t killed_after_write = 0;
    for (auto const& s : shared_->slots)
        killed_after_write += s.resolution.load() & 0xffff;
    auto const expected = completed + killed_after_write;
    auto const counter = shared_->counter.load();
    bool const last_unresolved = result_.stalled && shared_->occupant.load() != 0;
    if (counter == expected || (last_unresolved && counter == expected + 1)) return;
    ++result_.violations;
    std::printf("  VIOLATION: counter %llu, but %llu sections completed and %llu killed after writing\n",
                static_cast<unsigned long long>(counter), static_cast<unsigned long long>(completed),
                static_cast<unsigned long long>(killed_after_write));
}

void supervisor::report_violation() {
    static char const* const kinds[] = {"none", "overlap: the previous occupant was alive",
                                        "our token was overwritten while inside",
                                        "the counter moved under a dead holder's section"};
    auto const mine = shared_->failure_token_mine.load();
    auto const other = shared_->failure_token_other.load();
    std::printf("  VIOLATION (%llu in all; seed %llu, method %s, faults %s): %s; holder slot %u gen %u "
                "section %u, other slot %u gen %u section %u\n",
                static_cast<unsigned long long>(shared_->violations.load()),
                static_cast<unsigned long long>(config_.seed), config_.method.c_str(), faults_text().c_str(),
                kinds[std::min<std::uint32_t>(shared_->first_failure.load(), 3)], slot_of(mine),
                generation_of(mine), section_of(mine), slot_of(other), generation_of(other),
                section_of(other));
}

} // namespace torture::detail
