// SPDX-License-Identifier: MIT
// :lock — openlock::etcd_lock: file_lock's vocabulary for a lock held in etcd, so that processes that share
// no file system (containers on many hosts) exclude each other. The recipe is etcd's Mutex (docs/etcd.md).
module;
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <system_error>

export module openlock.etcd:lock;
import openlock;

export namespace openlock {

/// The lease an etcd_lock takes when options::lifetime is none (kept alive while held or waiting).
inline constexpr std::chrono::seconds etcd_default_lifetime{10};

/// A lock held in an etcd cluster, named by "etcd://host:port[,host:port...]/name" (several endpoints: any
/// that answers serves; one that fails is left for the next).
///
/// Each acquisition takes a lease (options::lifetime, rounded up to whole seconds; etcd_default_lifetime when
/// none) and creates the key "<name>/<lease id in hex>", the layout of `etcdctl lock` and of the Go client's
/// Mutex, so that they and this lock exclude each other. The key with the lowest create_revision holds the
/// lock; a waiter watches only the key just before its own (FIFO, no herd). Contention is a value
/// (try_acquire returns false). A holder that dies frees the lock when its lease runs out. The lease is kept
/// alive by a thread while the lock is held when options::keep_alive is set, or when options::lifetime is
/// none (then the lock lasts until release or until the holder dies, as a file lock without a lease does);
/// with a lifetime and without keep_alive, refresh() is up to the caller. A waiter keeps its own lease alive
/// while it waits. A server that cannot be reached gives errc::unavailable, never success, and no call waits
/// past its timeout for an answer. Errors are lock_error (path(): the URL) with openlock::errc codes.
class etcd_lock {
public:
    using duration = std::chrono::nanoseconds;

    /// A lock whose acquire() waits forever. Nothing is sent to the server until acquire. Throws
    /// invalid_option on a URL that is not etcd://host:port[,...]/name.
    explicit etcd_lock(std::string url);
    /// A lock whose acquire() waits at most `timeout` (none: forever).
    etcd_lock(std::string url, std::optional<duration> timeout, options settings = get_defaults());
    template <class Rep, class Period>
    etcd_lock(std::string url, std::chrono::duration<Rep, Period> timeout, options settings = get_defaults())
        : etcd_lock(std::move(url), std::optional<duration>{to_duration(timeout)}, std::move(settings)) {}

    etcd_lock(etcd_lock const&) = delete;
    etcd_lock& operator=(etcd_lock const&) = delete;
    /// Releases the lock if this object holds it (errors are swallowed: use release() to see them).
    ~etcd_lock();

    /// Waits up to timeout() (forever when none). Throws timeout_error naming the holder, already_locked when
    /// the calling thread holds it, lock_error with errc::unavailable when no server answers. A wait that
    /// ends without the lock leaves no key behind.
    void acquire();
    /// Waits at most `timeout`; zero or negative tries once.
    template <class Rep, class Period>
    void acquire(std::chrono::duration<Rep, Period> timeout) {
        acquire_for(to_duration(timeout));
    }
    void acquire(std::error_code& error) noexcept;
    template <class Rep, class Period>
    void acquire(std::chrono::duration<Rep, Period> timeout, std::error_code& error) noexcept {
        acquire_for(to_duration(timeout), error);
    }

    /// One attempt: true when this object now holds the lock, false when another holder has it.
    [[nodiscard]] bool try_acquire();
    [[nodiscard]] bool try_acquire(std::error_code& error) noexcept;

    /// Deletes our key and revokes our lease. Throws invalid_release when this object does not hold the
    /// lock, not_locked when the key was deleted (broken) or its lease ran out meanwhile (the lock is then no
    /// longer held), lock_error (unavailable) when no server answered: the lock is then still held (its
    /// keep-alive stopped), and release() may be called again.
    void release();
    void release(std::error_code& error) noexcept;

    /// True when some key holds the lock (ours included).
    [[nodiscard]] bool locked() const;
    [[nodiscard]] bool locked(std::error_code& error) const noexcept;
    /// True when this object holds the lock (as far as it knows: still_held() asks the server).
    [[nodiscard]] bool owns_lock() const noexcept;
    /// The holder's record (pid, name, host) when the lock is held by an openlock process; none when it is
    /// free or held by a client that stores no record (etcdctl lock).
    [[nodiscard]] std::optional<lock_record> owner() const;
    /// The held acquisition's fencing token: its key's create_revision, greater than that of every earlier
    /// acquisition of any lock in the cluster; 0 when this object does not hold the lock.
    [[nodiscard]] std::uint64_t token() const noexcept;

    /// Renews the held lock's lease (one keep-alive). Throws invalid_release when this object does not hold
    /// the lock, not_locked when its lease ran out or its key was deleted (release() then says not_locked
    /// too, and frees the object).
    void refresh();
    void refresh(std::error_code& error) noexcept;
    /// When the lease of whoever holds the lock now runs out, as the server counts (whole seconds); none when
    /// the lock is free.
    [[nodiscard]] std::optional<std::chrono::system_clock::time_point> expiration() const;
    /// True when this object holds the lock and its key is still there (a lease that ran out, or a key
    /// deleted by hand, is not). Asks the server; owns_lock() does not.
    [[nodiscard]] bool still_held() const;
    [[nodiscard]] bool still_held(std::error_code& error) const noexcept;

    [[nodiscard]] std::string const& url() const noexcept;
    [[nodiscard]] std::optional<duration> timeout() const noexcept;
    [[nodiscard]] options const& settings() const noexcept;

    // TimedLockable, for std::unique_lock, std::scoped_lock and std::lock_guard.
    void lock() { acquire(); }
    [[nodiscard]] bool try_lock() { return try_acquire(); }
    /// release() that never throws: a lost lock or a failure is reported to options::on_diagnostic.
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

public:
    struct impl; ///< internal (modules/etcd/lock_impl.cppm)

private:
    std::unique_ptr<impl> impl_;
};

} // namespace openlock
