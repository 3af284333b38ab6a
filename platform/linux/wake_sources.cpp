// SPDX-License-Identifier: MIT
// Event-driven waiting behind the :sys seam (Linux): what a waiter sleeps on, and how it sleeps.
//
// Why these syscalls: a waiter registers with the process's one inotify instance and epoll set (watcher.cpp)
// before its first look, so a release after that look is always queued; a holder's exit reaches it through
// a pidfd in that set, a holder's ring through its doorbell FIFO (doorbells.cpp). inotify only sees changes
// made through this kernel: on NFS, SMB, FUSE and other shared file systems (file_systems.cpp) other clients'
// changes are invisible, so there the waiter polls with backoff only. Polling stays as the safety net
// everywhere (queue overflow, a watch removed, no pidfd_open before Linux 5.3): nanosleep where there are no
// events. Blocking waiters take turns in epoll_wait, the one there handing what it reads to the others; of
// the asynchronous waiters one at a time (the pump) has the set itself in its Asio wait, the others wait for
// a kick. inotify wakes every waiter at every release; a waiter turns its directory events off only for a
// holder that names its doorbell and whose exit its pidfd watches (docs/protocol.md 8.6).
module;
#include "doorbells.hpp"
#include "watcher.hpp"

#include <array>
#include <boost/asio/deferred.hpp>
#include <boost/asio/experimental/parallel_group.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/system/system_error.hpp>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <ctime>
#include <filesystem>
#include <gsl/gsl>
#include <memory>
#include <mutex>
#include <poll.h>
#include <string>
#include <sys/epoll.h>
#include <unistd.h>
#include <utility>

module openlock;
import :sys;

namespace openlock::sys {
namespace {

using linux_events::waiter;
using linux_events::watcher;

// This process's watcher (linux_events::watcher::instance, told which process this is).
watcher& process_watcher() {
    return watcher::instance(current_pid());
}

} // namespace

void ring_doorbell(std::filesystem::path const& lock_file, std::uint64_t identity) noexcept {
    linux_doorbells::ring(lock_file, identity);
}

struct wake_sources::impl : waiter {};

wake_sources::wake_sources(std::filesystem::path const& lock_file, std::filesystem::path const& guard,
                           doorbell_use bell_use)
    : impl_(std::make_unique<impl>()) {
    auto& self = *impl_;
    auto directory = lock_file.parent_path();
    if (directory.empty()) directory = ".";
    self.directory = directory;
    self.lock_name = lock_file.filename().string();
    self.guard_name = guard.filename().string();
    self.owner_pid = current_pid();
    if (is_network_file_system(directory)) return;
    auto const bell = bell_use == doorbell_use::listen ? linux_doorbells::name_for(lock_file) : std::string{};
    auto& hub = process_watcher();
    std::lock_guard guard_hub{hub.mutex};
    if (!hub.usable()) return; // no events: sleep-polling
    hub.waiters.push_back(&self);
    self.events = true;
    if (!hub.add_watch(self)) self.watch_lost = true; // limits reached or no such directory: poll
    hub.listen_on_doorbell(self, bell);
}

wake_sources::~wake_sources() {
    auto& self = *impl_;
    // In a child after fork() the parent's waiter is left alone: the child's watcher never knew it.
    if (!self.events || self.owner_pid != current_pid()) return;
    auto& hub = process_watcher();
    std::lock_guard guard{hub.mutex};
    hub.remove_watch(self);
    hub.leave_doorbell(self);
    hub.stop_watching_holder(self);
    std::erase(hub.waiters, &self);
    std::erase(hub.sync_followers, &self);
}

void wake_sources::watch_holder(std::int64_t pid) {
    if (!impl_->events) return;
    auto& hub = process_watcher();
    std::lock_guard guard{hub.mutex};
    hub.watch_holder(*impl_, pid);
}

bool wake_sources::watches_directory() const noexcept {
    if (!impl_->events) return false;
    auto& hub = process_watcher();
    std::lock_guard guard{hub.mutex};
    return impl_->watch >= 0 && hub.usable();
}

bool wake_sources::watches_holder() const noexcept {
    if (!impl_->events) return false;
    auto& hub = process_watcher();
    std::lock_guard guard{hub.mutex};
    return impl_->holder >= 0;
}

std::uint64_t wake_sources::doorbell() const noexcept {
    return impl_->bell_identity;
}

void wake_sources::ring() noexcept {
    if (impl_->bell < 0) return;
    char const byte = 1;
    (void)!::write(impl_->bell, &byte, 1); // full (nobody has read for a long time): it is rung already
}

bool wake_sources::set_directory_events(directory_events setting) {
    bool const wanted = setting == directory_events::on;
    auto& self = *impl_;
    if (!self.events) return false;
    auto& hub = process_watcher();
    std::lock_guard guard{hub.mutex};
    if (self.watch_lost || wanted == (self.watch >= 0)) return false;
    if (!wanted) {
        hub.remove_watch(self);
        return false;
    }
    if (!hub.add_watch(self)) self.watch_lost = true; // limits reached: sleep-polling
    return true;
}

void wake_sources::drain() {
    auto& self = *impl_;
    if (!self.events) return;
    auto& hub = process_watcher();
    std::lock_guard guard{hub.mutex};
    hub.collect_now(); // what concerns other waiters goes to them
    self.woken = false;
    self.rung = false;
    // Bytes rung while the exclusive wake-up went to another process's set: this waiter looks next anyway.
    if (self.bell >= 0) linux_events::drain_descriptor(self.bell);
}

bool wake_sources::wait_for(std::chrono::nanoseconds timeout) {
    using clock = std::chrono::steady_clock;
    auto const until = clock::now() + timeout;
    auto& self = *impl_;
    auto sleep_until_deadline = [&] {
        auto const left = std::chrono::duration_cast<std::chrono::nanoseconds>(until - clock::now()).count();
        if (left <= 0) return;
        timespec const pause{static_cast<time_t>(left / 1'000'000'000),
                             static_cast<long>(left % 1'000'000'000)};
        ::nanosleep(&pause, nullptr);
    };
    if (!self.events) {
        sleep_until_deadline();
        return false;
    }
    auto& hub = process_watcher();
    std::unique_lock lock{hub.mutex};
    // Blocking waiters take turns in epoll_wait: the one there hands what it reads to the others; leaving, it
    // wakes a follower to take its place.
    auto const hand_over = gsl::finally([&hub] {
        if (!hub.sync_poller && !hub.sync_followers.empty()) hub.sync_followers.front()->wakeup.notify_one();
    });
    for (;;) {
        if (self.woken) {
            self.woken = false;
            self.rung = false;
            return true;
        }
        auto const left = std::chrono::duration_cast<std::chrono::nanoseconds>(until - clock::now()).count();
        if (left <= 0) return false;
        if (!hub.usable()) {
            lock.unlock();
            sleep_until_deadline();
            lock.lock();
            return false;
        }
        if (!hub.sync_poller) {
            hub.sync_poller = &self;
            lock.unlock();
            std::array<epoll_event, 16> events{};
            int const ready =
                linux_events::wait_in_set(hub.epoll, events.data(), static_cast<int>(events.size()), left);
            int const error = errno;
            lock.lock();
            hub.sync_poller = nullptr;
            // The set is unusable (closed under us by a program that closes every descriptor): sleep-polling
            // from now on, instead of returning at once to a waiter that would call again, a busy loop.
            if (ready < 0 && error != EINTR) hub.failed = true;
            if (ready > 0) hub.dispatch(events.data(), ready);
            continue;
        }
        hub.sync_followers.push_back(&self);
        self.wakeup.wait_until(lock, until);
        std::erase(hub.sync_followers, &self);
    }
}

boost::asio::awaitable<bool> wake_sources::async_wait_for(std::chrono::nanoseconds timeout) {
    namespace asio = boost::asio;
    using asio::experimental::make_parallel_group;
    using asio::experimental::wait_for_one;
    auto const executor = co_await asio::this_coro::executor;
    asio::steady_timer timer{executor, timeout};
    auto& self = *impl_;
    auto& hub = process_watcher();
    bool usable = self.events;
    if (usable) {
        std::lock_guard guard{hub.mutex};
        usable = hub.usable();
    }
    if (!usable) {
        co_await timer.async_wait(asio::use_awaitable); // cancellation ends it with an exception
        co_return false;
    }
    // Another thread that reads an event for us, while we are not the pump, cancels this timer through our
    // strand (the executor of the coroutine: a cancel posted there runs only after we suspended in the wait
    // it ends). The pump is woken through the set instead, and waits for no kick: one wait fewer per wake-up.
    auto const kicker = std::make_shared<asio::steady_timer>(executor, asio::steady_timer::time_point::max());
    {
        std::lock_guard guard{hub.mutex};
        self.kick = [kicker, executor] { asio::post(executor, [kicker] { kicker->cancel(); }); };
    }
    auto const leave = gsl::finally([&] {
        std::lock_guard guard{hub.mutex};
        self.kick = nullptr;
        if (hub.async_pump == &self) {
            // Another asynchronous waiter takes over listening to the set.
            hub.async_pump = nullptr;
            for (auto* other : hub.waiters)
                if (other->kick) {
                    other->kick();
                    break;
                }
        }
    });
    auto const take_woken = [&] {
        std::lock_guard guard{hub.mutex};
        bool const woken = std::exchange(self.woken, false);
        if (woken) self.rung = false;
        return woken;
    };
    for (;;) {
        // One asynchronous waiter at a time (the pump) has the set itself in its wait: the reactor watches
        // that one descriptor for every source of the process. The others wait for their kick.
        bool pumping = false;
        {
            std::lock_guard guard{hub.mutex};
            if (!hub.async_pump) hub.async_pump = &self;
            pumping = hub.async_pump == &self;
            if (pumping) {
                hub.collecting_for = &self;
                hub.collect_now(); // what came while nobody listened
                hub.collecting_for = nullptr;
            }
        }
        if (take_woken()) co_return true;
        bool timed_out = false;
        // A parallel group forwards every cancellation type (terminal, partial, total) to the waits
        // themselves.
        if (pumping) {
            // The set, borrowed: released, not closed, when the wait ends.
            asio::posix::stream_descriptor set{executor};
            auto const give_back = gsl::finally([&] {
                if (set.is_open()) set.release();
            });
            set.assign(hub.epoll);
            auto const [order, timer_error, set_error] =
                co_await make_parallel_group(
                    timer.async_wait(asio::deferred),
                    set.async_wait(asio::posix::stream_descriptor::wait_read, asio::deferred))
                    .async_wait(wait_for_one(), asio::use_awaitable);
            (void)timer_error;
            (void)set_error;
            timed_out = order[0] == 0;
        } else {
            auto const [order, timer_error, kick_error] =
                co_await make_parallel_group(timer.async_wait(asio::deferred),
                                             kicker->async_wait(asio::deferred))
                    .async_wait(wait_for_one(), asio::use_awaitable);
            (void)timer_error;
            (void)kick_error;
            timed_out = order[0] == 0;
        }
        auto const state = co_await asio::this_coro::cancellation_state;
        if (state.cancelled() != asio::cancellation_type::none) {
            // The reactor of a nested epoll set is not an exclusive listener: every asynchronous waiter
            // wakes at a ring, and this one, leaving, may have been the only one. Pass it on.
            bool rung = false;
            {
                std::lock_guard guard{hub.mutex};
                rung = std::exchange(self.rung, false);
                self.woken = false;
            }
            pollfd bell{self.bell, POLLIN, 0};
            if (rung || (self.bell >= 0 && ::poll(&bell, 1, 0) == 1)) ring();
            throw boost::system::system_error{asio::error::operation_aborted};
        }
        if (timed_out) co_return take_woken();
        // Only other waiters' events, or other names changed: keep waiting until the same deadline.
    }
}

} // namespace openlock::sys
