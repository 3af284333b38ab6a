// SPDX-License-Identifier: MIT
// Shared by the parts of openlock-handoff (bench/handoff/): clocks, shared memory between processes, the lock
// kinds next to openlock, process plumbing, statistics, and what each part measures.
#pragma once

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <functional>
#include <linux/futex.h>
#include <memory>
#include <optional>
#include <poll.h>
#include <signal.h>
#include <string>
#include <string_view>
#include <sys/epoll.h>
#include <sys/file.h>
#include <sys/inotify.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <system_error>
#include <time.h>
#include <unistd.h>
#include <utility>
#include <vector>

namespace handoff {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

// ---- clocks

inline std::int64_t monotonic_ns() {
    timespec now{};
    ::clock_gettime(CLOCK_MONOTONIC, &now);
    return std::int64_t{now.tv_sec} * 1'000'000'000 + now.tv_nsec;
}

// CPU of the whole process: the asynchronous path runs on the io_context thread, which is the only one.
inline std::int64_t process_cpu_ns() {
    timespec used{};
    ::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &used);
    return std::int64_t{used.tv_sec} * 1'000'000'000 + used.tv_nsec;
}

inline void sleep_ns(std::int64_t nanoseconds) {
    timespec pause{static_cast<time_t>(nanoseconds / 1'000'000'000),
                   static_cast<long>(nanoseconds % 1'000'000'000)};
    while (::nanosleep(&pause, &pause) != 0 && errno == EINTR) {
    }
}

inline std::int64_t resident_kib() {
    std::ifstream status{"/proc/self/status"};
    std::string line;
    while (std::getline(status, line))
        if (line.starts_with("VmRSS:")) return std::strtoll(line.c_str() + 6, nullptr, 10);
    return -1;
}

// ---- shared between processes

// Anonymous shared memory made before fork(): every process of a run sees the same bytes.
template <class T>
class shared {
public:
    explicit shared(std::size_t count = 1) : count_(count) {
        void* memory =
            ::mmap(nullptr, sizeof(T) * count, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        if (memory == MAP_FAILED) throw std::system_error{errno, std::generic_category(), "mmap"};
        items_ = static_cast<T*>(memory);
        for (std::size_t i = 0; i < count; ++i)
            new (items_ + i) T{};
    }
    shared(shared const&) = delete;
    shared& operator=(shared const&) = delete;
    ~shared() { ::munmap(items_, sizeof(T) * count_); }
    T* operator->() const { return items_; }
    T& operator*() const { return *items_; }
    T& operator[](std::size_t i) const { return items_[i]; }

private:
    T* items_ = nullptr;
    std::size_t count_;
};

static_assert(std::atomic<std::int64_t>::is_always_lock_free &&
                  std::atomic<std::uint32_t>::is_always_lock_free,
              "atomics in shared memory must be lock-free to work across processes");

// Process-shared futex (std::atomic::wait uses private futexes, which do not cross processes).
inline void futex_wait(std::atomic<std::uint32_t>& word, std::uint32_t expected, std::int64_t timeout_ns) {
    timespec limit{0, static_cast<long>(timeout_ns)};
    ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word), FUTEX_WAIT, expected, &limit, nullptr, 0);
}
inline void futex_wake_all(std::atomic<std::uint32_t>& word) {
    ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word), FUTEX_WAKE, INT_MAX, nullptr, nullptr, 0);
}

constexpr int max_processes = 8;
constexpr std::size_t samples_per_process = std::size_t{1} << 19;

struct process_result {
    std::int64_t acquisitions = 0; ///< in the measured window
    std::int64_t handoffs = 0;     ///< of those, taken from another process
    std::int64_t wait_cpu_ns = 0;  ///< process CPU inside acquire
    std::int64_t all_acquisitions = 0;
    std::int64_t sample_count = 0;
    std::int64_t run_cpu_ns = 0; ///< process CPU from the start signal to the stop
    std::int64_t run_wall_ns = 0;
    std::int64_t run_sleeps = 0; ///< voluntary context switches: every time the process blocked
};

// What the processes of one contended run share.
struct board {
    std::atomic<int> ready{0};
    std::atomic<bool> stop{false};
    std::atomic<int> inside{0};            ///< the holder's number + 1 while a critical section runs
    std::atomic<int> last_holder{-1};      ///< who released last
    std::atomic<std::int64_t> released_at; ///< CLOCK_MONOTONIC just before that release()
    std::atomic<std::uint32_t> taken{0};   ///< acquisitions so far: the futex of the handoff loop
    std::atomic<int> violations{0};
    std::int64_t counter = 0; ///< incremented non-atomically under the lock: exact only if nobody overlapped
    process_result results[max_processes];
};

inline void report_violation(board& shared_board, char const* what, int me, int other) {
    if (shared_board.violations.fetch_add(1) >= 5) return; // the first few say enough
    std::printf("VIOLATION: %s (process %d, other holder %d)\n", what, me, other);
    std::fflush(stdout);
}

// ---- lock kinds

enum class method {
    poll_100us,
    flock_anchor,
    openlock_sync,
    openlock_async,
    no_lock, ///< excludes nothing: --only=detector shows that the overlap detector fires
};

struct method_names {
    char const* printed; ///< in the tables
    char const* option;  ///< in --locks
};

// Indexed by method, in its order.
constexpr method_names names_of_methods[] = {
    {"O_EXCL poll 100us", "poll"}, {"flock(2)", "flock"},      {"openlock sync", "sync"},
    {"openlock async", "async"},   {"no lock at all", "none"},
};

inline char const* name_of(method m) {
    return names_of_methods[static_cast<int>(m)].printed;
}

inline char const* short_name_of(method m) {
    return names_of_methods[static_cast<int>(m)].option;
}

// The raw anchor: open(O_CREAT|O_EXCL) until it works, 100 us apart; release is unlink.
class polling_lock {
public:
    explicit polling_lock(fs::path const& path) : path_(path.string()) {}
    void acquire() {
        for (;;) {
            int const fd = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
            if (fd >= 0) {
                ::close(fd);
                return;
            }
            if (errno != EEXIST) throw std::system_error{errno, std::generic_category(), "open " + path_};
            sleep_ns(100'000);
        }
    }
    void release() {
        if (::unlink(path_.c_str()) != 0) throw std::system_error{errno, std::generic_category(), "unlink"};
    }

private:
    std::string path_;
};

struct no_lock {
    void acquire() {}
    void release() {}
};

// flock(2) on a descriptor of this process (locks belong to the open file description).
class flock_lock {
public:
    explicit flock_lock(fs::path const& path)
        : fd_(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644)) {
        if (fd_ < 0) throw std::system_error{errno, std::generic_category(), "open " + path.string()};
    }
    flock_lock(flock_lock const&) = delete;
    flock_lock& operator=(flock_lock const&) = delete;
    ~flock_lock() { ::close(fd_); }
    void acquire() {
        while (::flock(fd_, LOCK_EX) != 0)
            if (errno != EINTR) throw std::system_error{errno, std::generic_category(), "flock"};
    }
    void release() { ::flock(fd_, LOCK_UN); }

private:
    int fd_;
};

inline fs::path lock_path_for(method m, fs::path const& directory) {
    switch (m) {
    case method::poll_100us:
        return directory / "poll.lock";
    case method::flock_anchor:
        return directory / "flock.lock";
    default:
        return directory / "openlock.lock";
    }
}

// ---- process plumbing

struct child {
    pid_t pid = -1;
};

// Runs body in a child process; its exit status is 0 when body returns true, 1 when false, 2 when it throws.
inline child spawn(std::function<bool()> const& body) {
    std::fflush(stdout);
    std::fflush(stderr);
    pid_t const pid = ::fork();
    if (pid < 0) throw std::system_error{errno, std::generic_category(), "fork"};
    if (pid > 0) return {pid};
    int status = 2;
    try {
        status = body() ? 0 : 1;
    } catch (std::exception const& e) {
        std::fprintf(stderr, "openlock-handoff: process %d failed: %s\n", static_cast<int>(::getpid()),
                     e.what());
    }
    std::fflush(stdout);
    std::fflush(stderr);
    ::_exit(status);
}

// Waits for every child up to `limit`, then kills the rest; true when all exited with status 0.
inline bool reap(std::vector<child> const& children, std::chrono::milliseconds limit) {
    bool all_well = true;
    auto const until = monotonic_ns() + std::chrono::nanoseconds{limit}.count();
    for (auto const& c : children) {
        for (;;) {
            int status = 0;
            pid_t const done = ::waitpid(c.pid, &status, WNOHANG);
            if (done == c.pid) {
                if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) all_well = false;
                break;
            }
            if (done < 0) {
                all_well = false;
                break;
            }
            if (monotonic_ns() > until) {
                std::fprintf(stderr, "openlock-handoff: process %d hangs; killed\n", static_cast<int>(c.pid));
                ::kill(c.pid, SIGKILL);
                ::waitpid(c.pid, &status, 0);
                all_well = false;
                break;
            }
            sleep_ns(2'000'000);
        }
    }
    return all_well;
}

struct pipe_pair {
    int read_end = -1;
    int write_end = -1;
    pipe_pair() {
        int fds[2];
        if (::pipe2(fds, O_CLOEXEC) != 0) throw std::system_error{errno, std::generic_category(), "pipe"};
        read_end = fds[0];
        write_end = fds[1];
    }
    pipe_pair(pipe_pair const&) = delete;
    pipe_pair& operator=(pipe_pair const&) = delete;
    ~pipe_pair() {
        close_read();
        close_write();
    }
    void close_read() {
        if (read_end >= 0) ::close(read_end);
        read_end = -1;
    }
    void close_write() {
        if (write_end >= 0) ::close(write_end);
        write_end = -1;
    }
    void send() const {
        char const byte = 1;
        while (::write(write_end, &byte, 1) < 0 && errno == EINTR) {
        }
    }
    /// False at end of file (every write end closed).
    bool receive() const {
        char byte = 0;
        for (;;) {
            auto const got = ::read(read_end, &byte, 1);
            if (got == 1) return true;
            if (got == 0 || errno != EINTR) return false;
        }
    }
};

// ---- statistics

struct percentiles {
    double p50_us = 0;
    double p90_us = 0;
    double p99_us = 0;
    double max_us = 0;
    std::size_t count = 0;
};

inline percentiles percentiles_of(std::vector<std::int64_t> samples) {
    percentiles result;
    result.count = samples.size();
    if (samples.empty()) return result;
    std::sort(samples.begin(), samples.end());
    auto const at = [&](double fraction) {
        auto const rank =
            static_cast<std::size_t>(std::lround(fraction * static_cast<double>(samples.size() - 1)));
        return static_cast<double>(samples[rank]) / 1000.0;
    };
    result.p50_us = at(0.50);
    result.p90_us = at(0.90);
    result.p99_us = at(0.99);
    result.max_us = at(1.0);
    return result;
}

// ---- what the parts measure

struct wait_clock {
    std::int64_t wall = 0;
    std::int64_t cpu = 0;
    static wait_clock now() { return {monotonic_ns(), process_cpu_ns()}; }
};

enum class loop_shape { free, handoff, paced };

char const* name_of(loop_shape shape);

struct contended_row {
    loop_shape shape = loop_shape::free;
    method lock_kind = method::poll_100us;
    int processes = 0;
    bool ok = false;
    double acquisitions_per_s = 0;
    double handoff_share = 0;
    percentiles latency;
    double acquire_cpu_us = 0;         ///< CPU spent inside acquire by all processes, per acquisition
    double process_cpu_percent = 0;    ///< each process's CPU over the run, % of one core (mean)
    double sleeps_per_acquisition = 0; ///< times any process blocked, per acquisition
};

contended_row run_contended(method m, int processes, loop_shape shape, fs::path const& directory,
                            std::chrono::duration<double> length);

/// One process wakes another through a pipe, pings 200 us apart (no lock at all).
percentiles pipe_floor(int pings);
/// Which system calls a handoff through a lock file makes in file_floor (floors.cpp).
enum class floor_calls { openlock, bare };
/// A handoff through a lock file without lock logic, spaced as the pipe floor: openlock's system calls, or
/// the least any file lock makes (unlink -> inotify wake-up -> link).
percentiles file_floor(int pings, fs::path const& directory, floor_calls calls);

struct parked_result {
    bool ok = false;
    double worst_cpu_percent = 0; ///< the busiest waiter, % of one core
};

parked_result run_parked(method m, int waiters, fs::path const& directory, std::chrono::milliseconds hold);

struct stale_result {
    bool ok = false;
    percentiles recovery; ///< SIGKILL of the holder to the waiter's acquisition
    percentiles dead; ///< SIGKILL of the holder to its pidfd turning readable (a zombie): the kernel's part
    percentiles after_death; ///< the holder became a zombie to the waiter's acquisition: the library's part
};

stale_result run_stale(method m, int rounds, fs::path const& directory);
percentiles run_takeover(int rounds, fs::path const& directory);

struct crowd_result {
    bool ok = false;
    int waiters = 0;
    int acquired = 0;
    std::int64_t resident_growth_kib = 0;
    double wait_cpu_percent = 0; ///< of one core, over a second of waiting after they settled
    double drain_ms = 0;         ///< the holder's release to the last waiter's acquisition
};

crowd_result run_crowd(int waiters, fs::path const& directory);

} // namespace handoff
