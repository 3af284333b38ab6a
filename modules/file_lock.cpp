// SPDX-License-Identifier: MIT
// The public API of file_lock (modules/file_lock.cppm) and what one lock object does for it: acquire through
// the gate and the acquisition loop, release, inspect. Leases: lease.cpp; async_acquire: async.cpp.
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

namespace {
bool acquire_blocking(file_lock::impl& lock, detail::deadline const& until, detail::failure& error);
} // namespace

file_lock::file_lock(std::filesystem::path lock_file) : file_lock(std::move(lock_file), std::nullopt) {}

file_lock::file_lock(std::filesystem::path lock_file, std::optional<duration> timeout, options settings)
    : impl_(std::make_shared<impl>()) {
    validate(settings);
    if (lock_file.empty()) throw invalid_option("the lock file path is empty");
    if (!lock_file.has_filename())
        throw invalid_option("the lock file path names a directory: " + lock_file.string());
    if (timeout && *timeout < duration::zero()) timeout = duration::zero();
    impl_->gate = detail::gate_for(lock_file);
    impl_->lock_file = std::move(lock_file);
    impl_->timeout = timeout;
    impl_->method = settings.method;
    impl_->lease = effective_lifetime(settings);
    impl_->settings = std::move(settings);
}

file_lock::~file_lock() {
    std::vector<std::pair<std::uint64_t, std::function<void()>>> waiting;
    {
        std::lock_guard guard{impl_->mutex};
        impl_->abandoned = true;
    }
    {
        std::lock_guard guard{impl_->gate->mutex};
        waiting.swap(impl_->gate->async_waiters); // our pending asynchronous acquires notice `abandoned`
    }
    for (auto& [ticket, wake] : waiting)
        wake();
    std::error_code ignored;
    if (owns_lock()) release(ignored);
}

void file_lock::acquire() {
    if (impl_->timeout) return acquire_for(*impl_->timeout);
    detail::failure error;
    if (!acquire_blocking(*impl_, std::nullopt, error)) detail::throw_failure(error);
}

void file_lock::acquire(std::error_code& error) noexcept {
    if (impl_->timeout) return acquire_for(*impl_->timeout, error);
    detail::into_error_code(
        error, [&](detail::failure& failure) { return acquire_blocking(*impl_, std::nullopt, failure); });
}

void file_lock::acquire_for(duration timeout) {
    detail::failure error;
    if (!acquire_blocking(*impl_, detail::deadline_after(timeout), error)) detail::throw_failure(error);
}

void file_lock::acquire_for(duration timeout, std::error_code& error) noexcept {
    detail::into_error_code(error, [&](detail::failure& failure) {
        return acquire_blocking(*impl_, detail::deadline_after(timeout), failure);
    });
}

bool file_lock::try_acquire_for(duration timeout) {
    detail::failure error;
    if (acquire_blocking(*impl_, detail::deadline_after(timeout), error)) return true;
    if (error.code == errc::timeout) return false;
    detail::throw_failure(error);
}

bool file_lock::try_acquire() {
    return try_acquire_for(duration::zero());
}

bool file_lock::try_acquire(std::error_code& error) noexcept {
    acquire_for(duration::zero(), error);
    if (error == errc::timeout) {
        error = {};
        return false;
    }
    return !error;
}

void file_lock::release() {
    detail::failure error;
    if (!impl_->release(error)) detail::throw_failure(error);
}

void file_lock::release(std::error_code& error) noexcept {
    detail::into_error_code(error, [&](detail::failure& failure) { return impl_->release(failure); });
}

void file_lock::unlock() noexcept {
    std::error_code error;
    release(error);
    if (!error || !impl_->settings.on_diagnostic) return;
    try {
        impl_->settings.on_diagnostic(
            {error == errc::not_locked ? diagnostic::kind::lock_lost : diagnostic::kind::release_failed,
             impl_->lock_file, error.message()});
    } catch (...) {
        // deliberately empty: a throwing callback must not end the process from a destructor
    }
}

std::uint64_t file_lock::token() const noexcept {
    std::lock_guard guard{impl_->mutex};
    return impl_->owned_here() ? impl_->held->token.value_or(0) : 0;
}

bool file_lock::locked() const {
    std::error_code error;
    bool const result = locked(error);
    if (error) throw lock_error(error, impl_->lock_file, "cannot read the lock file");
    return result;
}

bool file_lock::locked(std::error_code& error) const noexcept {
    bool result = false;
    detail::into_error_code(error, [&](detail::failure& failure) {
        detail::observation seen;
        if (!detail::observe(impl_->lock_file, seen, failure)) return false;
        result = seen.what == detail::observation::kind::invalid ||
                 seen.what == detail::observation::kind::unreadable ||
                 (seen.what == detail::observation::kind::held &&
                  !detail::breakable(detail::judge(seen, impl_->settings)));
        return true;
    });
    return result;
}

bool file_lock::owns_lock() const noexcept {
    std::lock_guard guard{impl_->mutex};
    return impl_->owned_here();
}

std::optional<lock_record> file_lock::owner() const {
    detail::observation seen;
    detail::failure failure;
    if (!detail::observe(impl_->lock_file, seen, failure)) detail::throw_failure(failure);
    if (seen.what != detail::observation::kind::held ||
        detail::breakable(detail::judge(seen, impl_->settings)))
        return std::nullopt;
    return seen.record;
}

std::optional<std::int64_t> file_lock::getpid() const {
    auto const holder = owner();
    if (!holder) return std::nullopt;
    return holder->pid;
}

std::filesystem::path const& file_lock::lock_file() const noexcept {
    return impl_->lock_file;
}
std::optional<file_lock::duration> file_lock::timeout() const noexcept {
    return impl_->timeout;
}
options const& file_lock::settings() const noexcept {
    return impl_->settings;
}

void file_lock::set_executor(boost::asio::any_io_executor executor) {
    std::lock_guard guard{impl_->mutex};
    impl_->executor = std::move(executor);
}

boost::asio::any_io_executor file_lock::get_executor() const {
    std::lock_guard guard{impl_->mutex};
    return impl_->executor;
}

namespace {

bool acquire_blocking(file_lock::impl& lock, detail::deadline const& until, detail::failure& error) {
    if (!lock.enter_gate(until, error)) return false;
    // Every way out but success leaves the gate, exceptions (bad_alloc, a failing getrandom) included.
    bool acquired = false;
    auto const leave = gsl::finally([&] {
        if (!acquired) lock.leave_gate();
    });
    detail::acquisition attempt{lock, until};
    for (;;) {
        switch (attempt.step(error)) {
        case detail::acquisition::next::acquired:
            acquired = true;
            return true;
        case detail::acquisition::next::failed:
            return false;
        case detail::acquisition::next::wait:
            if (attempt.events_may_end_pause()) {
                if (attempt.wake().wait_for(attempt.pause())) attempt.woken_by_event();
            } else
                std::this_thread::sleep_for(attempt.pause());
            break;
        }
    }
}

} // namespace

bool file_lock::impl::owned_here() const {
    return held && held->owner_pid == sys::current_pid();
}

void file_lock::impl::hold(detail::claim const& claimed) {
    std::lock_guard guard{mutex};
    held = claimed;
    lost = false;
    if (claimed.lifetime)
        lease_end = claimed.acquired +
                    std::chrono::duration_cast<std::chrono::system_clock::duration>(*claimed.lifetime);
    registration = detail::held_locks::instance().add(lock_file, claimed);
    if (settings.keep_alive && claimed.lifetime) start_keeper();
}

std::uint64_t file_lock::impl::doorbell() const {
    return gate->wake && gate->wake_pid == sys::current_pid() ? gate->wake->doorbell() : 0;
}

bool file_lock::impl::may_stage() {
    return !settings.fencing && local && detail::stageable(method, *local, {lifetime(), std::nullopt});
}

bool file_lock::impl::release(detail::failure& error) {
    std::optional<detail::claim> releasing;
    {
        std::lock_guard guard{mutex};
        if (!owned_here()) {
            error = {errc::invalid_release, lock_file, {}};
            return false;
        }
        releasing = held;
        detail::held_locks::instance().remove(registration);
    }
    stop_keeper();
    bool const released = detail::release_claim(lock_file, *releasing, error);
    if (!released && error.code != errc::not_locked) {
        // The file could not be removed (or checked): it is still ours, and so is the duty to remove it. Keep
        // holding, so that release() can be tried again and the exit handler tries at the end.
        std::lock_guard guard{mutex};
        registration = detail::held_locks::instance().add(lock_file, *releasing);
        if (settings.keep_alive && releasing->lifetime) start_keeper();
        return false;
    }
    // Our record named the doorbell: its listeners rely on this ring (docs/protocol.md 8.6).
    bool const contended = gate->wake && gate->wake_pid == sys::current_pid();
    if (contended) gate->wake->ring();
    // Behind a contended release the descriptor that pinned the removed inode is closed by the next acquire
    // on this path (or with its last object): the close frees the inode, file system work that would
    // otherwise delay the woken waiter (below). Nothing needs the pin once the name is gone (the inode proved
    // ownership only while held, docs/protocol.md 4.4), so an uncontended release, where nobody waits to be
    // delayed, closes it now with the claim: a released object keeps no descriptor. So does a release where a
    // removed name stays until the last handle closes (Windows).
    if (contended && sys::removed_name_vanishes_while_open()) gate->retired = std::move(releasing->pin);
    if (contended) {
        // The waiter just woken tends to be queued on this CPU (the scheduler expects the waker to block
        // soon): let it run first, then stage our next claim (so that taking the lock straight back is one
        // link, as for a woken waiter). Measured in bench/handoff (docs/protocol.md 8.5).
        std::this_thread::yield();
        if (!abandoned && may_stage()) detail::stage_claim(lock_file, gate->staged, doorbell());
    }
    leave_gate();
    return released;
}

} // namespace openlock
