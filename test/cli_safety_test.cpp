// SPDX-License-Identifier: MIT
// The openlock command-line tool in hostile conditions: a killed openlock, exhausted descriptors, closed
// standard streams, a failing release, records that hold escape sequences, odd arguments.
#include "support/cli.hpp"
#include "support/support.hpp"

#include <doctest/doctest.h>

#include <chrono>
#include <filesystem>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#ifndef _WIN32
#include <unistd.h>
#endif

import openlock;

namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

using namespace test::cli;
using test::contains;

// Runs a POSIX shell script ($0 is openlock, then `arguments`) to its end; its stdout and its exit status.
test::run_result run_script(std::string const& script, std::vector<std::string> const& arguments = {}) {
    std::vector<std::string> all{"-c", script, OPENLOCK_CLI};
    all.insert(all.end(), arguments.begin(), arguments.end());
    test::child shell{"/bin/sh", all};
    test::run_result result;
    for (auto line = shell.read_line(); !line.empty(); line = shell.read_line())
        result.out += line + "\n";
    result.status = shell.wait();
    return result;
}

bool wait_for(fs::path const& path, std::chrono::milliseconds at_most) {
    auto const until = std::chrono::steady_clock::now() + at_most;
    while (!fs::exists(path)) {
        if (std::chrono::steady_clock::now() > until) return false;
        std::this_thread::sleep_for(10ms);
    }
    return true;
}

// True when text is well-formed UTF-8 without control characters (C0 but the final newline, DEL, C1).
bool safe_for_a_terminal(std::string_view text) {
    if (text.ends_with('\n')) text.remove_suffix(1);
    for (std::size_t at = 0; at < text.size();) {
        auto const lead = static_cast<unsigned char>(text[at]);
        if (lead < 0x20 || lead == 0x7f) return false;
        if (lead < 0x80) {
            ++at;
            continue;
        }
        std::size_t const length = lead >= 0xf0 ? 4 : lead >= 0xe0 ? 3 : lead >= 0xc2 ? 2 : 0;
        if (length == 0 || lead > 0xf4 || at + length > text.size()) return false;
        for (std::size_t i = 1; i < length; ++i)
            if ((static_cast<unsigned char>(text[at + i]) & 0xc0) != 0x80) return false;
        if (lead == 0xc2 && static_cast<unsigned char>(text[at + 1]) < 0xa0) return false; // C1
        at += length;
    }
    return true;
}

#ifndef _WIN32
// Runs the rest of a script's command line as an unprivileged user when we are root (whom no permission
// stops): `"$0" ...` becomes `$AS_USER "$0" ...`. Empty when there is no way to drop privileges.
std::string as_unprivileged_user() {
    if (::geteuid() != 0) return " ";
    for (char const* setpriv : {"/usr/bin/setpriv", "/bin/setpriv"})
        if (fs::exists(setpriv))
            return std::string{setpriv} + " --reuid=65534 --regid=65534 --clear-groups -- ";
    return {};
}
#endif

} // namespace

TEST_SUITE("cli safety") {

    // Item 3 of "Hostile shared directories": the record names openlock's pid and the command's process
    // group, and the lock stays held while either lives. Before, SIGKILL of openlock freed the lock at once
    // while its command ran on.
    TEST_CASE("a killed openlock run keeps the lock until its command's process group has ended") {
#ifdef _WIN32
        OPENLOCK_SKIP("Windows has no process groups: the record names openlock alone");
#else
        test::scratch_dir dir;
        auto const lock = dir / "x.lock";
        auto const ended = dir / "first-ended";
        test::child first{OPENLOCK_CLI,
                          {"run", lock.string(), "--", "sh", "-c", R"(echo started; sleep 1.2; mkdir "$1")",
                           "sh", ended.string()}};
        REQUIRE(first.read_line() == "started");
        auto const record = openlock::parse_record(test::read_file(lock));
        REQUIRE(record.status == openlock::record_status::ok);
        CHECK(record.record.pid == first.pid());
        CHECK(record.record.process_group.has_value());
        CHECK(record.record.group_start_time.has_value());
        first.kill_hard();
        CHECK(first.wait() == test::killed_exit_code());

        // openlock is gone, its command is not: held, and a break without --force refuses.
        CHECK(contains(test::run_cli({"status", lock.string()}).out, ": held by pid "));
        CHECK(test::run_cli({"break", lock.string()}).status == 1);
        // The next run gets the lock only once the first command has ended (its last act made `ended`).
        auto const second =
            test::run_cli({"run", "--timeout", "5", lock.string(), "--", "sh", "-c",
                           R"(if [ -d "$1" ]; then echo after; else echo during; fi)", "sh", ended.string()});
        INFO("stderr: " << second.err);
        CHECK(second.status == 0);
        CHECK(second.out == "after\n");
        CHECK(test::names_in(dir.path()) == std::vector<std::string>{"first-ended"});
#endif
    }

    TEST_CASE("run holds the lock until the command's background processes have ended too") {
#ifdef _WIN32
        OPENLOCK_SKIP("Windows has no process groups");
#else
        test::scratch_dir dir;
        auto const lock = dir / "x.lock";
        auto const ended = dir / "background-ended";
        // The command ends at once; what it left in the background (its group) holds the lock, as flock(1)'s
        // descriptor would be held by it. Its output goes elsewhere, so that our pipe ends with openlock.
        auto const started = std::chrono::steady_clock::now();
        auto const result =
            test::run_cli({"run", lock.string(), "--", "sh", "-c",
                           R"((sleep 0.5; mkdir "$1") >/dev/null 2>&1 &)", "sh", ended.string()});
        CHECK(result.status == 0);
        CHECK(fs::exists(ended));
        CHECK(std::chrono::steady_clock::now() - started >= 500ms);
        CHECK_FALSE(fs::exists(lock));
#endif
    }

    // Item 2: with few descriptors left, Boost.Process started the command and then failed to register it
    // with epoll; openlock said "epoll: Too many open files", exited 126 and released the lock while the
    // command ran.
    TEST_CASE("run never releases the lock while its command lives, however few descriptors are left") {
#ifdef _WIN32
        OPENLOCK_SKIP("ulimit -n and inherited descriptors are POSIX shell features");
#elif defined(OPENLOCK_SANITIZED)
        // UBSan checks a dynamic type by writing the memory to a pipe; with no descriptor left that pipe
        // fails and it reports a bad vptr that is not there, aborting openlock while it holds the lock. The
        // dev build runs this test.
        OPENLOCK_SKIP("the sanitizers' own checks need descriptors that this test takes away");
#else
        test::scratch_dir dir;
        auto const lock = dir / "x.lock";
        test::write_file(dir / "f", "");
        int ran = 0;
        for (int const limit : {12, 13, 14, 15, 16}) {
            CAPTURE(limit);
            for (auto const* name : {"started", "held", "released"})
                fs::remove(dir / name);
            // Seven inherited descriptors (3 to 9), then the limit; the command marks with mkdir (no
            // descriptor needed) whether the lock file still stood 0.3 s after it started.
            auto const result =
                run_script(R"(cd "$1" && exec 3<f 4<f 5<f 6<f 7<f 8<f 9<f && ulimit -n "$2" && )"
                           R"(exec "$0" run x.lock -- sh -c 'mkdir started; sleep 0.3; )"
                           R"(if [ -e x.lock ]; then mkdir held; else mkdir released; fi' 2>/dev/null)",
                           {dir.path().string(), std::to_string(limit)});
            if (fs::exists(dir / "started")) {
                ++ran;
                // The command may outlive an openlock that gave up: wait for its verdict.
                CHECK((wait_for(dir / "held", 2s) || fs::exists(dir / "released")));
                CHECK_FALSE(fs::exists(dir / "released"));
                CHECK(result.status == 0);
            } else {
                CHECK(result.status !=
                      0); // nothing ran: said so (126: no descriptors, 73: none for the lock)
            }
            CHECK_FALSE(fs::exists(lock));
        }
        CHECK(ran > 0);
#endif
    }

    // Item 4: a release that fails exits 74 (EX_IOERR), names what is left behind and still tells the
    // command's status. Before, run exited with the command's status and only warned.
    TEST_CASE("run exits 74 when it cannot release the lock, and says the command's status") {
#ifdef _WIN32
        OPENLOCK_SKIP("the directory is made read-only by a POSIX shell command");
#else
        auto const as_user = as_unprivileged_user();
        if (as_user.empty()) OPENLOCK_SKIP("running as root without setpriv: no permission stops a release");
        test::scratch_dir dir;
        auto const shared = dir / "shared";
        fs::create_directory(shared);
        auto const lock = shared / "x.lock";
        // The directory belongs to the user openlock runs as; the command takes away its write permission, so
        // the lock file cannot be removed.
        auto const result = run_script(
            R"(chown 65534:65534 "$1" 2>/dev/null; )" + as_user +
                R"("$0" run "$1/x.lock" -- sh -c 'chmod a-w "$1"; exit 3' sh "$1" 2>&1; echo "status=$?")",
            {shared.string()});
        fs::permissions(shared, fs::perms::owner_all, fs::perm_options::add);
        INFO("output: " << result.out);
        CHECK(contains(result.out, "status=" + std::to_string(release_failed) + "\n"));
        CHECK(contains(result.out, "openlock: cannot release " + lock.string()));
        CHECK(contains(result.out, "left behind"));
        CHECK(contains(result.out, "the command exited with 3"));
        CHECK(fs::exists(lock));
#endif
    }

    // Item 9: with stderr closed, the lock file got descriptor 2 and openlock's "acquired" line was appended
    // to the held lock file (waiters then found no lock record and exited 65).
    TEST_CASE("run with its standard streams closed writes nothing into the lock file") {
#ifdef _WIN32
        OPENLOCK_SKIP("2>&- is a POSIX shell feature");
#else
        test::scratch_dir dir;
        auto const lock = dir / "x.lock";
        for (std::string const closed : {"2>&-", "0<&- 2>&-"}) {
            CAPTURE(closed);
            auto const result = run_script(R"("$0" run --verbose "$1" -- sh -c 'cat "$1"' sh "$1" )" + closed,
                                           {lock.string()});
            CHECK(result.status == 0);
            auto const parsed = openlock::parse_record(result.out);
            INFO("lock file: " << result.out);
            CHECK(parsed.status == openlock::record_status::ok);
            CHECK_FALSE(contains(result.out, "acquired " + lock.string()));
            CHECK_FALSE(fs::exists(lock));
        }
#endif
    }

    // Item 10: a record's name and host are any bytes but newline and NUL; another user's lock file reached
    // the terminal with its escape sequences, and --json passed invalid UTF-8 on.
    TEST_CASE("escape sequences and invalid UTF-8 from a lock record never reach the output") {
        test::scratch_dir dir;
        auto const lock = dir / "x.lock";
        openlock::lock_record record;
        record.pid = 4242;
        record.name = "evil\x1b]0;owned\x07\x1b[2J\x7f";
        record.version = 1;
        record.host = "host\xc2\x9b"
                      "31m\xff\xfe\xe2\x82"; // a C1 CSI, bytes that are not UTF-8, a cut sequence
        record.nonce = "0123456789abcdef0123456789abcdef";
        record.acquired = std::chrono::system_clock::now();
        test::write_file(lock, openlock::serialize_record(record));

        auto const text = test::run_cli({"status", lock.string()});
        INFO("status: " << text.out);
        CHECK(text.status == 0);
        CHECK(safe_for_a_terminal(text.out));
        CHECK(contains(text.out,
                       "pid 4242 (evil\\x1b]0;owned\\x07\\x1b[2J\\x7f) on host host\\xc2\\x9b31m\\xff\\xfe"
                       "\\xe2\\x82"));

        auto const json = test::run_cli({"status", "--json", lock.string()});
        INFO("json: " << json.out);
        CHECK(safe_for_a_terminal(json.out));
        CHECK(contains(json.out, R"("name":"evil\u001b]0;owned\u0007\u001b[2J\u007f")"));
        CHECK(contains(json.out, R"("host":"host\u009b31m\ufffd\ufffd\ufffd\ufffd")"));

        auto const waited =
            test::run_cli({"run", "--timeout", "0", lock.string(), "--", OPENLOCK_TEST_CHILD, "exit"});
        INFO("run: " << waited.err);
        CHECK(safe_for_a_terminal(waited.err));
        CHECK(contains(waited.err, "evil\\x1b"));

        auto const refused = test::run_cli({"break", lock.string()});
        CHECK(safe_for_a_terminal(refused.err));
    }

    // Item 11: the smaller ones.
    TEST_CASE("an empty argument after -- reaches the command") {
#ifdef _WIN32
        OPENLOCK_SKIP("printf(1) is POSIX");
#else
        test::scratch_dir dir;
        auto const result =
            test::run_cli({"run", (dir / "x.lock").string(), "--", "printf", "%s|", "", "x", ""});
        CHECK(result.status == 0);
        CHECK(result.out == "|x||");
#endif
    }

    TEST_CASE("--timeout and --lifetime follow the same rules for tiny and huge numbers") {
        test::scratch_dir dir;
        auto const lock = (dir / "x.lock").string();
        // Too small for a double is zero: try once.
        auto const tiny =
            test::run_cli({"run", "--timeout", "1e-400", lock, "--", OPENLOCK_TEST_CHILD, "exit"});
        CHECK(tiny.status == 0);
        // A lease shorter than 0.1 s would have keep-alive spin: a usage error, as is zero.
        for (std::string const lifetime : {"1e-9", "1e-400", "0.05", "0"}) {
            CAPTURE(lifetime);
            auto const result =
                test::run_cli({"run", "--lifetime", lifetime, lock, "--", OPENLOCK_TEST_CHILD, "exit"});
            CHECK(result.status == usage_error);
            CHECK(contains(result.err, "--lifetime"));
        }
        CHECK(test::names_in(dir.path()).empty());
    }

    TEST_CASE("a lock path that is not a lock record's file exits 65") {
#ifdef _WIN32
        OPENLOCK_SKIP("/proc is Linux's");
#else
        if (!fs::exists("/proc/self/status")) OPENLOCK_SKIP("no /proc");
        auto const result = test::run_cli({"run", "--timeout", "1", "/proc/self/status", "--", "true"});
        INFO("stderr: " << result.err);
        CHECK(result.status == invalid_lock);
        CHECK(result.out.empty());
#endif
    }

    TEST_CASE("a directory as the command exits 126 and says so") {
        test::scratch_dir dir;
        auto const command = dir / "a-directory";
        fs::create_directory(command);
        auto const result = test::run_cli({"run", (dir / "x.lock").string(), "--", command.string()});
        CHECK(result.status == not_executable);
        CHECK(result.err == "openlock: " + command.string() + ": is a directory\n");
        CHECK(test::names_in(dir.path()) == std::vector<std::string>{"a-directory"});
    }

    TEST_CASE("a forced break that cannot remove a live or garbage lock says what it was") {
#ifdef _WIN32
        OPENLOCK_SKIP("a sticky directory is POSIX");
#else
        auto const as_user = as_unprivileged_user();
        if (as_user.empty() || ::geteuid() != 0)
            OPENLOCK_SKIP("needs root to make a lock file another user cannot remove");
        test::scratch_dir dir;
        auto const shared = dir / "sticky";
        fs::create_directory(shared);
        fs::permissions(shared, fs::perms::all | fs::perms::sticky_bit);
        auto const lock = shared / "x.lock";
        // Root's lock file in a sticky directory: another user may make the takeover guard, not remove it.
        auto holder = test::start_helper({"hold", lock.string()});
        REQUIRE(holder->read_line().starts_with("locked"));
        auto const live =
            run_script(as_user + R"("$0" break --force "$1" 2>&1; echo "status=$?")", {lock.string()});
        INFO("live: " << live.out);
        CHECK(contains(live.out, "status=" + std::to_string(cannot_lock)));
        CHECK(contains(live.out, "the live lock of pid " + std::to_string(holder->pid())));
        CHECK_FALSE(contains(live.out, "stale"));
        CHECK(fs::exists(lock));
        holder.reset();

        test::write_file(lock, "garbage\n");
        auto const garbage =
            run_script(as_user + R"("$0" break --force "$1" 2>&1; echo "status=$?")", {lock.string()});
        INFO("garbage: " << garbage.out);
        CHECK(contains(garbage.out, "status=" + std::to_string(cannot_lock)));
        CHECK(contains(garbage.out, "not a lock record"));
        CHECK_FALSE(contains(garbage.out, "stale"));
        CHECK(fs::exists(lock));
#endif
    }

    // Item 5 (the CLI's part): break said "removed <guard>" where the library only tried (a guard of another
    // user in a sticky directory): it says only what is gone.
    TEST_CASE("break never claims the removal of a takeover guard that is still there") {
#ifdef _WIN32
        OPENLOCK_SKIP("a sticky directory is POSIX");
#else
        auto const as_user = as_unprivileged_user();
        if (as_user.empty() || ::geteuid() != 0)
            OPENLOCK_SKIP("needs root to make a takeover guard another user cannot remove");
        test::scratch_dir dir;
        auto const shared = dir / "sticky";
        fs::create_directory(shared);
        fs::permissions(shared, fs::perms::all | fs::perms::sticky_bit);
        auto const lock = shared / "x.lock";
        auto holder = test::start_helper({"hold", lock.string()});
        REQUIRE(holder->read_line().starts_with("locked"));
        holder->kill_hard();
        holder->wait();
        // A guard that a crash on another host left two minutes ago; root's, so another user cannot empty it.
        auto parsed = openlock::parse_record(test::read_file(lock));
        REQUIRE(parsed.status == openlock::record_status::ok);
        auto owner = parsed.record;
        owner.host = "another-host.example";
        owner.nonce = "fedcba9876543210fedcba9876543210";
        auto const guard = shared / "x.lock.takeover";
        fs::create_directory(guard);
        test::write_file(guard / owner.nonce, openlock::serialize_record(owner));
        fs::last_write_time(guard / owner.nonce, fs::file_time_type::clock::now() - std::chrono::minutes{2});

        auto const forced =
            run_script(as_user + R"("$0" break --force "$1" 2>&1; echo "status=$?")", {lock.string()});
        INFO("output: " << forced.out);
        CHECK(fs::exists(guard / owner.nonce));
        CHECK_FALSE(contains(forced.out, "removed " + guard.string()));
        // The library refuses at once, naming the guard, its owner and the remedy.
        CHECK(contains(forced.out, guard.string()));
        CHECK(contains(forced.out, "it belongs to root"));
        CHECK(contains(forced.out, "setgid group directory"));
        CHECK(contains(forced.out, "status=73"));
        CHECK(fs::exists(lock));
#endif
    }

    // Boost.Process lost the status of a command when openlock inherited SIGCHLD ignored ("No child
    // processes", 126).
    TEST_CASE("run reports the command's status although it inherited SIGCHLD ignored") {
#ifdef _WIN32
        OPENLOCK_SKIP("signals are POSIX");
#else
        // GNU env's --ignore-signal (coreutils 8.31) sets what a shell's `trap '' CHLD` does not pass on.
        if (run_script("env --ignore-signal=CHLD true 2>/dev/null").status != 0)
            OPENLOCK_SKIP("no env --ignore-signal");
        test::scratch_dir dir;
        auto const result =
            run_script(R"(env --ignore-signal=CHLD "$0" run "$1" -- sh -c 'exit 7'; echo "status=$?")",
                       {(dir / "x.lock").string()});
        CHECK(result.out == "status=7\n");
        CHECK(test::names_in(dir.path()).empty());
#endif
    }

} // TEST_SUITE
