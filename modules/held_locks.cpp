// SPDX-License-Identifier: MIT
// The exit registry: the locks this process holds, released by an atexit handler at normal exit
// (docs/protocol.md 10), so that a process that forgets a lock does not leave it to a takeover.
module;
#include <algorithm>
#include <atomic>
#include <boost/asio/any_io_executor.hpp>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <gsl/gsl>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

module openlock;
import :lock_object;
import :protocol;
import :sys;

namespace openlock::detail {

// The registry is never destroyed, so static file_lock objects may release in any order during exit.
held_locks& held_locks::instance() {
    static held_locks* const registry = [] {
        auto* created = new held_locks;
        std::atexit([] { held_locks::instance().release_all(); });
        return created;
    }();
    return *registry;
}

std::uint64_t held_locks::add(std::filesystem::path const& lock_file, claim const& held) {
    std::lock_guard guard{mutex_};
    entries_.emplace_back(++last_id_, entry{lock_file, held});
    return last_id_;
}

void held_locks::remove(std::uint64_t id) {
    std::lock_guard guard{mutex_};
    std::erase_if(entries_, [id](auto const& item) { return item.first == id; });
}

namespace {
std::atomic<bool> exiting{false};
}

bool process_exiting() noexcept {
    return exiting.load();
}

void held_locks::release_all() {
    exiting.store(true);
    std::lock_guard guard{mutex_};
    auto const me = sys::current_pid();
    for (auto const& [id, item] : entries_) {
        failure ignored;
        // Waiters that rely on our ring (docs/protocol.md 8.6) would otherwise sleep until this process is
        // gone, which is later than this by whatever runs after us at exit.
        if (item.held.owner_pid == me && release_claim(item.lock_file, item.held, ignored) &&
            item.held.bell != 0)
            sys::ring_doorbell(item.lock_file, item.held.bell);
    }
    entries_.clear();
}

} // namespace openlock::detail
