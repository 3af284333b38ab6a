// SPDX-License-Identifier: MIT
// :lock_impl — what one etcd_lock keeps, and the steps of the Mutex recipe. Internal: nothing here is
// exported. Defined in: lock.cpp (the public members: throwing and error_code forms), recipe.cpp (claim,
// wait, release, looks at the lock), keeper.cpp (the object's gate, keep-alive, refresh).
module;
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <optional>
#include <stop_token>
#include <string>
#include <thread>
#include <utility>

module openlock.etcd:lock_impl;
import openlock;
import :client;
import :lock;

namespace openlock::etcd_detail {

/// How long one request may take on one endpoint before the next is tried: long enough for a member that is
/// electing a leader (etcd's default election timeout is 1 s), short enough that a dead one costs little.
inline constexpr std::chrono::seconds request_timeout{5};

/// This process's id (a lock object copied into a child by fork() holds nothing there).
[[nodiscard]] std::int64_t current_pid() noexcept;

/// Throws the exception type that matches failure.code, naming the URL as its path.
[[noreturn]] void throw_failure(failure const& what, std::string const& url);

/// Calls a user's callback (on_diagnostic, on_lost) where a throw must not escape (a destructor, unlock(),
/// the keep-alive thread): false when it threw.
template <class Call>
bool call_guarded(Call&& call) noexcept {
    try {
        std::forward<Call>(call)();
        return true;
    } catch (...) {
        return false;
    }
}

/// One key of the lock's range as the server showed it.
struct holder_key {
    std::string key;
    std::string value;
    std::int64_t create_revision = 0;
    std::int64_t lease = 0;
};

} // namespace openlock::etcd_detail

namespace openlock {

struct etcd_lock::impl {
    impl(std::string url, std::optional<duration> timeout, options settings);
    impl(impl const&) = delete;
    impl& operator=(impl const&) = delete;
    ~impl();

    std::string url;
    etcd_detail::location where;
    std::string prefix; ///< "<name>/": every key of this lock starts with it
    std::optional<duration> timeout;
    options settings;
    std::chrono::seconds ttl;    ///< the lease every acquisition asks for
    bool keep_alive_held = true; ///< a keep-alive thread renews the lease while the lock is held
    mutable etcd_detail::client client;

    // The object's gate: threads that share one object take turns, as with a timed mutex.
    std::mutex gate_mutex;
    std::condition_variable gate_opened;
    bool busy = false;
    std::thread::id holder_thread; ///< the thread that entered the gate

    mutable std::mutex mutex; ///< guards what follows (the keep-alive thread reads and writes it too)
    bool held = false;
    bool lost = false;         ///< keep-alive found the lease gone or the key deleted
    std::int64_t lease = 0;    ///< of the held lock
    std::string key;           ///< "<name>/<lease hex>" of the held lock
    std::int64_t revision = 0; ///< its create_revision: token()
    std::chrono::seconds granted{0};
    etcd_detail::clock::time_point
        lease_end; ///< as last renewed (our clock, counted from before the request)

    std::condition_variable_any keeper_wakeup; ///< declared before keeper: it outlives the thread
    std::jthread keeper;
    std::int64_t keeper_pid = 0; ///< a keeper copied into a child by fork() has no thread there

    /// The process that holds the lock (0: none). Read without `mutex`: a child after fork() must not touch a
    /// mutex that a thread of its parent (the keep-alive) may have held at the fork, and it holds nothing.
    std::atomic<std::int64_t> owner_pid{0};
    [[nodiscard]] bool held_by_this_process() const noexcept {
        return owner_pid.load() == etcd_detail::current_pid();
    }
    /// Held by this object in this process (call with `mutex` held, after held_by_this_process()).
    [[nodiscard]] bool held_here() const { return held && held_by_this_process(); }
    /// `mutex`, taken, when this object holds the lock in this process; otherwise an empty lock and
    /// invalid_release in `error` (a child after fork() returns before it touches `mutex`).
    [[nodiscard]] std::unique_lock<std::mutex> lock_if_held(etcd_detail::failure& error);

    /// Enters the gate by `until` (already_locked when this thread is in it; timeout after `until`).
    bool enter_gate(etcd_detail::clock::time_point until, etcd_detail::failure& error);
    void leave_gate();

    /// The recipe: true when held; false with error clear on contention (try once), set on failure.
    bool acquire(etcd_detail::clock::time_point until, bool once, etcd_detail::failure& error);
    bool release(etcd_detail::failure& error);
    /// The key that holds the lock (lowest create_revision), if any.
    std::optional<etcd_detail::holder_key> first_key(etcd_detail::failure& error,
                                                     etcd_detail::clock::time_point until = {}) const;
    /// Whether our key is still there with our create_revision.
    bool key_is_ours(etcd_detail::failure& error) const;
    /// Revokes a lease (its keys go with it); an already expired one counts as revoked.
    bool revoke(std::int64_t id, etcd_detail::clock::time_point until, etcd_detail::failure& error);
    /// One keep-alive of `id`: the TTL the server granted, 0 when the lease is gone.
    std::optional<std::int64_t> renew(std::int64_t id, etcd_detail::clock::time_point until,
                                      etcd_detail::failure& error);

    void start_keeper();
    void stop_keeper();
    void keep_alive(std::stop_token const& stop);
    bool refresh(etcd_detail::failure& error);
    void report_lost(std::string const& why);
};

} // namespace openlock
