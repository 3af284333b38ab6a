// SPDX-License-Identifier: MIT
// The doorbell (docs/protocol.md 8.6): a holder that waited before names the doorbell it rings in its record,
// and its release wakes one sleeping waiter, not every waiter; holders that ring none (or another one) are
// waited for with directory events. Linux only: elsewhere there is no doorbell. Also: waiting where a seccomp
// filter refuses epoll_pwait2.
#include "support/support.hpp"

#include <doctest/doctest.h>

#include <chrono>
#include <cstdint>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "support/timing.hpp"

import openlock;

using namespace std::chrono_literals;

namespace {

// Times the process slept voluntarily (blocked) so far: a waiter woken by an event counts one more.
std::int64_t voluntary_switches(int pid) {
    std::ifstream status{"/proc/" + std::to_string(pid) + "/status"};
    std::string line;
    while (std::getline(status, line))
        if (line.starts_with("voluntary_ctxt_switches:")) return std::stoll(line.substr(24));
    return -1;
}

using test::events_only;

// Takes the lock after waiting behind another process, so that this process listens on the doorbell and
// its record names it.
void acquire_after_waiting(openlock::file_lock& lock, std::filesystem::path const& lock_path) {
    auto first = test::start_helper({"queue", lock_path.string(), "200"});
    REQUIRE(first->read_line() == "acquired");
    lock.acquire();
    CHECK(first->wait() == 0);
}

// Hands the lock to a helper process that waited behind us, so that its record names our doorbell: from
// then on the waiter relies on that holder's ring (and its exit) instead of directory events.
[[maybe_unused]] std::unique_ptr<test::child>
hand_over_to_a_ringing_holder(openlock::file_lock& waiter, std::filesystem::path const& lock_path,
                              std::vector<std::string> const& helper) {
    waiter.acquire();
    auto holder = test::start_helper(helper);
    std::this_thread::sleep_for(300ms); // it waits behind us: it listens on the doorbell
    waiter.release();
    REQUIRE(holder->read_line() == "acquired");
    REQUIRE(openlock::parse_record(test::read_file(lock_path)).record.bell != 0);
    return holder;
}

} // namespace

TEST_SUITE("doorbell") {

    TEST_CASE("a holder that has waited names its doorbell, and a release wakes one sleeping waiter") {
#ifndef __linux__
        OPENLOCK_SKIP(
            "the doorbell is Linux's (a FIFO listened on with EPOLLEXCLUSIVE); elsewhere every waiter "
            "wakes at a release");
#else
        test::scratch_dir dir;
        auto const lock_path = dir / "bell.lock";
        openlock::file_lock holder{lock_path, 10s, events_only()};
        acquire_after_waiting(holder, lock_path);
        REQUIRE(holder.owns_lock());
        auto const record = openlock::parse_record(test::read_file(lock_path));
        REQUIRE(record.status == openlock::record_status::ok);
        CHECK(record.record.bell != 0);

        std::vector<std::unique_ptr<test::child>> waiters;
        waiters.reserve(3);
        for (int i = 0; i < 3; ++i)
            waiters.push_back(test::start_helper({"queue", lock_path.string(), "300"}));
        std::this_thread::sleep_for(500ms); // all three looked, saw a ringing holder and sleep
        std::vector<std::int64_t> before;
        before.reserve(waiters.size());
        for (auto const& waiter : waiters)
            before.push_back(voluntary_switches(waiter->pid()));
        holder.release();
        std::this_thread::sleep_for(150ms); // the winner holds for 300 ms: nobody else has cause to wake
        int woken = 0;
        for (std::size_t i = 0; i < waiters.size(); ++i)
            if (voluntary_switches(waiters[i]->pid()) != before[i]) ++woken;
        CHECK(woken == 1);
        for (auto& waiter : waiters) { // each is woken in turn by the one before it
            CHECK(waiter->read_line() == "acquired");
            CHECK(waiter->wait() == 0);
        }
        CHECK(test::names_in(dir.path()).empty()); // the doorbell is not next to the lock
#endif
    }

    TEST_CASE("a holder whose record names no doorbell is waited for with directory events") {
        test::scratch_dir dir;
        auto const lock_path = dir / "quiet.lock";
        openlock::file_lock waiter{lock_path, 10s, events_only()};
        acquire_after_waiting(waiter, lock_path); // the waiter listens on the doorbell from now on
        waiter.release();
        auto holder = test::start_helper({"queue", lock_path.string(), "300"}); // took it without waiting
        REQUIRE(holder->read_line() == "acquired");
        auto const record = openlock::parse_record(test::read_file(lock_path));
        REQUIRE(record.status == openlock::record_status::ok);
        CHECK(record.record.bell == 0);
        auto const began = std::chrono::steady_clock::now();
        waiter.acquire(); // the release rings nothing: the directory event wakes the waiter
        CHECK(std::chrono::steady_clock::now() - began < 5s);
        CHECK(holder->wait() == 0);
    }

    TEST_CASE("a holder naming another doorbell is waited for with directory events") {
        test::scratch_dir dir;
        auto const lock_path = dir / "foreign.lock";
        openlock::file_lock waiter{lock_path, 10s, events_only()};
        acquire_after_waiting(waiter, lock_path);
        waiter.release();
        auto holder = test::start_helper({"hold", lock_path.string()});
        REQUIRE(holder->read_line().starts_with("locked"));
        // As if written by a process whose doorbell is not ours (another user's, another /tmp): the lock file
        // keeps its inode, so the holder's own identity is unchanged.
        auto text = test::read_file(lock_path);
        {
            std::ofstream rewritten{lock_path, std::ios::trunc | std::ios::binary};
            rewritten << text << "bell=12345\n";
        }
        REQUIRE(openlock::parse_record(test::read_file(lock_path)).record.bell == 12345);
        std::thread remover{[&] {
            std::this_thread::sleep_for(200ms);
            std::filesystem::remove(lock_path); // an operator's rm: no ring, only the directory event
        }};
        auto const began = std::chrono::steady_clock::now();
        waiter.acquire();
        remover.join();
        CHECK(std::chrono::steady_clock::now() - began < 5s);
        waiter.release();
        holder->kill_hard();
    }

    TEST_CASE("a lock broken by force rings the doorbell that its holder's record names") {
#ifndef __linux__
        OPENLOCK_SKIP("the doorbell is Linux's (a FIFO listened on with EPOLLEXCLUSIVE)");
#else
        test::scratch_dir dir;
        auto const lock_path = dir / "broken.lock";
        openlock::file_lock waiter{lock_path, 10s, events_only()};
        auto holder =
            hand_over_to_a_ringing_holder(waiter, lock_path, {"queue", lock_path.string(), "30000"});
        // The waiter trusts that holder to ring (its record names the waiter's own doorbell) and sleeps
        // without directory events: only the breaker's ring can wake it before its 20 s pause.
        auto broken = openlock::break_result::busy;
        std::thread breaker{[&] {
            std::this_thread::sleep_for(300ms);
            broken = openlock::break_lock(lock_path, true, openlock::get_defaults());
        }};
        auto const began = std::chrono::steady_clock::now();
        waiter.acquire();
        breaker.join();
        CHECK(std::chrono::steady_clock::now() - began < 5s);
        CHECK(broken == openlock::break_result::removed);
        waiter.release();
        holder->kill_hard();
#endif
    }

    TEST_CASE("a lock released by the exit handler rings, before the process is gone") {
#ifndef __linux__
        OPENLOCK_SKIP("the doorbell is Linux's (a FIFO listened on with EPOLLEXCLUSIVE)");
#else
        test::scratch_dir dir;
        auto const lock_path = dir / "exiting.lock";
        openlock::file_lock waiter{lock_path, 10s, events_only()};
        // It exits holding the lock; its exit lingers 4 s after the exit handler released it.
        auto holder =
            hand_over_to_a_ringing_holder(waiter, lock_path, {"leak-lingering", lock_path.string(), "300"});
        // The waiter relies on the holder's ring: without it, only the pidfd (4 s later) would wake it.
        auto const began = std::chrono::steady_clock::now();
        waiter.acquire();
        CHECK(std::chrono::steady_clock::now() - began < 2s);
        waiter.release();
        CHECK(holder->wait() == 0);
#endif
    }

} // TEST_SUITE

TEST_SUITE("waiting") {

    TEST_CASE("waiting works and does not spin where a seccomp filter refuses epoll_pwait2") {
#ifndef __linux__
        OPENLOCK_SKIP("epoll is Linux's");
#else
        test::scratch_dir dir;
        auto const lock_path = dir / "filtered.lock";
        openlock::file_lock holder{lock_path};
        holder.acquire();
        auto waiter = test::start_helper({"pwait2-refused", lock_path.string()});
        REQUIRE(waiter->read_line() == "waiting");
        std::this_thread::sleep_for(500ms);
        auto const released = std::chrono::steady_clock::now();
        holder.release();
        auto const reply = waiter->read_line();                  // "acquired <CPU ms>"
        CHECK(std::chrono::steady_clock::now() - released < 5s); // woken by the event, not the 20 s pause
        REQUIRE(reply.starts_with("acquired "));
        CHECK(std::stol(reply.substr(9)) < 250); // asleep while it waited, not spinning for 500 ms
        CHECK(waiter->wait() == 0);
#endif
    }

} // TEST_SUITE
