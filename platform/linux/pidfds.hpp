// SPDX-License-Identifier: MIT
// The process's pidfds, one per process watched, however many parts of the library use it (Linux).
//
// Why one table: the holder judgement (process.cpp) keeps the pidfds of processes it judged alive, because a
// pidfd that is not readable proves that process has not exited and spares the /proc read of the next
// judgement; the waiters (watcher.cpp) keep the pidfds of holders whose exit must wake them. Kept apart,
// both opened one for the same holder. Here an entry is one pid's pidfd, with the start time the judgement
// verified for it (if it did) and the number of waiters watching it; the waiters' epoll set holds the
// descriptor exactly while that number is above zero. Unwatched entries are kept for the judgement and for
// waiters to come, the least recently used beyond eight closed. Included by process.cpp in its global module
// fragment and by watcher.cpp (a plain unit); the table is one object for the program (an inline function's
// static).
#pragma once

#include "../posix/descriptors.hpp"

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <optional>
#include <poll.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>
#include <vector>

namespace openlock::sys::linux_pidfds {

enum class pidfd_says { running, exited, cannot_tell };

inline pidfd_says poll_pidfd(int pidfd) noexcept {
    pollfd watched{pidfd, POLLIN, 0};
    int ready = -1;
    do
        ready = ::poll(&watched, 1, 0);
    while (ready < 0 && errno == EINTR);
    if (ready == 0) return pidfd_says::running;
    if (ready > 0 && (watched.revents & (POLLIN | POLLHUP)) != 0) return pidfd_says::exited;
    return pidfd_says::cannot_tell;
}

inline int open_pidfd(pid_t pid) noexcept {
#ifdef SYS_pidfd_open
    return posix::off_standard_streams(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0))); // close-on-exec
#else
    (void)pid;
    return -1;
#endif
}

struct entry {
    pid_t pid = 0;
    int fd = -1;
    std::optional<std::uint64_t> start_time; ///< verified by the judgement: the process with this start time
    int watchers = 0;                        ///< waiters watching its exit (it is in their epoll set)
    std::uint64_t last_used = 0;
};

/// Guarded by `mutex`; lock it after the watcher's mutex, never before.
class table {
public:
    std::mutex mutex;

    static table& instance() {
        static auto* const pidfds = new table; // never destroyed: judged and waited on during exit too
        return *pidfds;
    }

    /// A child after fork() starts over: its copies of the parent's pidfds are closed.
    void forget_parent(std::int64_t pid) {
        if (owner_pid_ == pid) return;
        for (auto const& known : entries_)
            ::close(known.fd);
        entries_.clear();
        owner_pid_ = pid;
    }

    entry* find(pid_t pid) {
        auto const at =
            std::find_if(entries_.begin(), entries_.end(), [pid](auto const& e) { return e.pid == pid; });
        return at == entries_.end() ? nullptr : &*at;
    }
    entry* find_descriptor(int fd) {
        auto const at =
            std::find_if(entries_.begin(), entries_.end(), [fd](auto const& e) { return e.fd == fd; });
        return at == entries_.end() ? nullptr : &*at;
    }

    void touch(entry& used) { used.last_used = ++uses_; }

    /// Adds a pidfd for a pid that has no entry.
    entry& add(pid_t pid, int fd) {
        entries_.push_back({pid, fd, std::nullopt, 0, ++uses_});
        return entries_.back();
    }

    /// Closes and forgets an entry nobody watches.
    void erase(entry& gone) {
        ::close(gone.fd);
        entries_.erase(entries_.begin() + (&gone - entries_.data()));
    }

    /// Keeps at most `kept` unwatched entries, closing the least recently used.
    void trim() {
        constexpr std::ptrdiff_t kept = 8;
        while (std::count_if(entries_.begin(), entries_.end(),
                             [](auto const& e) { return e.watchers == 0; }) > kept) {
            entry* oldest = nullptr;
            for (auto& candidate : entries_)
                if (candidate.watchers == 0 && (!oldest || candidate.last_used < oldest->last_used))
                    oldest = &candidate;
            erase(*oldest);
        }
    }

private:
    std::vector<entry> entries_;
    std::int64_t owner_pid_ = 0;
    std::uint64_t uses_ = 0;
};

} // namespace openlock::sys::linux_pidfds
