// SPDX-License-Identifier: MIT
// async_acquire on Asio: every token kind, timeouts, cancellation, and many waiters on one thread.
#include "support/support.hpp"

#include <doctest/doctest.h>

#include <atomic>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/use_future.hpp>
#include <chrono>
#include <coroutine>
#include <memory>
#include <optional>
#include <string>
#include <vector>

import openlock;

namespace asio = boost::asio;
using namespace std::chrono_literals;
using boost::system::error_code;

namespace {

// Runs a coroutine to completion on a fresh io_context.
template <class Coroutine>
void run(Coroutine coroutine) {
    asio::io_context io;
    std::exception_ptr failure;
    asio::co_spawn(io, std::move(coroutine), [&](std::exception_ptr const& thrown) { failure = thrown; });
    io.run();
    if (failure) std::rethrow_exception(failure);
}

} // namespace

TEST_SUITE("async") {

    TEST_CASE("co_await async_acquire with use_awaitable takes a free lock") {
        test::scratch_dir dir;
        openlock::file_lock lock{dir / "free.lock"};
        run([&]() -> asio::awaitable<void> {
            co_await lock.async_acquire(5s, asio::use_awaitable);
            CHECK(lock.owns_lock());
            lock.release();
        });
        CHECK(test::names_in(dir.path()).empty());
    }

    TEST_CASE("the default token is deferred and can be co_awaited") {
        test::scratch_dir dir;
        openlock::file_lock lock{dir / "deferred.lock"};
        run([&]() -> asio::awaitable<void> {
            co_await lock.async_acquire();
            CHECK(lock.owns_lock());
            auto operation =
                lock.async_acquire(1s, asio::deferred); // a deferred operation runs only when awaited
            lock.release();
            co_await std::move(operation);
            CHECK(lock.owns_lock());
            lock.release();
        });
    }

    TEST_CASE("a plain callback runs on the lock's executor and never inline") {
        test::scratch_dir dir;
        asio::io_context io;
        openlock::file_lock lock{dir / "callback.lock"};
        lock.set_executor(io.get_executor());
        std::optional<error_code> result;
        lock.async_acquire(5s, [&](error_code error) { result = error; });
        CHECK_FALSE(result.has_value()); // not completed inside the initiating call
        io.run();
        REQUIRE(result.has_value());
        CHECK_FALSE(*result);
        CHECK(lock.owns_lock());
    }

    TEST_CASE("use_future bound to an executor delivers the result") {
        test::scratch_dir dir;
        asio::io_context io;
        openlock::file_lock lock{dir / "future.lock"};
        auto future = lock.async_acquire(5s, asio::bind_executor(io, asio::use_future));
        io.run();
        future.get(); // throws on error
        CHECK(lock.owns_lock());
    }

    TEST_CASE(
        "an async acquire of a held lock times out with asio::error::timed_out and leaves nothing behind") {
        test::scratch_dir dir;
        openlock::file_lock holder{dir / "held.lock"};
        holder.acquire();
        auto const before = test::names_in(dir.path());
        openlock::file_lock waiter{dir / "held.lock"};
        asio::io_context io;
        std::optional<error_code> result;
        waiter.async_acquire(50ms, asio::bind_executor(io, [&](error_code error) { result = error; }));
        io.run();
        REQUIRE(result.has_value());
        CHECK(*result == asio::error::timed_out);
        CHECK_FALSE(waiter.owns_lock());
        CHECK(test::names_in(dir.path()) == before);
    }

    TEST_CASE("terminal and partial cancellation complete with operation_aborted and leave the lock free") {
        for (auto const type : {asio::cancellation_type::terminal, asio::cancellation_type::partial,
                                asio::cancellation_type::total}) {
            test::scratch_dir dir;
            openlock::file_lock holder{dir / "cancel.lock"};
            holder.acquire();
            openlock::file_lock waiter{dir / "cancel.lock"};
            asio::io_context io;
            asio::cancellation_signal signal;
            std::optional<error_code> result;
            waiter.async_acquire(asio::bind_cancellation_slot(
                signal.slot(), asio::bind_executor(io, [&](error_code e) { result = e; })));
            asio::steady_timer later{io, 20ms};
            later.async_wait([&](error_code) { signal.emit(type); });
            io.run();
            REQUIRE(result.has_value());
            CHECK(*result == asio::error::operation_aborted);
            CHECK_FALSE(waiter.owns_lock());
            holder.release();
            CHECK(waiter.try_acquire()); // the cancelled operation left the object usable
            waiter.release();
            CHECK(test::names_in(dir.path()).empty());
        }
    }

    TEST_CASE("an awaitable_operators race against a timer cancels the acquire") {
        using namespace asio::experimental::awaitable_operators;
        test::scratch_dir dir;
        openlock::file_lock holder{dir / "race.lock"};
        holder.acquire();
        openlock::file_lock waiter{dir / "race.lock"};
        run([&]() -> asio::awaitable<void> {
            asio::steady_timer timer{co_await asio::this_coro::executor, 30ms};
            auto const winner =
                co_await (waiter.async_acquire(asio::use_awaitable) || timer.async_wait(asio::use_awaitable));
            CHECK(winner.index() == 1);
            CHECK_FALSE(waiter.owns_lock());
        });
        holder.release();
        CHECK(test::names_in(dir.path()).empty());
    }

    TEST_CASE("an async waiter is woken by the release and not by polling") {
        test::scratch_dir dir;
        openlock::file_lock holder{dir / "wake.lock"};
        holder.acquire();
        auto settings = openlock::get_defaults();
        settings.retry_period = 20s; // only an event can wake the waiter in time
        openlock::file_lock waiter{dir / "wake.lock", std::nullopt, settings};
        run([&]() -> asio::awaitable<void> {
            asio::steady_timer release_later{co_await asio::this_coro::executor, 50ms};
            release_later.async_wait([&](error_code) { holder.release(); });
            co_await waiter.async_acquire(10s, asio::use_awaitable);
            CHECK(waiter.owns_lock());
            waiter.release();
        });
    }

    TEST_CASE("an async waiter is woken by the holder process's exit and not by polling") {
        test::scratch_dir dir;
        auto const path = dir / "exit.lock";
        auto holder = test::start_helper({"hold", path.string()});
        REQUIRE(holder->read_line().starts_with("locked"));
        auto settings = openlock::get_defaults();
        settings.retry_period =
            20s; // only the exit (or the removal of its lock file) can wake the waiter in time
        openlock::file_lock waiter{path, std::nullopt, settings};
        auto const started = std::chrono::steady_clock::now();
        run([&]() -> asio::awaitable<void> {
            asio::steady_timer kill_later{co_await asio::this_coro::executor, 100ms};
            kill_later.async_wait([&](error_code) { holder->kill_hard(); });
            co_await waiter.async_acquire(10s, asio::use_awaitable);
            CHECK(waiter.owns_lock());
            waiter.release();
        });
        CHECK(std::chrono::steady_clock::now() - started < 10s);
        CHECK(holder->wait() == test::killed_exit_code());
    }

    TEST_CASE("many coroutines sharing one object take turns") {
        test::scratch_dir dir;
        openlock::file_lock lock{dir / "shared-object.lock"};
        int inside = 0;
        int turns = 0;
        run([&]() -> asio::awaitable<void> {
            auto const executor = co_await asio::this_coro::executor;
            for (int i = 0; i < 20; ++i)
                asio::co_spawn(
                    executor,
                    [&]() -> asio::awaitable<void> {
                        co_await lock.async_acquire(10s, asio::use_awaitable);
                        CHECK(++inside == 1);
                        asio::steady_timer work{co_await asio::this_coro::executor, 1ms};
                        co_await work.async_wait(asio::use_awaitable);
                        --inside;
                        ++turns;
                        lock.release();
                    },
                    asio::detached);
            co_return;
        });
        CHECK(turns == 20);
    }

    TEST_CASE("1000 concurrent waiters on one io_context thread each get the lock once") {
        test::scratch_dir dir;
        auto const path = dir / "thousand.lock";
        constexpr int waiters = 1000;
        std::vector<std::unique_ptr<openlock::file_lock>> locks;
        locks.reserve(waiters);
        for (int i = 0; i < waiters; ++i)
            locks.push_back(std::make_unique<openlock::file_lock>(path));
        int inside = 0;
        int overlaps = 0;
        int done = 0;
        asio::io_context io;
        for (auto& lock : locks)
            asio::co_spawn(
                io,
                [&, lock = lock.get()]() -> asio::awaitable<void> {
                    co_await lock->async_acquire(60s, asio::use_awaitable);
                    if (++inside != 1) ++overlaps;
                    asio::steady_timer work{co_await asio::this_coro::executor, 0ms};
                    co_await work.async_wait(asio::use_awaitable); // let the others run while we hold it
                    --inside;
                    ++done;
                    lock->release();
                },
                [](std::exception_ptr const& thrown) {
                    if (thrown) std::rethrow_exception(thrown);
                });
        auto const started = std::chrono::steady_clock::now();
        io.run();
        MESSAGE("1000 async waiters on one thread finished in "
                << std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                                         started)
                       .count()
                << " ms");
        CHECK(done == waiters);
        CHECK(overlaps == 0);
        CHECK(test::names_in(dir.path()).empty());
    }

    // A gate wake-up comes from whichever thread releases; on a multi-threaded executor it must not run
    // before the waiter has started the wait it ends (a lost wake-up would leave a waiter asleep until its
    // timeout). The window is a few instructions wide, so this run does not reliably catch a regression there
    // (it did not when the strand was removed); it does check exclusion and completion with completions on
    // two threads.
    TEST_CASE("waiters on a thread pool's executor are all woken, none lost") {
        test::scratch_dir dir;
        auto const path = dir / "pool.lock";
        constexpr int waiters = 300;
        std::vector<std::unique_ptr<openlock::file_lock>> locks;
        locks.reserve(waiters);
        for (int i = 0; i < waiters; ++i)
            locks.push_back(std::make_unique<openlock::file_lock>(path));
        std::atomic<int> inside{0};
        std::atomic<int> overlaps{0};
        std::atomic<int> done{0};
        std::atomic<int> failed{0};
        asio::thread_pool pool{2};
        for (auto& lock : locks)
            lock->async_acquire(
                30s, asio::bind_executor(pool.get_executor(), [&, lock = lock.get()](error_code error) {
                    if (error) {
                        ++failed;
                        return;
                    }
                    if (++inside != 1) ++overlaps;
                    --inside;
                    ++done;
                    lock->release();
                }));
        auto const started = std::chrono::steady_clock::now();
        pool.join();
        auto const took = std::chrono::steady_clock::now() - started;
        MESSAGE(waiters << " waiters on a 2-thread pool finished in "
                        << std::chrono::duration_cast<std::chrono::milliseconds>(took).count() << " ms");
        CHECK(failed == 0);
        CHECK(done == waiters);
        CHECK(overlaps == 0);
        CHECK(took < 20s);
        CHECK(test::names_in(dir.path()).empty());
    }

} // TEST_SUITE
