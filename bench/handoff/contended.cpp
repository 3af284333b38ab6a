// SPDX-License-Identifier: MIT
// Contended rows: K processes in the free, handoff or paced loop, each lock kind.
#include "common.hpp"

#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_awaitable.hpp>

import openlock;

namespace handoff {

namespace asio = boost::asio;
// ---- contended handoff

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

// One turn of a worker that holds the lock (its acquire began at `before` and returned at `after`): the
// critical section, the release, and in the handoff and paced loops the wait for another holder (blocking:
// an async worker's coroutine is all its io_context runs). True when the run is over.
template <class Lock>
bool take_turn(Lock& lock, board& b, int me, loop_shape shape, std::uint32_t* samples,
               wait_clock const& before, wait_clock const& after) {
    enter_critical_section(b, me, after.wall, shape, samples);
    account_wait(b, me, before, after);
    if (shape == loop_shape::paced) sleep_ns(paced_hold_ns);
    std::uint32_t const taken = b.taken.load();
    bool const stopping = b.stop.load();
    leave_critical_section(b, me);
    lock.release();
    if (stopping) return true;
    if (shape != loop_shape::free) wait_for_another_holder(b, taken);
    return false;
}

template <class Lock>
bool blocking_worker(Lock& lock, board& b, int me, loop_shape shape, std::uint32_t* samples,
                     pipe_pair& start) {
    b.ready.fetch_add(1);
    start.receive(); // end of file: go
    run_account account{b, me};
    for (;;) {
        auto const before = wait_clock::now();
        lock.acquire();
        if (take_turn(lock, b, me, shape, samples, before, wait_clock::now())) return true;
    }
}

asio::awaitable<void> async_worker(openlock::file_lock& lock, board& b, int me, loop_shape shape,
                                   std::uint32_t* samples) {
    for (;;) {
        auto const before = wait_clock::now();
        co_await lock.async_acquire(asio::use_awaitable);
        if (take_turn(lock, b, me, shape, samples, before, wait_clock::now())) co_return;
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
                       [&](std::exception_ptr thrown) { failure = std::move(thrown); });
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
    workers.reserve(static_cast<std::size_t>(processes));
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

} // namespace handoff
