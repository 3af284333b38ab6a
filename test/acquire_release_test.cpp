// SPDX-License-Identifier: MIT
// Acquiring and releasing a file_lock in one process: what it touches on disk, reports and throws.
#include "support/support.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <optional>
#include <string>
#include <system_error>
#include <vector>

#include "support/records.hpp"
#include "support/timing.hpp"

import openlock;

using namespace std::chrono_literals;

namespace {

namespace fs = std::filesystem;
using test::quick;
using test::time_of;

bool is_nonce(std::string const& text) {
    return text.size() == 32 &&
           std::ranges::all_of(text, [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

} // namespace

TEST_SUITE("acquire and release") {

    TEST_CASE("constructing a file_lock touches nothing on disk") {
        test::scratch_dir dir;
        {
            openlock::file_lock plain{dir / "a.lock"};
            openlock::file_lock timed{dir / "b.lock", 5s};
            openlock::file_lock configured{dir / "c.lock", std::nullopt,
                                           quick(openlock::claim_method::hard_link)};
            CHECK(test::names_in(dir.path()).empty());
            CHECK_FALSE(plain.owns_lock());
            CHECK_FALSE(timed.owns_lock());
            CHECK_FALSE(configured.owns_lock());
        }
        CHECK(test::names_in(dir.path()).empty()); // nor does destroying one that never acquired
    }

    TEST_CASE("lock_file and timeout and settings report what the lock was made with") {
        test::scratch_dir dir;
        auto const path = dir / "report.lock";

        openlock::file_lock forever{path};
        CHECK(forever.lock_file() == path);
        CHECK_FALSE(forever.timeout().has_value());

        openlock::file_lock five{path, 5s};
        REQUIRE(five.timeout().has_value());
        CHECK(*five.timeout() == 5s);

        openlock::file_lock fractional{path, std::chrono::duration<double>{1.5}};
        REQUIRE(fractional.timeout().has_value());
        CHECK(*fractional.timeout() == 1500ms);

        // Fractions of a nanosecond round up: a positive wait never becomes "try once".
        openlock::file_lock half_nanosecond{path, std::chrono::duration<double, std::nano>{0.5}};
        CHECK(half_nanosecond.timeout() == std::chrono::nanoseconds{1});
        openlock::file_lock odd{path, std::chrono::duration<double, std::nano>{2.25}};
        CHECK(odd.timeout() == std::chrono::nanoseconds{3});

        // A negative timeout means "try once".
        openlock::file_lock negative{path, -1s};
        CHECK(negative.timeout() == std::chrono::nanoseconds::zero());
        openlock::file_lock negative_optional{path, std::optional<openlock::file_lock::duration>{-5ms}};
        CHECK(negative_optional.timeout() == std::chrono::nanoseconds::zero());

        auto settings = openlock::get_defaults();
        settings.tries = 5;
        settings.retry_period = 50ms;
        settings.race_delay = 70ms;
        settings.slow_system_exception = true;
        settings.method = openlock::claim_method::exclusive_create;
        openlock::file_lock configured{path, 2s, settings};
        CHECK(configured.settings().tries == 5);
        CHECK(configured.settings().retry_period == 50ms);
        CHECK(configured.settings().race_delay == 70ms);
        CHECK(configured.settings().slow_system_exception);
        CHECK(configured.settings().method == openlock::claim_method::exclusive_create);
        CHECK(configured.timeout() == 2s);
    }

    TEST_CASE("acquire then release leaves the directory empty") {
        for (auto const method :
             {openlock::claim_method::automatic, openlock::claim_method::hard_link,
              openlock::claim_method::anonymous_link, openlock::claim_method::exclusive_create}) {
            if (!test::supported(method)) continue;
            CAPTURE(static_cast<int>(method));
            test::scratch_dir dir;
            auto const path = dir / "cycle.lock";
            openlock::file_lock lock{path, std::nullopt, quick(method)};
            lock.acquire();
            CHECK(lock.owns_lock());
            CHECK(fs::is_regular_file(fs::symlink_status(path)));
            lock.release();
            CHECK_FALSE(lock.owns_lock());
            CHECK(test::names_in(dir.path()).empty());
            // And again: an object can be used many times.
            lock.acquire();
            lock.release();
            CHECK(test::names_in(dir.path()).empty());
        }
    }

    TEST_CASE("try_acquire takes a free lock and a second object on the same path gets false") {
        test::scratch_dir dir;
        auto const path = dir / "try.lock";
        openlock::file_lock first{path};
        openlock::file_lock second{path};
        CHECK(first.try_acquire());
        auto const record = test::read_file(path);
        CHECK_FALSE(second.try_acquire());
        CHECK_FALSE(second.owns_lock());
        CHECK(first.owns_lock());
        CHECK(test::read_file(path) == record); // the failed attempt changed nothing
        first.release();
        CHECK(second.try_acquire());
        CHECK_FALSE(first.try_acquire());
        second.release();
        CHECK(test::names_in(dir.path()).empty());
    }

    TEST_CASE("owns_lock and locked and getpid and owner describe the holder") {
        test::scratch_dir dir;
        auto const path = dir / "who.lock";
        openlock::file_lock lock{path};
        openlock::file_lock other{path};

        CHECK_FALSE(lock.owns_lock());
        CHECK_FALSE(lock.locked());
        CHECK_FALSE(lock.getpid().has_value());
        CHECK_FALSE(lock.owner().has_value());

        lock.acquire();
        CHECK(lock.owns_lock());
        CHECK(lock.locked());
        CHECK(lock.getpid() == std::int64_t{test::this_pid()});
        auto const holder = lock.owner();
        REQUIRE(holder.has_value());
        CHECK(holder->pid == test::this_pid());
        CHECK(holder->version == 1);
        CHECK_FALSE(holder->name.empty());
        CHECK_FALSE(holder->host.empty());
        CHECK(is_nonce(holder->nonce));
        CHECK(holder->start_time.has_value());
        CHECK(holder->acquired.has_value());
        CHECK(holder == openlock::parse_record(test::read_file(path)).record);

        // Another object on the same path sees the same holder but does not own it.
        CHECK_FALSE(other.owns_lock());
        CHECK(other.locked());
        CHECK(other.getpid() == std::int64_t{test::this_pid()});
        CHECK(other.owner() == holder);

        lock.release();
        CHECK_FALSE(lock.owns_lock());
        CHECK_FALSE(lock.locked());
        CHECK_FALSE(other.getpid().has_value());
        CHECK_FALSE(other.owner().has_value());

        // Every acquisition gets a new nonce.
        lock.acquire();
        CHECK(lock.owner()->nonce != holder->nonce);
        lock.release();
    }

    TEST_CASE("the error_code overloads never throw and report the same codes") {
        test::scratch_dir dir;
        auto const path = dir / "codes.lock";
        openlock::file_lock lock{path, std::nullopt, quick()};
        openlock::file_lock other{path, 30ms, quick()};
        std::error_code error = std::make_error_code(std::errc::io_error);

        CHECK_FALSE(lock.locked(error));
        CHECK_FALSE(error);
        lock.acquire(error);
        CHECK_FALSE(error);
        CHECK(lock.owns_lock());
        CHECK(lock.locked(error));
        CHECK_FALSE(error);

        lock.acquire(error);
        CHECK(error == openlock::errc::already_locked);
        lock.acquire(1s, error);
        CHECK(error == openlock::errc::already_locked);
        CHECK_FALSE(lock.try_acquire(error));
        CHECK(error == openlock::errc::already_locked);

        CHECK_FALSE(other.try_acquire(error));
        CHECK_FALSE(error); // contention is a value, not an error
        other.acquire(error);
        CHECK(error == openlock::errc::timeout);
        other.acquire(20ms, error);
        CHECK(error == openlock::errc::timeout);
        other.release(error);
        CHECK(error == openlock::errc::invalid_release);

        lock.release(error);
        CHECK_FALSE(error);
        lock.release(error);
        CHECK(error == openlock::errc::invalid_release);

        CHECK(other.try_acquire(error));
        CHECK_FALSE(error);
        fs::remove(path);
        other.release(error);
        CHECK(error == openlock::errc::not_locked);

        // Failures that are not about the lock's state: a garbage lock file and a missing directory.
        test::write_file(path, "not a lock record");
        openlock::file_lock picky{path, 2s, [] {
                                      auto settings = quick();
                                      settings.tries = 1;
                                      return settings;
                                  }()};
        picky.acquire(error);
        CHECK(error == openlock::errc::invalid_lock_file);
        CHECK_FALSE(picky.try_acquire(error));
        CHECK(error == openlock::errc::invalid_lock_file);
        CHECK(picky.locked(error)); // an invalid file counts as held
        CHECK_FALSE(error);
        CHECK(test::read_file(path) == "not a lock record");

        openlock::file_lock nowhere{dir / "missing" / "x.lock", 1s, quick()};
        nowhere.acquire(error);
        CHECK(error == std::errc::no_such_file_or_directory);
        CHECK_FALSE(nowhere.try_acquire(error));
        CHECK(error == std::errc::no_such_file_or_directory);
        CHECK_FALSE(nowhere.locked(error));
        CHECK_FALSE(error);
        CHECK_FALSE(fs::exists(dir / "missing"));
    }

    TEST_CASE("acquire with a zero or negative timeout tries exactly once") {
        test::scratch_dir dir;
        auto const path = dir / "once.lock";
        openlock::file_lock lock{path};

        lock.acquire(0s); // free: taken at once
        CHECK(lock.owns_lock());
        lock.release();

        openlock::file_lock holder{path};
        holder.acquire();
        CHECK(time_of([&] { CHECK_THROWS_AS(lock.acquire(0s), openlock::timeout_error); }) < 2s);
        CHECK(time_of([&] { CHECK_THROWS_AS(lock.acquire(-5s), openlock::timeout_error); }) < 2s);
        CHECK(time_of([&] { CHECK_THROWS_AS(lock.acquire(-1ns), openlock::timeout_error); }) < 2s);
        openlock::file_lock impatient{path, -1s};
        CHECK(time_of([&] { CHECK_THROWS_AS(impatient.acquire(), openlock::timeout_error); }) < 2s);
        CHECK_FALSE(lock.owns_lock());
        holder.release();

        // One try includes taking over a stale lock.
        test::write_file(path, openlock::serialize_record(test::dead_record(dir.path())));
        lock.acquire(0s);
        CHECK(lock.owns_lock());
        CHECK(lock.owner()->pid == test::this_pid());
        lock.release();
        CHECK(test::names_in(dir.path()).empty());
    }

    TEST_CASE("a 30 ms timeout on a held lock throws timeout_error naming this process well within 2 s") {
        test::scratch_dir dir;
        auto const path = dir / "held.lock";
        openlock::file_lock holder{path};
        holder.acquire();
        openlock::file_lock waiter{path, 30ms};
        auto const took = time_of([&] {
            try {
                waiter.acquire();
                FAIL_CHECK("expected openlock::timeout_error");
            } catch (openlock::timeout_error const& e) {
                CHECK(e.code() == openlock::errc::timeout);
                CHECK(e.path() == path);
                CHECK(e.holder().find("pid " + std::to_string(test::this_pid())) != std::string::npos);
            }
        });
        CHECK(took >= 30ms);
        CHECK(took < 2s);
        CHECK_FALSE(waiter.owns_lock());
        CHECK(holder.owns_lock());
        holder.release();
        CHECK(test::names_in(dir.path()).empty());
    }

    TEST_CASE("the destructor releases the lock") {
        test::scratch_dir dir;
        auto const path = dir / "scoped.lock";
        {
            openlock::file_lock lock{path};
            lock.acquire();
            CHECK(fs::exists(path));
        }
        CHECK(test::names_in(dir.path()).empty());
        openlock::file_lock next{path};
        CHECK(next.try_acquire());
        next.release();

        // A destructor whose lock was removed behind its back swallows not_locked and removes nothing else.
        {
            openlock::file_lock lock{path};
            lock.acquire();
            test::replace_file(path, "77\nother\n");
        }
        CHECK(test::read_file(path) == "77\nother\n");
    }

} // TEST_SUITE
