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
// and
//   nothing is judged from /proc at all (only kill()'s ESRCH), so unrelated processes are never mistaken for
//   holders.
// - kill(pid, 0) answers ESRCH only for a pid that is provably free. A pid that exists but whose /proc entry
// cannot
//   be read (hidepid=2, another user's /proc) is "unknown", never "gone": we do not break what we cannot see.
// - A zombie holds nothing: it can never release, so it counts as gone before its parent reaps it. A
// thread-group
//   leader that called pthread_exit() also shows state Z while its other threads run: num_threads tells them
//   apart.
module;
#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdint>
#include <fstream>
#include <gsl/gsl>
#include <mutex>
#include <optional>
#include <pthread.h>
#include <sstream>
#include <string>
#include <string_view>
#include <sys/random.h>
#include <sys/utsname.h>
#include <system_error>
#include <unistd.h>

module openlock;
import :sys;

namespace openlock::sys {
namespace {

std::string read_small_file(char const* path) {
    std::ifstream in{path};
    std::string text;
    std::getline(in, text);
    return text;
}

struct stat_fields {
    char state = '?';
    long threads = 0;
    std::optional<std::uint64_t> start_ticks;
};

std::optional<stat_fields> read_stat(std::int64_t pid) {
    std::ifstream in{"/proc/" + std::to_string(pid) + "/stat"};
    if (!in) return std::nullopt;
    std::string text;
    std::getline(in, text);
    auto const open = text.find('(');
    auto const close = text.rfind(')');
    if (open == std::string::npos || close == std::string::npos || close < open) return std::nullopt;
    stat_fields fields;
    std::istringstream rest{text.substr(close + 1)};
    std::string field;
    for (int index = 3; rest >> field; ++index) {
        if (index == 3) fields.state = field.empty() ? '?' : field[0];
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
        std::ifstream in{"/proc/self/timens_offsets"};
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
    identity.boot_id = read_small_file("/proc/sys/kernel/random/boot_id");
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

process_state local_process_state(std::int64_t pid, std::optional<std::uint64_t> start_time,
                                  std::string_view name) {
    if (pid <= 0 || pid > INT32_MAX) return process_state::gone; // no such pid can exist here
    auto const native = gsl::narrow<pid_t>(pid);
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
    return process_state::alive;
}

std::string random_nonce() {
    unsigned char bytes[16];
    std::size_t filled = 0;
    while (filled < sizeof bytes) {
        auto const got = ::getrandom(bytes + filled, sizeof bytes - filled, 0);
        if (got < 0) {
            if (errno == EINTR) continue;
            throw std::system_error(errno, std::system_category(), "getrandom");
        }
        filled += static_cast<std::size_t>(got);
    }
    static constexpr char digits[] = "0123456789abcdef";
    std::string text(2 * sizeof bytes, '0');
    for (std::size_t i = 0; i < sizeof bytes; ++i) {
        text[2 * i] = digits[bytes[i] >> 4];
        text[2 * i + 1] = digits[bytes[i] & 0xf];
    }
    return text;
}

} // namespace openlock::sys
