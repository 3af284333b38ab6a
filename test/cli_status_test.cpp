// SPDX-License-Identifier: MIT
// openlock status: what it says of unlocked, held, stale, invalid and expired lock files, as text and JSON.
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

TEST_SUITE("cli status") {

    TEST_CASE("status of an absent lock file is unlocked") {
        test::scratch_dir dir;
        auto const lock = dir / "x.lock";
        auto const result = test::run_cli({"status", lock.string()});
        CHECK(result.status == 0);
        CHECK(result.out == lock.string() + ": unlocked\n");
        CHECK(result.err.empty());
        CHECK(test::names_in(dir.path()).empty());
    }

    TEST_CASE("status of a held lock names the holder") {
        test::scratch_dir dir;
        auto const lock = dir / "x.lock";
        auto const holder = hold(lock);
        auto const before = test::read_file(lock);
        auto const result = test::run_cli({"status", lock.string()});
        CHECK(result.status == 0);
        CHECK(lines_in(result.out) == 1);
        CHECK(contains(result.out, lock.string() + ": held by pid " + std::to_string(holder->pid())));
        CHECK(test::read_file(lock) == before);
    }

    TEST_CASE("status of a lock whose holder was killed is stale") {
        test::scratch_dir dir;
        auto const lock = dir / "x.lock";
        make_stale(lock);
        auto const before = test::read_file(lock);
        auto const result = test::run_cli({"status", lock.string()});
        CHECK(result.status == 0);
        CHECK(contains(result.out, lock.string() + ": stale: pid "));
        CHECK(contains(result.out, " is gone"));
        CHECK(test::read_file(lock) == before); // status never modifies anything
    }

    TEST_CASE("status of a garbage lock file is invalid") {
        test::scratch_dir dir;
        auto const lock = dir / "x.lock";
        test::write_file(lock, "this is not a lock record\n");
        auto const result = test::run_cli({"status", lock.string()});
        CHECK(result.status == 0);
        CHECK(contains(result.out, lock.string() + ": invalid"));
        CHECK(test::read_file(lock) == "this is not a lock record\n");
    }

    TEST_CASE("status --json prints one JSON object for a held lock") {
        test::scratch_dir dir;
        auto const lock = dir / "x.lock";
        auto const holder = hold(lock);
        auto const result = test::run_cli({"status", "--json", lock.string()});
        CHECK(result.status == 0);
        INFO("stdout: " << result.out);
        CHECK(result.out.starts_with("{"));
        CHECK(result.out.ends_with("}\n"));
        CHECK(lines_in(result.out) == 1);
        CHECK(contains(result.out, R"("state":"held")"));
        CHECK(contains(result.out, R"("pid":)" + std::to_string(holder->pid()) + ","));
        CHECK(contains(result.out, R"("name":")"));
        CHECK(contains(result.out, R"("host":")"));
    }

    TEST_CASE("status --json of unlocked and stale and invalid lock files") {
        test::scratch_dir dir;
        auto const lock = dir / "x.lock";
        CHECK(contains(test::run_cli({"status", "--json", lock.string()}).out, R"("state":"unlocked")"));
        make_stale(lock);
        CHECK(contains(test::run_cli({"status", "--json", lock.string()}).out, R"("state":"stale")"));
        test::write_file(lock, "garbage \"quoted\"\n");
        auto const invalid = test::run_cli({"status", "--json", lock.string()});
        CHECK(contains(invalid.out, R"("state":"invalid")"));
        CHECK(contains(invalid.out, R"("problem":")"));
    }

    TEST_CASE("status shows an expired lease, and break removes it") {
        test::scratch_dir dir;
        auto const lock = dir / "expired.lock";
        openlock::lock_record record;
        record.pid = 4242;
        record.name = "worker";
        record.version = 1;
        record.host = "some-other-host";
        record.nonce = "0123456789abcdef0123456789abcdef";
        record.acquired = std::chrono::system_clock::now() - std::chrono::hours{1};
        record.lifetime = std::chrono::seconds{60};
        test::write_file(lock, openlock::serialize_record(record));
        // A lease's end is also the file's modification time once refreshed: written now, it would read as
        // fresh.
        fs::last_write_time(lock, fs::file_time_type::clock::now() - std::chrono::hours{1});
        auto const json = test::run_cli({"status", "--json", lock.string()});
        CHECK(contains(json.out, R"("state":"expired")"));
        CHECK(contains(json.out, R"("judged":"theirs_expired")"));
        auto const text = test::run_cli({"status", lock.string()});
        CHECK(contains(text.out, "expired"));
        CHECK(contains(text.out, "lease ends"));
        auto const broken = test::run_cli({"break", lock.string()});
        CHECK(broken.status == 0);
        CHECK(contains(broken.out, "removed the expired lock"));
        CHECK_FALSE(fs::exists(lock));
    }

} // TEST_SUITE
