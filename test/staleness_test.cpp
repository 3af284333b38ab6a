// SPDX-License-Identifier: MIT
// Judging a holder from its record: stale (provably gone: taken over), held (live: waited for), unknown
// (cannot be judged here: never taken over).
#include "support/support.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#ifdef _WIN32
#include <windows.h>
#else
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#endif

#include "support/diagnostics.hpp"
#include "support/records.hpp"
#include "support/timing.hpp"

import openlock;

using namespace std::chrono_literals;

namespace {

namespace fs = std::filesystem;
using test::dead_record;
using test::nonce_a;
using test::nonce_b;
using test::observed_options;
using test::record_of_this_process;
using test::write_record;

#ifdef _WIN32
// The record a process would write: this process's host and boot with its pid, image name and creation time.
openlock::lock_record record_of(fs::path const& directory, std::int64_t pid) {
    auto record = record_of_this_process(directory);
    HANDLE const process = ::OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, FALSE, static_cast<DWORD>(pid));
    REQUIRE(process != nullptr);
    wchar_t image[32768];
    DWORD size = static_cast<DWORD>(std::size(image));
    FILETIME created{};
    FILETIME exited{};
    FILETIME kernel{};
    FILETIME user{};
    bool const named = ::QueryFullProcessImageNameW(process, 0, image, &size);
    bool const timed = ::GetProcessTimes(process, &created, &exited, &kernel, &user);
    ::CloseHandle(process);
    REQUIRE(named);
    REQUIRE(timed);
    record.pid = pid;
    record.name = fs::path{std::wstring{image, size}}.filename().string();
    record.start_time = (static_cast<std::uint64_t>(created.dwHighDateTime) << 32) | created.dwLowDateTime;
    record.nonce = nonce_b;
    return record;
}

#else
// Fields 2 (comm), 3 (state) and 22 (start time in clock ticks) of /proc/PID/stat.
struct proc_stat {
    std::string name;
    char state = '?';
    std::uint64_t start_time = 0;
};

std::optional<proc_stat> read_proc_stat(pid_t pid) {
    std::ifstream in{"/proc/" + std::to_string(pid) + "/stat"};
    std::string text;
    if (!std::getline(in, text)) return std::nullopt;
    auto const open = text.find('(');
    auto const close = text.rfind(')');
    if (open == std::string::npos || close == std::string::npos) return std::nullopt;
    proc_stat fields;
    fields.name = text.substr(open + 1, close - open - 1);
    std::istringstream rest{text.substr(close + 1)};
    std::vector<std::string> after; // after[0] is field 3
    for (std::string field; rest >> field;)
        after.push_back(field);
    if (after.size() < 20) return std::nullopt;
    fields.state = after[0].front();
    fields.start_time = std::stoull(after[19]);
    return fields;
}

// The record a process would write: this process's host, boot and pid namespace with its pid, comm and start.
openlock::lock_record record_of(fs::path const& directory, pid_t pid) {
    auto record = record_of_this_process(directory);
    auto const fields = read_proc_stat(pid);
    REQUIRE(fields.has_value());
    record.pid = pid;
    record.name = fields->name;
    record.start_time = fields->start_time;
    record.nonce = nonce_b;
    return record;
}

#endif

// A stale record is judged stale, reported as not locked, and taken over by one try; nothing is left behind.
void check_taken_over(fs::path const& directory, openlock::lock_record const& record) {
    auto const path = directory / "judged.lock";
    auto const bytes = write_record(path, record);
    auto const status = openlock::inspect(path);
    CHECK(status.state == openlock::lock_state::stale);
    CHECK(status.record == record);

    observed_options options;
    openlock::file_lock lock{path, std::nullopt, options.settings};
    CHECK_FALSE(lock.locked());
    CHECK_FALSE(lock.owner().has_value());
    CHECK_FALSE(lock.getpid().has_value());
    REQUIRE(lock.try_acquire());
    CHECK(options.reported(openlock::diagnostic::kind::stale_lock_removed, path));
    auto const now = openlock::parse_record(test::read_file(path));
    REQUIRE(now.status == openlock::record_status::ok);
    CHECK(now.record.pid == test::this_pid());
    CHECK(now.record.nonce != record.nonce); // the old file is gone: the lock path holds our new record
    CHECK(test::read_file(path) != bytes);
    lock.release();
    CHECK(test::names_in(directory) == std::vector<std::string>{});
}

// A record that cannot be judged here counts as held: it is never taken over, never changed, never removed.
void check_never_taken_over(fs::path const& directory, std::string const& bytes,
                            openlock::lock_state expected = openlock::lock_state::unknown) {
    auto const path = directory / "judged.lock";
    test::write_file(path, bytes);
    auto const status = openlock::inspect(path);
    CHECK(status.state == expected);
    CHECK(status.record.has_value());

    observed_options options;
    openlock::file_lock lock{path, std::nullopt, options.settings};
    CHECK(lock.locked());
    CHECK(lock.owner() == status.record);
    CHECK_FALSE(lock.try_acquire());
    CHECK_THROWS_AS(lock.acquire(30ms), openlock::timeout_error);
    CHECK_FALSE(lock.owns_lock());
    CHECK(openlock::break_lock(path, false, options.settings) == openlock::break_result::refused);
    CHECK(options.seen.empty());
    CHECK(test::read_file(path) == bytes);
    CHECK(test::names_in(directory) == std::vector<std::string>{"judged.lock"});
    fs::remove(path);
}

#ifdef _WIN32
// A child that runs until told to exit; afterwards our handle keeps its process object, and so its pid, until
// reaped: the nearest thing to a zombie on Windows.
class gated_child {
public:
    gated_child() : child_(test::start_helper({"sleep"})), pid_(child_->pid()) {}
    void exit_without_reaping() {
        if (exited_) return;
        child_->kill_hard();
        child_->wait(); // the process has ended; the handle stays open
        exited_ = true;
    }
    void reap() { child_.reset(); }
    [[nodiscard]] std::int64_t pid() const { return pid_; }

private:
    std::unique_ptr<test::child> child_;
    std::int64_t pid_;
    bool exited_ = false;
};

// A child that lives until it is killed.
class sleeper {
public:
    sleeper() : child_(test::start_helper({"sleep"})) {}
    [[nodiscard]] std::int64_t pid() const { return child_->pid(); }

private:
    std::unique_ptr<test::child> child_; // killed at destruction
};

#else
// A child that runs until told to exit, and is reaped only when asked (or at the end): a zombie in between.
class gated_child {
public:
    gated_child() {
        int gate[2];
        REQUIRE(::pipe(gate) == 0);
        pid_ = ::fork();
        if (pid_ == 0) {
            ::close(gate[1]);
            char byte = 0;
            (void)!::read(gate[0], &byte, 1); // returns when the parent closes its end
            ::_exit(0);
        }
        REQUIRE(pid_ > 0);
        ::close(gate[0]);
        gate_ = gate[1];
    }
    gated_child(gated_child const&) = delete;
    gated_child& operator=(gated_child const&) = delete;
    ~gated_child() {
        exit_without_reaping();
        reap();
    }
    /// Lets it exit and waits until it has, without reaping it: it is a zombie afterwards.
    void exit_without_reaping() {
        if (gate_ < 0) return;
        ::close(gate_);
        gate_ = -1;
        siginfo_t info{};
        REQUIRE(::waitid(P_PID, static_cast<id_t>(pid_), &info, WEXITED | WNOWAIT) == 0);
    }
    void reap() {
        if (pid_ <= 0) return;
        ::waitpid(pid_, nullptr, 0);
        pid_ = -1;
    }
    [[nodiscard]] pid_t pid() const { return pid_; }

private:
    pid_t pid_ = -1;
    int gate_ = -1;
};

// A child that lives until it is killed.
class sleeper {
public:
    sleeper() : pid_(::fork()) {
        if (pid_ == 0) {
            for (;;)
                ::pause();
        }
        REQUIRE(pid_ > 0);
    }
    sleeper(sleeper const&) = delete;
    sleeper& operator=(sleeper const&) = delete;
    ~sleeper() {
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, nullptr, 0);
    }
    [[nodiscard]] pid_t pid() const { return pid_; }

private:
    pid_t pid_;
};

#endif

} // namespace

TEST_SUITE("staleness") {

    TEST_CASE("the pid of a process that does not exist is stale and taken over") {
        test::scratch_dir dir;
        check_taken_over(dir.path(), dead_record(dir.path()));
    }

    TEST_CASE("a pid in 2^31..2^32-1 parses but cannot exist on Linux: stale and taken over") {
        // The record format allows pids up to 4294967295 (a Windows DWORD); pid_t is 32-bit signed and
        // Linux's pid_max is at most 2^22, so none of these can name a process here. None may be narrowed to
        // a negative pid_t (kill(-1, 0) would find "a process") or escape as an exception from the narrowing.
        for (std::int64_t const pid : {std::int64_t{2147483647}, std::int64_t{2147483648},
                                       std::int64_t{3000000000}, std::int64_t{4294967295}}) {
            CAPTURE(pid);
            test::scratch_dir dir;
            auto record = record_of_this_process(dir.path());
            record.pid = pid;
            record.nonce = nonce_a;
            REQUIRE(openlock::parse_record(openlock::serialize_record(record)).record.pid == pid);
            check_taken_over(dir.path(), record);
            // The same through acquire() and through a forced break's judgement.
            write_record(dir / "judged.lock", record);
            observed_options options;
            openlock::file_lock lock{dir / "judged.lock", std::nullopt, options.settings};
            lock.acquire(2s);
            CHECK(options.reported(openlock::diagnostic::kind::stale_lock_removed, dir / "judged.lock"));
            lock.release();
            write_record(dir / "judged.lock", record);
            CHECK(openlock::break_lock(dir / "judged.lock", false) == openlock::break_result::removed);
            CHECK(test::names_in(dir.path()).empty());
        }
    }

    TEST_CASE("a pid of zero, negative or above 4294967295 is invalid_lock_file and never removed") {
        for (std::string const pid : {"0", "-1", "-4294967295", "4294967296", "18446744073709551617"}) {
            CAPTURE(pid);
            test::scratch_dir dir;
            auto const valid = openlock::serialize_record(dead_record(dir.path()));
            auto const bytes = pid + valid.substr(valid.find('\n'));
            auto const path = dir / "judged.lock";
            test::write_file(path, bytes);
            CHECK(openlock::parse_record(bytes).status == openlock::record_status::malformed);
            CHECK(openlock::inspect(path).state == openlock::lock_state::invalid);
            observed_options options;
            options.settings.tries = 2;
            openlock::file_lock lock{path, std::nullopt, options.settings};
            CHECK_THROWS_AS(lock.acquire(2s), openlock::invalid_lock_file);
            try {
                CHECK_FALSE(lock.try_acquire());
            } catch (openlock::invalid_lock_file const&) {
                // deliberately empty: one look may say busy (a writer may be mid-write) or invalid
            }
            options.settings.tries = 1;
            openlock::file_lock once{path, std::nullopt, options.settings};
            CHECK_THROWS_AS((void)once.try_acquire(), openlock::invalid_lock_file);
            CHECK(openlock::break_lock(path, false) == openlock::break_result::refused);
            CHECK(test::read_file(path) == bytes);
            CHECK(test::names_in(dir.path()) == std::vector<std::string>{"judged.lock"});
        }
    }

    TEST_CASE("this pid with another start time is a reused pid and stale") {
        test::scratch_dir dir;
        auto record = record_of_this_process(dir.path());
        record.nonce = nonce_a;
        *record.start_time += 1;
        check_taken_over(dir.path(), record);
        record.start_time = *record.start_time - 2;
        check_taken_over(dir.path(), record);
    }

    TEST_CASE("this pid and start time with another name is stale") {
        test::scratch_dir dir;
        auto record = record_of_this_process(dir.path());
        record.nonce = nonce_a;
        record.name = record.name == "not-this-one" ? "nor-this-one" : "not-this-one";
        check_taken_over(dir.path(), record);
    }

    TEST_CASE("a live process with everything matching holds the lock") {
        test::scratch_dir dir;
        auto record = record_of_this_process(dir.path());
        record.nonce = nonce_a; // this process, another acquisition
        check_never_taken_over(dir.path(), openlock::serialize_record(record), openlock::lock_state::ours);

        // Another live process of this host, as its own record would say.
        sleeper other;
        check_never_taken_over(dir.path(), openlock::serialize_record(record_of(dir.path(), other.pid())),
                               openlock::lock_state::theirs);
    }

    TEST_CASE("another host is unknown and never taken over") {
        test::scratch_dir dir;
        auto record = dead_record(dir.path());
        record.host = "another-host.example";
        check_never_taken_over(dir.path(), openlock::serialize_record(record));
    }

    TEST_CASE("another boot_id is unknown and never taken over") {
        test::scratch_dir dir;
        auto record = dead_record(dir.path());
        record.boot_id = "00000000-0000-0000-0000-000000000000";
        check_never_taken_over(dir.path(), openlock::serialize_record(record));
    }

    TEST_CASE("another pid namespace is unknown and never taken over") {
        test::scratch_dir dir;
        auto record = dead_record(dir.path());
        record.pid_namespace = "1";
        check_never_taken_over(dir.path(), openlock::serialize_record(record));
    }

    TEST_CASE("a version 0 bare record is unknown and never taken over even for a dead pid") {
        test::scratch_dir dir;
        auto const dead = dead_record(dir.path());
        auto const bytes = std::to_string(dead.pid) + "\n" + dead.name + "\n";
        REQUIRE(openlock::parse_record(bytes).status == openlock::record_status::ok);
        REQUIRE(openlock::parse_record(bytes).record.version == 0);
        check_never_taken_over(dir.path(), bytes);
    }

    TEST_CASE("an unknown record version is unknown and never taken over") {
        test::scratch_dir dir;
        auto record = dead_record(dir.path());
        record.version = 2;
        auto const bytes = openlock::serialize_record(record);
        REQUIRE(bytes.find("version=2\n") != std::string::npos);
        REQUIRE(openlock::parse_record(bytes).status == openlock::record_status::ok);
        check_never_taken_over(dir.path(), bytes);
    }

    TEST_CASE("a zombie holder is stale before it is reaped") {
        test::scratch_dir dir;
        gated_child child;
        auto const record = record_of(dir.path(), child.pid());
        auto const path = dir / "judged.lock";

        // While it runs, the record names it exactly: held by another live process.
        write_record(path, record);
        CHECK(openlock::inspect(path).state == openlock::lock_state::theirs);
        fs::remove(path);

        child.exit_without_reaping();
#ifndef _WIN32
        auto const fields = read_proc_stat(child.pid());
        REQUIRE(fields.has_value());
        CHECK(fields->state == 'Z');
        CHECK(fields->name == record.name);
        CHECK(fields->start_time == record.start_time);
#endif
        check_taken_over(dir.path(), record);
        child.reap();
    }

    // A process whose main thread has exited shows state Z in /proc/PID/stat while its other threads run: it
    // is alive, and only a zombie with no other threads is gone (platform/linux/process.cpp).
    TEST_CASE("a holder whose main thread exited while another thread runs is still live") {
#ifdef _WIN32
        OPENLOCK_SKIP(
            "Linux /proc semantics (a main thread that exited shows state Z); Windows has no such state");
#else
        test::scratch_dir dir;
        auto const path = dir / "threads.lock";
        int ready[2];
        REQUIRE(::pipe(ready) == 0);
        pid_t const pid = ::fork();
        if (pid == 0) {
            ::close(ready[0]);
            auto* lock = new openlock::file_lock{path}; // never released: the process keeps holding it
            lock->acquire();
            std::thread{[] {
                for (;;)
                    ::pause();
            }}.detach();
            (void)!::write(ready[1], "1", 1);
            ::syscall(SYS_exit, 0); // ends the main thread only, without unwinding the test's stack
        }
        REQUIRE(pid > 0);
        ::close(ready[1]);
        char byte = 0;
        REQUIRE(::read(ready[0], &byte, 1) == 1);
        ::close(ready[0]);
        for (int i = 0; i < 200; ++i) { // until the main thread is gone (a few ms)
            auto const fields = read_proc_stat(pid);
            if (fields && fields->state == 'Z') break;
            std::this_thread::sleep_for(5ms);
        }
        CHECK(openlock::inspect(path).state == openlock::lock_state::theirs);
        openlock::file_lock lock{path};
        CHECK_FALSE(lock.try_acquire());
        if (lock.owns_lock()) lock.release();
        ::kill(pid, SIGKILL);
        ::waitpid(pid, nullptr, 0);
#endif
    }

    TEST_CASE("on_diagnostic receives stale_lock_removed when a stale lock is taken over") {
        test::scratch_dir dir;
        auto const path = dir / "diagnosed.lock";
        auto const stale = dead_record(dir.path());
        write_record(path, stale);

        observed_options observed;
        auto& seen = observed.seen;
        openlock::file_lock lock{path, 2s, observed.settings};
        lock.acquire();
        CHECK(lock.owner()->pid == test::this_pid());
        auto const reported = seen.all();
        auto const removed = std::ranges::find_if(
            reported, [](auto const& d) { return d.what == openlock::diagnostic::kind::stale_lock_removed; });
        REQUIRE(removed != reported.end());
        CHECK(removed->path == path);
        CHECK(removed->detail.find(std::to_string(stale.pid)) != std::string::npos);
        lock.release();

        // A plain acquire and release of a free lock reports nothing.
        seen.clear();
        lock.acquire();
        lock.release();
        CHECK(seen.empty());
        CHECK(test::names_in(dir.path()).empty());
    }

} // TEST_SUITE
