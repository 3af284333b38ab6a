// SPDX-License-Identifier: MIT
// openlock run: the command runs while the lock is held, its status and output pass through, and failures
// have their own exit statuses.
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

TEST_SUITE("cli run") {

    TEST_CASE("run passes the command's exit status through and leaves no file behind") {
        test::scratch_dir dir;
        auto const result = test::run_cli({"run", (dir / "x.lock").string(), "--", EXIT_7_COMMAND});
        CHECK(result.status == 7);
        CHECK(result.err.empty());
        CHECK(test::names_in(dir.path()).empty());

        auto const ok = test::run_cli({"run", (dir / "x.lock").string(), "--", TRUE_COMMAND});
        CHECK(ok.status == 0);
        CHECK(test::names_in(dir.path()).empty());
    }

    TEST_CASE("run passes the command's output and arguments through unchanged") {
        test::scratch_dir dir;
        auto const result =
            test::run_cli({"run", (dir / "x.lock").string(), "--", ECHO_COMMAND, "a b", "--", "--timeout"});
        CHECK(result.status == 0);
        CHECK(result.out == "a b -- --timeout\n");
    }

    TEST_CASE("the command runs while the lock file is held by the openlock process") {
#ifdef _WIN32
        // No sh, no $PPID: the helper prints the lock file, whose holder must be openlock.exe (not this
        // process).
        test::scratch_dir dir;
        auto const lock = dir / "x.lock";
        auto const result =
            test::run_cli({"run", lock.string(), "--", OPENLOCK_TEST_CHILD, "cat", lock.string()});
        REQUIRE(result.status == 0);
        auto const parsed = openlock::parse_record(result.out);
        REQUIRE(parsed.status == openlock::record_status::ok);
        CHECK(parsed.record.name == "openlock.exe");
        CHECK(parsed.record.pid != test::this_pid());
        CHECK(parsed.record.version >= 1);
        CHECK(test::names_in(dir.path()).empty());
#else
        test::scratch_dir dir;
        auto const lock = dir / "x.lock";
        // $PPID is the openlock process; the lock file's first line must be that pid.
        auto const result = test::run_cli(
            {"run", lock.string(), "--", "sh", "-c", R"(echo "$PPID"; cat "$1")", "sh", lock.string()});
        REQUIRE(result.status == 0);
        auto const parent = first_line(result.out);
        auto const record_text = result.out.substr(parent.size() + 1);
        auto const parsed = openlock::parse_record(record_text);
        REQUIRE(parsed.status == openlock::record_status::ok);
        CHECK(std::to_string(parsed.record.pid) == parent);
        CHECK(first_line(record_text) == parent);
        CHECK(parsed.record.version >= 1);
        CHECK(test::names_in(dir.path()).empty());
#endif
    }

    TEST_CASE("a missing command exits 127 and releases the lock") {
        test::scratch_dir dir;
        auto const result =
            test::run_cli({"run", (dir / "x.lock").string(), "--", "openlock-test-no-such-command-xyz"});
        CHECK(result.status == command_not_found);
        check_one_error_line(result);
        CHECK(contains(result.err, "openlock-test-no-such-command-xyz"));
        CHECK(test::names_in(dir.path()).empty());

        auto const by_path =
            test::run_cli({"run", (dir / "x.lock").string(), "--", (dir / "missing").string()});
        CHECK(by_path.status == command_not_found);
        CHECK(test::names_in(dir.path()).empty());
    }

    TEST_CASE("run times out with 75 and names the holder") {
        test::scratch_dir dir;
        auto const lock = dir / "held.lock";
        auto const holder = hold(lock);
        auto const before = test::read_file(lock);
        auto const result = test::run_cli({"run", "--timeout", "0.3", lock.string(), "--", TRUE_COMMAND});
        CHECK(result.status == timed_out);
        CHECK(result.out.empty());
        check_one_error_line(result);
        CHECK(contains(result.err, "pid " + std::to_string(holder->pid())));
        CHECK(test::read_file(lock) == before);
    }

    TEST_CASE("run --timeout 0 tries once and times out on a held lock") {
        test::scratch_dir dir;
        auto const lock = dir / "held.lock";
        auto const holder = hold(lock);
        auto const result = test::run_cli({"run", "--timeout=0", lock.string(), "--", TRUE_COMMAND});
        CHECK(result.status == timed_out);
        CHECK(contains(result.err, "pid " + std::to_string(holder->pid())));
    }

    TEST_CASE("run --verbose says who it is waiting for") {
        test::scratch_dir dir;
        auto const lock = dir / "held.lock";
        auto const holder = hold(lock);
        // The first wait slice is 250 ms: a 0.8 s timeout leaves room for at least one progress line.
        auto const result =
            test::run_cli({"run", "--verbose", "--timeout", "0.8", lock.string(), "--", TRUE_COMMAND});
        CHECK(result.status == timed_out);
        INFO("stderr: " << result.err);
        CHECK(contains(result.err, "openlock: waiting for " + lock.string()));
        CHECK(contains(result.err, "pid " + std::to_string(holder->pid())));
        CHECK(contains(result.err, "timed out"));
    }

    // Regression: a --timeout beyond about 9.2e9 s (1e10, 1e30) once overflowed the steady_clock deadline
    // (UB) and landed in the past, so run gave up with 75 at the first look. A huge timeout means "wait".
    TEST_CASE("run with a huge --timeout waits for the holder instead of timing out") {
#ifdef _WIN32
        OPENLOCK_SKIP("the command line is a POSIX shell script (2>&1 of openlock itself)");
#else
        test::scratch_dir dir;
        auto const lock = dir / "held.lock";
        auto holder = hold(lock);
        // openlock's stderr joins its stdout so that the progress lines can be read in order.
        test::child run{"/bin/sh",
                        {"-c", R"(exec "$0" run --verbose --timeout 1e10 "$1" -- echo ran 2>&1)",
                         OPENLOCK_CLI, lock.string()}};
        auto const first = run.read_line();
        INFO("first line: " << first);
        bool const waiting = first.starts_with("openlock: waiting for ");
        CHECK(waiting);
        holder->kill_hard(); // lets a waiting run acquire the lock
        if (waiting) {
            CHECK(run.read_line().starts_with("openlock: acquired "));
            CHECK(run.read_line() == "ran");
        }
        CHECK(run.wait() == (waiting ? 0 : timed_out));
#endif
    }

    TEST_CASE("run exits 126 when the command cannot be executed") {
        test::scratch_dir dir;
        auto const script = dir / "not-executable";
        test::write_file(script, "echo hi\n");
        auto const result = test::run_cli({"run", (dir / "x.lock").string(), "--", script.string()});
        CHECK(result.status == 126);
        CHECK(result.out.empty());
        check_one_error_line(result);
        CHECK(test::names_in(dir.path()) == std::vector<std::string>{"not-executable"});
    }

    TEST_CASE("run reports a command killed by a signal as 128 plus the signal") {
#ifdef _WIN32
        OPENLOCK_SKIP("Windows has no signals");
#else
        test::scratch_dir dir;
        auto const result =
            test::run_cli({"run", (dir / "x.lock").string(), "--", "sh", "-c", R"(kill -TERM "$$")"});
        CHECK(result.status == 128 + SIGTERM);
        CHECK(test::names_in(dir.path()).empty());
#endif
    }

    TEST_CASE("run --verbose says when it acquired the lock") {
        test::scratch_dir dir;
        auto const result = test::run_cli({"run", "-v", (dir / "x.lock").string(), "--", TRUE_COMMAND});
        CHECK(result.status == 0);
        CHECK(contains(result.err, "openlock: acquired "));
    }

    TEST_CASE("run takes over a stale lock") {
        test::scratch_dir dir;
        auto const lock = dir / "x.lock";
        make_stale(lock);
        auto const result = test::run_cli({"run", "--timeout", "1", lock.string(), "--", TRUE_COMMAND});
        INFO("stderr: " << result.err); // once under Wine in CI: 126, the command could not be run
        CHECK(result.status == 0);
        CHECK(test::names_in(dir.path()).empty());
    }

    TEST_CASE("run with the lock file in a missing directory exits 73 with a one-line error") {
        test::scratch_dir dir;
        auto const lock = dir / "missing" / "x.lock";
        auto const result = test::run_cli({"run", "--timeout", "1", lock.string(), "--", TRUE_COMMAND});
        CHECK(result.status == cannot_lock);
        CHECK(result.out.empty());
        check_one_error_line(result);
        CHECK(contains(result.err, lock.string()));
        CHECK(test::names_in(dir.path()).empty());
    }

    TEST_CASE("run --lifetime takes a lease and keeps it alive while the command runs") {
#ifdef _WIN32
        OPENLOCK_SKIP(
            "the command is a POSIX shell script (sleep, status, $OPENLOCK_TOKEN); see the Windows variant");
#else
        test::scratch_dir dir;
        auto const lock = dir / "leased.lock";
        // The command outlives four lifetimes; status (default clock_slop 2 s, so only a dead keeper would
        // show "expired" after 0.3 + 2 s) must see the lease alive at the end.
        auto const result =
            test::run_cli({"run", "--lifetime", "0.3", lock.string(), "--", "sh", "-c",
                           R"(sleep 2.6; "$0" status --json "$1"; echo "token=$OPENLOCK_TOKEN")",
                           OPENLOCK_CLI, lock.string()});
        INFO("stdout: " << result.out << "stderr: " << result.err);
        CHECK(result.status == 0);
        CHECK(contains(result.out, R"("state":"held")"));
        CHECK(contains(result.out, R"("lifetime":0.3)"));
        CHECK(contains(result.out, R"("expires":")"));
        CHECK(result.err.empty());
        CHECK(contains(result.out, R"("token":1)"));
        CHECK(contains(result.out, "token=1\n"));
        CHECK(test::names_in(dir.path()) == std::vector<std::string>{"leased.lock.token"});
        // The next run gets a greater token.
        auto const again = test::run_cli(
            {"run", "--lifetime", "5", lock.string(), "--", "sh", "-c", "echo $OPENLOCK_TOKEN"});
        CHECK(again.out == "2\n");
#endif
    }

    TEST_CASE("run --lifetime hands the command its fencing token in OPENLOCK_TOKEN, greater each time") {
        test::scratch_dir dir;
        auto const lock = dir / "leased.lock";
        auto const first = test::run_cli(
            {"run", "--lifetime", "5", lock.string(), "--", OPENLOCK_TEST_CHILD, "env", "OPENLOCK_TOKEN"});
        INFO("stderr: " << first.err);
        CHECK(first.status == 0);
        CHECK(first.out == "1\n");
        auto const second = test::run_cli(
            {"run", "--lifetime", "5", lock.string(), "--", OPENLOCK_TEST_CHILD, "env", "OPENLOCK_TOKEN"});
        CHECK(second.out == "2\n");
        CHECK(test::names_in(dir.path()) == std::vector<std::string>{"leased.lock.token"});
    }

    TEST_CASE("run --lifetime 0 is a usage error") {
        check_usage_error({"run", "--lifetime", "0", "x.lock", "--", TRUE_COMMAND});
    }

} // TEST_SUITE
