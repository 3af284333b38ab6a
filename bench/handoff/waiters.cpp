// SPDX-License-Identifier: MIT
// Waiters: parked behind a held lock, stale recovery after SIGKILL, 1,000 coroutines on one thread.
#include "common.hpp"

#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_awaitable.hpp>

import openlock;

namespace handoff {

namespace asio = boost::asio;
// ---- parked waiters

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
            [&](std::exception_ptr thrown) { failure = std::move(thrown); });
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
    waiting.reserve(static_cast<std::size_t>(waiters));
    for (int me = 0; me < waiters; ++me)
        waiting.push_back(spawn([&] { return acquire_once_and_release(m, lock_file); }));
    sleep_ns(200'000'000); // started, looked, and settled into the wait
    std::vector<std::int64_t> before;
    before.reserve(waiting.size());
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

// A stale-recovery holder: takes the lock, says so, and keeps it until it is killed.
template <class Lock>
[[noreturn]] void hold_until_killed(fs::path const& lock_file, pipe_pair& signal) {
    Lock lock{lock_file};
    lock.acquire();
    signal.send();
    for (;;)
        ::pause();
}

// A stale-recovery waiter: says it is about to wait, blocks in acquire, and notes when that returned.
template <class Lock>
void note_acquisition(fs::path const& lock_file, pipe_pair& signal, std::atomic<std::int64_t>& acquired_at) {
    Lock lock{lock_file};
    signal.send();
    lock.acquire();
    acquired_at.store(monotonic_ns());
    lock.release();
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
            if (m == method::flock_anchor) hold_until_killed<flock_lock>(lock_file, signal);
            hold_until_killed<openlock::file_lock>(lock_file, signal);
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
                note_acquisition<flock_lock>(lock_file, signal, *acquired_at);
                return true;
            }
            if (m == method::openlock_async) {
                openlock::file_lock lock{lock_file};
                asio::io_context io;
                asio::co_spawn(
                    io,
                    [&]() -> asio::awaitable<void> {
                        signal.send();
                        co_await lock.async_acquire(asio::use_awaitable);
                        acquired_at->store(monotonic_ns());
                        lock.release();
                    },
                    [](std::exception_ptr const& thrown) {
                        if (thrown) std::rethrow_exception(thrown);
                    });
                io.run();
                return true;
            }
            note_acquisition<openlock::file_lock>(lock_file, signal, *acquired_at);
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
            asio::co_spawn(io, waiter(), [&](std::exception_ptr const& thrown) {
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

} // namespace handoff
