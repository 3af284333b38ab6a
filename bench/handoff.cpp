// Contended handoff between processes (issue 6): openlock's blocking and asynchronous acquire next to the
// anchors of the same run, printed side by side, then the targets with PASS or MISS.
//
// Anchors: the wake-up floor (one process wakes another through a pipe, no lock at all); the protocol floor
// (openlock's own handoff system calls, statx + unlink + doorbell -> wake-up -> linkat, without any lock
// logic); a raw O_EXCL lock that polls every 100 us (open(O_CREAT|O_EXCL) / unlink); flock(2), the
// kernel-blocking ideal.
//
// Contended rows: K processes loop acquire -> critical section -> release for --seconds. Three loop shapes:
//   free     the loop as written: a releaser may take the lock straight back (like any unfair lock), so many
//            acquisitions are not handoffs; latency is measured on the handoffs only
//   handoff  after release a process waits (futex, outside the lock) until another process has taken the
//            lock: every acquisition is a handoff, so acquisitions/s is the rate at which the lock moves
//   paced    the handoff loop with every hold lasting 200 us, the floors' spacing: the waiters are asleep at
//            each release, as the floors' readers are (the like-for-like latency comparison)
// Handoff latency: CLOCK_MONOTONIC just before the releaser's release() to just after the next holder's
// acquire() returned, through a shared mapping. CPU: each process's own over the run, and the CPU all K spent
// inside acquire per acquisition (what a herd of woken waiters costs). Every critical section checks an
// overlap detector and bumps a counter non-atomically; two holders at once print VIOLATION and make the exit
// status non-zero (--only=detector shows it firing on a lock that excludes nothing).
//
// Then: waiting processes parked behind a held lock (their CPU over 1 s, read from /proc/PID/schedstat),
// stale recovery after SIGKILL of the holder (the waiter is a separate process; the holder's parent reaps it
// at once), and 1,000 coroutine waiters on one io_context thread (memory, CPU, then all of them in turn).
// The openlock rows use the default options (--method= picks a claim method).
//
// Scratch files go to the working directory (run-handoff: the build tree, ext4 under /work) unless --dir or
// $OPENLOCK_BENCH_DIR names another directory.
#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
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
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <system_error>
#include <time.h>
#include <unistd.h>
#include <vector>

import openlock;

namespace {

namespace fs = std::filesystem;
namespace asio = boost::asio;
using namespace std::chrono_literals;

// ---- clocks

std::int64_t monotonic_ns() {
    timespec now{};
    ::clock_gettime(CLOCK_MONOTONIC, &now);
    return std::int64_t{now.tv_sec} * 1'000'000'000 + now.tv_nsec;
}

// CPU of the whole process: the asynchronous path runs on the io_context thread, which is the only one.
std::int64_t process_cpu_ns() {
    timespec used{};
    ::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &used);
    return std::int64_t{used.tv_sec} * 1'000'000'000 + used.tv_nsec;
}

void sleep_ns(std::int64_t nanoseconds) {
    timespec pause{static_cast<time_t>(nanoseconds / 1'000'000'000),
                   static_cast<long>(nanoseconds % 1'000'000'000)};
    while (::nanosleep(&pause, &pause) != 0 && errno == EINTR) {
    }
}

std::int64_t resident_kib() {
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
void futex_wait(std::atomic<std::uint32_t>& word, std::uint32_t expected, std::int64_t timeout_ns) {
    timespec limit{0, static_cast<long>(timeout_ns)};
    ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word), FUTEX_WAIT, expected, &limit, nullptr, 0);
}
void futex_wake_all(std::atomic<std::uint32_t>& word) {
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

void report_violation(board& shared_board, char const* what, int me, int other) {
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

char const* name_of(method m) {
    return names_of_methods[static_cast<int>(m)].printed;
}

char const* short_name_of(method m) {
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

fs::path lock_path_for(method m, fs::path const& directory) {
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
child spawn(std::function<bool()> const& body) {
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
bool reap(std::vector<child> const& children, std::chrono::milliseconds limit) {
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

percentiles percentiles_of(std::vector<std::int64_t> samples) {
    percentiles result;
    result.count = samples.size();
    if (samples.empty()) return result;
    std::sort(samples.begin(), samples.end());
    auto const at = [&](double fraction) {
        auto const rank = static_cast<std::size_t>(fraction * static_cast<double>(samples.size() - 1) + 0.5);
        return static_cast<double>(samples[rank]) / 1000.0;
    };
    result.p50_us = at(0.50);
    result.p90_us = at(0.90);
    result.p99_us = at(0.99);
    result.max_us = at(1.0);
    return result;
}

// ---- contended handoff

enum class loop_shape { free, handoff, paced };

char const* name_of(loop_shape shape) {
    switch (shape) {
    case loop_shape::free:
        return "free";
    case loop_shape::handoff:
        return "handoff";
    case loop_shape::paced:
        return "paced";
    }
    return "?";
}

// The paced loop's hold, the floor's spacing between pings: every waiter is asleep when the lock is released,
// as the floor's reader is when its ping arrives.
constexpr std::int64_t paced_hold_ns = 200'000;

// Just after acquire() returned: the overlap check, the latency sample, the shared counter.
void enter_critical_section(board& b, int me, std::int64_t acquired_at, loop_shape shape,
                            std::uint32_t* samples) {
    int const other = b.inside.exchange(me + 1);
    if (other != 0) report_violation(b, "two holders at once", me, other - 1);
    auto& mine = b.results[me];
    int const previous = b.last_holder.load();
    bool const measured = !b.stop.load();
    if (measured) {
        ++mine.acquisitions;
        if (previous >= 0 && previous != me) {
            ++mine.handoffs;
            auto const latency = acquired_at - b.released_at.load();
            if (mine.sample_count < static_cast<std::int64_t>(samples_per_process))
                samples[mine.sample_count++] =
                    static_cast<std::uint32_t>(std::clamp<std::int64_t>(latency, 0, UINT32_MAX));
        }
    }
    ++mine.all_acquisitions;
    // A read-modify-write with room in between: overlapping holders lose increments.
    std::int64_t const seen = *static_cast<std::int64_t volatile*>(&b.counter);
    for (int spin = 0; spin < 200; ++spin)
        asm volatile("" ::: "memory");
    *static_cast<std::int64_t volatile*>(&b.counter) = seen + 1;
    if (shape != loop_shape::free) {
        b.taken.fetch_add(1);
        futex_wake_all(b.taken);
    }
}

// Just before release(): the overlap check again, then the releaser's timestamp.
void leave_critical_section(board& b, int me) {
    int const still = b.inside.exchange(0);
    if (still != me + 1)
        report_violation(b, "the lock changed hands inside a critical section", me, still - 1);
    b.last_holder.store(me);
    b.released_at.store(monotonic_ns());
}

// The handoff loop: after release, wait outside the lock until another process took it.
void wait_for_another_holder(board& b, std::uint32_t taken_by_me) {
    while (b.taken.load() == taken_by_me && !b.stop.load())
        futex_wait(b.taken, taken_by_me, 10'000'000);
}

struct wait_clock {
    std::int64_t wall = 0;
    std::int64_t cpu = 0;
    static wait_clock now() { return {monotonic_ns(), process_cpu_ns()}; }
};

void account_wait(board& b, int me, wait_clock const& before, wait_clock const& after) {
    if (b.stop.load()) return;
    b.results[me].wait_cpu_ns += after.cpu - before.cpu;
}

// The whole process's CPU over the measured run, whatever it spent it on.
class run_account {
public:
    run_account(board& b, int me) : board_(b), me_(me), began_(wait_clock::now()), began_sleeps_(sleeps()) {}
    run_account(run_account const&) = delete;
    run_account& operator=(run_account const&) = delete;
    ~run_account() {
        auto const ended = wait_clock::now();
        board_.results[me_].run_cpu_ns = ended.cpu - began_.cpu;
        board_.results[me_].run_wall_ns = ended.wall - began_.wall;
        board_.results[me_].run_sleeps = sleeps() - began_sleeps_;
    }

private:
    static std::int64_t sleeps() {
        rusage used{};
        ::getrusage(RUSAGE_SELF, &used);
        return used.ru_nvcsw;
    }
    board& board_;
    int me_;
    wait_clock began_;
    std::int64_t began_sleeps_;
};

template <class Lock>
bool blocking_worker(Lock& lock, board& b, int me, loop_shape shape, std::uint32_t* samples,
                     pipe_pair& start) {
    b.ready.fetch_add(1);
    start.receive(); // end of file: go
    run_account account{b, me};
    for (;;) {
        auto const before = wait_clock::now();
        lock.acquire();
        auto const after = wait_clock::now();
        enter_critical_section(b, me, after.wall, shape, samples);
        account_wait(b, me, before, after);
        if (shape == loop_shape::paced) sleep_ns(paced_hold_ns);
        std::uint32_t const taken = b.taken.load();
        bool const stopping = b.stop.load();
        leave_critical_section(b, me);
        lock.release();
        if (stopping) return true;
        if (shape != loop_shape::free) wait_for_another_holder(b, taken);
    }
}

asio::awaitable<void> async_worker(openlock::file_lock& lock, board& b, int me, loop_shape shape,
                                   std::uint32_t* samples) {
    for (;;) {
        auto const before = wait_clock::now();
        co_await lock.async_acquire(asio::use_awaitable);
        auto const after = wait_clock::now();
        enter_critical_section(b, me, after.wall, shape, samples);
        account_wait(b, me, before, after);
        if (shape == loop_shape::paced) sleep_ns(paced_hold_ns);
        std::uint32_t const taken = b.taken.load();
        bool const stopping = b.stop.load();
        leave_critical_section(b, me);
        lock.release();
        if (stopping) co_return;
        // Blocking the io_context thread is harmless here: this coroutine is all it runs.
        if (shape != loop_shape::free) wait_for_another_holder(b, taken);
    }
}

bool run_worker(method m, fs::path const& lock_file, board& b, int me, loop_shape shape,
                std::uint32_t* samples, pipe_pair& start) {
    switch (m) {
    case method::poll_100us: {
        polling_lock lock{lock_file};
        return blocking_worker(lock, b, me, shape, samples, start);
    }
    case method::flock_anchor: {
        flock_lock lock{lock_file};
        return blocking_worker(lock, b, me, shape, samples, start);
    }
    case method::openlock_sync: {
        openlock::file_lock lock{lock_file};
        return blocking_worker(lock, b, me, shape, samples, start);
    }
    case method::openlock_async: {
        asio::io_context io;
        openlock::file_lock lock{lock_file};
        lock.set_executor(io.get_executor());
        b.ready.fetch_add(1);
        start.receive();
        std::exception_ptr failure;
        run_account account{b, me};
        asio::co_spawn(io, async_worker(lock, b, me, shape, samples),
                       [&](std::exception_ptr thrown) { failure = thrown; });
        io.run();
        if (failure) std::rethrow_exception(failure);
        return true;
    }
    case method::no_lock: {
        no_lock lock;
        return blocking_worker(lock, b, me, shape, samples, start);
    }
    }
    return false;
}

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
                            std::chrono::duration<double> length) {
    contended_row row;
    row.shape = shape;
    row.lock_kind = m;
    row.processes = processes;
    auto const run_directory =
        directory / (std::string{name_of(shape)} + "-" + std::to_string(static_cast<int>(m)) + "-" +
                     std::to_string(processes));
    fs::create_directories(run_directory);
    shared<board> b;
    shared<std::uint32_t> samples{samples_per_process * static_cast<std::size_t>(processes)};
    pipe_pair start;
    std::vector<child> workers;
    for (int me = 0; me < processes; ++me)
        workers.push_back(spawn([&, me] {
            start.close_write();
            return run_worker(m, lock_path_for(m, run_directory), *b, me, shape,
                              &samples[samples_per_process * me], start);
        }));
    start.close_read();
    while (b->ready.load() < processes)
        sleep_ns(1'000'000);
    auto const began = monotonic_ns();
    start.close_write(); // every worker's read sees end of file at once
    sleep_ns(std::chrono::duration_cast<std::chrono::nanoseconds>(length).count());
    b->stop.store(true);
    auto const ended = monotonic_ns();
    futex_wake_all(b->taken);
    row.ok = reap(workers, 20s) && b->violations.load() == 0;

    std::int64_t acquisitions = 0, handoffs = 0, all_acquisitions = 0, wait_cpu = 0, run_cpu = 0,
                 run_wall = 0, sleeps = 0;
    std::vector<std::int64_t> latencies;
    for (int me = 0; me < processes; ++me) {
        auto const& r = b->results[me];
        acquisitions += r.acquisitions;
        handoffs += r.handoffs;
        all_acquisitions += r.all_acquisitions;
        wait_cpu += r.wait_cpu_ns;
        run_cpu += r.run_cpu_ns;
        run_wall += r.run_wall_ns;
        sleeps += r.run_sleeps;
        for (std::int64_t i = 0; i < r.sample_count; ++i)
            latencies.push_back(samples[samples_per_process * me + i]);
    }
    if (b->counter != all_acquisitions) {
        std::printf("VIOLATION: %s K=%d: the shared counter is %lld after %lld acquisitions\n", name_of(m),
                    processes, static_cast<long long>(b->counter), static_cast<long long>(all_acquisitions));
        b->violations.fetch_add(1);
        row.ok = false;
    }
    row.acquisitions_per_s = static_cast<double>(acquisitions) / (static_cast<double>(ended - began) / 1e9);
    row.handoff_share =
        acquisitions > 0 ? static_cast<double>(handoffs) / static_cast<double>(acquisitions) : 0;
    row.latency = percentiles_of(std::move(latencies));
    row.acquire_cpu_us =
        acquisitions > 0 ? static_cast<double>(wait_cpu) / 1000.0 / static_cast<double>(acquisitions) : 0;
    row.sleeps_per_acquisition =
        all_acquisitions > 0 ? static_cast<double>(sleeps) / static_cast<double>(all_acquisitions) : 0;
    row.process_cpu_percent =
        run_wall > 0 ? 100.0 * static_cast<double>(run_cpu) / static_cast<double>(run_wall) : 0;
    std::error_code ignored;
    fs::remove_all(run_directory, ignored);
    return row;
}

// ---- wake-up floor

// One process writes a byte into a pipe that another one is blocked reading; a pause between pings lets the
// reader fall asleep as a lock waiter does.
percentiles pipe_floor(int pings) {
    struct timing {
        std::atomic<std::int64_t> sent_at{0};
    };
    shared<timing> when;
    pings = std::max(pings, 1);
    shared<std::int64_t> samples{static_cast<std::size_t>(pings)};
    pipe_pair ping;
    pipe_pair pong;
    auto const reader = spawn([&] {
        ping.close_write();
        pong.close_read();
        for (int i = 0; i < pings; ++i) {
            if (!ping.receive()) return false;
            samples[static_cast<std::size_t>(i)] = monotonic_ns() - when->sent_at.load();
            pong.send();
        }
        return true;
    });
    ping.close_read();
    pong.close_write();
    for (int i = 0; i < pings; ++i) {
        sleep_ns(200'000);
        when->sent_at.store(monotonic_ns());
        ping.send();
        if (!pong.receive()) break;
    }
    reap({reader}, 10s);
    return percentiles_of(std::vector<std::int64_t>(&samples[0], &samples[0] + pings));
}

// The same handoff with openlock's system calls and no lock logic: the releaser's statx, unlink and doorbell
// write, then the waiter's wake-up from an exclusive epoll wait on the doorbell, its read of it and the link
// of a nameless file made beforehand. What a release-to-next-holder handoff of this protocol cannot go below
// here.
percentiles protocol_floor(int pings, fs::path const& directory) {
    struct timing {
        std::atomic<std::int64_t> sent_at{0};
    };
    shared<timing> when;
    pings = std::max(pings, 1);
    shared<std::int64_t> samples{static_cast<std::size_t>(pings)};
    auto const lock = directory / "floor.lock";
    auto const bell = directory / "floor.bell";
    if (::mkfifo(bell.c_str(), 0600) != 0) throw std::system_error{errno, std::generic_category(), "mkfifo"};
    int const doorbell = ::open(bell.c_str(), O_RDWR | O_NONBLOCK | O_CLOEXEC);
    if (doorbell < 0) throw std::system_error{errno, std::generic_category(), "open"};
    pipe_pair pong;
    auto const waiter = spawn([&] {
        pong.close_read();
        int const set = ::epoll_create1(EPOLL_CLOEXEC);
        epoll_event listen{};
        listen.events = EPOLLIN | EPOLLEXCLUSIVE;
        listen.data.fd = doorbell;
        if (set < 0 || ::epoll_ctl(set, EPOLL_CTL_ADD, doorbell, &listen) != 0) return false;
        int linked =
            -1; // kept open while linked, as a holder's pin is, and closed after the releaser's unlink
        for (int i = 0; i < pings; ++i) {
            int const staged = ::open(directory.c_str(), O_TMPFILE | O_WRONLY | O_CLOEXEC, 0644);
            if (staged < 0 || ::write(staged, "0\n", 2) != 2) return false;
            if (linked >= 0) ::close(linked);
            pong.send(); // ready: the releaser may go
            epoll_event ready{};
            while (::epoll_wait(set, &ready, 1, 10'000) <= 0) {
            }
            char bytes[64];
            (void)!::read(doorbell, bytes, sizeof bytes);
            if (::linkat(staged, "", AT_FDCWD, lock.c_str(), AT_EMPTY_PATH) != 0) return false;
            samples[static_cast<std::size_t>(i)] = monotonic_ns() - when->sent_at.load();
            linked = staged;
        }
        return true;
    });
    pong.close_write();
    for (int i = 0; i < pings; ++i) {
        if (!pong.receive()) break;
        sleep_ns(200'000);
        when->sent_at.store(monotonic_ns());
        struct stat seen{};
        ::stat(lock.c_str(), &seen);
        ::unlink(lock.c_str());
        char const byte = 1;
        (void)!::write(doorbell, &byte, 1);
    }
    reap({waiter}, 10s);
    ::close(doorbell);
    std::error_code ignored;
    fs::remove(lock, ignored);
    fs::remove(bell, ignored);
    return percentiles_of(std::vector<std::int64_t>(&samples[0], &samples[0] + pings));
}

// ---- parked waiters

struct parked_result {
    bool ok = false;
    double worst_cpu_percent = 0; ///< the busiest waiter, % of one core
};

// CPU time of a single-threaded process so far: the scheduler's own account in ns (/proc/PID/stat counts
// 10 ms ticks, too coarse for a fraction of a percent of one second).
std::int64_t cpu_of(pid_t pid) {
    std::ifstream schedstat{"/proc/" + std::to_string(pid) + "/schedstat"};
    long long nanoseconds = -1;
    schedstat >> nanoseconds;
    return nanoseconds;
}

// Holds the lock in a child until let go.
template <class Lock>
bool hold_until_let_go(Lock& lock, pipe_pair& held, pipe_pair& let_go) {
    held.close_read();
    let_go.close_write();
    lock.acquire();
    held.send();
    let_go.receive();
    lock.release();
    return true;
}

bool acquire_once_and_release(method m, fs::path const& lock_file) {
    switch (m) {
    case method::poll_100us: {
        polling_lock lock{lock_file};
        lock.acquire();
        lock.release();
        return true;
    }
    case method::flock_anchor: {
        flock_lock lock{lock_file};
        lock.acquire();
        lock.release();
        return true;
    }
    case method::openlock_sync: {
        openlock::file_lock lock{lock_file};
        lock.acquire();
        lock.release();
        return true;
    }
    case method::no_lock:
        return true;
    case method::openlock_async: {
        asio::io_context io;
        openlock::file_lock lock{lock_file};
        std::exception_ptr failure;
        asio::co_spawn(
            io,
            [&]() -> asio::awaitable<void> {
                co_await lock.async_acquire(asio::use_awaitable);
                lock.release();
            },
            [&](std::exception_ptr thrown) { failure = thrown; });
        io.run();
        if (failure) std::rethrow_exception(failure);
        return true;
    }
    }
    return false;
}

// A holder keeps the lock while `waiters` processes are blocked in acquire; after they settle, their CPU is
// read from outside over `hold`, then the holder lets go and each waiter takes the lock once.
parked_result run_parked(method m, int waiters, fs::path const& directory, std::chrono::milliseconds hold) {
    auto const run_directory = directory / ("parked-" + std::to_string(static_cast<int>(m)));
    fs::create_directories(run_directory);
    auto const lock_file = lock_path_for(m, run_directory);
    pipe_pair held;
    pipe_pair let_go;
    auto const holder = spawn([&] {
        if (m == method::poll_100us) {
            polling_lock lock{lock_file};
            return hold_until_let_go(lock, held, let_go);
        }
        if (m == method::flock_anchor) {
            flock_lock lock{lock_file};
            return hold_until_let_go(lock, held, let_go);
        }
        openlock::file_lock lock{lock_file};
        return hold_until_let_go(lock, held, let_go);
    });
    held.close_write();
    let_go.close_read();
    held.receive();
    std::vector<child> waiting;
    for (int me = 0; me < waiters; ++me)
        waiting.push_back(spawn([&] { return acquire_once_and_release(m, lock_file); }));
    sleep_ns(200'000'000); // started, looked, and settled into the wait
    std::vector<std::int64_t> before;
    for (auto const& w : waiting)
        before.push_back(cpu_of(w.pid));
    auto const began = monotonic_ns();
    sleep_ns(std::chrono::duration_cast<std::chrono::nanoseconds>(hold).count());
    parked_result result;
    auto const elapsed = static_cast<double>(monotonic_ns() - began);
    for (std::size_t i = 0; i < waiting.size(); ++i) {
        auto const used = cpu_of(waiting[i].pid) - before[i];
        result.worst_cpu_percent =
            std::max(result.worst_cpu_percent, 100.0 * static_cast<double>(used) / elapsed);
    }
    let_go.send();
    result.ok = reap(waiting, 20s) && reap({holder}, 5s);
    std::error_code ignored;
    fs::remove_all(run_directory, ignored);
    return result;
}

// ---- stale recovery

struct stale_result {
    bool ok = false;
    percentiles recovery; ///< SIGKILL of the holder to the waiter's acquisition
    percentiles dead; ///< SIGKILL of the holder to its pidfd turning readable (a zombie): the kernel's part
    percentiles after_death; ///< the holder became a zombie to the waiter's acquisition: the library's part
};

char state_of(pid_t pid) {
    std::ifstream stat{"/proc/" + std::to_string(pid) + "/stat"};
    std::string text;
    std::getline(stat, text);
    auto const after_name = text.rfind(')');
    return after_name != std::string::npos && after_name + 2 < text.size() ? text[after_name + 2] : '?';
}

// Until the process has been asleep (state S) at two looks 5 ms apart, at most a second: after its signal
// the waiter sleeps only in its wait for the lock.
void wait_until_blocked(pid_t pid) {
    auto const until = monotonic_ns() + 1'000'000'000;
    int asleep = 0;
    while (asleep < 2 && monotonic_ns() < until) {
        asleep = state_of(pid) == 'S' ? asleep + 1 : 0;
        sleep_ns(5'000'000);
    }
}

// Per round: a holder acquires and waits to be killed; a waiter blocks in acquire; SIGKILL the holder (and
// reap it, as its parent would); the waiter notes when its acquire returned.
stale_result run_stale(method m, int rounds, fs::path const& directory) {
    auto const run_directory = directory / ("stale-" + std::to_string(static_cast<int>(m)));
    fs::create_directories(run_directory);
    auto const lock_file = lock_path_for(m, run_directory);
    shared<std::atomic<std::int64_t>> acquired_at;
    stale_result result;
    result.ok = true;
    std::vector<std::int64_t> recoveries;
    std::vector<std::int64_t> dead;
    std::vector<std::int64_t> after_death;
    for (int round = 0; round < rounds; ++round) {
        pipe_pair signal;
        auto const holder = spawn([&] {
            signal.close_read();
            if (m == method::flock_anchor) {
                flock_lock lock{lock_file};
                lock.acquire();
                signal.send();
                for (;;)
                    ::pause();
            }
            openlock::file_lock lock{lock_file};
            lock.acquire();
            signal.send();
            for (;;)
                ::pause();
            return true;
        });
        if (!signal.receive()) {
            result.ok = false;
            break;
        }
        acquired_at->store(0);
        auto const waiter = spawn([&] {
            signal.close_read();
            if (m == method::flock_anchor) {
                flock_lock lock{lock_file};
                signal.send();
                lock.acquire();
                acquired_at->store(monotonic_ns());
                lock.release();
                return true;
            }
            openlock::file_lock lock{lock_file};
            if (m == method::openlock_async) {
                asio::io_context io;
                asio::co_spawn(
                    io,
                    [&]() -> asio::awaitable<void> {
                        signal.send();
                        co_await lock.async_acquire(asio::use_awaitable);
                        acquired_at->store(monotonic_ns());
                        lock.release();
                    },
                    [](std::exception_ptr thrown) {
                        if (thrown) std::rethrow_exception(thrown);
                    });
                io.run();
                return true;
            }
            signal.send();
            lock.acquire();
            acquired_at->store(monotonic_ns());
            lock.release();
            return true;
        });
        signal.receive();
        wait_until_blocked(waiter.pid);
        int const holder_pidfd = static_cast<int>(::syscall(SYS_pidfd_open, holder.pid, 0));
        auto const killed_at = monotonic_ns();
        ::kill(holder.pid, SIGKILL);
        pollfd exited{holder_pidfd, POLLIN, 0};
        while (holder_pidfd >= 0 && ::poll(&exited, 1, -1) < 0 && errno == EINTR) {
        }
        auto const dead_at = monotonic_ns();
        if (holder_pidfd >= 0) ::close(holder_pidfd);
        int status = 0;
        ::waitpid(holder.pid, &status, 0); // reaped at once, as a supervising parent would
        if (!reap({waiter}, 10s) || acquired_at->load() == 0) {
            result.ok = false;
            continue;
        }
        recoveries.push_back(acquired_at->load() - killed_at);
        dead.push_back(dead_at - killed_at);
        after_death.push_back(acquired_at->load() - dead_at);
    }
    result.recovery = percentiles_of(std::move(recoveries));
    result.dead = percentiles_of(std::move(dead));
    result.after_death = percentiles_of(std::move(after_death));
    std::error_code ignored;
    fs::remove_all(run_directory, ignored);
    return result;
}

// The library's part alone: acquire() of a lock whose holder is already dead and reaped (no wait, no event),
// timed in a fresh process after its lock object's first (identity-computing) use on another path.
percentiles run_takeover(int rounds, fs::path const& directory) {
    auto const run_directory = directory / "takeover";
    fs::create_directories(run_directory);
    auto const lock_file = run_directory / "openlock.lock";
    shared<std::atomic<std::int64_t>> took;
    std::vector<std::int64_t> times;
    for (int round = 0; round < rounds; ++round) {
        pipe_pair signal;
        auto const holder = spawn([&] {
            signal.close_read();
            openlock::file_lock lock{lock_file};
            lock.acquire();
            signal.send();
            for (;;)
                ::pause();
            return true;
        });
        signal.receive();
        ::kill(holder.pid, SIGKILL);
        int status = 0;
        ::waitpid(holder.pid, &status, 0);
        took->store(0);
        auto const taker = spawn([&] {
            openlock::file_lock warm_up{run_directory / "warm-up.lock"};
            warm_up.acquire();
            warm_up.release();
            openlock::file_lock lock{lock_file};
            auto const began = monotonic_ns();
            lock.acquire();
            took->store(monotonic_ns() - began);
            lock.release();
            return true;
        });
        if (reap({taker}, 10s) && took->load() > 0) times.push_back(took->load());
    }
    std::error_code ignored;
    fs::remove_all(run_directory, ignored);
    return percentiles_of(std::move(times));
}

// ---- 1,000 async waiters

struct crowd_result {
    bool ok = false;
    int waiters = 0;
    int acquired = 0;
    std::int64_t resident_growth_kib = 0;
    double wait_cpu_percent = 0; ///< of one core, over a second of waiting after they settled
    double drain_ms = 0;         ///< the holder's release to the last waiter's acquisition
};

crowd_result run_crowd(int waiters, fs::path const& directory) {
    auto const run_directory = directory / "crowd";
    fs::create_directories(run_directory);
    auto const lock_file = run_directory / "openlock.lock";
    struct crowd_board {
        std::atomic<int> inside{0};
        std::atomic<int> acquired{0};
        std::atomic<int> violations{0};
        std::atomic<std::int64_t> released_at{0};
        std::atomic<std::int64_t> last_acquired_at{0};
        std::atomic<std::int64_t> resident_before{0};
        std::atomic<std::int64_t> resident_after{0};
        std::atomic<std::int64_t> wait_cpu_ns{0};
        std::atomic<std::int64_t> wait_wall_ns{0};
    };
    shared<crowd_board> b;
    pipe_pair held;
    pipe_pair parked;
    pipe_pair let_go;
    auto const holder = spawn([&] {
        held.close_read();
        let_go.close_write();
        openlock::file_lock lock{lock_file};
        lock.acquire();
        held.send();
        let_go.receive();
        b->released_at.store(monotonic_ns());
        lock.release();
        return true;
    });
    held.close_write();
    let_go.close_read();
    held.receive();
    auto const crowd = spawn([&] {
        parked.close_read();
        asio::io_context io;
        b->resident_before.store(resident_kib());
        auto waiter = [&]() -> asio::awaitable<void> {
            openlock::file_lock lock{lock_file};
            co_await lock.async_acquire(asio::use_awaitable);
            if (b->inside.exchange(1) != 0) {
                b->violations.fetch_add(1);
                std::printf("VIOLATION: two of the coroutine waiters hold the lock at once\n");
            }
            b->acquired.fetch_add(1);
            b->last_acquired_at.store(monotonic_ns());
            b->inside.store(0);
            lock.release();
        };
        int failures = 0;
        for (int i = 0; i < waiters; ++i)
            asio::co_spawn(io, waiter(), [&](std::exception_ptr thrown) {
                if (thrown) ++failures;
            });
        io.run_for(200ms); // every waiter started and parked
        auto const before = wait_clock::now();
        io.run_for(1s);
        auto const after = wait_clock::now();
        b->resident_after.store(resident_kib());
        b->wait_cpu_ns.store(after.cpu - before.cpu);
        b->wait_wall_ns.store(after.wall - before.wall);
        parked.send();
        io.run();
        return failures == 0;
    });
    parked.close_write();
    parked.receive();
    let_go.send();
    crowd_result result;
    result.waiters = waiters;
    result.ok = reap({crowd}, 60s) && reap({holder}, 5s) && b->violations.load() == 0;
    result.acquired = b->acquired.load();
    result.ok = result.ok && result.acquired == waiters;
    result.resident_growth_kib = b->resident_after.load() - b->resident_before.load();
    result.wait_cpu_percent =
        b->wait_wall_ns.load() > 0
            ? 100.0 * static_cast<double>(b->wait_cpu_ns.load()) / static_cast<double>(b->wait_wall_ns.load())
            : 0;
    result.drain_ms = static_cast<double>(b->last_acquired_at.load() - b->released_at.load()) / 1e6;
    std::error_code ignored;
    fs::remove_all(run_directory, ignored);
    return result;
}

// ---- report

std::string file_system_name(fs::path const& directory) {
    struct statfs info{};
    if (::statfs(directory.c_str(), &info) != 0) return "unknown";
    switch (static_cast<unsigned long>(static_cast<unsigned int>(info.f_type))) {
    case 0xEF53:
        return "ext4";
    case 0x01021994:
        return "tmpfs";
    case 0x58465342:
        return "xfs";
    case 0x9123683E:
        return "btrfs";
    case 0x794C7630:
        return "overlayfs";
    case 0x6969:
        return "nfs";
    case 0x65735546:
        return "fuse";
    default:
        return "other";
    }
}

struct settings {
    fs::path directory;
    std::chrono::duration<double> seconds{1.5};
    int stale_rounds = 20;
    int pings = 2000;
    int crowd = 1000;
    std::string only;  ///< comma-separated sections to run; empty: all
    std::string loops; ///< comma-separated contended loop shapes to run; empty: all
    std::string locks; ///< comma-separated locks of the contended rows (poll,flock,sync,async); empty: all
    std::vector<int> process_counts{2, 8};
    std::optional<openlock::claim_method> method;
    [[nodiscard]] bool runs(std::string_view section) const { return listed(only, section); }
    [[nodiscard]] bool runs(loop_shape shape) const { return listed(loops, name_of(shape)); }
    [[nodiscard]] bool runs(enum method m) const { return listed(locks, short_name_of(m)); }

private:
    static bool listed(std::string const& list, std::string_view name) {
        return list.empty() || ("," + list + ",").find("," + std::string{name} + ",") != std::string::npos;
    }
};

std::optional<openlock::claim_method> claim_method_named(std::string_view name) {
    using openlock::claim_method;
    if (name == "automatic") return claim_method::automatic;
    if (name == "hard_link") return claim_method::hard_link;
    if (name == "anonymous_link") return claim_method::anonymous_link;
    if (name == "exclusive_create") return claim_method::exclusive_create;
    return std::nullopt;
}

std::optional<settings> parse(int argc, char** argv) {
    settings chosen;
    char const* from_environment = std::getenv("OPENLOCK_BENCH_DIR");
    chosen.directory =
        from_environment && *from_environment ? fs::path{from_environment} : fs::current_path();
    for (int i = 1; i < argc; ++i) {
        std::string_view const arg{argv[i]};
        auto const value = std::string{arg.substr(arg.find('=') + 1)};
        if (arg.starts_with("--dir="))
            chosen.directory = value;
        else if (arg.starts_with("--seconds="))
            chosen.seconds = std::chrono::duration<double>{std::stod(value)};
        else if (arg.starts_with("--stale-rounds="))
            chosen.stale_rounds = std::stoi(value);
        else if (arg.starts_with("--pings="))
            chosen.pings = std::stoi(value);
        else if (arg.starts_with("--waiters="))
            chosen.crowd = std::stoi(value);
        else if (arg.starts_with("--only="))
            chosen.only = value;
        else if (arg.starts_with("--loops="))
            chosen.loops = value;
        else if (arg.starts_with("--locks="))
            chosen.locks = value;
        else if (arg.starts_with("--processes=")) {
            chosen.process_counts.clear();
            for (std::size_t at = 0; at < value.size();) {
                auto const comma = std::min(value.find(',', at), value.size());
                chosen.process_counts.push_back(std::stoi(value.substr(at, comma - at)));
                at = comma + 1;
            }
        } else if (arg.starts_with("--method=") && claim_method_named(value))
            chosen.method = claim_method_named(value);
        else {
            std::fprintf(stderr,
                         "usage: openlock-handoff [--dir=DIR] [--seconds=S per contended row (1.5)]\n"
                         "       [--stale-rounds=N (20)] [--pings=N (2000)] [--waiters=N (1000)]\n"
                         "       [--method=automatic|anonymous_link|hard_link|exclusive_create]\n"
                         "       [--only=floor,contended,parked,stale,crowd,detector]\n"
                         "       [--loops=free,handoff,paced] [--locks=poll,flock,sync,async]\n"
                         "       [--processes=2,8] (contended rows to run; all by default)\n"
                         "DIR defaults to $OPENLOCK_BENCH_DIR, else the working directory. The targets need\n"
                         "every section but detector (a lock that excludes nothing: VIOLATION and exit\n"
                         "status 1 expected).\n");
            return std::nullopt;
        }
    }
    return chosen;
}

char const* verdict(bool pass) {
    return pass ? "PASS" : "MISS";
}

} // namespace

int main(int argc, char** argv) {
    auto const chosen = parse(argc, argv);
    if (!chosen) return 2;
    if (chosen->method) {
        auto defaults = openlock::get_defaults(); // inherited by every process forked from here
        defaults.method = *chosen->method;
        openlock::set_defaults(defaults);
    }
    std::error_code error;
    fs::create_directories(chosen->directory, error);
    auto pattern = (chosen->directory / "openlock-handoff.XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) {
        std::fprintf(stderr, "openlock-handoff: cannot make a scratch directory in %s: %s\n",
                     chosen->directory.c_str(), std::strerror(errno));
        return 2;
    }
    fs::path const scratch{pattern};
    bool all_ok = true;
    int exit_status = 0;
    try {
        std::printf(
            "openlock-handoff: %s (%s), %.1f s per contended row, %ld cores online, claim method %s\n\n",
            scratch.c_str(), file_system_name(scratch).c_str(), chosen->seconds.count(),
            ::sysconf(_SC_NPROCESSORS_ONLN), chosen->method ? "chosen" : "automatic");
        std::fflush(stdout);
        method const methods[] = {method::poll_100us, method::flock_anchor, method::openlock_sync,
                                  method::openlock_async};

        if (chosen->runs("detector") && !chosen->only.empty()) {
            std::printf(
                "overlap detector: 2 processes and a lock that excludes nothing; VIOLATION expected\n");
            auto const row = run_contended(method::no_lock, 2, loop_shape::free, scratch, 200ms);
            all_ok = all_ok && row.ok;
        }

        std::optional<percentiles> floor;
        std::optional<percentiles> files_floor;
        if (chosen->runs("floor")) {
            floor = pipe_floor(chosen->pings);
            std::printf(
                "wake-up floor (pipe, %zu pings 200 us apart): p50 %.1f us, p90 %.1f us, p99 %.1f us\n",
                floor->count, floor->p50_us, floor->p90_us, floor->p99_us);
            files_floor = protocol_floor(chosen->pings, scratch);
            auto const& files = *files_floor;
            std::printf(
                "protocol floor (statx + unlink + doorbell write -> exclusive epoll wake-up -> read + "
                "linkat\n"
                "  of a nameless file made before, no lock logic, same spacing): p50 %.1f us, p90 %.1f us, "
                "p99 %.1f us\n\n",
                files.p50_us, files.p90_us, files.p99_us);
        }

        std::vector<contended_row> rows;
        if (chosen->runs("contended")) {
            std::printf("contended: %-7s %-18s %2s %9s %9s %9s %9s %10s %11s %10s\n", "loop", "lock", "K",
                        "acq/s", "handoffs", "p50 us", "p99 us", "CPU%/proc", "acq CPU us", "sleeps/acq");
            std::printf("%s\n", std::string(112, '-').c_str());
            std::fflush(stdout);
            for (auto shape : {loop_shape::free, loop_shape::handoff, loop_shape::paced})
                for (int processes : chosen->process_counts)
                    for (auto m : methods) {
                        if (!chosen->runs(shape) || !chosen->runs(m)) continue;
                        auto const row = run_contended(m, processes, shape, scratch, chosen->seconds);
                        all_ok = all_ok && row.ok;
                        std::printf(
                            "           %-7s %-18s %2d %9.0f %8.0f%% %9.1f %9.1f %9.1f%% %11.1f %10.1f%s\n",
                            name_of(shape), name_of(m), processes, row.acquisitions_per_s,
                            100.0 * row.handoff_share, row.latency.p50_us, row.latency.p99_us,
                            row.process_cpu_percent, row.acquire_cpu_us, row.sleeps_per_acquisition,
                            row.ok ? "" : "  FAILED");
                        std::fflush(stdout);
                        rows.push_back(row);
                    }
            std::printf(
                "  free: the loop as written (a releaser may take the lock straight back); handoff: after\n"
                "  release a process waits until another one took the lock, so every acquisition is a "
                "handoff;\n"
                "  paced: the handoff loop with each hold lasting 200 us, the floor's spacing, so that the\n"
                "  waiters are asleep when the lock is released (the floor's case; in the free and handoff\n"
                "  loops the next holder is often still busy with its own last release, which is queueing)\n"
                "  handoffs: share of acquisitions taken from another process (latency is measured on "
                "those)\n"
                "  CPU%%/proc: each process's CPU over the run, %% of one core; acq CPU us: CPU spent "
                "inside\n"
                "  acquire by all K processes (the winner and every loser of each round) per "
                "acquisition\n"
                "  sleeps/acq: times any of the K processes blocked (voluntary context switches), per "
                "acquisition:\n"
                "  1 is one wake-up per handoff; K-1 is a herd (the handoff loop adds 1 for its futex "
                "wait)\n\n");
        }

        std::vector<std::pair<method, parked_result>> parked;
        if (chosen->runs("parked")) {
            std::printf("parked waiters (2 processes blocked behind a held lock, measured over 1 s after "
                        "settling):\n  CPU %% of one core of the busiest\n");
            for (auto m : methods) {
                auto const result = run_parked(m, 2, scratch, 1000ms);
                all_ok = all_ok && result.ok;
                std::printf("  %-18s %8.3f%%%s\n", name_of(m), result.worst_cpu_percent,
                            result.ok ? "" : "  FAILED");
                std::fflush(stdout);
                parked.emplace_back(m, result);
            }
            std::printf("\n");
        }

        std::vector<std::pair<method, stale_result>> stale;
        if (chosen->runs("stale")) {
            std::printf(
                "stale recovery (SIGKILL of the holder to the waiter's acquisition, %d rounds; flock is\n"
                "  released while the holder exits, before it is a zombie)\n",
                chosen->stale_rounds);
            for (auto m : {method::flock_anchor, method::openlock_sync, method::openlock_async}) {
                auto const result = run_stale(m, chosen->stale_rounds, scratch);
                all_ok = all_ok && result.ok;
                std::printf("  %-18s median %7.3f ms, p90 %7.3f ms, max %7.3f ms | kill->zombie %6.3f ms, "
                            "zombie->acquired %6.3f ms (medians)%s\n",
                            name_of(m), result.recovery.p50_us / 1000.0, result.recovery.p90_us / 1000.0,
                            result.recovery.max_us / 1000.0, result.dead.p50_us / 1000.0,
                            result.after_death.p50_us / 1000.0, result.ok ? "" : "  FAILED");
                std::fflush(stdout);
                stale.emplace_back(m, result);
            }
            auto const takeover = run_takeover(chosen->stale_rounds, scratch);
            std::printf(
                "  takeover alone (acquire() of a dead and reaped holder's lock, no wait): median %.3f ms, "
                "p90 %.3f ms\n",
                takeover.p50_us / 1000.0, takeover.p90_us / 1000.0);
            std::printf("\n");
        }

        std::optional<crowd_result> crowd;
        if (chosen->runs("crowd")) {
            crowd = run_crowd(chosen->crowd, scratch);
            all_ok = all_ok && crowd->ok;
            std::printf(
                "%d coroutine waiters on one io_context thread behind another process's lock:\n"
                "  RSS growth %lld KiB (%.2f KiB per waiter), CPU over 1 s of waiting %.3f%% of a core;\n"
                "  after release %d of %d acquired in turn in %.1f ms (%.1f us per handoff)%s\n",
                crowd->waiters, static_cast<long long>(crowd->resident_growth_kib),
                static_cast<double>(crowd->resident_growth_kib) / std::max(1, crowd->waiters),
                crowd->wait_cpu_percent, crowd->acquired, crowd->waiters, crowd->drain_ms,
                1000.0 * crowd->drain_ms / std::max(1, crowd->acquired), crowd->ok ? "" : "  FAILED");
        }

        bool const every_row = chosen->loops.empty() && chosen->locks.empty() &&
                               chosen->process_counts == std::vector<int>{2, 8};
        if (floor && every_row && !rows.empty() && !parked.empty() && !stale.empty() && crowd) {
            auto const row_of = [&](loop_shape shape, method m, int processes) -> contended_row const& {
                for (auto const& row : rows)
                    if (row.shape == shape && row.lock_kind == m && row.processes == processes) return row;
                return rows.front();
            };
            std::printf("\ntargets (issue 6, local file system)\n");
            for (auto shape : {loop_shape::free, loop_shape::handoff}) {
                auto const poll = row_of(shape, method::poll_100us, 8).acquisitions_per_s;
                for (auto m : {method::openlock_sync, method::openlock_async}) {
                    auto const mine = row_of(shape, m, 8).acquisitions_per_s;
                    std::printf(
                        "  K=8 throughput >= 100 us polling  %-7s %-15s     %9.0f vs %9.0f acq/s  %s\n",
                        name_of(shape), name_of(m), mine, poll, verdict(mine >= poll));
                }
            }
            for (auto shape : {loop_shape::paced, loop_shape::handoff, loop_shape::free})
                for (int processes : {2, 8})
                    for (auto m : {method::openlock_sync, method::openlock_async}) {
                        auto const p50 = row_of(shape, m, processes).latency.p50_us;
                        std::printf(
                            "  p50 handoff <= 2x pipe floor      %-7s %-15s K=%d %9.1f vs %9.1f us     %s\n",
                            name_of(shape), name_of(m), processes, p50, 2 * floor->p50_us,
                            verdict(p50 > 0 && p50 <= 2 * floor->p50_us));
                    }
            for (int processes : {2, 8})
                for (auto m : {method::openlock_sync, method::openlock_async}) {
                    auto const p50 = row_of(loop_shape::paced, m, processes).latency.p50_us;
                    std::printf("  (p50 next to the protocol floor    paced   %-15s K=%d %9.1f vs %9.1f us: "
                                "information)\n",
                                name_of(m), processes, p50, files_floor->p50_us);
                }
            for (auto const& [m, result] : parked)
                if (m == method::openlock_sync || m == method::openlock_async)
                    std::printf(
                        "  waiting process < 1%% of a core   parked  %-15s     %9.3f%%                  %s\n",
                        name_of(m), result.worst_cpu_percent, verdict(result.worst_cpu_percent < 1.0));
            std::printf(
                "  waiting process < 1%% of a core   async   %5d waiters       %9.3f%%                  %s\n",
                crowd->waiters, crowd->wait_cpu_percent, verdict(crowd->wait_cpu_percent < 1.0));
            for (auto const& [m, result] : stale)
                if (m != method::flock_anchor) {
                    auto const median_ms = result.recovery.p50_us / 1000.0;
                    std::printf(
                        "  stale recovery <= 5 ms median             %-15s     %9.3f ms                %s\n",
                        name_of(m), median_ms, verdict(result.recovery.count > 0 && median_ms <= 5.0));
                }
        }
    } catch (std::exception const& e) {
        std::fprintf(stderr, "openlock-handoff: %s\n", e.what());
        exit_status = 2;
    }
    std::error_code ignored;
    fs::remove_all(scratch, ignored);
    if (!all_ok) {
        std::printf("\nFAILED: a run reported a violation, an error or a hang (see above)\n");
        return 1;
    }
    return exit_status;
}
