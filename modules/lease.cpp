// SPDX-License-Identifier: MIT
// Leases on a file_lock (docs/protocol.md 11): refresh, expiration, lifetime, state, still_held, and the
// keep-alive thread that refreshes a held lease.
module;
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <mutex>
#include <optional>
#include <stop_token>
#include <string>
#include <system_error>
#include <thread>

module openlock;
import :lock_object;
import :protocol;
import :sys;

namespace openlock {
namespace {

// A breaker holds the guard for microseconds on a local disk and milliseconds on NFS; a refresh waits that
// long before it reports the lock as being broken.
constexpr int refresh_attempts = 20;
constexpr auto refresh_retry_pause = std::chrono::milliseconds{5};

detail::refresh_result refresh_once(file_lock::impl& lock, detail::claim const& held,
                                    file_lock::duration lifetime,
                                    std::chrono::system_clock::time_point& new_end, detail::failure& error) {
    auto result = detail::refresh_result::busy;
    for (int attempt = 0; attempt < refresh_attempts && result == detail::refresh_result::busy; ++attempt) {
        if (attempt > 0) std::this_thread::sleep_for(refresh_retry_pause);
        result = detail::refresh_claim(lock.lock_file, held, lifetime, lock.settings, new_end, error);
    }
    return result;
}

// Called with the lock held; takes the claim and the lifetime a refresh needs, or says why there is none.
bool refreshable(file_lock::impl& lock, detail::claim& held, file_lock::duration& lifetime,
                 detail::failure& error) {
    if (!lock.owned_here()) {
        error = {errc::invalid_release, lock.lock_file, "refresh needs the lock held by this object"};
        return false;
    }
    if (!lock.held->lifetime) {
        error = {errc::invalid_option, lock.lock_file, "the lock was acquired without a lifetime (no lease)"};
        return false;
    }
    held = *lock.held;
    lifetime = lock.lease.value_or(*lock.held->lifetime);
    return true;
}

bool refresh_held(file_lock::impl& lock, detail::failure& error) {
    detail::claim held;
    file_lock::duration lifetime{};
    {
        std::lock_guard guard{lock.mutex};
        if (!refreshable(lock, held, lifetime, error)) return false;
    }
    std::chrono::system_clock::time_point new_end;
    switch (refresh_once(lock, held, lifetime, new_end, error)) {
    case detail::refresh_result::refreshed: {
        std::lock_guard guard{lock.mutex};
        if (lock.held && lock.held->nonce == held.nonce) lock.lease_end = new_end;
        return true;
    }
    case detail::refresh_result::lost: {
        // Not ours any more: forget it as release() would, without touching the file that is there now.
        detail::failure release_error;
        lock.release(release_error);
        return false;
    }
    case detail::refresh_result::busy:
    case detail::refresh_result::failed:
        return false;
    }
    return false;
}

} // namespace

file_lock::impl::~impl() {
    if (keeper.joinable() && keeper_pid != sys::current_pid()) keeper.detach(); // a fork()ed copy: no thread
}

std::optional<file_lock::duration> file_lock::impl::lifetime() {
    std::lock_guard guard{mutex};
    return lease;
}

void file_lock::impl::start_keeper() {
    // Called with `mutex` held: the new thread waits for it before it looks at `held`.
    if (keeper.joinable()) keeper.detach(); // only after fork(): a live keeper is always stopped on release
    keeper_pid = sys::current_pid();
    keeper = std::jthread{[this](std::stop_token const& stop) { keep_alive(stop); }};
}

void file_lock::impl::stop_keeper() {
    if (!keeper.joinable() || keeper_pid != sys::current_pid()) return;
    keeper.request_stop();
    if (keeper.get_id() == std::this_thread::get_id())
        keeper.detach(); // release() from on_lost: the loop ends by itself
    else
        keeper.join();
}

void file_lock::impl::keep_alive(std::stop_token const& stop) {
    std::unique_lock guard{mutex};
    auto pause = lease.value_or(held ? held->lifetime.value_or(duration{}) : duration{}) / 3;
    for (;;) {
        keeper_wakeup.wait_for(guard, stop, pause, [] { return false; });
        if (stop.stop_requested()) return;
        detail::claim claimed;
        duration lifetime{};
        detail::failure error;
        if (!refreshable(*this, claimed, lifetime, error)) return;
        guard.unlock();
        std::chrono::system_clock::time_point new_end;
        auto const result = refresh_once(*this, claimed, lifetime, new_end, error);
        guard.lock();
        if (stop.stop_requested()) return; // released meanwhile: whatever the refresh saw is moot
        switch (result) {
        case detail::refresh_result::refreshed:
            lease_end = new_end;
            pause = lifetime / 3;
            break;
        case detail::refresh_result::busy:
        case detail::refresh_result::failed:
            // Try again soon; the lease still runs for a while (two thirds of it at the first miss).
            pause = std::max(duration{std::chrono::milliseconds{10}}, lifetime / 30);
            break;
        case detail::refresh_result::lost: {
            lost = true;
            if (detail::process_exiting()) return; // the exit handler released it: nothing was lost
            auto const on_lost = settings.on_lost;
            auto const on_diagnostic = settings.on_diagnostic;
            guard.unlock();
            if (on_diagnostic)
                on_diagnostic({diagnostic::kind::lock_lost, lock_file,
                               "the lock was broken or replaced while held (" + error.detail + ")"});
            if (on_lost) on_lost(lock_file);
            return;
        }
        }
    }
}

void file_lock::refresh() {
    detail::failure error;
    if (!refresh_held(*impl_, error)) detail::throw_failure(error);
}

void file_lock::refresh(std::error_code& error) noexcept {
    detail::into_error_code(error, [&](detail::failure& failure) { return refresh_held(*impl_, failure); });
}

std::optional<std::chrono::system_clock::time_point> file_lock::expiration() const {
    auto const status = inspect(impl_->lock_file, impl_->settings);
    return status.record ? status.expires : std::nullopt;
}

std::optional<file_lock::duration> file_lock::lifetime() const {
    return impl_->lifetime();
}

void file_lock::lifetime(std::optional<duration> new_lifetime) {
    auto candidate = impl_->settings;
    candidate.lifetime = new_lifetime;
    candidate.keep_alive = false; // keep_alive without a lifetime only means "nothing to keep alive"
    validate(candidate);
    std::lock_guard guard{impl_->mutex};
    impl_->lease = effective_lifetime(candidate); // flufl's format always has a lease
}

lock_state file_lock::state() const {
    return inspect(impl_->lock_file, impl_->settings).state;
}

lock_state file_lock::state(std::error_code& error) const noexcept {
    return inspect(impl_->lock_file, impl_->settings, error).state;
}

bool file_lock::still_held() const {
    std::error_code error;
    bool const held = still_held(error);
    if (error) throw lock_error(error, impl_->lock_file, "cannot check the lock file");
    return held;
}

bool file_lock::still_held(std::error_code& error) const noexcept {
    bool result = false;
    detail::into_error_code(error, [&](detail::failure& failure) {
        detail::claim held;
        {
            std::lock_guard guard{impl_->mutex};
            if (!impl_->owned_here() || impl_->lost) return true;
            held = *impl_->held;
        }
        result = detail::still_ours(impl_->lock_file, held, failure);
        return !failure.code;
    });
    return result;
}

} // namespace openlock
