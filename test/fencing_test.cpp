// SPDX-License-Identifier: MIT
// Fencing tokens (options::fencing): every acquisition's token is greater than every earlier one, kept in a
// token file beside the lock file.
#include "support/support.hpp"

#include <doctest/doctest.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#ifndef _WIN32
#include <sys/wait.h>
#include <unistd.h>
#endif

#include "support/records.hpp"
#include "support/timing.hpp"

import openlock;

using namespace std::chrono_literals;

namespace {

namespace fs = std::filesystem;
using test::every_method;
using test::leased;

} // namespace

TEST_SUITE("fencing") {

    TEST_CASE("every acquisition's token is greater than every earlier one, across objects and breaks") {
        for (auto const method : every_method) {
            // Wine cannot remove a lock file that its (expired but alive) holder keeps open (exclusive_create
            // pins it): the breaker would wait for it.
            if (method == openlock::claim_method::exclusive_create && test::under_wine()) continue;
            CAPTURE(static_cast<int>(method));
            test::scratch_dir dir;
            auto const path = dir / "fenced.lock";
            auto settings = leased(200ms, 0ms, method);
            settings.fencing = true;
            openlock::file_lock first{path, std::nullopt, settings};
            CHECK(first.token() == 0); // not held
            first.acquire();
            auto const one = first.token();
            CHECK(one >= 1);
            CHECK(openlock::parse_record(test::read_file(path)).record.token ==
                  std::optional<std::uint64_t>{one});
            first.release();
            CHECK(first.token() == 0);

            openlock::file_lock second{path, std::nullopt, settings};
            second.acquire();
            auto const two = second.token();
            CHECK(two > one);
            // A holder whose lease runs out is broken by the next acquirer, who still gets a greater token.
            std::this_thread::sleep_for(300ms);
#ifdef _WIN32
            // No fork(): the breaker is the helper process, with the same settings.
            auto breaker = test::start_helper(
                {"fence", path.string(),
                 method == openlock::claim_method::exclusive_create ? "exclusive_create" : "hard_link"});
            auto const three = std::stoull("0" + breaker->read_line());
            CHECK(breaker->wait() == 0);
#else
            int ready[2];
            REQUIRE(::pipe(ready) == 0);
            pid_t const breaker = ::fork();
            if (breaker == 0) {
                ::close(ready[0]);
                int status = 1;
                try {
                    openlock::file_lock other{path, std::nullopt, settings};
                    other.acquire(5s);
                    auto const three = other.token();
                    (void)!::write(ready[1], &three, sizeof three);
                    other.release();
                    status = 0;
                } catch (...) {
                    // deliberately empty: the exit status (1) tells the parent
                }
                ::_exit(status);
            }
            ::close(ready[1]);
            std::uint64_t three = 0;
            REQUIRE(::read(ready[0], &three, sizeof three) == sizeof three);
            ::close(ready[0]);
            int status = -1;
            REQUIRE(::waitpid(breaker, &status, 0) == breaker);
            CHECK(WIFEXITED(status));
            CHECK(WEXITSTATUS(status) == 0);
#endif
            CHECK(three > two);
            CHECK_FALSE(second.still_held());
            CHECK_THROWS_AS(second.release(), openlock::not_locked);

            first.acquire();
            CHECK(first.token() > three);
            first.release();
            // The last token stays beside the lock: nothing else is left.
            CHECK(test::names_in(dir.path()) == std::vector<std::string>{"fenced.lock.token"});
        }
    }

    TEST_CASE("a token file that holds no number is a typed error and is left alone") {
        test::scratch_dir dir;
        auto const path = dir / "bad-token.lock";
        test::write_file(dir / "bad-token.lock.token", "not a number\n");
        openlock::options settings;
        settings.fencing = true;
        openlock::file_lock lock{path, std::nullopt, settings};
        CHECK_THROWS_AS(lock.acquire(), openlock::invalid_lock_file);
        CHECK(test::read_file(dir / "bad-token.lock.token") == "not a number\n");
        CHECK_FALSE(fs::exists(path));
    }

    TEST_CASE("a token file at the largest value is a typed error, not an endless retry") {
        test::scratch_dir dir;
        auto const path = dir / "max-token.lock";
        test::write_file(dir / "max-token.lock.token", "18446744073709551615\n");
        openlock::options settings;
        settings.fencing = true;
        openlock::file_lock lock{path, std::nullopt, settings};
        CHECK_THROWS_AS((void)lock.try_acquire(), openlock::invalid_lock_file);
        CHECK_FALSE(fs::exists(path));
    }

    TEST_CASE("the record format rejects a zero or unparsable token") {
        auto const good = openlock::parse_record("1\nsh\nversion=1\nnonce=n\ntoken=42\n");
        REQUIRE(good.status == openlock::record_status::ok);
        CHECK(good.record.token == std::optional<std::uint64_t>{42});
        CHECK(openlock::parse_record(openlock::serialize_record(good.record)).record == good.record);
        for (char const* bad : {"0", "-1", "x", "", "18446744073709551616", "1.5"}) {
            CAPTURE(bad);
            auto const text = std::string{"1\nsh\nversion=1\nnonce=n\ntoken="} + bad + "\n";
            CHECK(openlock::parse_record(text).status == openlock::record_status::malformed);
        }
    }

} // TEST_SUITE
