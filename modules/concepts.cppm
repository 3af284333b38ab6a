// SPDX-License-Identifier: MIT
// :concepts — what generic code may ask of any lock of this library, whatever holds it: file_lock (a lock
// file) and openlock.etcd's etcd_lock (etcd) both satisfy cross_process_lock.
module;
#include <chrono>
#include <concepts>
#include <cstdint>
#include <optional>
#include <system_error>

export module openlock:concepts;
import :record;

export namespace openlock {

/// A lock across processes with file_lock's vocabulary: TimedLockable (std::unique_lock, std::scoped_lock),
/// acquire/try_acquire/release in their throwing and error_code forms, the holder's record, a fencing token
/// (0 when not held or not fenced), the lease's refresh and end, and still_held() (asks the lock's store).
/// Contention is a value (try_acquire, try_lock); everything else that fails throws a lock_error or sets the
/// error_code.
template <class Lock>
concept cross_process_lock =
    requires(Lock& lock, Lock const& view, std::error_code& error, std::chrono::milliseconds timeout,
             std::chrono::steady_clock::time_point deadline) {
        lock.acquire();
        lock.acquire(timeout);
        lock.acquire(error);
        lock.acquire(timeout, error);
        { lock.try_acquire() } -> std::same_as<bool>;
        { lock.try_acquire(error) } -> std::same_as<bool>;
        lock.release();
        lock.release(error);
        { view.locked() } -> std::same_as<bool>;
        { view.owns_lock() } -> std::same_as<bool>;
        { view.owner() } -> std::same_as<std::optional<lock_record>>;
        { view.token() } -> std::same_as<std::uint64_t>;
        lock.refresh();
        { view.expiration() } -> std::same_as<std::optional<std::chrono::system_clock::time_point>>;
        { view.still_held() } -> std::same_as<bool>;
        lock.lock();
        { lock.try_lock() } -> std::same_as<bool>;
        lock.unlock();
        { lock.try_lock_for(timeout) } -> std::same_as<bool>;
        { lock.try_lock_until(deadline) } -> std::same_as<bool>;
    };

} // namespace openlock
