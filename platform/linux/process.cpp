// SPDX-License-Identifier: MIT
// Linux process identity behind the :sys seam.
//
// Why these calls:
// - A pid alone is no identity: pids are reused, and in containers the same pid names different processes in
//   different pid namespaces. A holder is (host, boot_id, pid namespace, pid, start time, name): boot_id from
//   /proc/sys/kernel/random/boot_id changes at every boot, the pid namespace inode from /proc/self/ns/pid,
//   and the start time (field 22 of /proc/PID/stat, clock ticks since boot) tells a reused pid from the
//   original.
// - Start times are shown shifted by the reader's time namespace (unshare -T); they are normalised with
//   /proc/self/timens_offsets so that processes in different time namespaces agree.
// - The name is the basename of /proc/PID/exe (without " (deleted)" after an upgrade): unlike comm, a process
//   cannot change it by renaming a thread, so a live holder never stops matching its own record. When another
//   user's exe link cannot be read, pid + start time + boot + namespace already identify the process.
// - /proc may belong to another pid namespace (unshare --pid without a new /proc): then /proc/self is not us,
//   and nothing is judged from /proc at all (only kill()'s ESRCH), so unrelated processes are never mistaken
//   for holders.
// - kill(pid, 0) answers ESRCH only for a pid that is provably free. A pid that exists but whose /proc entry
//   cannot be read (hidepid=2, another user's /proc) is "unknown", never "gone": we do not break what we
//   cannot see.
// - A zombie holds nothing: it can never release, so it counts as gone before its parent reaps it. A
//   thread-group leader that called pthread_exit() also shows state Z while its other threads run:
//   num_threads tells them apart.
// - /proc files are read with open() and read(), not iostreams, so that their descriptors are kept off 0, 1
//   and 2 (platform/posix/descriptors.hpp), as every descriptor of the library is, pidfds included.
module;
#include "../posix/descriptors.hpp"
#include "pidfds.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdint>
#include <dirent.h>
#include <fcntl.h>
#include <gsl/gsl>
#include <mutex>
#include <optional>
#include <poll.h>
#include <pthread.h>
#include <sstream>
#include <string>
#include <string_view>
#include <sys/random.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <system_error>
#include <unistd.h>
#include <vector>

module openlock;
import :sys;

namespace openlock::sys {
namespace {

// All of a small /proc file (at most 4 KiB of it); empty when it cannot be read.
std::string whole_file(std::string const& path) {
    int const fd = posix::off_standard_streams(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (fd < 0) return {};
    char buffer[4096];
    std::size_t filled = 0;
    while (filled < sizeof buffer) {
        auto const got = ::read(fd, buffer + filled, sizeof buffer - filled);
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0) break;
        filled += static_cast<std::size_t>(got);
    }
    ::close(fd);
    return std::string{buffer, filled};
}

std::string first_line(std::string const& path) {
    auto text = whole_file(path);
    text.resize(std::min(text.size(), text.find('\n')));
    return text;
}

struct stat_fields {
    char state = '?';
    std::int64_t group = 0;
    long threads = 0;
    std::optional<std::uint64_t> start_ticks;
};

std::optional<stat_fields> read_stat(std::int64_t pid) {
    auto const text = first_line("/proc/" + std::to_string(pid) + "/stat");
    if (text.empty()) return std::nullopt;
    auto const open = text.find('(');
    auto const close = text.rfind(')');
    if (open == std::string::npos || close == std::string::npos || close < open) return std::nullopt;
    stat_fields fields;
    std::istringstream rest{text.substr(close + 1)};
    std::string field;
    for (int index = 3; rest >> field; ++index) {
        if (index == 3) fields.state = field.empty() ? '?' : field[0];
        if (index == 5) fields.group = std::stoll(field);
        if (index == 20) fields.threads = std::stol(field);
        if (index == 22) {
            fields.start_ticks = std::stoull(field);
            break;
        }
    }
    return fields;
}

// The reader's time-namespace boottime offset in clock ticks (0 outside a time namespace).
std::int64_t boottime_offset_ticks() {
    static std::int64_t const offset = [] {
        std::istringstream in{whole_file("/proc/self/timens_offsets")};
        std::string clock;
        std::int64_t seconds = 0;
        std::int64_t nanoseconds = 0;
        while (in >> clock >> seconds >> nanoseconds) {
            if (clock == "boottime" || clock == "7") {
                auto const ticks_per_second = static_cast<std::int64_t>(::sysconf(_SC_CLK_TCK));
                return seconds * ticks_per_second + nanoseconds * ticks_per_second / 1'000'000'000;
            }
        }
        return std::int64_t{0};
    }();
    return offset;
}

std::optional<std::uint64_t> normalised_start(std::optional<std::uint64_t> shown) {
    if (!shown) return std::nullopt;
    return static_cast<std::uint64_t>(static_cast<std::int64_t>(*shown) - boottime_offset_ticks());
}

// The basename of the process's executable; empty when it cannot be read (another user's process, a kernel
// thread).
std::string executable_name(std::int64_t pid) {
    char target[4096];
    auto const link = "/proc/" + std::to_string(pid) + "/exe";
    auto const length = ::readlink(link.c_str(), target, sizeof target - 1);
    if (length <= 0) return {};
    std::string_view path{target, static_cast<std::size_t>(length)};
    constexpr std::string_view deleted = " (deleted)";
    if (path.ends_with(deleted)) path.remove_suffix(deleted.size());
    auto const slash = path.rfind('/');
    return std::string{slash == std::string_view::npos ? path : path.substr(slash + 1)};
}

// True when /proc shows this process's own pid namespace (so /proc/PID means our PID).
bool proc_is_ours() {
    char target[32] = {};
    auto const length = ::readlink("/proc/self", target, sizeof target - 1);
    return length > 0 &&
           std::string_view{target, static_cast<std::size_t>(length)} == std::to_string(::getpid());
}

std::string pid_namespace_id() {
    char target[64] = {};
    auto const length = ::readlink("/proc/self/ns/pid", target, sizeof target - 1);
    if (length <= 0) return {};
    std::string_view link{target, static_cast<std::size_t>(length)};
    auto const open = link.find('[');
    auto const close = link.find(']');
    if (open == std::string_view::npos || close == std::string_view::npos) return std::string{link};
    return std::string{link.substr(open + 1, close - open - 1)};
}

process_identity compute_identity() {
    process_identity identity;
    identity.pid = ::getpid();
    struct utsname names{};
    if (::uname(&names) == 0) identity.host = names.nodename;
    identity.boot_id = first_line("/proc/sys/kernel/random/boot_id");
    identity.pid_namespace = pid_namespace_id();
    identity.proc_is_ours = proc_is_ours();
    if (!identity.proc_is_ours) return identity;
    identity.name = executable_name(identity.pid);
    if (auto const fields = read_stat(identity.pid))
        identity.start_time = normalised_start(fields->start_ticks);
    return identity;
}

} // namespace

// getpid() is a real system call (glibc stopped caching it), and a costly one on paravirtualised machines:
// the pid is cached and refreshed in the child by an atfork handler (fork() runs it; a raw clone() would
// not).
namespace {
std::atomic<pid_t> cached_pid{0};
}

std::int64_t current_pid() noexcept {
    auto pid = cached_pid.load(std::memory_order_relaxed);
    if (pid == 0) {
        static bool const registered = [] {
            ::pthread_atfork(nullptr, nullptr,
                             [] { cached_pid.store(::getpid(), std::memory_order_relaxed); });
            return true;
        }();
        (void)registered;
        pid = ::getpid();
        cached_pid.store(pid, std::memory_order_relaxed);
    }
    return pid;
}

process_identity current_process() {
    static std::mutex cache_mutex;
    static std::optional<process_identity> cache;
    std::lock_guard guard{cache_mutex};
    if (!cache || cache->pid != current_pid()) cache = compute_identity();
    return *cache;
}

namespace {

// Processes judged alive, each with a pidfd that is known to be that process's (pid and start time): while
// the pidfd is not readable, that process has not exited, and judging it again needs no /proc/PID/stat
// (reading it costs more than all the rest of a waiter's look). In a herd the same few holders take turns.
// The pidfds are the process's one table (pidfds.hpp), shared with the waiters that watch those holders.
//
// Why the pidfd proves it: it is opened before /proc/PID/stat is read, and found not readable after. The
// process it refers to held the pid the whole time in between, so the stat read was that process's, with the
// start time the record names. A readable pidfd means that process has exited; the entry then loses its start
// time and the full judgement decides.
namespace pidfds = linux_pidfds;

// The verdict from the pidfd of a known process; nullopt when it is not known (or its pidfd cannot tell).
std::optional<process_state> known_state(pid_t pid, std::uint64_t start_time, std::string_view name) {
    auto& table = pidfds::table::instance();
    {
        std::lock_guard guard{table.mutex};
        table.forget_parent(current_pid());
        auto* const known = table.find(pid);
        if (!known || known->start_time != start_time) return std::nullopt;
        switch (pidfds::poll_pidfd(known->fd)) {
        case pidfds::pidfd_says::running:
            table.touch(*known);
            break;
        case pidfds::pidfd_says::exited:
        case pidfds::pidfd_says::cannot_tell:
            // The full judgement decides: "gone" from the pidfd alone would misjudge a new process that got
            // the pid within the same clock tick and so has the same start time (R8: judged live, as before).
            // A pidfd that waiters watch stays theirs (its exit wakes them); it only stops proving anything.
            if (known->watchers > 0)
                known->start_time.reset();
            else
                table.erase(*known);
            return std::nullopt;
        }
    }
    // The executable is checked as in the full judgement: exec() keeps the pid and the start time.
    auto const running = executable_name(pid);
    if (!running.empty() && !name.empty() && running != name) return process_state::gone;
    return process_state::alive;
}

// Keeps `pidfd` (opened before the stat read that found the process alive with this start time) if it still
// refers to a running process; closes it otherwise.
void remember_process(pid_t pid, std::uint64_t start_time, int pidfd) {
    if (pidfd < 0) return;
    if (pidfds::poll_pidfd(pidfd) != pidfds::pidfd_says::running) {
        ::close(pidfd);
        return;
    }
    auto& table = pidfds::table::instance();
    std::lock_guard guard{table.mutex};
    table.forget_parent(current_pid());
    if (auto* const same = table.find(pid)) {
        // A pidfd of this pid already (a waiter's, or an earlier judgement's). If its process still runs, it
        // is the one ours refers to (one pid, two live processes cannot be): that one is kept, with the start
        // time.
        if (pidfds::poll_pidfd(same->fd) == pidfds::pidfd_says::running) {
            same->start_time = start_time;
            table.touch(*same);
            ::close(pidfd);
            return;
        }
        if (same->watchers > 0) { // an exited process that waiters still watch: theirs until they hear of it
            ::close(pidfd);
            return;
        }
        table.erase(*same);
    }
    table.add(pid, pidfd).start_time = start_time;
    table.trim();
}

} // namespace

process_state local_process_state(std::int64_t pid, std::optional<std::uint64_t> start_time,
                                  std::string_view name) {
    if (pid <= 0 || pid > INT32_MAX) return process_state::gone; // no such pid can exist here
    auto const native = gsl::narrow<pid_t>(pid);
    // Only processes named with a start time, judged through our own /proc, are remembered.
    bool const rememberable = start_time && current_process().proc_is_ours;
    if (rememberable)
        if (auto const known = known_state(native, *start_time, name)) return *known;
    int pidfd = rememberable ? linux_pidfds::open_pidfd(native) : -1; // before the stat read: see known_state
    auto const close_pidfd = gsl::finally([&pidfd] {
        if (pidfd >= 0) ::close(pidfd);
    });
    if (::kill(native, 0) != 0 && errno == ESRCH) return process_state::gone;
    if (!current_process().proc_is_ours) return process_state::unknown;
    auto const fields = read_stat(pid);
    if (!fields) {
        // It existed a moment ago; gone now, or hidden from us. Ask once more which.
        if (::kill(native, 0) != 0 && errno == ESRCH) return process_state::gone;
        return process_state::unknown;
    }
    if ((fields->state == 'Z' || fields->state == 'X') && fields->threads <= 1) return process_state::gone;
    if (start_time && fields->start_ticks && normalised_start(fields->start_ticks) != start_time)
        return process_state::gone;
    auto const running = executable_name(pid);
    if (!running.empty() && !name.empty() && running != name) return process_state::gone;
    if (rememberable && fields->start_ticks) {
        remember_process(native, *start_time, pidfd);
        pidfd = -1;
    }
    return process_state::alive;
}

std::optional<std::uint64_t> local_process_start_time(std::int64_t pid) {
    if (pid <= 0 || pid > INT32_MAX || !current_process().proc_is_ours) return std::nullopt;
    auto const fields = read_stat(pid);
    if (!fields) return std::nullopt;
    return normalised_start(fields->start_ticks);
}

// Why these calls: kill(-group, 0) fails with ESRCH exactly when no process is in the group, and succeeds (or
// fails with EPERM, another user's members) while one is. The kernel keeps a group's number allocated while
// the group has members, so a process that has that number with another start time than the leader had
// proves that the group ended (and the number was reused, perhaps for a new group). The leader itself may be
// gone while other members run: then /proc has no entry for the number, and kill() decides.
namespace {

bool is_zombie(stat_fields const& fields) {
    return (fields.state == 'Z' || fields.state == 'X') && fields.threads <= 1;
}

// True when /proc shows a member of the group that is not a zombie; false when it shows only zombies (or
// none). Orphans' zombies wait for init to reap them, which some inits do only now and then: a group of them
// holds nothing.
bool has_running_member(std::int64_t group) {
    int const descriptor = posix::off_standard_streams(::open("/proc", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    auto* const directory = descriptor < 0 ? nullptr : ::fdopendir(descriptor);
    if (directory == nullptr) {
        if (descriptor >= 0) ::close(descriptor);
        return true; // cannot look: it has a member, kill() said so
    }
    auto const close_directory = gsl::finally([directory] { ::closedir(directory); });
    while (auto const* entry = ::readdir(directory)) {
        std::int64_t pid = 0;
        std::string_view const name{entry->d_name};
        if (name.empty() || name.find_first_not_of("0123456789") != std::string_view::npos) continue;
        pid = std::stoll(std::string{name});
        auto const fields = read_stat(pid);
        if (fields && fields->group == group && !is_zombie(*fields)) return true;
    }
    return false;
}

} // namespace

process_state local_process_group_state(std::int64_t group, std::optional<std::uint64_t> leader_start_time) {
    if (group <= 1 || group > INT32_MAX) return process_state::gone; // -1 would be every process
    auto const native = gsl::narrow<pid_t>(group);
    auto const signalled = ::kill(-native, 0) == 0 ? 0 : errno;
    if (signalled == ESRCH) return process_state::gone;
    if (!current_process().proc_is_ours) return process_state::alive;
    auto const leader = read_stat(group);
    if (leader && leader_start_time && leader->start_ticks &&
        normalised_start(leader->start_ticks) != leader_start_time)
        return process_state::gone;
    // The leader running: alive. Else the other members decide, zombies not counted; only where kill()
    // could signal a member (EPERM: members of another user, whom hidepid may hide from us).
    bool const leader_runs = leader && leader->group == group && !is_zombie(*leader);
    if (!leader_runs && signalled == 0 && !has_running_member(group)) return process_state::gone;
    // Ask once more: the group may have ended, and its number gone to a new process, between the two looks.
    if (::kill(-native, 0) != 0 && errno == ESRCH) return process_state::gone;
    return process_state::alive;
}

std::array<unsigned char, 16> random_128_bits() {
    std::array<unsigned char, 16> bytes{};
    std::size_t filled = 0;
    while (filled < bytes.size()) {
        auto const got = ::getrandom(bytes.data() + filled, bytes.size() - filled, 0);
        if (got < 0) {
            if (errno == EINTR) continue;
            throw std::system_error(errno, std::system_category(), "getrandom");
        }
        filled += static_cast<std::size_t>(got);
    }
    return bytes;
}

} // namespace openlock::sys
