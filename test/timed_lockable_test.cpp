// SPDX-License-Identifier: MIT
// file_lock as a TimedLockable: the standard library's guards and the timed try_lock calls drive it.
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

#include "support/timing.hpp"

import openlock;

using namespace std::chrono_literals;

namespace {

namespace fs = std::filesystem;
using steady = std::chrono::steady_clock;
using test::time_of;

} // namespace

TEST_SUITE("timed lockable") {

    TEST_CASE("std::unique_lock and std::lock_guard and std::scoped_lock drive a file_lock") {
        test::scratch_dir dir;
        auto const path = dir / "std.lock";
        openlock::file_lock lock{path, 1s};
        openlock::file_lock other{path, 30ms};
        {
            std::unique_lock guard{lock};
            CHECK(guard.owns_lock());
            CHECK(lock.owns_lock());
            CHECK_FALSE(other.try_lock());
            guard.unlock();
            CHECK_FALSE(lock.owns_lock());
            CHECK(guard.try_lock());
            CHECK(lock.owns_lock());
        }
        CHECK_FALSE(lock.owns_lock());
        CHECK(test::names_in(dir.path()).empty());
        {
            std::lock_guard guard{lock};
            CHECK(lock.owns_lock());
            std::unique_lock attempt{other, std::try_to_lock};
            CHECK_FALSE(attempt.owns_lock());
            std::unique_lock deferred{other, std::defer_lock};
            CHECK_THROWS_AS(deferred.lock(), openlock::timeout_error);
        }
        CHECK(test::names_in(dir.path()).empty());
        {
            openlock::file_lock second{dir / "second.lock", 1s};
            std::scoped_lock both{lock, second};
            CHECK(lock.owns_lock());
            CHECK(second.owns_lock());
        }
        {
            std::scoped_lock one{lock};
            CHECK(lock.owns_lock());
        }
        CHECK_FALSE(lock.owns_lock());
        CHECK(test::names_in(dir.path()).empty());
    }

    TEST_CASE("try_lock_for and try_lock_until with steady_clock and system_clock") {
        test::scratch_dir dir;
        auto const path = dir / "timed.lock";
        openlock::file_lock lock{path};
        openlock::file_lock other{path};

        CHECK(lock.try_lock_for(100ms));
        CHECK(time_of([&] { CHECK_FALSE(other.try_lock_for(30ms)); }) < 2s);
        CHECK(time_of([&] { CHECK_FALSE(other.try_lock_until(steady::now() + 30ms)); }) < 2s);
        CHECK(time_of([&] { CHECK_FALSE(other.try_lock_until(std::chrono::system_clock::now() + 30ms)); }) <
              2s);
        CHECK(time_of([&] { CHECK_FALSE(other.try_lock_until(steady::now() - 1h)); }) < 2s);
        CHECK_FALSE(other.owns_lock());
        lock.unlock();

        CHECK(other.try_lock_until(std::chrono::system_clock::now() + 1s));
        other.unlock();
        CHECK(other.try_lock_until(steady::now() + 1s));
        other.unlock();
        CHECK(
            other.try_lock_until(std::chrono::system_clock::now() - 1h)); // a past deadline still tries once
        other.unlock();
        CHECK(other.try_lock_for(-1s));
        other.unlock();
        CHECK(test::names_in(dir.path()).empty());
    }

} // TEST_SUITE
