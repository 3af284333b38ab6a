// SPDX-License-Identifier: MIT
// The in-process gate (docs/protocol.md 9.1): every file_lock object of this process on one lock path passes
// it, so that only one of them at a time acquires or holds the file; threads and coroutines wait here.
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

namespace openlock {

namespace detail {
namespace {
void forget_parent(path_gate& gate);
void occupy(path_gate& gate, std::thread::id thread, void const* object);
} // namespace
} // namespace detail

bool file_lock::impl::enter_gate(detail::deadline const& until, detail::failure& error) {
    std::unique_lock guard{gate->mutex};
    detail::forget_parent(*gate);
    if (gate->busy && gate->holder_thread == std::this_thread::get_id() && gate->holder_object == this) {
        error = {errc::already_locked, lock_file, {}};
        return false;
    }
    auto const open = [this] { return !gate->busy; };
    if (!until) {
        gate->opened.wait(guard, open);
    } else if (!gate->opened.wait_until(guard, *until, open)) {
        error = {errc::timeout, lock_file,
                 "another thread or lock object of this process (pid " + std::to_string(sys::current_pid()) +
                     ")"};
        return false;
    }
    detail::occupy(*gate, std::this_thread::get_id(), this);
    return true;
}

bool file_lock::impl::try_enter_gate(std::function<void()> wake, std::uint64_t& ticket) {
    std::lock_guard guard{gate->mutex};
    detail::forget_parent(*gate);
    if (!gate->busy) {
        detail::occupy(*gate, {}, this);
        return true;
    }
    ticket = ++gate->last_ticket;
    gate->async_waiters.emplace_back(ticket, std::move(wake));
    return false;
}

void file_lock::impl::forget_gate_waiter(std::uint64_t ticket) {
    std::function<void()> next;
    {
        std::lock_guard guard{gate->mutex};
        auto const removed = std::erase_if(gate->async_waiters,
                                           [ticket](auto const& waiter) { return waiter.first == ticket; });
        // Not registered any more: we were woken and give up without entering. Pass the wake-up on.
        if (removed == 0 && !gate->busy && !gate->async_waiters.empty()) {
            next = std::move(gate->async_waiters.front().second);
            gate->async_waiters.erase(gate->async_waiters.begin());
        }
    }
    if (next) next();
}

void file_lock::impl::leave_gate() {
    {
        std::lock_guard guard{mutex};
        held.reset();
    }
    std::function<void()> next;
    {
        std::lock_guard guard{gate->mutex};
        gate->busy = false;
        gate->holder_thread = {};
        gate->holder_object = nullptr;
        if (!gate->async_waiters.empty()) { // wake one, first come first served; see forget_gate_waiter
            next = std::move(gate->async_waiters.front().second);
            gate->async_waiters.erase(gate->async_waiters.begin());
        }
    }
    gate->opened.notify_one();
    if (next) next();
}

namespace detail {

std::shared_ptr<path_gate> gate_for(std::filesystem::path const& lock_file) {
    static std::mutex registry_mutex;
    static auto* const registry = new std::vector<std::pair<std::filesystem::path, std::weak_ptr<path_gate>>>;
    std::error_code ignored;
    auto key = std::filesystem::absolute(lock_file, ignored).lexically_normal();
    std::lock_guard guard{registry_mutex};
    std::erase_if(*registry, [](auto const& entry) { return entry.second.expired(); });
    for (auto const& [path, gate] : *registry)
        if (path == key) return gate.lock();
    auto gate = std::make_shared<path_gate>();
    registry->emplace_back(std::move(key), gate);
    return gate;
}

namespace {

// A gate copied into a child by fork() belongs to the parent's threads: the child starts with it open.
void forget_parent(path_gate& gate) {
    if (gate.busy && gate.owner_pid != sys::current_pid()) {
        gate.busy = false;
        gate.async_waiters.clear();
    }
}

void occupy(path_gate& gate, std::thread::id thread, void const* object) {
    gate.busy = true;
    gate.holder_thread = thread;
    gate.holder_object = object;
    gate.owner_pid = sys::current_pid();
}

} // namespace
} // namespace detail
} // namespace openlock
