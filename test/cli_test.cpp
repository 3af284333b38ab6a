// The openlock command-line tool: run, status and break, their output and their exit statuses.
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

// The exit statuses of cli/cli.hpp.
constexpr int refused = 1;
constexpr int usage_error = 64;
constexpr int invalid_lock = 65;
constexpr int cannot_lock = 73;
constexpr int timed_out = 75;
constexpr int command_not_found = 127;

bool contains(std::string const& text, std::string_view part) {
    return text.find(part) != std::string::npos;
}

std::size_t lines_in(std::string const& text) {
    return static_cast<std::size_t>(std::count(text.begin(), text.end(), '\n'));
}

// openlock's own failures: exactly one line on stderr, "openlock: ...".
void check_one_error_line(test::run_result const& result) {
    INFO("stderr: " << result.err);
    CHECK(result.err.starts_with("openlock: "));
    CHECK(result.err.ends_with("\n"));
    CHECK(lines_in(result.err) == 1);
}

void check_usage_error(std::vector<std::string> const& arguments) {
    auto const result = test::run_cli(arguments);
    CHECK(result.status == usage_error);
    CHECK(result.out.empty());
    check_one_error_line(result);
}

// Commands for `run` that every OS has: on Windows the helper process stands in for true(1), echo(1) and
// exit statuses (Windows has no such programs).
#ifdef _WIN32
#define TRUE_COMMAND OPENLOCK_TEST_CHILD, "exit"
#define ECHO_COMMAND OPENLOCK_TEST_CHILD, "echo"
#define EXIT_7_COMMAND OPENLOCK_TEST_CHILD, "exit", "7"
#else
#define TRUE_COMMAND "true"
#define ECHO_COMMAND "echo"
#define EXIT_7_COMMAND "sh", "-c", "exit 7"
#endif

std::string first_line(std::string const& text) {
    return text.substr(0, text.find('\n'));
}

// A helper process holding `lock` until it is killed.
std::unique_ptr<test::child> hold(fs::path const& lock) {
    auto holder = test::start_helper({"hold", lock.string()});
    auto const line = holder->read_line();
    REQUIRE(line.starts_with("locked"));
    return holder;
}

// A lock file whose holder was SIGKILLed (and reaped), leaving the lock file behind.
void make_stale(fs::path const& lock) {
    auto holder = hold(lock);
    holder->kill_hard();
    REQUIRE(holder->wait() == test::killed_exit_code());
    REQUIRE(fs::exists(lock));
}

} // namespace

TEST_CASE("cli: --version prints the version") {
    auto const result = test::run_cli({"--version"});
    CHECK(result.status == 0);
    CHECK(result.out == "openlock 0.1.0\n");
    CHECK(result.err.empty());
}

TEST_CASE("cli: --help exits 0 and describes run and status and break") {
    auto const result = test::run_cli({"--help"});
    CHECK(result.status == 0);
    CHECK(contains(result.out, "run"));
    CHECK(contains(result.out, "status"));
    CHECK(contains(result.out, "break"));
    CHECK(contains(result.out, "usage"));
    CHECK(result.err.empty());
}

TEST_CASE("cli: bad command lines exit 64 with one line on stderr") {
    test::scratch_dir dir;
    auto const lock = (dir / "x.lock").string();
    SUBCASE("no arguments") {
        check_usage_error({});
    }
    SUBCASE("an unknown command") {
        check_usage_error({"frobnicate"});
    }
    SUBCASE("run without --") {
        check_usage_error({"run", lock, "true"});
    }
    SUBCASE("run with a lock file only") {
        check_usage_error({"run", lock});
    }
    SUBCASE("run LOCK -- without a command") {
        check_usage_error({"run", lock, "--"});
    }
    SUBCASE("run without a lock file") {
        check_usage_error({"run", "--", TRUE_COMMAND});
    }
    SUBCASE("run --timeout -1") {
        check_usage_error({"run", "--timeout", "-1", lock, "--", TRUE_COMMAND});
    }
    SUBCASE("run --timeout abc") {
        check_usage_error({"run", "--timeout", "abc", lock, "--", TRUE_COMMAND});
    }
    SUBCASE("run --timeout without a value") {
        check_usage_error({"run", "--timeout"});
    }
    SUBCASE("run --timeout=nan") {
        check_usage_error({"run", "--timeout=nan", lock, "--", TRUE_COMMAND});
    }
    SUBCASE("run with an unknown option") {
        check_usage_error({"run", "--frob", lock, "--", TRUE_COMMAND});
    }
    SUBCASE("status without a path") {
        check_usage_error({"status"});
    }
    SUBCASE("status with two paths") {
        check_usage_error({"status", lock, lock});
    }
    SUBCASE("break without a path") {
        check_usage_error({"break"});
    }
    SUBCASE("break with an unknown option") {
        check_usage_error({"break", "--frob", lock});
    }
    CHECK(test::names_in(dir.path()).empty());
}

TEST_CASE("cli: run passes the command's exit status through and leaves no file behind") {
    test::scratch_dir dir;
    auto const result = test::run_cli({"run", (dir / "x.lock").string(), "--", EXIT_7_COMMAND});
    CHECK(result.status == 7);
    CHECK(result.err.empty());
    CHECK(test::names_in(dir.path()).empty());

    auto const ok = test::run_cli({"run", (dir / "x.lock").string(), "--", TRUE_COMMAND});
    CHECK(ok.status == 0);
    CHECK(test::names_in(dir.path()).empty());
}

TEST_CASE("cli: run passes the command's output and arguments through unchanged") {
    test::scratch_dir dir;
    auto const result =
        test::run_cli({"run", (dir / "x.lock").string(), "--", ECHO_COMMAND, "a b", "--", "--timeout"});
    CHECK(result.status == 0);
    CHECK(result.out == "a b -- --timeout\n");
}

TEST_CASE("cli: the command runs while the lock file is held by the openlock process") {
#ifdef _WIN32
    // No sh, no $PPID: the helper prints the lock file, whose holder must be openlock.exe (not this process).
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

TEST_CASE("cli: a missing command exits 127 and releases the lock") {
    test::scratch_dir dir;
    auto const result =
        test::run_cli({"run", (dir / "x.lock").string(), "--", "openlock-test-no-such-command-xyz"});
    CHECK(result.status == command_not_found);
    check_one_error_line(result);
    CHECK(contains(result.err, "openlock-test-no-such-command-xyz"));
    CHECK(test::names_in(dir.path()).empty());

    auto const by_path = test::run_cli({"run", (dir / "x.lock").string(), "--", (dir / "missing").string()});
    CHECK(by_path.status == command_not_found);
    CHECK(test::names_in(dir.path()).empty());
}

TEST_CASE("cli: run times out with 75 and names the holder") {
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

TEST_CASE("cli: run --timeout 0 tries once and times out on a held lock") {
    test::scratch_dir dir;
    auto const lock = dir / "held.lock";
    auto const holder = hold(lock);
    auto const result = test::run_cli({"run", "--timeout=0", lock.string(), "--", TRUE_COMMAND});
    CHECK(result.status == timed_out);
    CHECK(contains(result.err, "pid " + std::to_string(holder->pid())));
}

TEST_CASE("cli: run --verbose says who it is waiting for") {
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

// Regression: a --timeout beyond about 9.2e9 s (1e10, 1e30) once overflowed the steady_clock deadline (UB)
// and landed in the past, so run gave up with 75 at the first look. A huge timeout means "wait".
TEST_CASE("cli: run with a huge --timeout waits for the holder instead of timing out") {
#ifdef _WIN32
    OPENLOCK_SKIP("the command line is a POSIX shell script (2>&1 of openlock itself)");
#else
    test::scratch_dir dir;
    auto const lock = dir / "held.lock";
    auto holder = hold(lock);
    // openlock's stderr joins its stdout so that the progress lines can be read in order.
    test::child run{"/bin/sh",
                    {"-c", R"(exec "$0" run --verbose --timeout 1e10 "$1" -- echo ran 2>&1)", OPENLOCK_CLI,
                     lock.string()}};
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

TEST_CASE("cli: run exits 126 when the command cannot be executed") {
    test::scratch_dir dir;
    auto const script = dir / "not-executable";
    test::write_file(script, "echo hi\n");
    auto const result = test::run_cli({"run", (dir / "x.lock").string(), "--", script.string()});
    CHECK(result.status == 126);
    CHECK(result.out.empty());
    check_one_error_line(result);
    CHECK(test::names_in(dir.path()) == std::vector<std::string>{"not-executable"});
}

TEST_CASE("cli: run reports a command killed by a signal as 128 plus the signal") {
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

TEST_CASE("cli: run --verbose says when it acquired the lock") {
    test::scratch_dir dir;
    auto const result = test::run_cli({"run", "-v", (dir / "x.lock").string(), "--", TRUE_COMMAND});
    CHECK(result.status == 0);
    CHECK(contains(result.err, "openlock: acquired "));
}

TEST_CASE("cli: run takes over a stale lock") {
    test::scratch_dir dir;
    auto const lock = dir / "x.lock";
    make_stale(lock);
    auto const result = test::run_cli({"run", "--timeout", "1", lock.string(), "--", TRUE_COMMAND});
    INFO("stderr: " << result.err); // once under Wine in CI: 126, the command could not be run
    CHECK(result.status == 0);
    CHECK(test::names_in(dir.path()).empty());
}

TEST_CASE("cli: status of an absent lock file is unlocked") {
    test::scratch_dir dir;
    auto const lock = dir / "x.lock";
    auto const result = test::run_cli({"status", lock.string()});
    CHECK(result.status == 0);
    CHECK(result.out == lock.string() + ": unlocked\n");
    CHECK(result.err.empty());
    CHECK(test::names_in(dir.path()).empty());
}

TEST_CASE("cli: status of a held lock names the holder") {
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

TEST_CASE("cli: status of a lock whose holder was killed is stale") {
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

TEST_CASE("cli: status of a garbage lock file is invalid") {
    test::scratch_dir dir;
    auto const lock = dir / "x.lock";
    test::write_file(lock, "this is not a lock record\n");
    auto const result = test::run_cli({"status", lock.string()});
    CHECK(result.status == 0);
    CHECK(contains(result.out, lock.string() + ": invalid"));
    CHECK(test::read_file(lock) == "this is not a lock record\n");
}

TEST_CASE("cli: status --json prints one JSON object for a held lock") {
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

TEST_CASE("cli: status --json of unlocked and stale and invalid lock files") {
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

TEST_CASE("cli: break removes a stale lock and its leftover claim file") {
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

TEST_CASE("cli: break --force removes a takeover guard left over a minute ago by a process not alive here") {
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

TEST_CASE("cli: break on an absent lock file has nothing to do") {
    test::scratch_dir dir;
    auto const result = test::run_cli({"break", (dir / "x.lock").string()});
    CHECK(result.status == 0);
    CHECK(contains(result.out, "nothing to break"));
    CHECK(test::names_in(dir.path()).empty());
}

TEST_CASE("cli: break refuses a live lock with 1 and removes nothing") {
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

TEST_CASE("cli: break --force removes a live lock with a warning") {
    test::scratch_dir dir;
    auto const lock = dir / "x.lock";
    auto const holder = hold(lock);
    auto const result = test::run_cli({"break", "--force", lock.string()});
    CHECK(result.status == 0);
    CHECK_FALSE(fs::exists(fs::symlink_status(lock)));
    CHECK(contains(result.err, "openlock: warning: removed"));
    CHECK(contains(result.err, "pid " + std::to_string(holder->pid())));
}

TEST_CASE("cli: break refuses a garbage lock file with 65 and break --force removes it") {
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

TEST_CASE("cli: break --force removes an empty lock file") {
    test::scratch_dir dir;
    auto const lock = dir / "x.lock";
    test::write_file(lock, "");
    CHECK(test::run_cli({"break", lock.string()}).status == invalid_lock);
    CHECK(fs::exists(lock));
    CHECK(test::run_cli({"break", "--force", lock.string()}).status == 0);
    CHECK(test::names_in(dir.path()).empty());
}

TEST_CASE("cli: a symlink lock path is never followed or removed even with --force") {
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

TEST_CASE("cli: run with the lock file in a missing directory exits 73 with a one-line error") {
    test::scratch_dir dir;
    auto const lock = dir / "missing" / "x.lock";
    auto const result = test::run_cli({"run", "--timeout", "1", lock.string(), "--", TRUE_COMMAND});
    CHECK(result.status == cannot_lock);
    CHECK(result.out.empty());
    check_one_error_line(result);
    CHECK(contains(result.err, lock.string()));
    CHECK(test::names_in(dir.path()).empty());
}

TEST_CASE("cli: run --lifetime takes a lease and keeps it alive while the command runs") {
#ifdef _WIN32
    OPENLOCK_SKIP(
        "the command is a POSIX shell script (sleep, status, $OPENLOCK_TOKEN); see the Windows variant");
#else
    test::scratch_dir dir;
    auto const lock = dir / "leased.lock";
    // The command outlives four lifetimes; status (default clock_slop 2 s, so only a dead keeper would show
    // "expired" after 0.3 + 2 s) must see the lease alive at the end.
    auto const result = test::run_cli({"run", "--lifetime", "0.3", lock.string(), "--", "sh", "-c",
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
    auto const again =
        test::run_cli({"run", "--lifetime", "5", lock.string(), "--", "sh", "-c", "echo $OPENLOCK_TOKEN"});
    CHECK(again.out == "2\n");
#endif
}

TEST_CASE("cli: run --lifetime hands the command its fencing token in OPENLOCK_TOKEN, greater each time") {
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

TEST_CASE("cli: status shows an expired lease, and break removes it") {
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
    // A lease's end is also the file's modification time once refreshed: written now, it would read as fresh.
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

TEST_CASE("cli: run --lifetime 0 is a usage error") {
    check_usage_error({"run", "--lifetime", "0", "x.lock", "--", TRUE_COMMAND});
}
