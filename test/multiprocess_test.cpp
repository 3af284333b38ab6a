// SPDX-License-Identifier: MIT
// Mutual exclusion across processes, stale takeover after SIGKILL, exit and fork behaviour.
#include "support/support.hpp"

#include <doctest/doctest.h>

#include <chrono>
#include <csignal>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#ifndef _WIN32
#include <sys/wait.h>
#include <unistd.h>
#endif

#include "support/timing.hpp"

import openlock;

using namespace std::chrono_literals;
using test::events_only;

namespace {

void contend(std::string const& method) {
    test::scratch_dir dir;
    auto const lock = (dir / "shared.lock").string();
    auto const counter = (dir / "counter").string();
    test::write_file(counter, "0\n");
    constexpr int processes = 4;
    constexpr int iterations = 500;
    std::vector<std::unique_ptr<test::child>> children;
    children.reserve(processes);
    for (int i = 0; i < processes; ++i)
        children.push_back(test::start_helper({"count", lock, counter, std::to_string(iterations), method}));
    for (auto& c : children)
        CHECK(c->wait() == 0);
    CHECK(std::stol(test::read_file(counter)) == processes * iterations);
    CHECK(test::names_in(dir.path()) == std::vector<std::string>{"counter"});
}

} // namespace

TEST_SUITE("processes") {

    TEST_CASE("4 processes x 500 acquisitions through hard links: the shared counter is exact") {
        contend("hard_link");
    }

    TEST_CASE("4 processes x 500 acquisitions through anonymous links: the shared counter is exact") {
#ifdef _WIN32
        OPENLOCK_SKIP(
            "Windows has no nameless files to link (claim_method::anonymous_link is unsupported there)");
#endif
        contend("anonymous_link");
    }

    TEST_CASE("4 processes x 500 acquisitions through exclusive create: the shared counter is exact") {
        contend("exclusive_create");
    }

    TEST_CASE("a lock whose holder was SIGKILLed is taken over at once, without any fixed sleep") {
        test::scratch_dir dir;
        auto const lock_path = dir / "killed.lock";
        auto holder = test::start_helper({"hold", lock_path.string()});
        REQUIRE(holder->read_line().starts_with("locked"));

        openlock::file_lock lock{lock_path, 10s};
        CHECK_FALSE(lock.try_acquire());
        CHECK(lock.getpid() == holder->pid());

        holder->kill_hard(); // not reaped yet: a zombie holds nothing
        auto const started = std::chrono::steady_clock::now();
        lock.acquire();
        auto const took = std::chrono::steady_clock::now() - started;
        MESSAGE("stale takeover after SIGKILL took "
                << std::chrono::duration_cast<std::chrono::microseconds>(took).count() << " us");
        CHECK(lock.owns_lock());
        CHECK(holder->wait() == test::killed_exit_code());
        lock.release();
        CHECK(test::names_in(dir.path()).empty()); // the dead holder's claim file was swept too
    }

    TEST_CASE("a live holder in another process keeps the lock and timeout_error names it") {
        test::scratch_dir dir;
        auto const lock_path = dir / "held.lock";
        auto holder = test::start_helper({"hold", lock_path.string()});
        REQUIRE(holder->read_line().starts_with("locked"));
        openlock::file_lock lock{lock_path};
        CHECK(lock.locked());
        try {
            lock.acquire(50ms);
            FAIL("acquire should have timed out");
        } catch (openlock::timeout_error const& e) {
            CHECK(e.code() == openlock::errc::timeout);
            CHECK(e.path() == lock_path);
            CHECK(e.holder().find("pid " + std::to_string(holder->pid())) != std::string::npos);
        }
        auto const status = openlock::inspect(lock_path);
        CHECK(status.state == openlock::lock_state::theirs);
    }

    TEST_CASE("locks still held at normal exit are released by the exit handler") {
        test::scratch_dir dir;
        auto const lock_path = dir / "leaked.lock";
        auto leaker = test::start_helper({"leak", lock_path.string()});
        REQUIRE(leaker->read_line() == "locked");
        CHECK(leaker->wait() == 0);
        CHECK(test::names_in(dir.path()).empty());
    }

    TEST_CASE("after fork() the child never releases its parent's lock") {
#ifdef _WIN32
        OPENLOCK_SKIP("Windows has no fork()");
#else
        test::scratch_dir dir;
        auto const lock_path = dir / "forked.lock";
        openlock::file_lock lock{lock_path};
        lock.acquire();
        auto const record_before = test::read_file(lock_path);
        pid_t const pid = ::fork();
        if (pid == 0) {
            // In the child: not ours; release refuses; exit runs the exit handler and destructors.
            bool const owns = lock.owns_lock();
            std::error_code error;
            lock.release(error);
            std::exit(!owns && error == openlock::errc::invalid_release ? 0 : 1);
        }
        int status = 0;
        REQUIRE(::waitpid(pid, &status, 0) == pid);
        CHECK(WIFEXITED(status));
        CHECK(WEXITSTATUS(status) == 0);
        CHECK(lock.owns_lock());
        CHECK(test::read_file(lock_path) == record_before);
        lock.release();
#endif
    }

    TEST_CASE("two processes: try_acquire in the second says busy while the first holds") {
        test::scratch_dir dir;
        auto const lock_path = dir / "try.lock";
        openlock::file_lock lock{lock_path};
        lock.acquire();
        auto other = test::start_helper({"try", lock_path.string()});
        CHECK(other->read_line() == "busy");
        CHECK(other->wait() == 0);
        lock.release();
        auto again = test::start_helper({"try", lock_path.string()});
        CHECK(again->read_line() == "acquired");
        CHECK(again->wait() == 0);
    }

    TEST_CASE("a waiter is woken by the release itself and not by polling") {
        test::scratch_dir dir;
        auto const lock_path = dir / "event.lock";
        openlock::file_lock holder{lock_path};
        holder.acquire();
        std::thread releaser{[&] {
            std::this_thread::sleep_for(100ms); // let the waiter start waiting first
            holder.release();
        }};
        openlock::file_lock waiter{lock_path, 10s, events_only()};
        waiter.acquire();
        releaser.join();
        CHECK(waiter.owns_lock());
    }

    TEST_CASE("a waiter is woken by the holder's exit and not by polling") {
        test::scratch_dir dir;
        auto const lock_path = dir / "exit.lock";
        auto holder = test::start_helper({"hold", lock_path.string()});
        REQUIRE(holder->read_line().starts_with("locked"));
        std::thread killer{[&] {
            std::this_thread::sleep_for(100ms);
            holder->kill_hard();
        }};
        openlock::file_lock waiter{lock_path, 10s, events_only()};
        waiter.acquire();
        killer.join();
        CHECK(waiter.owns_lock());
    }

} // TEST_SUITE
