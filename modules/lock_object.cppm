// SPDX-License-Identifier: MIT
// :lock_object — what one file_lock object keeps, and the protocol loop as a step machine that the blocking
// (file_lock.cpp) and the asynchronous (async.cpp) paths both drive. Internal: nothing here is exported.
// Defined in: acquisition.cpp (acquisition, backoff, deadlines), path_gate.cpp (path_gate, the impl's gate
// functions), held_locks.cpp (held_locks), file_lock.cpp (hold, release), lease.cpp (keep-alive).
module;
#include <atomic>
#include <boost/asio/any_io_executor.hpp>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <stop_token>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

module openlock:lock_object;
import :errors;
import :file_lock;
import :options;
import :protocol;
import :sys;

namespace openlock::detail {

using clock = std::chrono::steady_clock;
using deadline = std::optional<clock::time_point>;

/// now + timeout, or none when that does not fit (waits that long are forever).
deadline deadline_after(std::chrono::nanoseconds timeout);
bool expired(deadline const& until);
/// min(pause, time left), never negative: a pause that ends no later than the deadline.
std::chrono::nanoseconds capped_to_deadline(std::chrono::nanoseconds pause, deadline const& until);

/// Jittered exponential backoff from about a millisecond up to retry_period.
class backoff {
public:
    explicit backoff(std::chrono::nanoseconds longest);
    std::chrono::nanoseconds next();
    void restart();

private:
    std::chrono::nanoseconds longest_;
    std::chrono::nanoseconds next_;
};

/// Locks this process holds, released by an atexit handler at normal exit.
class held_locks {
public:
    static held_locks& instance();
    std::uint64_t add(std::filesystem::path const& lock_file, claim const& held);
    void remove(std::uint64_t id);

private:
    void release_all();
    struct entry {
        std::filesystem::path lock_file;
        claim held;
    };
    std::mutex mutex_;
    std::vector<std::pair<std::uint64_t, entry>> entries_;
    std::uint64_t last_id_ = 0;
};

/// Runs a fallible operation for a non-throwing overload: its failure's code, or the code of what it threw.
template <class Operation>
void into_error_code(std::error_code& error, Operation&& operation) noexcept {
    try {
        failure failed;
        error = {};
        if (!operation(failed)) error = failed.code;
    } catch (std::system_error const& e) {
        error = e.code();
    } catch (...) {
        error = std::make_error_code(std::errc::not_enough_memory);
    }
}

/// True once the exit handler has begun releasing this process's locks.
bool process_exiting() noexcept;

/// The in-process gate of one lock path: every file_lock object of this process on that path passes it, so
/// that only one of them at a time acquires or holds the file (threads wait here, not on the file system).
struct path_gate {
    std::mutex mutex;
    std::condition_variable opened;
    std::vector<std::pair<std::uint64_t, std::function<void()>>> async_waiters; ///< called once when it opens
    std::uint64_t last_ticket = 0;
    bool busy = false;
    std::thread::id holder_thread; ///< empty for an asynchronous holder
    void const* holder_object = nullptr;
    std::int64_t owner_pid = 0; ///< a gate copied into a child by fork() is not the child's
    /// Made at the first contention on this path and kept (only the gate's holder uses it): an uncontended
    /// acquire never pays for a directory watch, and a watch is not made and torn down per acquire.
    std::unique_ptr<sys::wake_sources> wake;
    std::int64_t wake_pid = 0; ///< after fork() the child makes its own (a shared inotify queue loses events)
    /// Where claims may be staged on a path this process waits on: a nameless claim file with its record,
    /// made before each wait, so that the next claim is only its link (docs/protocol.md 8.5). Only the gate's
    /// holder uses it.
    staged_claim staged;
    /// The last released lock file's descriptor, closed at the next acquire on this path (or with the gate):
    /// the close frees the unlinked inode, file system work that would otherwise run on the releasing CPU
    /// just as the woken waiter is placed there (docs/protocol.md 8.5). Only the gate's holder uses it.
    sys::pinned_file retired;
};

/// The gate of a lock path (spelled as an absolute, lexically normal path), shared while any object uses it.
std::shared_ptr<path_gate> gate_for(std::filesystem::path const& lock_file);

} // namespace openlock::detail

namespace openlock {

struct file_lock::impl {
    std::filesystem::path lock_file;
    std::optional<duration> timeout;
    options settings;
    boost::asio::any_io_executor executor;

    std::shared_ptr<detail::path_gate> gate;
    std::mutex mutex; ///< guards what follows
    /// The file_lock is being destroyed: pending asynchronous acquires give up.
    std::atomic<bool> abandoned{false};
    std::optional<detail::claim> held;
    std::uint64_t registration = 0;
    claim_method method = claim_method::automatic; ///< resolved at the first acquire
    std::optional<bool> local;     ///< the directory is on a local file system (first acquire)
    std::optional<duration> lease; ///< the lifetime of the next acquisition and refresh
    std::chrono::system_clock::time_point lease_end; ///< of the held lock, when it has a lease
    bool lost = false;                               ///< keep-alive found the held lock broken or replaced

    // Keep-alive (modules/lease.cpp): a thread per held lock with keep_alive set, stopped before release.
    std::jthread keeper;
    std::int64_t keeper_pid = 0; ///< a keeper copied into a child by fork() has no thread there
    std::condition_variable_any keeper_wakeup;

    impl() = default;
    impl(impl const&) = delete;
    impl& operator=(impl const&) = delete;
    ~impl();

    bool owned_here() const;
    /// Blocks until the path's gate is free (already_locked if this thread holds it; timeout at the
    /// deadline).
    bool enter_gate(detail::deadline const& until, detail::failure& error);
    /// Takes the gate if it is free; otherwise registers `wake` to be called once when it opens, under
    /// `ticket`.
    bool try_enter_gate(std::function<void()> wake, std::uint64_t& ticket);
    /// Withdraws a registration (a waiter that gives up must, so that nothing calls into its executor later).
    void forget_gate_waiter(std::uint64_t ticket);
    void leave_gate();
    /// Records a successful claim (and starts keep-alive when asked to).
    void hold(detail::claim const& claimed);
    bool release(detail::failure& error);
    /// True where claims of this object may be staged (docs/protocol.md 8.5).
    bool may_stage();
    /// The doorbell this process rings when it releases this path (the waiters' one); 0: none.
    [[nodiscard]] std::uint64_t doorbell() const;
    /// The lifetime the next acquisition takes.
    std::optional<duration> lifetime();
    void start_keeper();
    void stop_keeper();
    void keep_alive(std::stop_token const& stop);
};

namespace detail {

/// One acquire call's way through the protocol loop of docs/protocol.md: claim; if taken, judge the holder;
/// take over a stale lock under the guard; otherwise wait (for an event, or a pause) and look again.
class acquisition {
public:
    acquisition(file_lock::impl& lock, deadline until);

    enum class next { acquired, failed, wait };
    /// One look; on wait, pause() says for how long, and wake() what may end the wait early.
    next step(failure& error);
    [[nodiscard]] std::chrono::nanoseconds pause() const { return pause_; }
    /// False when the pause must be slept in full (re-reading an unreadable file, tries apart).
    [[nodiscard]] bool events_may_end_pause() const { return events_may_end_pause_; }
    [[nodiscard]] sys::wake_sources& wake() { return *lock_.gate->wake; }
    /// After a wait that an event ended (the lock file or its guard changed, the holder exited): with a
    /// staged claim ready, the next step links it at once instead of looking first (docs/protocol.md 8.5).
    void woken_by_event();

private:
    /// How a wait's pause may end: at the first event (or its end), or only at its end.
    enum class pause_end { at_an_event, in_full };
    next wait(std::chrono::nanoseconds pause, pause_end end = pause_end::at_an_event);
    void give_back(claim const& attempt);

    file_lock::impl& lock_;
    deadline until_;
    bool armed_ = false;                ///< the path's wake sources are set up and drained for this acquire
    bool look_before_claiming_ = false; ///< the next step reads the lock file before it claims
    backoff backoff_;
    int unreadable_reads_ = 0;
    sys::file_identity unreadable_identity_;
    std::int64_t unreadable_changed_ = 0;
    std::string unreadable_bytes_;
    std::optional<clock::time_point> guard_busy_since_;
    bool slow_reported_ = false;
    std::string holder_;
    std::chrono::nanoseconds pause_{};
    bool events_may_end_pause_ = true;
};

} // namespace detail
} // namespace openlock
