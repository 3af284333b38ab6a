// Event-driven waiting behind the :sys seam (Linux).
//
// Why these syscalls: inotify on the lock's directory reports the lock file (or the takeover guard) going
// away the moment it happens, and a pidfd becomes readable the moment a local holder exits, so a waiter
// retries at once instead of at its next poll. The watch is set up before the waiter's first look, so a
// release after that look is always queued. inotify only sees changes made through this kernel: on NFS, SMB,
// FUSE and other shared file systems (statfs f_type) other clients' changes are invisible, so there the
// waiter polls with backoff only. Polling stays as the safety net everywhere (queue overflow, a watch
// removed, no pidfd_open before Linux 5.3).
module;
#include <algorithm>
#include <array>
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
#include <filesystem>
#include <gsl/gsl>
#include <memory>
#include <poll.h>
#include <string>
#include <string_view>
#include <sys/eventfd.h>
#include <sys/inotify.h>
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

} // namespace

bool is_network_file_system(std::filesystem::path const& directory) {
    struct statfs info{};
    if (::statfs(directory.c_str(), &info) != 0) return true; // cannot tell: do not trust local events
    auto const type = static_cast<std::uint64_t>(static_cast<std::uint32_t>(info.f_type));
    for (auto const shared : shared_file_systems)
        if (type == shared) return true;
    return false;
}

struct wake_sources::impl {
    int inotify = -1;
    int holder = -1;
    int never = -1;     ///< an eventfd nobody writes (asynchronous waits only)
    int never_dup = -1; ///< the same, for the second stand-in (epoll registers a descriptor once)
    int never_too() {
        if (never_dup < 0) never_dup = ::dup(never);
        return never_dup;
    }
    std::int64_t holder_pid = 0;
    /// Pidfds of the last few holders (the current one included), least recently watched first: in a herd
    /// the same few processes take turns, and a pidfd is opened once per process, not once per look. One
    /// that becomes readable is closed and forgotten at once, so a pid reused later gets a new one.
    std::vector<std::pair<std::int64_t, int>> recent_holders;
    std::string lock_name;
    std::string guard_name;

    ~impl() {
        close_if_open(inotify);
        for (auto& [pid, fd] : recent_holders)
            close_if_open(fd);
        close_if_open(never);
        close_if_open(never_dup);
    }

    // The holder exited: judge the lock again (and never watch this pidfd again).
    void forget_holder() {
        std::erase_if(recent_holders, [this](auto const& entry) { return entry.second == holder; });
        close_if_open(holder);
        holder_pid = 0;
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
                std::string_view const name =
                    event->len > 0 ? std::string_view{event->name} : std::string_view{};
                if (event->mask & (IN_Q_OVERFLOW | IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED))
                    relevant = true;
                if (name == lock_name || name == guard_name) relevant = true;
                if (event->mask & IN_IGNORED) {
                    close_if_open(inotify); // the directory is gone: sleep-polling from now on
                    return true;
                }
                at += sizeof(inotify_event) + event->len;
            }
            if (drained) break;
        }
        return relevant;
    }
};

wake_sources::wake_sources(std::filesystem::path const& lock_file, std::filesystem::path const& guard)
    : impl_(std::make_unique<impl>()) {
    auto directory = lock_file.parent_path();
    if (directory.empty()) directory = ".";
    impl_->lock_name = lock_file.filename().string();
    impl_->guard_name = guard.filename().string();
    if (is_network_file_system(directory)) return;
    impl_->inotify = ::inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (impl_->inotify >= 0 && ::inotify_add_watch(impl_->inotify, directory.c_str(), watched_events) < 0)
        close_if_open(impl_->inotify); // limits reached or no such directory: poll
}

wake_sources::~wake_sources() = default;

void wake_sources::watch_holder(std::int64_t pid) {
#ifdef SYS_pidfd_open
    if (pid == impl_->holder_pid && impl_->holder >= 0) return;
    auto& recent = impl_->recent_holders;
    impl_->holder_pid = pid;
    auto const known =
        std::find_if(recent.begin(), recent.end(), [pid](auto const& entry) { return entry.first == pid; });
    if (known != recent.end()) {
        auto const entry = *known;
        recent.erase(known);
        recent.push_back(entry); // the most recently watched last
        impl_->holder = entry.second;
        return;
    }
    impl_->holder = static_cast<int>(::syscall(SYS_pidfd_open, static_cast<pid_t>(pid), 0));
    if (impl_->holder < 0) return;
    constexpr std::size_t holders_kept = 8;
    if (recent.size() >= holders_kept) {
        close_if_open(recent.front().second); // never the current holder: that one is last
        recent.erase(recent.begin());
    }
    recent.emplace_back(pid, impl_->holder);
#else
    (void)pid;
#endif
}

bool wake_sources::watches_directory() const noexcept {
    return impl_->inotify >= 0;
}

void wake_sources::drain() {
    if (impl_->inotify >= 0) impl_->relevant_events();
}

bool wake_sources::wait_for(std::chrono::nanoseconds timeout) {
    using clock = std::chrono::steady_clock;
    auto const until = clock::now() + timeout;
    for (;;) {
        auto const left = until - clock::now();
        if (left <= clock::duration::zero()) return false;
        std::array<pollfd, 2> watched{};
        nfds_t count = 0;
        if (impl_->inotify >= 0) watched[count++] = {impl_->inotify, POLLIN, 0};
        if (impl_->holder >= 0) watched[count++] = {impl_->holder, POLLIN, 0};
        auto const nanoseconds = std::chrono::duration_cast<std::chrono::nanoseconds>(left).count();
        timespec const pause{static_cast<time_t>(nanoseconds / 1'000'000'000),
                             static_cast<long>(nanoseconds % 1'000'000'000)};
        auto const ready = ::ppoll(watched.data(), count, &pause, nullptr);
        if (ready < 0 && errno == EINTR) continue;
        if (ready <= 0) return false;
        for (nfds_t i = 0; i < count; ++i) {
            if (watched[i].revents == 0) continue;
            if (watched[i].fd == impl_->holder) {
                impl_->forget_holder(); // it exited: judge the lock again
                return true;
            }
            if (impl_->relevant_events()) return true;
        }
    }
}

boost::asio::awaitable<bool> wake_sources::async_wait_for(std::chrono::nanoseconds timeout) {
    namespace asio = boost::asio;
    using asio::experimental::make_parallel_group;
    using asio::experimental::wait_for_one;
    auto const executor = co_await asio::this_coro::executor;
    asio::steady_timer timer{executor, timeout};
    // Borrowed descriptors: released, not closed, when the wait ends. A missing source is stood in for by an
    // eventfd that nobody writes, so that the group always waits on the same three kinds of operation.
    if (impl_->never < 0) impl_->never = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (impl_->never < 0)
        throw boost::system::system_error{errno, boost::system::system_category(), "eventfd"};
    asio::posix::stream_descriptor directory{executor};
    asio::posix::stream_descriptor holder{executor};
    auto const give_back = gsl::finally([&] {
        if (directory.is_open()) directory.release();
        if (holder.is_open()) holder.release();
    });
    for (;;) {
        if (!directory.is_open()) directory.assign(impl_->inotify >= 0 ? impl_->inotify : impl_->never);
        if (!holder.is_open()) holder.assign(impl_->holder >= 0 ? impl_->holder : impl_->never_too());
        // A parallel group forwards every cancellation type (terminal, partial, total) to the waits
        // themselves.
        auto const [order, timer_error, directory_error, holder_error] =
            co_await make_parallel_group(
                timer.async_wait(asio::deferred),
                directory.async_wait(asio::posix::stream_descriptor::wait_read, asio::deferred),
                holder.async_wait(asio::posix::stream_descriptor::wait_read, asio::deferred))
                .async_wait(wait_for_one(), asio::use_awaitable);
        (void)timer_error;
        (void)directory_error;
        (void)holder_error;
        auto const state = co_await asio::this_coro::cancellation_state;
        if (state.cancelled() != asio::cancellation_type::none)
            throw boost::system::system_error{asio::error::operation_aborted};
        switch (order[0]) {
        case 0:
            co_return false;
        case 2:
            if (impl_->holder < 0) break; // the stand-in cannot fire; defensive
            holder.release();
            impl_->forget_holder(); // it exited: judge the lock again
            co_return true;
        default:
            if (impl_->inotify < 0) break;
            directory.release();
            if (impl_->relevant_events()) co_return true;
            break; // only other names changed: keep waiting until the same deadline
        }
    }
}

} // namespace openlock::sys
