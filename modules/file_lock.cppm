// SPDX-License-Identifier: MIT
// :file_lock — the lock object: Python openlock's and flufl.lock's vocabulary with C++ conventions
// (TimedLockable, so std::unique_lock and std::scoped_lock work).
module;
#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/asio/system_executor.hpp>
#include <boost/system/error_code.hpp>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <system_error>

export module openlock:file_lock;
import :errors;
import :options;
import :record;
import :status;

export namespace openlock {

/// A cross-process lock on one lock file; works on network file systems, across hosts and in containers.
///
/// Contention is a value (try_acquire returns false); failures are exceptions carrying the path and the OS
/// error, or an error_code with the non-throwing overloads. A lock whose holder provably died (same host:
/// pid, start time and name no longer match a running process) is taken over safely. One object shared by
/// threads is a timed mutex across threads and processes; two objects on one path in one process exclude each
/// other. The destructor releases; so does normal process exit. A child after fork() never releases its
/// parent's lock.
class file_lock {
public:
    using duration = std::chrono::nanoseconds;

    /// A lock on lock_file that waits forever by default. Nothing is touched on disk until acquire.
    explicit file_lock(std::filesystem::path lock_file = "openlock.lock");

    /// A lock on lock_file whose acquire() waits at most `timeout` (none: forever). Throws invalid_option.
    file_lock(std::filesystem::path lock_file, std::optional<duration> timeout,
              options settings = get_defaults());

    /// The same with any std::chrono duration (500ms, 5s, 1.5s as duration<double>).
    template <class Rep, class Period>
    file_lock(std::filesystem::path lock_file, std::chrono::duration<Rep, Period> timeout,
              options settings = get_defaults())
        : file_lock(std::move(lock_file), std::optional<duration>{to_duration(timeout)},
                    std::move(settings)) {}

    file_lock(file_lock const&) = delete;
    file_lock& operator=(file_lock const&) = delete;
    /// Releases the lock if this object holds it (errors are swallowed: use release() to see them).
    ~file_lock();

    /// Waits up to timeout() (forever when none) for the lock. Throws timeout_error naming the holder,
    /// already_locked when the calling thread holds it, invalid_lock_file, or lock_error with the OS error.
    void acquire();
    /// Waits at most `timeout`; zero or negative tries once (taking over a stale lock if there is one).
    template <class Rep, class Period>
    void acquire(std::chrono::duration<Rep, Period> timeout) {
        acquire_for(to_duration(timeout));
    }
    void acquire(std::error_code& error) noexcept;
    template <class Rep, class Period>
    void acquire(std::chrono::duration<Rep, Period> timeout, std::error_code& error) noexcept {
        acquire_for(to_duration(timeout), error);
    }

    /// Asynchronous acquire on Asio's universal model; completes with an error_code: none when acquired,
    /// asio::error::timed_out after the object's timeout(), asio::error::operation_aborted when cancelled
    /// (terminal, partial and total cancellation all apply; the lock is then not held), or the failure's
    /// code. Never completes inline. Runs on the token's associated executor, else on get_executor(), else on
    /// the system executor. Default token: asio::deferred, so `co_await lock.async_acquire();` works in an
    /// asio::awaitable coroutine.
    template <
        boost::asio::completion_token_for<void(boost::system::error_code)> Token = boost::asio::deferred_t>
    auto async_acquire(Token&& token = {}) {
        return boost::asio::async_initiate<Token, void(boost::system::error_code)>(async_initiation{this},
                                                                                   token, timeout());
    }
    /// The same, waiting at most `timeout`.
    template <
        class Rep, class Period,
        boost::asio::completion_token_for<void(boost::system::error_code)> Token = boost::asio::deferred_t>
    auto async_acquire(std::chrono::duration<Rep, Period> timeout, Token&& token = {}) {
        return boost::asio::async_initiate<Token, void(boost::system::error_code)>(
            async_initiation{this}, token, std::optional<duration>{to_duration(timeout)});
    }
    /// The executor asynchronous operations use when their token has none (empty by default).
    void set_executor(boost::asio::any_io_executor executor);
    [[nodiscard]] boost::asio::any_io_executor get_executor() const;

    /// One attempt: true when this object now holds the lock, false when another holder has it.
    [[nodiscard]] bool try_acquire();
    [[nodiscard]] bool try_acquire(std::error_code& error) noexcept;

    /// Removes the lock file if it is still ours. Throws invalid_release when this object does not hold the
    /// lock, not_locked when the lock was broken or replaced while held (this object no longer holds it),
    /// lock_error when the file could not be removed or checked (EACCES, EIO): the lock is then still held,
    /// and release() may be called again (the exit handler tries once more at exit).
    void release();
    void release(std::error_code& error) noexcept;

    /// True when some live process (this one included) holds the lock, or when its holder cannot be judged
    /// here (another host); false when the lock file is absent or provably stale.
    [[nodiscard]] bool locked() const;
    [[nodiscard]] bool locked(std::error_code& error) const noexcept;
    /// True when this object holds the lock (in this process: false in a child after fork()).
    [[nodiscard]] bool owns_lock() const noexcept;
    /// The holder's pid when the lock is held (not stale), like Python openlock's getpid().
    [[nodiscard]] std::optional<std::int64_t> getpid() const;
    /// The holder's record when the lock is held (not stale).
    [[nodiscard]] std::optional<lock_record> owner() const;

    // Leases (flufl.lock's lifetime; options::lifetime, docs/protocol.md "Leases").

    /// Moves the end of the held lock's lease to now + lifetime(). Throws invalid_release when this object
    /// does not hold the lock, invalid_option when it was acquired without a lifetime, not_locked when the
    /// lock was broken or replaced (it is then no longer held), timeout_error when another process is
    /// breaking it right now. A refresh never moves the end before acquisition + the first lifetime.
    void refresh();
    void refresh(std::error_code& error) noexcept;
    /// Sets lifetime(new_lifetime), then refresh().
    template <class Rep, class Period>
    void refresh(std::chrono::duration<Rep, Period> new_lifetime) {
        lifetime(std::optional<duration>{to_duration(new_lifetime)});
        refresh();
    }
    /// When the lease of whoever holds the lock now ends (not counting clock_slop); none when the lock is
    /// not held or its holder took it without a lease.
    [[nodiscard]] std::optional<std::chrono::system_clock::time_point> expiration() const;
    /// The lifetime of the next acquisition and refresh (options::lifetime at first).
    [[nodiscard]] std::optional<duration> lifetime() const;
    /// Changes it (positive, at most ten years, else invalid_option); none: the next acquisition has no
    /// lease.
    void lifetime(std::optional<duration> new_lifetime);
    /// The lock file judged from here, as openlock::inspect with this object's settings: unlocked, ours,
    /// ours_expired, theirs, theirs_expired, stale, unknown or invalid.
    [[nodiscard]] lock_state state() const;
    [[nodiscard]] lock_state state(std::error_code& error) const noexcept;
    /// True when this object holds the lock and the lock file is still the one it made (a lock broken after
    /// its lease expired, or removed by hand, is not). Reads the file system; owns_lock() does not.
    [[nodiscard]] bool still_held() const;
    [[nodiscard]] bool still_held(std::error_code& error) const noexcept;

    /// With options::fencing: the held acquisition's fencing token, strictly greater than that of every
    /// earlier acquisition of this lock file by any process; 0 when this object does not hold the lock or the
    /// lock was taken without fencing.
    [[nodiscard]] std::uint64_t token() const noexcept;

    [[nodiscard]] std::filesystem::path const& lock_file() const noexcept;
    [[nodiscard]] std::optional<duration> timeout() const noexcept;
    [[nodiscard]] options const& settings() const noexcept;

    // TimedLockable, for std::unique_lock, std::scoped_lock and std::lock_guard.
    /// acquire(): waits up to timeout(), throwing timeout_error after it.
    void lock() { acquire(); }
    [[nodiscard]] bool try_lock() { return try_acquire(); }
    /// release() that never throws (std::unique_lock and std::scoped_lock call it from destructors): a lock
    /// found broken or replaced is reported as diagnostic::kind::lock_lost instead of not_locked.
    void unlock() noexcept;
    template <class Rep, class Period>
    [[nodiscard]] bool try_lock_for(std::chrono::duration<Rep, Period> const& timeout) {
        return try_acquire_for(to_duration(timeout));
    }
    template <class Clock, class Duration>
    [[nodiscard]] bool try_lock_until(std::chrono::time_point<Clock, Duration> const& deadline) {
        return try_acquire_for(to_duration(deadline - Clock::now()));
    }

private:
    template <class Rep, class Period>
    static duration to_duration(std::chrono::duration<Rep, Period> value) {
        using wide = std::chrono::duration<long double, std::nano>;
        auto const nanoseconds = std::chrono::duration_cast<wide>(value).count();
        if (nanoseconds >= static_cast<long double>(duration::max().count())) return duration::max();
        if (nanoseconds <= 0) return duration::zero();
        return std::chrono::ceil<duration>(wide{nanoseconds});
    }
    void acquire_for(duration timeout);
    void acquire_for(duration timeout, std::error_code& error) noexcept;
    bool try_acquire_for(duration timeout);

    struct async_initiation {
        file_lock* self;
        template <class Handler>
        void operator()(Handler&& handler, std::optional<duration> timeout) const {
            boost::asio::any_io_executor executor = boost::asio::get_associated_executor(
                handler, self->get_executor() ? self->get_executor()
                                              : boost::asio::any_io_executor{boost::asio::system_executor{}});
            self->start_async_acquire(executor, timeout,
                                      boost::asio::any_completion_handler<void(boost::system::error_code)>{
                                          std::forward<Handler>(handler)});
        }
    };
    void start_async_acquire(boost::asio::any_io_executor const& executor, std::optional<duration> timeout,
                             boost::asio::any_completion_handler<void(boost::system::error_code)> handler);

public:
    struct impl; ///< internal (modules/lock_object.cppm)

private:
    std::shared_ptr<impl> impl_; // shared with pending asynchronous operations
};

} // namespace openlock
