// SPDX-License-Identifier: MIT
// Threads of one process: one object shared as a mutex, two objects on one path, release from another thread.
#include "support/support.hpp"

#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <future>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

import openlock;

using namespace std::chrono_literals;

namespace {

// A plain int guarded only by the lock, and a detector of two threads inside at once.
struct guarded_counter {
    int value = 0;
    std::atomic<int> inside{0};
    std::atomic<int> most_inside{0};

    void increment() {
        int const now_inside = ++inside;
        int seen = most_inside.load();
        while (now_inside > seen && !most_inside.compare_exchange_weak(seen, now_inside)) {
        }
        int const read = value;
        std::this_thread::yield(); // widen the window a lost update would need
        value = read + 1;
        --inside;
    }
};

void run_threads(int count, auto const& body) {
    std::vector<std::jthread> threads;
    threads.reserve(static_cast<std::size_t>(count));
    for (int i = 0; i < count; ++i)
        threads.emplace_back([&body, i] { body(i); });
}

} // namespace

TEST_SUITE("threads") {

    TEST_CASE("one file_lock shared by 4 threads x 300 acquisitions keeps a plain counter exact") {
        test::scratch_dir dir;
        openlock::file_lock lock{dir / "shared.lock"};
        guarded_counter counter;
        std::atomic<int> failures{0};
        constexpr int threads = 4;
        constexpr int iterations = 300;
        run_threads(threads, [&](int) {
            for (int i = 0; i < iterations; ++i) {
                try {
                    lock.acquire();
                    counter.increment();
                    lock.release();
                } catch (...) {
                    ++failures;
                }
            }
        });
        CHECK(failures == 0);
        CHECK(counter.most_inside == 1);
        CHECK(counter.value == threads * iterations);
        CHECK_FALSE(lock.owns_lock());
        CHECK(test::names_in(dir.path()).empty());
    }

    TEST_CASE("two file_lock objects on one path used by 4 threads each x 200 keep a plain counter exact") {
        test::scratch_dir dir;
        auto const path = dir / "two.lock";
        openlock::file_lock first{path};
        openlock::file_lock second{path};
        guarded_counter counter;
        std::atomic<int> failures{0};
        constexpr int threads_per_object = 4;
        constexpr int iterations = 200;
        run_threads(2 * threads_per_object, [&](int index) {
            auto& lock = index % 2 == 0 ? first : second;
            for (int i = 0; i < iterations; ++i) {
                try {
                    std::unique_lock guard{lock};
                    counter.increment();
                } catch (...) {
                    ++failures;
                }
            }
        });
        CHECK(failures == 0);
        CHECK(counter.most_inside == 1);
        CHECK(counter.value == 2 * threads_per_object * iterations);
        CHECK(test::names_in(dir.path()).empty());
    }

    TEST_CASE("a lock acquired in one thread may be released from another thread") {
        test::scratch_dir dir;
        auto const path = dir / "handover.lock";
        openlock::file_lock lock{path};
        std::thread{[&] { lock.acquire(); }}.join();
        CHECK(lock.owns_lock()); // owned by the process, not by the thread that is gone
        CHECK(lock.getpid() == std::int64_t{test::this_pid()});

        lock.release(); // from this thread
        CHECK_FALSE(lock.owns_lock());
        CHECK(test::names_in(dir.path()).empty());

        // The lock is free for everyone again: another thread through the same object, another object.
        bool taken_in_thread = false;
        std::thread{[&] {
            taken_in_thread = lock.try_acquire();
            if (taken_in_thread) lock.release();
        }}.join();
        CHECK(taken_in_thread);
        openlock::file_lock other{path};
        CHECK(other.try_acquire());
        other.release();

        // And the acquiring thread may itself acquire again after someone else released for it.
        lock.acquire();
        std::thread{[&] { lock.release(); }}.join();
        CHECK_FALSE(lock.owns_lock());
        lock.acquire();
        lock.release();
        CHECK(test::names_in(dir.path()).empty());
    }

    TEST_CASE("a thread waiting on an object held by another thread times out with timeout_error") {
        test::scratch_dir dir;
        auto const path = dir / "gate.lock";
        openlock::file_lock lock{path, 50ms};
        lock.acquire();
        auto const record = test::read_file(path);

        auto waited = std::async(std::launch::async, [&] {
            std::string holder;
            try {
                lock.acquire(); // the object's own timeout
            } catch (openlock::timeout_error const& e) {
                holder = e.holder();
            }
            bool const tried = lock.try_acquire();
            bool timed_out_again = false;
            try {
                lock.acquire(30ms);
            } catch (openlock::timeout_error const&) {
                timed_out_again = true;
            }
            return std::tuple{holder, tried, timed_out_again};
        });
        REQUIRE(waited.wait_for(10s) == std::future_status::ready);
        auto const [holder, tried, timed_out_again] = waited.get();
        CHECK(holder.find(std::to_string(test::this_pid())) != std::string::npos);
        CHECK_FALSE(tried);
        CHECK(timed_out_again);

        CHECK(lock.owns_lock()); // the waiter's failures did not disturb the holder
        CHECK(test::read_file(path) == record);
        lock.release();
        CHECK(test::names_in(dir.path()).empty());
    }

} // TEST_SUITE
