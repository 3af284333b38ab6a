// Event-driven waiting behind the :sys seam (Linux).
//
// Why these syscalls: inotify on the lock's directory reports the lock file (or the takeover guard) going
// away the moment it happens, and a pidfd becomes readable the moment a local holder exits, so a waiter
// retries at once instead of at its next poll. The watch is set up before the waiter's first look, so a
// release after that look is always queued. inotify only sees changes made through this kernel: on NFS, SMB,
// FUSE and other shared file systems (statfs f_type) other clients' changes are invisible, so there the
// waiter polls with backoff only. Polling stays as the safety net everywhere (queue overflow, a watch
// removed, no pidfd_open before Linux 5.3).
//
// inotify wakes every waiter at every release (a herd: one wins, the rest look and sleep again). The
// doorbell wakes one: a FIFO per lock (mkfifo, in the user's /tmp/openlock-UID) that every waiter keeps open
// and listens on through its epoll set with EPOLLEXCLUSIVE, so a byte written by a releasing holder wakes one
// sleeping epoll_wait, not all (Linux 4.5). A holder names the doorbell it rings in its record, and a waiter
// turns its directory events off only for such a holder whose exit its pidfd watches (docs/protocol.md 8.6).
// FIFOs are opened O_RDWR (Linux: never blocks, and a write never meets "no reader") and O_NOFOLLOW.
module;
#include <algorithm>
#include <array>
#include <atomic>
#include <boost/asio/deferred.hpp>
#include <boost/asio/experimental/parallel_group.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/system/system_error.hpp>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <fcntl.h>
#include <filesystem>
#include <gsl/gsl>
#include <memory>
#include <poll.h>
#include <string>
#include <string_view>
#include <sys/epoll.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <utility>
#include <variant>
#include <vector>

module openlock;
import :sys;

namespace openlock::sys {
namespace {

// statfs f_type values of file systems that other machines (or a user-space server) may change.
constexpr std::array<std::uint64_t, 16> shared_file_systems{
    0x6969,     // NFS
    0x517b,     // SMB
    0xff534d42, // CIFS
    0xfe534d42, // SMB2
    0x65735546, // FUSE (sshfs, bindfs, s3fs, ...)
    0x00c36400, // Ceph
    0x01021997, // 9p (v9fs)
    0x5346414f, // AFS
    0x6b414653, // kAFS
    0x73757245, // Coda
    0x564c,     // NCP
    0x01161970, // GFS2
    0x7461636f, // OCFS2
    0x0bd00bd0, // Lustre
    0x47504653, // GPFS
    0x013111a8, // IBRIX
};

// No IN_CLOSE_WRITE: no decision waits for a file to be closed (a half-written lock file is re-read after a
// full pause, docs/protocol.md 6.2), and every nameless claim file (O_TMPFILE, written) reports one under its
// "#<inode>" name when it is closed, at every release and every lost claim: a wake-up of every waiter for
// nothing.
constexpr std::uint32_t watched_events =
    IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR;

// A read that leaves this much of the buffer free had room for one more event of any name: the queue was
// empty when it returned, and no second read (answering EAGAIN) is needed to know that.
constexpr std::size_t largest_event = sizeof(inotify_event) + NAME_MAX + 1;

void close_if_open(int& fd) {
    if (fd >= 0) ::close(fd);
    fd = -1;
}

// Where the doorbell of a lock lives: in a directory of this user's own under /tmp, named after the lock's
// directory (device and inode) and file name, not next to the lock, where a FIFO would be clutter that
// `cat *` blocks on. Processes of other users, or with another /tmp (containers), get other doorbells: their
// records name another one, so their waiters keep directory events. Empty: no doorbell here.
std::filesystem::path doorbell_path(std::filesystem::path const& lock_file, bool make_directory = true) {
    auto directory = lock_file.parent_path();
    if (directory.empty()) directory = ".";
    struct stat place{};
    if (::stat(directory.c_str(), &place) != 0) return {};
    auto const bells = "/tmp/openlock-" + std::to_string(::geteuid());
    struct stat mine{};
    if (make_directory && ::mkdir(bells.c_str(), 0700) != 0 && errno != EEXIST) return {};
    if (::lstat(bells.c_str(), &mine) != 0 || !S_ISDIR(mine.st_mode) || mine.st_uid != ::geteuid() ||
        (mine.st_mode & 077) != 0)
        return {}; // not ours alone: someone else could read (steal) the rings
    std::uint64_t name_hash = 14695981039346656037ull; // FNV-1a
    for (unsigned char const c : lock_file.filename().string())
        name_hash = (name_hash ^ c) * 1099511628211ull;
    char name[80];
    std::snprintf(name, sizeof name, "/%llx-%llx-%016llx.bell", static_cast<unsigned long long>(place.st_dev),
                  static_cast<unsigned long long>(place.st_ino), static_cast<unsigned long long>(name_hash));
    return bells + name;
}

// What a record names: the FIFO's device and inode, mixed into one nonzero number (unique on this kernel
// while the FIFO exists; a collision with another kernel's FIFO costs a waiter at most a safety-net pause).
std::uint64_t identity_of(struct stat const& fifo) {
    std::uint64_t mixed = static_cast<std::uint64_t>(fifo.st_dev) * 0x9e3779b97f4a7c15ull ^
                          static_cast<std::uint64_t>(fifo.st_ino);
    return mixed == 0 ? 1 : mixed;
}

} // namespace

void ring_doorbell(std::filesystem::path const& lock_file, std::uint64_t identity) noexcept {
    std::filesystem::path path;
    try {
        path = doorbell_path(lock_file, false);
    } catch (...) { // no memory: the waiters' pause covers it
        return;
    }
    // As open_doorbell: never a symlink, never anything but our own FIFO, and only the one the record names.
    struct stat seen{};
    if (path.empty() || ::lstat(path.c_str(), &seen) != 0 || !S_ISFIFO(seen.st_mode) ||
        seen.st_uid != ::geteuid() || identity_of(seen) != identity)
        return;
    // O_NONBLOCK: a FIFO nobody has open for reading answers ENXIO (nobody listens), instead of blocking.
    int const fd = ::open(path.c_str(), O_WRONLY | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return;
    struct stat opened{};
    if (::fstat(fd, &opened) == 0 && S_ISFIFO(opened.st_mode) && identity_of(opened) == identity) {
        char const byte = 1;
        (void)!::write(fd, &byte, 1);
    }
    ::close(fd);
}

bool is_network_file_system(std::filesystem::path const& directory) {
    struct statfs info{};
    if (::statfs(directory.c_str(), &info) != 0) return true; // cannot tell: do not trust local events
    auto const type = static_cast<std::uint64_t>(static_cast<std::uint32_t>(info.f_type));
    for (auto const shared : shared_file_systems)
        if (type == shared) return true;
    return false;
}

struct wake_sources::impl {
    int epoll = -1;   ///< everything below that is open, in one set (one descriptor for asynchronous waits)
    int inotify = -1; ///< directory events
    int watch = -1;   ///< inotify's watch of the directory while directory events are wanted; -1: none
    int bell = -1;    ///< the doorbell FIFO (O_RDWR), in the set with EPOLLEXCLUSIVE
    std::uint64_t bell_identity = 0;
    int holder = -1; ///< the current holder's pidfd (one of recent_holders)
    std::int64_t holder_pid = 0;
    /// Pidfds of the last few holders (the current one included), least recently watched first: in a herd
    /// the same few processes take turns, and a pidfd is opened once per process, not once per look. Each is
    /// in the epoll set while open; one that becomes readable is closed and forgotten at once, so a pid
    /// reused later gets a new one.
    std::vector<std::pair<std::int64_t, int>> recent_holders;
    std::filesystem::path directory;
    std::string lock_name;
    std::string guard_name;

    ~impl() {
        // Closing only (no EPOLL_CTL_DEL): in a child after fork() the set is the parent's too, and the
        // parent's registrations must stay.
        close_if_open(inotify);
        close_if_open(bell);
        for (auto& [pid, fd] : recent_holders)
            close_if_open(fd);
        close_if_open(epoll);
    }

    bool add_to_set(int fd, std::uint32_t events) const {
        if (epoll < 0) return false;
        epoll_event wanted{};
        wanted.events = events;
        wanted.data.fd = fd;
        return ::epoll_ctl(epoll, EPOLL_CTL_ADD, fd, &wanted) == 0;
    }

    // Out of the set first, then closed: a child forked meanwhile keeps a copy of the descriptor, and closing
    // ours alone would leave it registered, reporting events under a number that may be reused.
    void remove_and_close(int& fd) const {
        if (fd < 0) return;
        if (epoll >= 0) ::epoll_ctl(epoll, EPOLL_CTL_DEL, fd, nullptr);
        close_if_open(fd);
    }

    // A pidfd reported readable: that process exited. Judge the lock again, and never watch it again.
    void forget_process(int pidfd) {
        auto const known = std::find_if(recent_holders.begin(), recent_holders.end(),
                                        [pidfd](auto const& entry) { return entry.second == pidfd; });
        if (known == recent_holders.end()) return; // not ours (see remove_and_close): nothing to close
        if (pidfd == holder) {
            holder = -1;
            holder_pid = 0;
        }
        remove_and_close(known->second);
        recent_holders.erase(known);
    }

    // Drains the queue; true when an event concerns the lock or its guard (or the watch itself).
    bool relevant_events() {
        alignas(inotify_event) char buffer[4096];
        bool relevant = false;
        for (;;) {
            auto const length = ::read(inotify, buffer, sizeof buffer);
            if (length <= 0) break;
            bool const drained = static_cast<std::size_t>(length) <= sizeof buffer - largest_event;
            for (char const* at = buffer; at < buffer + length;) {
                auto const* event = reinterpret_cast<inotify_event const*>(at);
                at += sizeof(inotify_event) + event->len;
                if (event->mask & IN_Q_OVERFLOW) relevant = true;
                if (event->wd != watch) continue; // a watch we removed (its IN_IGNORED) or nothing
                std::string_view const name =
                    event->len > 0 ? std::string_view{event->name} : std::string_view{};
                if (event->mask & (IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED)) relevant = true;
                if (name == lock_name || name == guard_name) relevant = true;
                if (event->mask & IN_IGNORED) {
                    remove_and_close(inotify); // the directory is gone: sleep-polling from now on
                    watch = -1;
                    return true;
                }
            }
            if (drained) break;
        }
        return relevant;
    }

    // Takes every byte rung so far (one read: the FIFO holds at most a pipe buffer).
    void drain_bell() const {
        char bytes[4096];
        while (::read(bell, bytes, sizeof bytes) == static_cast<ssize_t>(sizeof bytes)) {
        }
    }

    bool bell_rung() const {
        pollfd watched{bell, POLLIN, 0};
        return bell >= 0 && ::poll(&watched, 1, 0) == 1;
    }

    // Handles what the set reports without blocking (timeout 0) or up to `timeout_ns`; true when any of it
    // may mean the lock changed hands.
    bool collect(std::int64_t timeout_ns) {
        std::array<epoll_event, 8> events{};
        int ready = -1;
        timespec const pause{static_cast<time_t>(timeout_ns / 1'000'000'000),
                             static_cast<long>(timeout_ns % 1'000'000'000)};
#ifdef SYS_epoll_pwait2
        // Kernels before 5.11 answer ENOSYS; seccomp filters may answer EPERM (or anything) for system calls
        // they do not know. Whatever it is, epoll_wait from then on.
        static std::atomic<bool> pwait2_refused{false};
        if (!pwait2_refused.load(std::memory_order_relaxed)) {
            ready = static_cast<int>(::syscall(SYS_epoll_pwait2, epoll, events.data(),
                                               static_cast<int>(events.size()), &pause, nullptr, 0));
            if (ready < 0 && errno != EINTR) pwait2_refused.store(true, std::memory_order_relaxed);
        }
        if (pwait2_refused.load(std::memory_order_relaxed))
#endif
        {
            auto const milliseconds = (timeout_ns + 999'999) / 1'000'000; // never wake early
            ready = ::epoll_wait(epoll, events.data(), static_cast<int>(events.size()),
                                 static_cast<int>(std::min<std::int64_t>(milliseconds, INT_MAX)));
        }
        if (ready < 0 && errno != EINTR) {
            // The set is unusable (closed under us by a program that closes every descriptor): sleep-polling
            // from now on, instead of returning at once to a waiter that would call again, a busy loop.
            close_if_open(epoll);
            return false;
        }
        if (ready <= 0) return false;
        bool woken = false;
        for (int i = 0; i < ready; ++i) {
            int const fd = events[static_cast<std::size_t>(i)].data.fd;
            if (fd == bell) {
                drain_bell();
                woken = true;
            } else if (fd == inotify) {
                if (relevant_events()) woken = true;
            } else {
                forget_process(fd); // a pidfd: that process exited
                woken = true;
            }
        }
        return woken;
    }

    void open_doorbell(std::filesystem::path const& lock_file) {
        auto const path = doorbell_path(lock_file);
        if (path.empty()) return;
        // Never a symlink, never anything but our own FIFO: lstat first (opening a device node may do
        // something), then O_NOFOLLOW, then fstat of what was opened.
        struct stat seen{};
        if (::lstat(path.c_str(), &seen) != 0) {
            if (errno != ENOENT) return;
            if (::mkfifo(path.c_str(), 0600) != 0 && errno != EEXIST) return;
        } else if (!S_ISFIFO(seen.st_mode) || seen.st_uid != ::geteuid()) {
            return;
        }
        int const fd = ::open(path.c_str(), O_RDWR | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0) return;
        struct stat opened{};
        if (::fstat(fd, &opened) != 0 || !S_ISFIFO(opened.st_mode) || opened.st_uid != ::geteuid() ||
            !add_to_set(fd, EPOLLIN | EPOLLEXCLUSIVE)) {
            ::close(fd);
            return;
        }
        bell = fd;
        bell_identity = identity_of(opened);
    }
};

wake_sources::wake_sources(std::filesystem::path const& lock_file, std::filesystem::path const& guard,
                           bool doorbell)
    : impl_(std::make_unique<impl>()) {
    auto directory = lock_file.parent_path();
    if (directory.empty()) directory = ".";
    impl_->directory = directory;
    impl_->lock_name = lock_file.filename().string();
    impl_->guard_name = guard.filename().string();
    if (is_network_file_system(directory)) return;
    impl_->epoll = ::epoll_create1(EPOLL_CLOEXEC);
    if (impl_->epoll < 0) return; // no events: sleep-polling
    impl_->inotify = ::inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (impl_->inotify >= 0) {
        impl_->watch = ::inotify_add_watch(impl_->inotify, directory.c_str(), watched_events);
        if (impl_->watch < 0 || !impl_->add_to_set(impl_->inotify, EPOLLIN)) {
            close_if_open(impl_->inotify); // limits reached or no such directory: poll
            impl_->watch = -1;
        }
    }
    if (doorbell) impl_->open_doorbell(lock_file);
}

wake_sources::~wake_sources() = default;

void wake_sources::watch_holder(std::int64_t pid) {
#ifdef SYS_pidfd_open
    if (pid == impl_->holder_pid && impl_->holder >= 0) return;
    auto& recent = impl_->recent_holders;
    impl_->holder_pid = pid;
    impl_->holder = -1;
    auto const known =
        std::find_if(recent.begin(), recent.end(), [pid](auto const& entry) { return entry.first == pid; });
    if (known != recent.end()) {
        auto const entry = *known;
        recent.erase(known);
        recent.push_back(entry); // the most recently watched last
        impl_->holder = entry.second;
        return;
    }
    int const pidfd = static_cast<int>(::syscall(SYS_pidfd_open, static_cast<pid_t>(pid), 0));
    if (pidfd < 0) return;
    if (!impl_->add_to_set(pidfd, EPOLLIN)) {
        ::close(pidfd);
        return;
    }
    impl_->holder = pidfd;
    constexpr std::size_t holders_kept = 8;
    if (recent.size() >= holders_kept) {
        impl_->remove_and_close(recent.front().second); // never the current holder: that one is last
        recent.erase(recent.begin());
    }
    recent.emplace_back(pid, pidfd);
#else
    (void)pid;
#endif
}

bool wake_sources::watches_directory() const noexcept {
    return impl_->inotify >= 0 && impl_->watch >= 0;
}

bool wake_sources::watches_holder() const noexcept {
    return impl_->holder >= 0;
}

std::uint64_t wake_sources::doorbell() const noexcept {
    return impl_->bell_identity;
}

void wake_sources::ring() noexcept {
    if (impl_->bell < 0) return;
    char const byte = 1;
    (void)!::write(impl_->bell, &byte, 1); // full (nobody has read for a long time): it is rung already
}

bool wake_sources::want_directory_events(bool wanted) {
    auto& self = *impl_;
    if (self.inotify < 0 || wanted == (self.watch >= 0)) return false;
    if (!wanted) {
        // No watch, no queue that fills up with every release while nobody reads it.
        ::inotify_rm_watch(self.inotify, self.watch);
        self.watch = -1;
        self.relevant_events(); // its IN_IGNORED, and what came before it
        return false;
    }
    self.watch = ::inotify_add_watch(self.inotify, self.directory.c_str(), watched_events);
    if (self.watch < 0) self.remove_and_close(self.inotify); // limits reached: sleep-polling
    return true;
}

void wake_sources::drain() {
    if (impl_->inotify >= 0) impl_->relevant_events();
    if (impl_->bell >= 0) impl_->drain_bell();
}

bool wake_sources::wait_for(std::chrono::nanoseconds timeout) {
    using clock = std::chrono::steady_clock;
    auto const until = clock::now() + timeout;
    for (;;) {
        auto const left = std::chrono::duration_cast<std::chrono::nanoseconds>(until - clock::now()).count();
        if (left <= 0) return false;
        if (impl_->epoll < 0) {
            timespec const pause{static_cast<time_t>(left / 1'000'000'000),
                                 static_cast<long>(left % 1'000'000'000)};
            ::nanosleep(&pause, nullptr);
            return false;
        }
        if (impl_->collect(left)) return true;
    }
}

boost::asio::awaitable<bool> wake_sources::async_wait_for(std::chrono::nanoseconds timeout) {
    namespace asio = boost::asio;
    using asio::experimental::make_parallel_group;
    using asio::experimental::wait_for_one;
    auto const executor = co_await asio::this_coro::executor;
    asio::steady_timer timer{executor, timeout};
    if (impl_->epoll < 0) {
        co_await timer.async_wait(asio::use_awaitable); // cancellation ends it with an exception
        co_return false;
    }
    // The epoll set, borrowed: released, not closed, when the wait ends. The reactor watches this one
    // descriptor for all the sources in it.
    asio::posix::stream_descriptor events{executor};
    auto const give_back = gsl::finally([&] {
        if (events.is_open()) events.release();
    });
    events.assign(impl_->epoll);
    for (;;) {
        // A parallel group forwards every cancellation type (terminal, partial, total) to the waits
        // themselves.
        auto const [order, timer_error, events_error] =
            co_await make_parallel_group(
                timer.async_wait(asio::deferred),
                events.async_wait(asio::posix::stream_descriptor::wait_read, asio::deferred))
                .async_wait(wait_for_one(), asio::use_awaitable);
        (void)timer_error;
        (void)events_error;
        auto const state = co_await asio::this_coro::cancellation_state;
        if (state.cancelled() != asio::cancellation_type::none) {
            // The reactor of a nested epoll set is not an exclusive listener: every asynchronous waiter
            // wakes at a ring, and this one, leaving, may have been the only one. Pass it on.
            if (impl_->bell_rung()) ring();
            throw boost::system::system_error{asio::error::operation_aborted};
        }
        if (order[0] == 0) co_return false;
        if (impl_->collect(0)) co_return true;
        if (impl_->epoll < 0) co_return false; // the set failed: the caller looks, then waits on a timer
        // Only other names changed: keep waiting until the same deadline.
    }
}

} // namespace openlock::sys
