// SPDX-License-Identifier: MIT
// inspect and break_lock: what a lock file says about its holder, and removing it when that is safe.
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

} // namespace

TEST_SUITE("inspect and break_lock") {

    TEST_CASE("inspect tells unlocked and ours and stale and unknown and invalid apart") {
        test::scratch_dir dir;
        auto const path = dir / "inspect.lock";

        auto status = openlock::inspect(path);
        CHECK(status.state == openlock::lock_state::unlocked);
        CHECK_FALSE(status.record.has_value());
        CHECK(std::string{openlock::to_string(status.state)} == "unlocked");

        {
            openlock::file_lock lock{path};
            lock.acquire();
            status = openlock::inspect(path);
            CHECK(status.state == openlock::lock_state::ours);
            REQUIRE(status.record.has_value());
            CHECK(status.record == lock.owner());
            CHECK(std::string{openlock::to_string(status.state)} == "ours");
        }

        auto const stale = test::dead_record(dir.path());
        test::write_file(path, openlock::serialize_record(stale));
        status = openlock::inspect(path);
        CHECK(status.state == openlock::lock_state::stale);
        CHECK(status.record == stale);

        auto foreign = stale;
        foreign.host = "some-other-host.example";
        test::write_file(path, openlock::serialize_record(foreign));
        status = openlock::inspect(path);
        CHECK(status.state == openlock::lock_state::unknown);
        CHECK(status.record == foreign);

        test::write_file(path, "garbage without a newline");
        status = openlock::inspect(path);
        CHECK(status.state == openlock::lock_state::invalid);
        CHECK_FALSE(status.record.has_value());
        CHECK_FALSE(status.problem.empty());

        // Inspecting never changes anything, and the error_code form agrees.
        std::error_code error = std::make_error_code(std::errc::io_error);
        CHECK(openlock::inspect(path, error).state == openlock::lock_state::invalid);
        CHECK_FALSE(error);
        CHECK(test::read_file(path) == "garbage without a newline");
        CHECK(test::names_in(dir.path()) == std::vector<std::string>{"inspect.lock"});
    }

    TEST_CASE("break_lock answers nothing_to_break and removed and refused") {
        test::scratch_dir dir;
        auto const path = dir / "break.lock";
        auto const settings = quick();

        CHECK(openlock::break_lock(path, false, settings) == openlock::break_result::nothing_to_break);
        CHECK(openlock::break_lock(path, true, settings) == openlock::break_result::nothing_to_break);

        // A live holder (ourselves): refused without force, nothing touched.
        openlock::file_lock lock{path};
        lock.acquire();
        auto const record = test::read_file(path);
        CHECK(openlock::break_lock(path, false, settings) == openlock::break_result::refused);
        CHECK(test::read_file(path) == record);
        CHECK(lock.owns_lock());

        // With force it is removed, and the holder learns at release.
        CHECK(openlock::break_lock(path, true, settings) == openlock::break_result::removed);
        CHECK_FALSE(fs::exists(path));
        CHECK_THROWS_AS(lock.release(), openlock::not_locked);

        // A stale lock is removed without force.
        test::write_file(path, openlock::serialize_record(test::dead_record(dir.path())));
        CHECK(openlock::break_lock(path, false, settings) == openlock::break_result::removed);
        CHECK(test::names_in(dir.path()).empty());

        // A holder of another host is refused without force.
        auto foreign = test::dead_record(dir.path());
        foreign.host = "some-other-host.example";
        auto const foreign_bytes = openlock::serialize_record(foreign);
        test::write_file(path, foreign_bytes);
        CHECK(openlock::break_lock(path, false, settings) == openlock::break_result::refused);
        CHECK(test::read_file(path) == foreign_bytes);
        CHECK(openlock::break_lock(path, true, settings) == openlock::break_result::removed);
        CHECK(test::names_in(dir.path()).empty());

        // A file that is not a record: refused without force, removed with it.
        test::write_file(path, "garbage\n");
        CHECK(openlock::break_lock(path, false, settings) == openlock::break_result::refused);
        CHECK(test::read_file(path) == "garbage\n");
        CHECK(openlock::break_lock(path, true, settings) == openlock::break_result::removed);
        CHECK(test::names_in(dir.path()).empty());
    }

} // TEST_SUITE
