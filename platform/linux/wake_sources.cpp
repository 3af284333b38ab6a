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
// One inotify instance and one epoll set serve every waiter of the process (docs/protocol.md 8.1): inotify
// instances are a per-user resource (fs.inotify.max_user_instances, 128 by default), and one per waiter let
// one program with many contended locks take every instance of its user. Watches are counted per watch
// descriptor (inotify gives one directory one descriptor per instance), pidfds per process watched, doorbells
// per FIFO; whichever thread reads an event hands it to the waiters it concerns (a blocking waiter through
// its condition variable, an asynchronous one through a timer cancelled on its strand, the waiters with the
// set in their wait — the thread asleep in epoll_wait, the asynchronous "pump" — through an eventfd in the
// set).
//
// inotify wakes every waiter at every release (a herd: one wins, the rest look and sleep again). The
// doorbell wakes one: a FIFO per lock (mkfifo, in the user's /tmp/openlock-UID) that every waiting process
// keeps open and listens on through its epoll set with EPOLLEXCLUSIVE, so a byte written by a releasing
// holder wakes one sleeping epoll_wait, not all (Linux 4.5). A holder names the doorbell it rings in its
// record, and a waiter turns its directory events off only for such a holder whose exit its pidfd watches
// (docs/protocol.md 8.6). FIFOs are opened O_RDWR (Linux: never blocks, and a write never meets "no reader")
// and O_NOFOLLOW, through a descriptor of the doorbell directory (openat, mkfifoat, unlinkat: the directory
// checked once is the one used). Listeners hold flock(LOCK_SH) on their FIFO; the last one leaving takes
// LOCK_EX without blocking, which only succeeds when no other process listens, and only then removes it.
// Every descriptor is kept off 0, 1 and 2 (platform/posix/descriptors.hpp).
module;
#include "../posix/descriptors.hpp"
#include "pidfds.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <boost/asio/deferred.hpp>
#include <boost/asio/experimental/parallel_group.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/system/system_error.hpp>
#include <cerrno>
#include <chrono>
#include <climits>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <fcntl.h>
#include <filesystem>
#include <functional>
#include <gsl/gsl>
#include <memory>
#include <mutex>
#include <poll.h>
#include <string>
#include <string_view>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <utility>
#include <vector>

module openlock;
import :sys;

namespace openlock::sys {
namespace {

namespace pidfds = linux_pidfds;

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

// A descriptor the library keeps: never 0, 1 or 2, where a program's writes to a closed standard stream
// would land in it.
int kept(int fd) noexcept {
    return posix::off_standard_streams(fd);
}

void close_if_open(int& fd) noexcept {
    if (fd >= 0) ::close(fd);
    fd = -1;
}

// Reads and forgets what a FIFO or eventfd holds (the FIFO: at most a pipe buffer).
void drain_descriptor(int fd) noexcept {
    char bytes[4096];
    while (::read(fd, bytes, sizeof bytes) == static_cast<ssize_t>(sizeof bytes)) {
    }
}

// The user's doorbell directory, /tmp/openlock-UID, opened (made first when `make`): -1 unless it is a
// directory of ours that nobody else may read or write. Never through a symlink (O_NOFOLLOW): another user
// may have made the name first. Everything after is done relative to this descriptor, so the directory
// checked is the one used.
int open_doorbell_directory(bool make) noexcept {
    char path[48];
    std::snprintf(path, sizeof path, "/tmp/openlock-%lu", static_cast<unsigned long>(::geteuid()));
    if (make && ::mkdir(path, 0700) != 0 && errno != EEXIST) return -1;
    int const fd = kept(::open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (fd < 0) return -1;
    struct stat mine{};
    if (::fstat(fd, &mine) != 0 || !S_ISDIR(mine.st_mode) || mine.st_uid != ::geteuid() ||
        (mine.st_mode & 077) != 0) {
        ::close(fd); // not ours alone: someone else could read (steal) the rings
        return -1;
    }
    return fd;
}

// The doorbell's name in that directory, after the lock's directory (device and inode) and file name. Not
// next to the lock, where a FIFO would be clutter that `cat *` blocks on. Processes of other users, or with
// another /tmp (containers), get other doorbells: their records name another one, so their waiters keep
// directory events. Empty: no doorbell here.
std::string doorbell_name(std::filesystem::path const& lock_file) {
    auto directory = lock_file.parent_path();
    if (directory.empty()) directory = ".";
    struct stat place{};
    if (::stat(directory.c_str(), &place) != 0) return {};
    std::uint64_t name_hash = 14695981039346656037ull; // FNV-1a
    for (unsigned char const c : lock_file.filename().string())
        name_hash = (name_hash ^ c) * 1099511628211ull;
    char name[80];
    std::snprintf(name, sizeof name, "%llx-%llx-%016llx.bell", static_cast<unsigned long long>(place.st_dev),
                  static_cast<unsigned long long>(place.st_ino), static_cast<unsigned long long>(name_hash));
    return name;
}

// What a record names: the FIFO's device and inode, mixed into one nonzero number (unique on this kernel
// while the FIFO exists; a collision with another kernel's FIFO costs a waiter at most a safety-net pause).
std::uint64_t identity_of(struct stat const& fifo) {
    std::uint64_t mixed = static_cast<std::uint64_t>(fifo.st_dev) * 0x9e3779b97f4a7c15ull ^
                          static_cast<std::uint64_t>(fifo.st_ino);
    return mixed == 0 ? 1 : mixed;
}

bool same_file(struct stat const& a, struct stat const& b) {
    return a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

// What the process's one epoll set reports, told apart by the upper half of the event's data.
enum class source : std::uint64_t { directory_events = 1, doorbell = 2, holder = 3, interrupt = 4 };

std::uint64_t tagged(source kind, int fd) {
    return static_cast<std::uint64_t>(kind) << 32 | static_cast<std::uint32_t>(fd);
}

// Sleeps in the set until an event or the timeout: epoll_pwait2 (nanoseconds) where the kernel has it.
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

// One waiter (one path's wake sources) as the process's watcher sees it. All but the fixed part is guarded by
// the watcher's mutex.
struct waiter {
    std::filesystem::path directory;
    std::string lock_name;
    std::string guard_name;
    std::int64_t owner_pid = 0; ///< after fork() the child's copy is left alone (the child makes its own)
    bool events = false;        ///< registered with the watcher (a local file system, a usable set)
    int bell = -1; ///< the doorbell FIFO (the watcher's, shared by its listeners in this process)
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

// The process's one inotify instance and one epoll set, and who listens to what in them.
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

    /// This process's watcher (made at first use, again in a child after fork()).
    static watcher& instance() {
        static std::atomic<watcher*> current{nullptr};
        auto* existing = current.load();
        if (existing && existing->pid_ == current_pid()) return *existing;
        auto* made = new watcher; // never destroyed: waiters in static objects may wait during exit
        if (current.compare_exchange_strong(existing, made)) {
            // The parent's watcher in a child: its copies of the set and the instance are closed (the
            // parent's registrations stay: they are the parent's). The rest of it is left as it is: another
            // thread of the parent may have been changing it at the fork.
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

    bool usable() const { return epoll >= 0 && !failed; }

    bool add_to_set(int fd, std::uint32_t wanted_events, source kind) const {
        epoll_event wanted{};
        wanted.events = wanted_events;
        wanted.data.u64 = tagged(kind, fd);
        return ::epoll_ctl(epoll, EPOLL_CTL_ADD, fd, &wanted) == 0;
    }

    // Out of the set first, then closed: a child forked meanwhile keeps a copy of the descriptor, and closing
    // ours alone would leave it registered, reporting events under a number that may be reused.
    void remove_and_close(int fd) const {
        ::epoll_ctl(epoll, EPOLL_CTL_DEL, fd, nullptr);
        ::close(fd);
    }

    void wake(waiter& target, bool by_doorbell) {
        target.woken = true;
        target.rung = target.rung || by_doorbell;
        target.wakeup.notify_one();
        if (&target == collecting_for) return; // it looks at its events right after
        // The waiters with the set in their wait (the thread in epoll_wait, the asynchronous pump) wake
        // through the set; any other asynchronous waiter through its kick.
        if (&target == sync_poller || &target == async_pump) {
            std::uint64_t const one = 1;
            (void)!::write(interrupt, &one, sizeof one);
        } else if (target.kick) {
            target.kick();
        }
    }

    /// Watches the waiter's directory (one watch per directory, counted).
    bool add_watch(waiter& target) {
        if (inotify < 0) {
            // Made at the first watch, and tried again at later ones: the user's instances may be used up by
            // other programs for a while.
            inotify = kept(::inotify_init1(IN_NONBLOCK | IN_CLOEXEC));
            if (inotify >= 0 && !add_to_set(inotify, EPOLLIN, source::directory_events))
                close_if_open(inotify);
            if (inotify < 0) return false;
        }
        int const descriptor = ::inotify_add_watch(inotify, target.directory.c_str(), watched_events);
        if (descriptor < 0) return false; // limits reached or no such directory: poll
        auto const known = std::find_if(watches_.begin(), watches_.end(), [descriptor](auto const& entry) {
            return entry.first == descriptor;
        });
        if (known != watches_.end())
            ++known->second;
        else
            watches_.emplace_back(descriptor, 1);
        target.watch = descriptor;
        return true;
    }

    void remove_watch(waiter& target) {
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

    /// Listens on the lock's doorbell (docs/protocol.md 8.6), made if missing; one descriptor per FIFO.
    void listen_on_doorbell(waiter& target, std::string const& name) {
        if (name.empty()) return;
        auto const known =
            std::find_if(bells_.begin(), bells_.end(), [&](auto const& bell) { return bell.name == name; });
        if (known != bells_.end()) {
            ++known->listeners;
            target.bell = known->fd;
            target.bell_identity = known->identity;
            return;
        }
        int directory = open_doorbell_directory(true);
        if (directory < 0) return;
        auto const close_directory = gsl::finally([&directory] { close_if_open(directory); });
        // A few rounds: a FIFO may be removed by its last listener elsewhere just as we open it.
        for (int round = 0; round < 4; ++round) {
            // Never a symlink, never anything but our own FIFO: looked at first (opening a device node may do
            // something), then O_NOFOLLOW, then fstat of what was opened.
            struct stat seen{};
            if (::fstatat(directory, name.c_str(), &seen, AT_SYMLINK_NOFOLLOW) != 0) {
                if (errno != ENOENT) return;
                if (::mkfifoat(directory, name.c_str(), 0600) != 0 && errno != EEXIST) return;
                continue;
            }
            if (!S_ISFIFO(seen.st_mode) || seen.st_uid != ::geteuid()) return;
            int fd = kept(::openat(directory, name.c_str(), O_RDWR | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC));
            if (fd < 0) return;
            auto close_fd = gsl::finally([&fd] { close_if_open(fd); });
            // Our shared lock tells a last listener elsewhere that the FIFO is in use. Refused: that listener
            // holds the exclusive one and removes the name: make or open the next FIFO.
            if (::flock(fd, LOCK_SH | LOCK_NB) != 0) continue;
            struct stat opened{};
            if (::fstat(fd, &opened) != 0 || !S_ISFIFO(opened.st_mode) || opened.st_uid != ::geteuid())
                return;
            // Still under its name: not removed between our look and our lock.
            struct stat named{};
            if (::fstatat(directory, name.c_str(), &named, AT_SYMLINK_NOFOLLOW) != 0 ||
                !same_file(named, opened))
                continue;
            if (!add_to_set(fd, EPOLLIN | EPOLLEXCLUSIVE, source::doorbell)) return;
            bells_.push_back({name, fd, identity_of(opened), 1});
            target.bell = fd;
            target.bell_identity = identity_of(opened);
            fd = -1;
            return;
        }
    }

    void leave_doorbell(waiter& target) {
        if (target.bell < 0) return;
        auto const known = std::find_if(bells_.begin(), bells_.end(),
                                        [&](auto const& bell) { return bell.fd == target.bell; });
        target.bell = -1;
        if (known == bells_.end() || --known->listeners > 0) return;
        // This process's last listener. The name goes only if no other process listens: our shared lock
        // becomes exclusive only then, and while we hold it nobody starts listening (their shared lock is
        // refused and they look again). The name is removed only while it still names this FIFO.
        if (::flock(known->fd, LOCK_EX | LOCK_NB) == 0) {
            int directory = open_doorbell_directory(false);
            struct stat named{};
            struct stat opened{};
            if (directory >= 0 &&
                ::fstatat(directory, known->name.c_str(), &named, AT_SYMLINK_NOFOLLOW) == 0 &&
                ::fstat(known->fd, &opened) == 0 && same_file(named, opened))
                ::unlinkat(directory, known->name.c_str(), 0);
            close_if_open(directory);
        }
        remove_and_close(known->fd);
        bells_.erase(known);
    }

    /// Watches the exit of a holder: one pidfd per process, shared by its waiters and with the holder
    /// judgement (pidfds.hpp); in the set while any waiter watches it. Unwatched ones stay open for a while,
    /// since in a herd the same few holders take turns.
    void watch_holder(waiter& target, std::int64_t pid) {
        if (pid == target.holder_pid && target.holder >= 0) return;
        stop_watching_holder(target);
        auto& table = pidfds::table::instance();
        std::lock_guard guard{table.mutex};
        table.forget_parent(current_pid());
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

    void stop_watching_holder(waiter& target) {
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

    /// Handles what the set reported: each event goes to the waiters it concerns.
    void dispatch(epoll_event const* events, int count) {
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

    /// Handles what is ready now, without blocking.
    void collect_now() {
        if (!usable()) return;
        std::array<epoll_event, 16> events{};
        int ready = 0;
        do {
            ready = ::epoll_wait(epoll, events.data(), static_cast<int>(events.size()), 0);
            if (ready > 0) dispatch(events.data(), ready);
        } while (ready == static_cast<int>(events.size()));
    }

private:
    struct doorbell_entry {
        std::string name;
        int fd = -1;
        std::uint64_t identity = 0;
        int listeners = 0;
    };

    watcher() : pid_(current_pid()) {
        epoll = kept(::epoll_create1(EPOLL_CLOEXEC));
        if (epoll < 0) return; // no events: sleep-polling
        interrupt = kept(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
        if (interrupt < 0 || !add_to_set(interrupt, EPOLLIN, source::interrupt)) close_all();
    }

    void close_all() {
        close_if_open(interrupt);
        close_if_open(inotify);
        close_if_open(epoll);
    }

    // Drains the queue, waking the waiters of each event's directory whose lock or guard it names (or every
    // one of them for the watch itself, and everyone after an overflow).
    void read_directory_events() {
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
                std::string_view const name =
                    event->len > 0 ? std::string_view{event->name} : std::string_view{};
                bool const watch_gone = (event->mask & IN_IGNORED) != 0;
                bool const about_directory =
                    (event->mask & (IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED)) != 0;
                for (auto* target : waiters) {
                    if (target->watch != event->wd)
                        continue; // a watch we removed (its IN_IGNORED) or nothing
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

    std::int64_t pid_;
    std::vector<std::pair<int, int>> watches_; ///< watch descriptor, waiters using it
    std::vector<doorbell_entry> bells_;
};

} // namespace

void ring_doorbell(std::filesystem::path const& lock_file, std::uint64_t identity) noexcept {
    std::string name;
    try {
        name = doorbell_name(lock_file);
    } catch (...) { // no memory: the waiters' pause covers it
        return;
    }
    if (name.empty()) return;
    int directory = open_doorbell_directory(false);
    if (directory < 0) return;
    auto const close_directory = gsl::finally([&directory] { close_if_open(directory); });
    // As a listener opens it: never a symlink, never anything but our own FIFO, and only the one the record
    // names.
    struct stat seen{};
    if (::fstatat(directory, name.c_str(), &seen, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISFIFO(seen.st_mode) ||
        seen.st_uid != ::geteuid() || identity_of(seen) != identity)
        return;
    // O_NONBLOCK: a FIFO nobody has open for reading answers ENXIO (nobody listens), instead of blocking.
    int const fd = kept(::openat(directory, name.c_str(), O_WRONLY | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC));
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

struct wake_sources::impl : waiter {};

wake_sources::wake_sources(std::filesystem::path const& lock_file, std::filesystem::path const& guard,
                           doorbell_use bell_use)
    : impl_(std::make_unique<impl>()) {
    auto& self = *impl_;
    auto directory = lock_file.parent_path();
    if (directory.empty()) directory = ".";
    self.directory = directory;
    self.lock_name = lock_file.filename().string();
    self.guard_name = guard.filename().string();
    self.owner_pid = current_pid();
    if (is_network_file_system(directory)) return;
    auto const bell = bell_use == doorbell_use::listen ? doorbell_name(lock_file) : std::string{};
    auto& hub = watcher::instance();
    std::lock_guard guard_hub{hub.mutex};
    if (!hub.usable()) return; // no events: sleep-polling
    hub.waiters.push_back(&self);
    self.events = true;
    if (!hub.add_watch(self)) self.watch_lost = true; // limits reached or no such directory: poll
    hub.listen_on_doorbell(self, bell);
}

wake_sources::~wake_sources() {
    auto& self = *impl_;
    // In a child after fork() the parent's waiter is left alone: the child's watcher never knew it.
    if (!self.events || self.owner_pid != current_pid()) return;
    auto& hub = watcher::instance();
    std::lock_guard guard{hub.mutex};
    hub.remove_watch(self);
    hub.leave_doorbell(self);
    hub.stop_watching_holder(self);
    std::erase(hub.waiters, &self);
    std::erase(hub.sync_followers, &self);
}

void wake_sources::watch_holder(std::int64_t pid) {
    if (!impl_->events) return;
    auto& hub = watcher::instance();
    std::lock_guard guard{hub.mutex};
    hub.watch_holder(*impl_, pid);
}

bool wake_sources::watches_directory() const noexcept {
    if (!impl_->events) return false;
    auto& hub = watcher::instance();
    std::lock_guard guard{hub.mutex};
    return impl_->watch >= 0 && hub.usable();
}

bool wake_sources::watches_holder() const noexcept {
    if (!impl_->events) return false;
    auto& hub = watcher::instance();
    std::lock_guard guard{hub.mutex};
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

bool wake_sources::set_directory_events(directory_events setting) {
    bool const wanted = setting == directory_events::on;
    auto& self = *impl_;
    if (!self.events) return false;
    auto& hub = watcher::instance();
    std::lock_guard guard{hub.mutex};
    if (self.watch_lost || wanted == (self.watch >= 0)) return false;
    if (!wanted) {
        hub.remove_watch(self);
        return false;
    }
    if (!hub.add_watch(self)) self.watch_lost = true; // limits reached: sleep-polling
    return true;
}

void wake_sources::drain() {
    auto& self = *impl_;
    if (!self.events) return;
    auto& hub = watcher::instance();
    std::lock_guard guard{hub.mutex};
    hub.collect_now(); // what concerns other waiters goes to them
    self.woken = false;
    self.rung = false;
    // Bytes rung while the exclusive wake-up went to another process's set: this waiter looks next anyway.
    if (self.bell >= 0) drain_descriptor(self.bell);
}

bool wake_sources::wait_for(std::chrono::nanoseconds timeout) {
    using clock = std::chrono::steady_clock;
    auto const until = clock::now() + timeout;
    auto& self = *impl_;
    auto sleep_until_deadline = [&] {
        auto const left = std::chrono::duration_cast<std::chrono::nanoseconds>(until - clock::now()).count();
        if (left <= 0) return;
        timespec const pause{static_cast<time_t>(left / 1'000'000'000),
                             static_cast<long>(left % 1'000'000'000)};
        ::nanosleep(&pause, nullptr);
    };
    if (!self.events) {
        sleep_until_deadline();
        return false;
    }
    auto& hub = watcher::instance();
    std::unique_lock lock{hub.mutex};
    // Blocking waiters take turns in epoll_wait: the one there hands what it reads to the others; leaving, it
    // wakes a follower to take its place.
    auto const hand_over = gsl::finally([&hub] {
        if (!hub.sync_poller && !hub.sync_followers.empty()) hub.sync_followers.front()->wakeup.notify_one();
    });
    for (;;) {
        if (self.woken) {
            self.woken = false;
            self.rung = false;
            return true;
        }
        auto const left = std::chrono::duration_cast<std::chrono::nanoseconds>(until - clock::now()).count();
        if (left <= 0) return false;
        if (!hub.usable()) {
            lock.unlock();
            sleep_until_deadline();
            lock.lock();
            return false;
        }
        if (!hub.sync_poller) {
            hub.sync_poller = &self;
            lock.unlock();
            std::array<epoll_event, 16> events{};
            int const ready = wait_in_set(hub.epoll, events.data(), static_cast<int>(events.size()), left);
            int const error = errno;
            lock.lock();
            hub.sync_poller = nullptr;
            // The set is unusable (closed under us by a program that closes every descriptor): sleep-polling
            // from now on, instead of returning at once to a waiter that would call again, a busy loop.
            if (ready < 0 && error != EINTR) hub.failed = true;
            if (ready > 0) hub.dispatch(events.data(), ready);
            continue;
        }
        hub.sync_followers.push_back(&self);
        self.wakeup.wait_until(lock, until);
        std::erase(hub.sync_followers, &self);
    }
}

boost::asio::awaitable<bool> wake_sources::async_wait_for(std::chrono::nanoseconds timeout) {
    namespace asio = boost::asio;
    using asio::experimental::make_parallel_group;
    using asio::experimental::wait_for_one;
    auto const executor = co_await asio::this_coro::executor;
    asio::steady_timer timer{executor, timeout};
    auto& self = *impl_;
    auto& hub = watcher::instance();
    bool usable = self.events;
    if (usable) {
        std::lock_guard guard{hub.mutex};
        usable = hub.usable();
    }
    if (!usable) {
        co_await timer.async_wait(asio::use_awaitable); // cancellation ends it with an exception
        co_return false;
    }
    // Another thread that reads an event for us, while we are not the pump, cancels this timer through our
    // strand (the executor of the coroutine: a cancel posted there runs only after we suspended in the wait
    // it ends). The pump is woken through the set instead, and waits for no kick: one wait fewer per wake-up.
    auto const kicker = std::make_shared<asio::steady_timer>(executor, asio::steady_timer::time_point::max());
    {
        std::lock_guard guard{hub.mutex};
        self.kick = [kicker, executor] { asio::post(executor, [kicker] { kicker->cancel(); }); };
    }
    auto const leave = gsl::finally([&] {
        std::lock_guard guard{hub.mutex};
        self.kick = nullptr;
        if (hub.async_pump == &self) {
            // Another asynchronous waiter takes over listening to the set.
            hub.async_pump = nullptr;
            for (auto* other : hub.waiters)
                if (other->kick) {
                    other->kick();
                    break;
                }
        }
    });
    auto const take_woken = [&] {
        std::lock_guard guard{hub.mutex};
        bool const woken = std::exchange(self.woken, false);
        if (woken) self.rung = false;
        return woken;
    };
    for (;;) {
        // One asynchronous waiter at a time (the pump) has the set itself in its wait: the reactor watches
        // that one descriptor for every source of the process. The others wait for their kick.
        bool pumping = false;
        {
            std::lock_guard guard{hub.mutex};
            if (!hub.async_pump) hub.async_pump = &self;
            pumping = hub.async_pump == &self;
            if (pumping) {
                hub.collecting_for = &self;
                hub.collect_now(); // what came while nobody listened
                hub.collecting_for = nullptr;
            }
        }
        if (take_woken()) co_return true;
        bool timed_out = false;
        // A parallel group forwards every cancellation type (terminal, partial, total) to the waits
        // themselves.
        if (pumping) {
            // The set, borrowed: released, not closed, when the wait ends.
            asio::posix::stream_descriptor set{executor};
            auto const give_back = gsl::finally([&] {
                if (set.is_open()) set.release();
            });
            set.assign(hub.epoll);
            auto const [order, timer_error, set_error] =
                co_await make_parallel_group(
                    timer.async_wait(asio::deferred),
                    set.async_wait(asio::posix::stream_descriptor::wait_read, asio::deferred))
                    .async_wait(wait_for_one(), asio::use_awaitable);
            (void)timer_error;
            (void)set_error;
            timed_out = order[0] == 0;
        } else {
            auto const [order, timer_error, kick_error] =
                co_await make_parallel_group(timer.async_wait(asio::deferred),
                                             kicker->async_wait(asio::deferred))
                    .async_wait(wait_for_one(), asio::use_awaitable);
            (void)timer_error;
            (void)kick_error;
            timed_out = order[0] == 0;
        }
        auto const state = co_await asio::this_coro::cancellation_state;
        if (state.cancelled() != asio::cancellation_type::none) {
            // The reactor of a nested epoll set is not an exclusive listener: every asynchronous waiter
            // wakes at a ring, and this one, leaving, may have been the only one. Pass it on.
            bool rung = false;
            {
                std::lock_guard guard{hub.mutex};
                rung = std::exchange(self.rung, false);
                self.woken = false;
            }
            pollfd bell{self.bell, POLLIN, 0};
            if (rung || (self.bell >= 0 && ::poll(&bell, 1, 0) == 1)) ring();
            throw boost::system::system_error{asio::error::operation_aborted};
        }
        if (timed_out) co_return take_woken();
        // Only other waiters' events, or other names changed: keep waiting until the same deadline.
    }
}

} // namespace openlock::sys
