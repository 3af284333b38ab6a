// SPDX-License-Identifier: MIT
// A lock whose record names a process group (options::process_group): held while the group has a running
// member, even when the holder's pid is gone; stale once the group has ended, when only zombies are left in
// it, or when its number belongs to a process with another start time (docs/protocol.md 5.3).
#include "support/support.hpp"

#include <doctest/doctest.h>

#include <chrono>
#include <csignal>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>

#ifndef _WIN32
#include <sys/wait.h>
#include <unistd.h>
#endif

#include "support/records.hpp"

import openlock;

using namespace std::chrono_literals;

#ifndef _WIN32
namespace {

namespace fs = std::filesystem;

constexpr char const* other_nonce = "0123456789abcdef0123456789abcdef";

// A child that leads a process group of its own and waits to be killed; killed and reaped at the end.
class group_leader {
public:
    group_leader() {
        pid_ = ::fork();
        if (pid_ == 0) {
            ::setpgid(0, 0);
            for (;;)
                ::pause();
        }
        REQUIRE(pid_ > 0);
        ::setpgid(pid_, pid_);
    }
    group_leader(group_leader const&) = delete;
    group_leader& operator=(group_leader const&) = delete;
    ~group_leader() {
        end();
        reap();
    }
    [[nodiscard]] pid_t pid() const { return pid_; }
    void end() const { ::kill(pid_, SIGKILL); }
    // Waits until the child is a zombie, without reaping it.
    void wait_until_zombie() const {
        siginfo_t info{};
        ::waitid(P_PID, static_cast<id_t>(pid_), &info, WEXITED | WNOWAIT);
    }
    void reap() {
        if (reaped_) return;
        int status = 0;
        ::waitpid(pid_, &status, 0);
        reaped_ = true;
    }

private:
    pid_t pid_ = -1;
    bool reaped_ = false;
};

// Field 22 of /proc/PID/stat: what the record's group_start holds (no time namespace in the test).
std::uint64_t start_ticks(pid_t pid) {
    std::ifstream in{"/proc/" + std::to_string(pid) + "/stat"};
    std::string text;
    std::getline(in, text);
    std::istringstream rest{text.substr(text.rfind(')') + 2)};
    std::string field;
    for (int index = 3; rest >> field; ++index)
        if (index == 22) return std::stoull(field);
    FAIL("no start time for " << pid);
    return 0;
}

// A record of a holder that is gone (a reaped child's pid) and that names `group`.
openlock::lock_record gone_holder_with_group(fs::path const& directory, std::int64_t group,
                                             std::optional<std::uint64_t> group_start) {
    auto record = test::dead_record(directory, other_nonce);
    record.process_group = group;
    record.group_start_time = group_start;
    return record;
}

openlock::lock_state state_of(fs::path const& lock) {
    return openlock::inspect(lock).state;
}

} // namespace
#endif

TEST_SUITE("process group") {

    TEST_CASE("a gone holder's lock is held while its group runs, and stale once it has ended") {
#ifdef _WIN32
        OPENLOCK_SKIP("Windows has no process groups: a record's group counts as gone");
#else
        if (!fs::exists("/proc/self/stat")) OPENLOCK_SKIP("no /proc");
        test::scratch_dir dir;
        auto const lock = dir / "x.lock";
        group_leader group;
        auto const record = gone_holder_with_group(dir.path(), group.pid(), start_ticks(group.pid()));
        test::write_file(lock, openlock::serialize_record(record));
        CHECK(state_of(lock) == openlock::lock_state::theirs);
        CHECK(openlock::break_lock(lock, false) == openlock::break_result::refused);
        openlock::file_lock waiter{lock};
        CHECK_FALSE(waiter.try_lock_for(300ms));

        // Without the leader's start time the group still holds the lock.
        auto without_start = record;
        without_start.group_start_time.reset();
        test::write_file(lock, openlock::serialize_record(without_start));
        CHECK(state_of(lock) == openlock::lock_state::theirs);

        // The group's number now names a process with another start time: the recorded group ended.
        auto reused = record;
        reused.group_start_time = *record.group_start_time + 1;
        test::write_file(lock, openlock::serialize_record(reused));
        CHECK(state_of(lock) == openlock::lock_state::stale);

        // A group of zombies holds nothing (an orphan's zombie waits for init, which may reap only now and
        // then).
        test::write_file(lock, openlock::serialize_record(record));
        group.end();
        group.wait_until_zombie();
        CHECK(state_of(lock) == openlock::lock_state::stale);
        group.reap();
        CHECK(state_of(lock) == openlock::lock_state::stale);
        CHECK(waiter.try_lock_for(2s));
        waiter.unlock();
        CHECK(test::names_in(dir.path()).empty());
#endif
    }

    TEST_CASE("acquire names the group and its leader's start time in the record") {
#ifdef _WIN32
        OPENLOCK_SKIP("Windows has no process groups");
#else
        if (!fs::exists("/proc/self/stat")) OPENLOCK_SKIP("no /proc");
        test::scratch_dir dir;
        auto const lock = dir / "x.lock";
        group_leader group;
        for (auto const method : {openlock::claim_method::automatic, openlock::claim_method::hard_link,
                                  openlock::claim_method::exclusive_create}) {
            CAPTURE(static_cast<int>(method));
            auto settings = openlock::get_defaults();
            settings.method = method;
            settings.process_group = group.pid();
            openlock::file_lock held{lock, std::nullopt, settings};
            held.acquire();
            auto const parsed = openlock::parse_record(test::read_file(lock));
            REQUIRE(parsed.status == openlock::record_status::ok);
            CHECK(parsed.record.process_group == group.pid());
            CHECK(parsed.record.group_start_time == start_ticks(group.pid()));
            held.release();
        }
        auto settings = openlock::get_defaults();
        settings.process_group = 0;
        CHECK_THROWS_AS(openlock::validate(settings), openlock::invalid_option);
#endif
    }

} // TEST_SUITE
