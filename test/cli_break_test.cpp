// SPDX-License-Identifier: MIT
// openlock break: stale and (with --force) live, garbage or leftover locks removed, and what it refuses.
#include "support/cli.hpp"
#include "support/support.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <csignal>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

import openlock;

namespace {

namespace fs = std::filesystem;
using namespace test::cli;
using test::contains;

} // namespace

TEST_SUITE("cli break") {

    TEST_CASE("break removes a stale lock and its leftover claim file") {
        test::scratch_dir dir;
        auto const lock = dir / "x.lock";
        make_stale(lock);
        // What a holder that claimed through a hard link leaves behind: x.lock.claim.<nonce>, the same file.
        auto const parsed = openlock::parse_record(test::read_file(lock));
        REQUIRE(parsed.status == openlock::record_status::ok);
        REQUIRE_FALSE(parsed.record.nonce.empty());
        auto const claim = dir / ("x.lock.claim." + parsed.record.nonce);
        if (!fs::exists(claim)) fs::create_hard_link(lock, claim);

        auto const result = test::run_cli({"break", lock.string()});
        CHECK(result.status == 0);
        CHECK(contains(result.out, "removed the stale lock of pid " + std::to_string(parsed.record.pid)));
        CHECK(test::names_in(dir.path()).empty());
    }

    TEST_CASE("break --force removes a takeover guard left over a minute ago by a process not alive here") {
        test::scratch_dir dir;
        auto const lock = dir / "x.lock";
        make_stale(lock);
        // A takeover on another host crashed while it held the guard: its owner cannot be judged here.
        auto parsed = openlock::parse_record(test::read_file(lock));
        REQUIRE(parsed.status == openlock::record_status::ok);
        auto owner = parsed.record;
        owner.host = "another-host.example";
        owner.nonce = "fedcba9876543210fedcba9876543210";
        auto const guard = dir / "x.lock.takeover";
        fs::create_directory(guard);
        test::write_file(guard / owner.nonce, openlock::serialize_record(owner));
        fs::last_write_time(guard / owner.nonce, fs::file_time_type::clock::now() - std::chrono::minutes{2});

        auto const waited = test::run_cli({"break", lock.string()});
        CHECK(waited.status == timed_out);
        check_one_error_line(waited);
        CHECK(contains(waited.err, "--force"));
        CHECK(fs::exists(guard / owner.nonce));

        auto const forced = test::run_cli({"break", "--force", lock.string()});
        CHECK(forced.status == 0);
        CHECK(contains(forced.err, "removed " + guard.string()));
        CHECK(contains(forced.out, "removed the stale lock of pid " + std::to_string(parsed.record.pid)));
        CHECK(test::names_in(dir.path()).empty());
    }

    TEST_CASE("break on an absent lock file has nothing to do") {
        test::scratch_dir dir;
        auto const result = test::run_cli({"break", (dir / "x.lock").string()});
        CHECK(result.status == 0);
        CHECK(contains(result.out, "nothing to break"));
        CHECK(test::names_in(dir.path()).empty());
    }

    TEST_CASE("break refuses a live lock with 1 and removes nothing") {
        test::scratch_dir dir;
        auto const lock = dir / "x.lock";
        auto const holder = hold(lock);
        auto const names = test::names_in(dir.path());
        auto const before = test::read_file(lock);
        auto const result = test::run_cli({"break", lock.string()});
        CHECK(result.status == refused);
        check_one_error_line(result);
        CHECK(contains(result.err, "pid " + std::to_string(holder->pid())));
        CHECK(contains(result.err, "--force"));
        CHECK(test::names_in(dir.path()) == names);
        CHECK(test::read_file(lock) == before);
    }

    TEST_CASE("break --force removes a live lock with a warning") {
        test::scratch_dir dir;
        auto const lock = dir / "x.lock";
        auto const holder = hold(lock);
        auto const result = test::run_cli({"break", "--force", lock.string()});
        CHECK(result.status == 0);
        CHECK_FALSE(fs::exists(fs::symlink_status(lock)));
        CHECK(contains(result.err, "openlock: warning: removed"));
        CHECK(contains(result.err, "pid " + std::to_string(holder->pid())));
    }

    TEST_CASE("break refuses a garbage lock file with 65 and break --force removes it") {
        test::scratch_dir dir;
        auto const lock = dir / "x.lock";
        test::write_file(lock, "garbage\n");
        auto const refused_result = test::run_cli({"break", lock.string()});
        CHECK(refused_result.status == invalid_lock);
        check_one_error_line(refused_result);
        CHECK(test::read_file(lock) == "garbage\n");

        auto const forced = test::run_cli({"break", "--force", lock.string()});
        CHECK(forced.status == 0);
        CHECK(contains(forced.err, "warning"));
        CHECK(test::names_in(dir.path()).empty());
    }

    TEST_CASE("break --force removes an empty lock file") {
        test::scratch_dir dir;
        auto const lock = dir / "x.lock";
        test::write_file(lock, "");
        CHECK(test::run_cli({"break", lock.string()}).status == invalid_lock);
        CHECK(fs::exists(lock));
        CHECK(test::run_cli({"break", "--force", lock.string()}).status == 0);
        CHECK(test::names_in(dir.path()).empty());
    }

    TEST_CASE("a symlink lock path is never followed or removed even with --force") {
        test::scratch_dir dir;
        auto const lock = dir / "x.lock";
        auto const target = dir / "precious";
        std::string content = "precious data\n";
        SUBCASE("to a plain file") {
            test::write_file(target, content);
        }
        SUBCASE("to a file that holds a stale lock record") {
            make_stale(target);
            content = test::read_file(target);
        }
        SUBCASE("to nothing") {
            content.clear();
        }
        if (!test::symlinks_work(dir.path())) OPENLOCK_SKIP("this process may not create symlinks here");
        fs::create_symlink(target, lock);
        auto const names = test::names_in(dir.path());

        auto const plain = test::run_cli({"break", lock.string()});
        CHECK(plain.status == invalid_lock);
        check_one_error_line(plain);
        auto const forced = test::run_cli({"break", "--force", lock.string()});
        CHECK(forced.status == invalid_lock);
        check_one_error_line(forced);
        auto const status = test::run_cli({"status", lock.string()});
        CHECK(status.status == 0);
        CHECK(contains(status.out, ": invalid"));
        auto const run = test::run_cli({"run", "--timeout", "1", lock.string(), "--", TRUE_COMMAND});
        CHECK(run.status == invalid_lock);
        check_one_error_line(run);

        CHECK(fs::is_symlink(fs::symlink_status(lock)));
        CHECK(fs::read_symlink(lock) == target);
        CHECK(test::names_in(dir.path()) == names);
        if (content.empty())
            CHECK_FALSE(fs::exists(fs::symlink_status(target)));
        else
            CHECK(test::read_file(target) == content);
    }

} // TEST_SUITE
