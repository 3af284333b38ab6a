// SPDX-License-Identifier: MIT
// Bad input at the lock path: every case gets a typed error, never hangs, and deletes or overwrites nothing.
// Here: lock files whose bytes are not a record.
#include "support/support.hpp"

#include <doctest/doctest.h>

#include <chrono>
#include <cstddef>
#include <filesystem>
#include <string>

#include "support/bad_input.hpp"
#include "support/records.hpp"
#include "support/timing.hpp"

import openlock;

using namespace std::chrono_literals;

namespace {

namespace fs = std::filesystem;
constexpr auto const& every_method = test::every_method_and_automatic;
using test::quick;
using test::snapshot;
using test::time_of;

// A lock file whose bytes are not a record: invalid_lock_file after `tries` reads, retry_period apart;
// try_acquire says busy or invalid at once; nothing is changed.
void check_unreadable_content(std::string const& bytes) {
    for (auto const method : every_method) {
        CAPTURE(static_cast<int>(method));
        test::scratch_dir dir;
        auto const path = dir / "bad.lock";
        test::write_file(path, bytes);
        auto const before = snapshot(dir.path());

        constexpr int tries = 3;
        constexpr auto retry_period = 20ms;
        openlock::file_lock lock{path, std::nullopt, quick(tries, retry_period, method)};
        auto const took = time_of([&] {
            try {
                lock.acquire(2s);
                FAIL_CHECK("expected openlock::invalid_lock_file");
            } catch (openlock::invalid_lock_file const& e) {
                CHECK(e.code() == openlock::errc::invalid_lock_file);
                CHECK(e.path() == path);
            }
        });
        CHECK(took >= (tries - 1) * retry_period); // re-read tries times, retry_period apart: never at once
        CHECK(took < 1500ms);                      // and never up to the timeout
        CHECK(snapshot(dir.path()) == before);

        auto const tried = time_of([&] {
            try {
                CHECK_FALSE(lock.try_acquire());
            } catch (openlock::invalid_lock_file const&) {
                // deliberately empty: a typed refusal answers as well as false; what counts is how soon
            }
        });
        CHECK(tried < 1500ms);
        CHECK_FALSE(lock.owns_lock());
        CHECK(lock.locked()); // counts as held
        CHECK(openlock::inspect(path).state == openlock::lock_state::invalid);
        CHECK(snapshot(dir.path()) == before);

        // With a single try the answer is immediate even with a long retry period.
        openlock::file_lock once{path, std::nullopt, quick(1, 10s, method)};
        CHECK(time_of([&] { CHECK_THROWS_AS(once.acquire(5s), openlock::invalid_lock_file); }) < 2s);
        CHECK(time_of([&] { CHECK_THROWS_AS((void)once.try_acquire(), openlock::invalid_lock_file); }) < 2s);
        CHECK(snapshot(dir.path()) == before);
    }
}

} // namespace

TEST_SUITE("bad input: contents") {

    TEST_CASE("an empty lock file is invalid_lock_file after the retries") {
        check_unreadable_content("");
    }

    TEST_CASE("a truncated record without its final newline is invalid_lock_file") {
        check_unreadable_content("12345\nsomeone\nversion=1\nhost=h\nboot_id=b\npid_ns=1\nnonce=0123");
    }

    TEST_CASE("garbage text is invalid_lock_file") {
        check_unreadable_content("this is not a lock file\nat all = really\n");
    }

    TEST_CASE("binary bytes with NULs are invalid_lock_file") {
        std::string const bytes{"12\0\x01\xff\xfe\n\0name\n\x7f", 13};
        REQUIRE(bytes.size() == 13);
        check_unreadable_content(bytes);
    }

    TEST_CASE("a 1 MiB lock file is invalid_lock_file and is not read to its end") {
        std::string bytes = "123\nsomeone\n";
        bytes.resize(std::size_t{1} << 20, 'x');
        check_unreadable_content(bytes);
    }

} // TEST_SUITE
