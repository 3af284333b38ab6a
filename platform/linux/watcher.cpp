// SPDX-License-Identifier: MIT
// The waiters' event loop: one inotify instance and one epoll set for the whole process (Linux).
//
// Why these syscalls: inotify on the lock's directory reports the lock file (or the takeover guard) going
// away the moment it happens, and a pidfd becomes readable the moment a local holder exits, so a waiter
// retries at once instead of at its next poll. One inotify instance and one epoll set serve every waiter of
// the process (docs/protocol.md 8.1): inotify instances are a per-user resource
// (fs.inotify.max_user_instances, 128 by default), and one per waiter let one program with many contended
// locks take every instance of its user. Watches are counted per watch descriptor (inotify gives one
// directory one descriptor per instance), pidfds per process watched (pidfds.hpp), doorbells per FIFO
// (doorbells.cpp); whichever thread reads an event hands it to the waiters it concerns (a blocking waiter
// through its condition variable, an asynchronous one through a timer cancelled on its strand, the waiters
// with the set in their wait — the thread asleep in epoll_wait, the asynchronous "pump" — through an eventfd
// in the set). epoll_pwait2 sleeps to the nanosecond where the kernel (5.11) and any seccomp filter allow it;
// epoll_wait, rounded up, elsewhere. Every descriptor is kept off 0, 1 and 2
// (platform/posix/descriptors.hpp).
//
// A plain translation unit, not a module unit: what it defines is declared in watcher.hpp, in the global
// module, for wake_sources.cpp to use.
#include "watcher.hpp"

#include "../posix/descriptors.hpp"
#include "doorbells.hpp"
#include "pidfds.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <vector>

namespace openlock::sys::linux_events {
namespace {

namespace pidfds = linux_pidfds;

// No IN_CLOSE_WRITE: no decision waits for a file to be closed (a half-written lock file is re-read after a
// full pause, docs/protocol.md 6.2), and every nameless claim file (O_TMPFILE, written) reports one under its
// "#<inode>" name when it is closed, at every release and every lost claim: a wake-up of every waiter for
// nothing.
constexpr std::uint32_t watched_events =
    IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR;

// A read that leaves this much of the buffer free had room for one more event of any name: the queue was
// empty when it returned, and no second read (answering EAGAIN) is needed to know that.
constexpr std::size_t largest_event = sizeof(inotify_event) + NAME_MAX + 1;

// A descriptor the library keeps: never 0, 1 or 2, where a program's writes to a closed standard stream
// would land in it.
int kept(int fd) noexcept {
    return posix::off_standard_streams(fd);
}

void close_if_open(int& fd) noexcept {
    if (fd >= 0) ::close(fd);
    fd = -1;
}

std::uint64_t tagged(source kind, int fd) {
    return static_cast<std::uint64_t>(kind) << 32 | static_cast<std::uint32_t>(fd);
}

} // namespace

void drain_descriptor(int fd) noexcept {
    char bytes[4096];
    while (::read(fd, bytes, sizeof bytes) == static_cast<ssize_t>(sizeof bytes)) {
    }
}

int wait_in_set(int epoll, epoll_event* events, int capacity, std::int64_t timeout_ns) {
    timespec const pause{static_cast<time_t>(timeout_ns / 1'000'000'000),
                         static_cast<long>(timeout_ns % 1'000'000'000)};
#ifdef SYS_epoll_pwait2
    // Kernels before 5.11 answer ENOSYS; seccomp filters may answer EPERM (or anything) for system calls
    // they do not know. Whatever it is, epoll_wait from then on.
    static std::atomic<bool> pwait2_refused{false};
    if (!pwait2_refused.load(std::memory_order_relaxed)) {
        int const ready =
            static_cast<int>(::syscall(SYS_epoll_pwait2, epoll, events, capacity, &pause, nullptr, 0));
        if (ready >= 0 || errno == EINTR) return ready;
        pwait2_refused.store(true, std::memory_order_relaxed);
    }
#else
    (void)pause;
#endif
    auto const milliseconds = (timeout_ns + 999'999) / 1'000'000; // never wake early
    return ::epoll_wait(epoll, events, capacity,
                        static_cast<int>(std::min<std::int64_t>(milliseconds, INT_MAX)));
}

watcher& watcher::instance(std::int64_t pid) {
    static std::atomic<watcher*> current{nullptr};
    auto* existing = current.load();
    if (existing && existing->pid_ == pid) return *existing;
    auto* made = new watcher{pid}; // never destroyed: waiters in static objects may wait during exit
    if (current.compare_exchange_strong(existing, made)) {
        // The parent's watcher in a child: its copies of the set and the instance are closed (the parent's
        // registrations stay: they are the parent's). The rest of it is left as it is: another thread of the
        // parent may have been changing it at the fork.
        if (existing) {
            ::close(existing->epoll);
            ::close(existing->inotify);
            ::close(existing->interrupt);
        }
        return *made;
    }
    made->close_all();
    delete made;
    return *existing;
}

watcher::watcher(std::int64_t pid) : pid_(pid) {
    epoll = kept(::epoll_create1(EPOLL_CLOEXEC));
    if (epoll < 0) return; // no events: sleep-polling
    interrupt = kept(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
    if (interrupt < 0 || !add_to_set(interrupt, EPOLLIN, source::interrupt)) close_all();
}

void watcher::close_all() {
    close_if_open(interrupt);
    close_if_open(inotify);
    close_if_open(epoll);
}

bool watcher::add_to_set(int fd, std::uint32_t wanted_events, source kind) const {
    epoll_event wanted{};
    wanted.events = wanted_events;
    wanted.data.u64 = tagged(kind, fd);
    return ::epoll_ctl(epoll, EPOLL_CTL_ADD, fd, &wanted) == 0;
}

// Out of the set first, then closed: a child forked meanwhile keeps a copy of the descriptor, and closing
// ours alone would leave it registered, reporting events under a number that may be reused.
void watcher::remove_and_close(int fd) const {
    ::epoll_ctl(epoll, EPOLL_CTL_DEL, fd, nullptr);
    ::close(fd);
}

void watcher::wake(waiter& target, bool by_doorbell) {
    target.woken = true;
    target.rung = target.rung || by_doorbell;
    target.wakeup.notify_one();
    if (&target == collecting_for) return; // it looks at its events right after
    // The waiters with the set in their wait (the thread in epoll_wait, the asynchronous pump) wake through
    // the set; any other asynchronous waiter through its kick.
    if (&target == sync_poller || &target == async_pump) {
        std::uint64_t const one = 1;
        (void)!::write(interrupt, &one, sizeof one);
    } else if (target.kick) {
        target.kick();
    }
}

bool watcher::add_watch(waiter& target) {
    if (inotify < 0) {
        // Made at the first watch, and tried again at later ones: the user's instances may be used up by
        // other programs for a while.
        inotify = kept(::inotify_init1(IN_NONBLOCK | IN_CLOEXEC));
        if (inotify >= 0 && !add_to_set(inotify, EPOLLIN, source::directory_events)) close_if_open(inotify);
        if (inotify < 0) return false;
    }
    int const descriptor = ::inotify_add_watch(inotify, target.directory.c_str(), watched_events);
    if (descriptor < 0) return false; // limits reached or no such directory: poll
    auto const known = std::find_if(watches_.begin(), watches_.end(),
                                    [descriptor](auto const& entry) { return entry.first == descriptor; });
    if (known != watches_.end())
        ++known->second;
    else
        watches_.emplace_back(descriptor, 1);
    target.watch = descriptor;
    return true;
}

void watcher::remove_watch(waiter& target) {
    if (target.watch < 0) return;
    auto const known = std::find_if(watches_.begin(), watches_.end(),
                                    [&](auto const& entry) { return entry.first == target.watch; });
    // Its last waiter gone: no watch, no queue that fills up with every change while nobody needs it.
    if (known != watches_.end() && --known->second == 0) {
        ::inotify_rm_watch(inotify, target.watch);
        watches_.erase(known);
    }
    target.watch = -1;
}

void watcher::listen_on_doorbell(waiter& target, std::string const& name) {
    if (name.empty()) return;
    auto const known =
        std::find_if(bells_.begin(), bells_.end(), [&](auto const& bell) { return bell.name == name; });
    if (known != bells_.end()) {
        ++known->listeners;
        target.bell = known->fd;
        target.bell_identity = known->identity;
        return;
    }
    auto const opened = linux_doorbells::listen(name);
    if (opened.fd < 0) return;
    if (!add_to_set(opened.fd, EPOLLIN | EPOLLEXCLUSIVE, source::doorbell)) {
        ::close(opened.fd);
        return;
    }
    bells_.push_back({name, opened.fd, opened.identity, 1});
    target.bell = opened.fd;
    target.bell_identity = opened.identity;
}

void watcher::leave_doorbell(waiter& target) {
    if (target.bell < 0) return;
    auto const known =
        std::find_if(bells_.begin(), bells_.end(), [&](auto const& bell) { return bell.fd == target.bell; });
    target.bell = -1;
    if (known == bells_.end() || --known->listeners > 0) return;
    linux_doorbells::leave(known->name, known->fd); // this process's last listener
    remove_and_close(known->fd);
    bells_.erase(known);
}

void watcher::watch_holder(waiter& target, std::int64_t pid) {
    if (pid == target.holder_pid && target.holder >= 0) return;
    stop_watching_holder(target);
    auto& table = pidfds::table::instance();
    std::lock_guard guard{table.mutex};
    table.forget_parent(pid_);
    auto const native = static_cast<pid_t>(pid);
    auto* known = table.find(native);
    if (!known) {
        int const pidfd = pidfds::open_pidfd(native);
        if (pidfd < 0) return;
        known = &table.add(native, pidfd);
    }
    if (known->watchers == 0 && !add_to_set(known->fd, EPOLLIN, source::holder)) return;
    ++known->watchers;
    table.touch(*known);
    target.holder = known->fd;
    target.holder_pid = pid;
}

void watcher::stop_watching_holder(waiter& target) {
    target.holder_pid = 0;
    if (target.holder < 0) return;
    auto& table = pidfds::table::instance();
    std::lock_guard guard{table.mutex};
    if (auto* const known = table.find_descriptor(target.holder); known && --known->watchers == 0) {
        ::epoll_ctl(epoll, EPOLL_CTL_DEL, known->fd, nullptr);
        table.trim();
    }
    target.holder = -1;
    target.holder_pid = 0;
}

void watcher::dispatch(epoll_event const* events, int count) {
    for (int i = 0; i < count; ++i) {
        auto const data = events[i].data.u64;
        int const fd = static_cast<int>(static_cast<std::uint32_t>(data));
        switch (static_cast<source>(data >> 32)) {
        case source::interrupt:
            drain_descriptor(interrupt);
            break;
        case source::directory_events:
            read_directory_events();
            break;
        case source::doorbell:
            drain_descriptor(fd);
            for (auto* target : waiters)
                if (target->bell == fd) wake(*target, true);
            break;
        case source::holder: {
            // That process exited: its waiters judge the lock again, and it is never watched again (a pid
            // reused later gets a new pidfd).
            for (auto* target : waiters)
                if (target->holder == fd) {
                    wake(*target, false);
                    target->holder = -1;
                    target->holder_pid = 0;
                }
            auto& table = pidfds::table::instance();
            std::lock_guard guard{table.mutex};
            if (auto* const known = table.find_descriptor(fd)) {
                ::epoll_ctl(epoll, EPOLL_CTL_DEL, fd, nullptr);
                table.erase(*known);
            }
            break;
        }
        }
    }
}

void watcher::collect_now() {
    if (!usable()) return;
    std::array<epoll_event, 16> events{};
    int ready = 0;
    do {
        ready = ::epoll_wait(epoll, events.data(), static_cast<int>(events.size()), 0);
        if (ready > 0) dispatch(events.data(), ready);
    } while (ready == static_cast<int>(events.size()));
}

// Drains the queue, waking the waiters of each event's directory whose lock or guard it names (or every one
// of them for the watch itself, and everyone after an overflow).
void watcher::read_directory_events() {
    alignas(inotify_event) char buffer[4096];
    for (;;) {
        auto const length = ::read(inotify, buffer, sizeof buffer);
        if (length <= 0) break;
        bool const drained = static_cast<std::size_t>(length) <= sizeof buffer - largest_event;
        for (char const* at = buffer; at < buffer + length;) {
            auto const* event = reinterpret_cast<inotify_event const*>(at);
            at += sizeof(inotify_event) + event->len;
            if (event->mask & IN_Q_OVERFLOW) {
                for (auto* target : waiters)
                    if (target->watch >= 0) wake(*target, false);
                continue;
            }
            std::string_view const name = event->len > 0 ? std::string_view{event->name} : std::string_view{};
            bool const watch_gone = (event->mask & IN_IGNORED) != 0;
            bool const about_directory = (event->mask & (IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED)) != 0;
            for (auto* target : waiters) {
                if (target->watch != event->wd) continue; // a watch we removed (its IN_IGNORED) or nothing
                if (about_directory || name == target->lock_name || name == target->guard_name)
                    wake(*target, false);
                if (watch_gone) {
                    target->watch = -1; // the directory is gone: sleep-polling from now on
                    target->watch_lost = true;
                }
            }
            if (watch_gone)
                std::erase_if(watches_, [event](auto const& entry) { return entry.first == event->wd; });
        }
        if (drained) break;
    }
}

} // namespace openlock::sys::linux_events
