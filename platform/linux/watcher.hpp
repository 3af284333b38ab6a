// SPDX-License-Identifier: MIT
// The process's one inotify instance and one epoll set (watcher.cpp), and the waiters registered in it: what
// the seam's wake_sources (wake_sources.cpp) and the event loop share (Linux). Included in the global module
// fragment of wake_sources.cpp and by the plain unit watcher.cpp, which defines what is declared here.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <mutex>
#include <string>
#include <sys/epoll.h>
#include <utility>
#include <vector>

namespace openlock::sys::linux_events {

/// What the process's one epoll set reports, told apart by the upper half of the event's data.
enum class source : std::uint64_t { directory_events = 1, doorbell = 2, holder = 3, interrupt = 4 };

/// One waiter (one path's wake sources) as the process's watcher sees it. All but the fixed part is guarded
/// by the watcher's mutex.
struct waiter {
    std::filesystem::path directory;
    std::string lock_name;
    std::string guard_name;
    std::int64_t owner_pid = 0; ///< after fork() the child's copy is left alone (the child makes its own)
    bool events = false;        ///< registered with the watcher (a local file system, a usable set)
    /// The doorbell FIFO (the watcher's, shared by its listeners in this process).
    int bell = -1;
    std::uint64_t bell_identity = 0;

    int watch = -1;          ///< the directory's watch descriptor while directory events are wanted
    bool watch_lost = false; ///< the directory went away (IN_IGNORED), or no watch could be made: polling
    std::int64_t holder_pid = 0;
    int holder = -1;                ///< the holder's pidfd (the watcher's)
    bool woken = false;             ///< an event for this waiter came since it last looked
    bool rung = false;              ///< ... and it was its doorbell
    std::condition_variable wakeup; ///< a blocking waiter that is not in epoll_wait sleeps here
    std::function<void()> kick;     ///< set while an asynchronous wait runs: ends it on its strand
};

/// The process's one inotify instance and one epoll set, and who listens to what in them.
class watcher {
public:
    std::mutex mutex;
    int epoll = -1;
    int inotify = -1;
    int interrupt = -1;  ///< an eventfd in the set: wakes the thread in epoll_wait for a waiter of its own
    bool failed = false; ///< the set stopped working (closed under us): everyone sleep-polls
    std::vector<waiter*> waiters;
    waiter* sync_poller = nullptr; ///< whose thread sleeps in epoll_wait now (blocking waiters take turns)
    std::vector<waiter*> sync_followers; ///< blocking waiters asleep on their condition variable
    waiter* async_pump = nullptr;        ///< the asynchronous waiter whose wait includes the set's readiness
    waiter* collecting_for = nullptr;    ///< the asynchronous pump reading the set between its waits

    /// This process's watcher, `pid` being this process's id (made at first use, again in a child after
    /// fork()).
    static watcher& instance(std::int64_t pid);

    [[nodiscard]] bool usable() const { return epoll >= 0 && !failed; }

    /// Watches the waiter's directory (one watch per directory, counted).
    bool add_watch(waiter& target);
    void remove_watch(waiter& target);
    /// Listens on the lock's doorbell (docs/protocol.md 8.6), made if missing; one descriptor per FIFO.
    void listen_on_doorbell(waiter& target, std::string const& name);
    void leave_doorbell(waiter& target);
    /// Watches the exit of a holder: one pidfd per process, shared by its waiters and with the holder
    /// judgement (pidfds.hpp); in the set while any waiter watches it. Unwatched ones stay open for a while,
    /// since in a herd the same few holders take turns.
    void watch_holder(waiter& target, std::int64_t pid);
    void stop_watching_holder(waiter& target);
    /// Handles what the set reported: each event goes to the waiters it concerns.
    void dispatch(epoll_event const* events, int count);
    /// Handles what is ready now, without blocking.
    void collect_now();

private:
    struct doorbell_entry {
        std::string name;
        int fd = -1;
        std::uint64_t identity = 0;
        int listeners = 0;
    };

    explicit watcher(std::int64_t pid);
    void close_all();
    bool add_to_set(int fd, std::uint32_t wanted_events, source kind) const;
    void remove_and_close(int fd) const;
    void wake(waiter& target, bool by_doorbell);
    void read_directory_events();

    std::int64_t pid_;
    std::vector<std::pair<int, int>> watches_; ///< watch descriptor, waiters using it
    std::vector<doorbell_entry> bells_;
};

/// Sleeps in the set until an event or the timeout: epoll_pwait2 (nanoseconds) where the kernel has it.
int wait_in_set(int epoll, epoll_event* events, int capacity, std::int64_t timeout_ns);

/// Reads and forgets what a FIFO or eventfd holds (the FIFO: at most a pipe buffer).
void drain_descriptor(int fd) noexcept;

} // namespace openlock::sys::linux_events
