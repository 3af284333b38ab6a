// SPDX-License-Identifier: MIT
// The flufl.lock format (options::format = lock_format::flufl): what the files look like, that records of
// flufl.lock are read and judged by their lease only, and that each side's expired lock is broken exactly.
// The mixed test with the real Python flufl.lock is test/flufl/run.sh.
#include "support/support.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <fcntl.h>
#include <filesystem>
#include <mutex>
#include <optional>
#include <stop_token>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "support/diagnostics.hpp"

import openlock;

using namespace std::chrono_literals;

namespace {

namespace fs = std::filesystem;
using system_clock = std::chrono::system_clock;

openlock::options flufl_format(std::optional<std::chrono::nanoseconds> lifetime = std::nullopt,
                               std::chrono::nanoseconds slop = 50ms) {
    openlock::options settings;
    settings.retry_period = 20ms;
    settings.format = openlock::lock_format::flufl;
    settings.lifetime = lifetime;
    settings.clock_slop = slop;
    return settings;
}

// What std::filesystem reads and writes of file times: whole seconds with mingw's library (its _wstat64 and
// _wutime64), which the library itself does not use (it sets and reads file times through the OS).
#ifdef _WIN32
constexpr std::chrono::nanoseconds test_time_resolution = 1s;
constexpr int timing_scale = 10; // Wine: every file operation costs a round trip to the wine server
#else
constexpr std::chrono::nanoseconds test_time_resolution = 0s;
constexpr int timing_scale = 1;
#endif

void set_mtime(fs::path const& path, system_clock::time_point when) {
    fs::last_write_time(path, fs::file_time_type::clock::from_sys(when));
}

system_clock::time_point mtime(fs::path const& path) {
    return std::chrono::time_point_cast<system_clock::duration>(
        fs::file_time_type::clock::to_sys(fs::last_write_time(path)));
}

// What flufl.lock 5's Lock.lock() leaves when it wins: a claim file "<lock>|<host>|<pid>|<random>" holding
// its own name, touched to the lease's end, hard-linked to the lock path.
fs::path lock_as_flufl_does(fs::path const& lock_file, std::string const& host, long pid,
                            system_clock::time_point expires) {
    auto const sep = std::string{openlock::effective_flufl_separator(openlock::options{})}; // '|', '^'
    fs::path const claim =
        lock_file.string() + sep + host + sep + std::to_string(pid) + sep + "8061979214345683217";
    test::write_file(claim, claim.string());
    set_mtime(claim, expires);
    fs::create_hard_link(claim, lock_file);
    return claim;
}

bool starts_with(std::string const& text, std::string const& prefix) {
    return text.compare(0, prefix.size(), prefix) == 0;
}

} // namespace

TEST_SUITE("flufl format") {

    TEST_CASE("a flufl.lock lock file parses as a flufl record, and serializes back to itself") {
        auto const parsed =
            openlock::parse_record("/srv/locks/db.lock|build7.example.org|4242|8061979214345683217");
        REQUIRE(parsed.status == openlock::record_status::ok);
        CHECK(parsed.record.format == openlock::lock_format::flufl);
        CHECK(parsed.record.pid == 4242);
        CHECK(parsed.record.host == "build7.example.org");
        CHECK(parsed.record.nonce == "8061979214345683217");
        CHECK(parsed.record.claim_file == "/srv/locks/db.lock|build7.example.org|4242|8061979214345683217");
        CHECK(openlock::serialize_record(parsed.record) == parsed.record.claim_file);
        CHECK(openlock::describe_holder(parsed.record) == "pid 4242 on host build7.example.org (flufl.lock)");

        SUBCASE("Windows' caret separator, and a relative lock path") {
            auto const caret = openlock::parse_record("db.lock^host^7^1");
            REQUIRE(caret.status == openlock::record_status::ok);
            CHECK(caret.record.pid == 7);
        }
        SUBCASE("anything else in that shape is not a flufl record") {
            for (char const* text :
                 {"/l|host|12|", "/l|host|x|5", "/l|host|0|5", "/l||12|5", "|host|12|5", "/l|a|b|host|12|5",
                  "/l-host-12-5", "/l|host|12|5\n", "/l|host|99999999999|5"}) {
                CAPTURE(text);
                CHECK(openlock::parse_record(text).record.format != openlock::lock_format::flufl);
                CHECK(openlock::parse_record(text).status != openlock::record_status::ok);
            }
        }
    }

    TEST_CASE("options refuse what the format cannot carry") {
        auto settings = flufl_format();
        settings.fencing = true;
        CHECK_THROWS_AS(openlock::validate(settings), openlock::invalid_option);
        settings = flufl_format();
        settings.method = openlock::claim_method::exclusive_create;
        CHECK_THROWS_AS(openlock::validate(settings), openlock::invalid_option);
        settings = flufl_format();
        for (char const separator : {'/', '\\', '.', '-', '_', 'a', '7', ' '}) {
            settings.flufl_separator = separator;
            CHECK_THROWS_AS(openlock::validate(settings), openlock::invalid_option);
        }
        settings = flufl_format();
        settings.keep_alive = true; // the format always has a lease: flufl's 15 s
        CHECK_NOTHROW(openlock::validate(settings));
        CHECK(openlock::effective_lifetime(settings) == std::optional<std::chrono::nanoseconds>{15s});
        // flufl.lock's SEP: '^' on Windows, '|' elsewhere.
        CHECK(openlock::effective_flufl_separator(settings) ==
              (fs::path::preferred_separator == '\\' ? '^' : '|'));
        settings.flufl_separator = '#';
        CHECK(openlock::effective_flufl_separator(settings) == '#');
    }

    TEST_CASE("the lock file is a hard link of a claim file named and filled as flufl.lock does") {
        test::scratch_dir dir;
        auto const path = dir / "shared.lock";
        openlock::file_lock lock{path, std::nullopt, flufl_format(30s)};
        CHECK(lock.lifetime() == std::optional<std::chrono::nanoseconds>{30s});
        auto const before = system_clock::now();
        lock.acquire();

        auto const content = test::read_file(path);
        auto const separator = std::string{openlock::effective_flufl_separator(openlock::options{})};
        auto const prefix = fs::absolute(path).string() + separator + openlock::inspect(path).record->host +
                            separator + std::to_string(test::this_pid()) + separator;
        CHECK(starts_with(content, prefix));
        CHECK(content.find('\n') == std::string::npos);
        REQUIRE(fs::exists(content));
        CHECK(test::read_file(content) == content); // the claim file holds its own path
#ifndef _WIN32
        CHECK(fs::hard_link_count(path) == 2); // mingw's std::filesystem always says 1
#endif
        CHECK(fs::equivalent(path, content));
        // flufl.lock reads the lease's end from the file time alone.
        CHECK(mtime(path) >= before + 30s - test_time_resolution);
        CHECK(mtime(path) <= system_clock::now() + 30s);
        CHECK(lock.state() == openlock::lock_state::ours);
        REQUIRE(lock.expiration().has_value());
        CHECK(*lock.expiration() >= mtime(path));
        CHECK(*lock.expiration() < mtime(path) + test_time_resolution + 1ns);

        lock.refresh(60s);
        CHECK(mtime(path) >= before + 60s - test_time_resolution);

        lock.release();
        CHECK_FALSE(fs::exists(path));
        CHECK_FALSE(fs::exists(content));
        CHECK(test::names_in(dir.path()).empty());
    }

    TEST_CASE("without a lifetime the lease is flufl's 15 s, and lifetime(none) returns to it") {
        test::scratch_dir dir;
        auto const path = dir / "default.lock";
        openlock::file_lock lock{path, std::nullopt, flufl_format()};
        CHECK(lock.lifetime() == std::optional<std::chrono::nanoseconds>{15s});
        lock.lifetime(5s);
        CHECK(lock.lifetime() == std::optional<std::chrono::nanoseconds>{5s});
        lock.lifetime(std::nullopt);
        CHECK(lock.lifetime() == std::optional<std::chrono::nanoseconds>{15s});
        lock.acquire();
        CHECK(mtime(path) >= system_clock::now() + 14s - test_time_resolution);
    }

    TEST_CASE("a lock path holding the separator is refused before anything is written") {
        test::scratch_dir dir;
        auto const path = dir / "odd#name.lock";
        auto settings = flufl_format(5s);
        settings.flufl_separator = '#'; // '|' and '^' cannot stand in Windows file names
        openlock::file_lock lock{path, std::nullopt, settings};
        CHECK_THROWS_AS(lock.acquire(), openlock::invalid_option);
        CHECK(test::names_in(dir.path()).empty());
    }

    TEST_CASE("a flufl.lock holder is judged by its lease only, and its claim file goes with it") {
        for (auto const format : {openlock::lock_format::flufl, openlock::lock_format::openlock}) {
            CAPTURE(static_cast<int>(format));
            test::scratch_dir dir;
            auto const path = dir / "python.lock";
            // The pid of a process that is gone, on this very host: flufl.lock's records cannot prove that
            // the pid is the holder's (no start time, no pid namespace), so only the lease may end the lock.
            auto const claim =
                lock_as_flufl_does(path, "python-host", static_cast<long>(test::pid_of_a_reaped_child()),
                                   system_clock::now() + 2s);
            auto settings = flufl_format(5s);
            settings.format = format;
            test::diagnostics_seen seen;
            settings = seen.collecting(settings);
            openlock::file_lock lock{path, std::nullopt, settings};
            CHECK(openlock::inspect(path, settings).state == openlock::lock_state::unknown);
            CHECK_FALSE(lock.try_acquire());
            CHECK(openlock::break_lock(path, false, settings) == openlock::break_result::refused);

            // 2 s of lease and 50 ms of slop later it is broken, and the holder's claim file removed with it.
            lock.acquire(5s);
            CHECK(lock.owns_lock());
            CHECK(seen.reported(openlock::diagnostic::kind::expired_lock_broken));
            CHECK_FALSE(fs::exists(claim));
            lock.release();
            CHECK(test::names_in(dir.path()).empty());
        }
    }

    TEST_CASE("whole-second file times and the clock slop decide expiry") {
        test::scratch_dir dir;
        auto const path = dir / "seconds.lock";
        // flufl.lock truncates the lease's end to whole seconds (time.mktime); some file systems keep no
        // more.
        auto const now = system_clock::now();
        auto const whole_second = std::chrono::floor<std::chrono::seconds>(now);
        auto const claim = lock_as_flufl_does(path, "python-host", 4242, whole_second);
        auto settings = flufl_format(5s, 2s);
        auto const status = openlock::inspect(path, settings);
        REQUIRE(status.expires.has_value());
        CHECK(*status.expires == whole_second);
        CHECK(status.state == openlock::lock_state::unknown); // ended, but not clock_slop ago
        set_mtime(path, whole_second - 3s);
        CHECK(openlock::inspect(path, settings).state == openlock::lock_state::theirs_expired);
        set_mtime(path, whole_second - 1s);
        CHECK(openlock::inspect(path, settings).state == openlock::lock_state::unknown);
        settings.clock_slop = 0s;
        CHECK(openlock::inspect(path, settings).state == openlock::lock_state::theirs_expired);
        CHECK(openlock::break_lock(path, false, settings) == openlock::break_result::removed);
        CHECK_FALSE(fs::exists(claim));
    }

    TEST_CASE("a claim file is removed with a broken lock only when it holds the lock's name") {
        test::scratch_dir dir;
        auto const path = dir / "guarded.lock";
        // The lock file names a claim file, but what stands at that name holds something else: not a claim,
        // so not ours to remove, although the lock itself is broken.
        auto const sep = std::string{openlock::effective_flufl_separator(openlock::options{})};
        fs::path const named = path.string() + sep + "python-host" + sep + "4242" + sep + "77";
        test::write_file(path, named.string());
        set_mtime(path, system_clock::now() - 1h);
        test::write_file(named, "precious data");
        auto const settings = flufl_format(5s, 0s);
        REQUIRE(openlock::inspect(path, settings).state == openlock::lock_state::theirs_expired);
        CHECK(openlock::break_lock(path, false, settings) == openlock::break_result::removed);
        CHECK_FALSE(fs::exists(path));
        CHECK(test::read_file(named) == "precious data");
    }

    TEST_CASE("openlock run --format flufl holds a flufl.lock lock while the command runs") {
#ifdef _WIN32
        OPENLOCK_SKIP("the commands run under the lock are POSIX tools (cat, sh)");
#else
        test::scratch_dir dir;
        auto const path = dir / "cli.lock";
        auto const shown =
            test::run_cli({"run", "--format", "flufl", path.string(), "--", "cat", path.string()});
        CHECK(shown.status == 0);
        auto const parsed = openlock::parse_record(shown.out);
        CHECK(parsed.record.format == openlock::lock_format::flufl);
        CHECK(starts_with(shown.out, fs::absolute(path).string() + "|"));
        CHECK(test::names_in(dir.path()).empty());

        auto const refused = test::run_cli({"run", "--format", "yaml", path.string(), "--", "true"});
        CHECK(refused.status == 64);
        auto const no_tokens = test::run_cli({"run", "--format=flufl", "--lifetime", "5", path.string(), "--",
                                              "sh", "-c", "echo ${OPENLOCK_TOKEN:-none}"});
        CHECK(no_tokens.status == 0);
        CHECK(no_tokens.out == "none\n");
#endif
    }

} // TEST_SUITE

TEST_SUITE("leases") {

    TEST_CASE("a refresh racing with breakers either keeps the lock or learns it lost it, never both") {
        // A lease of 20 ms with no slop: breakers in other threads (break_lock, as `openlock break` does) try
        // to break it all the time, while the holder refreshes at random moments around its end. After every
        // refresh that reports success, the lock file must still be the holder's; after every failed one,
        // not.
        for (auto const format : {openlock::lock_format::flufl, openlock::lock_format::openlock}) {
            CAPTURE(static_cast<int>(format));
            test::scratch_dir dir;
            auto const path = dir / "race.lock";
            auto settings = flufl_format(timing_scale * 20ms, 0s);
            settings.format = format;
            std::atomic<int> breaks{0};
            std::mutex breaker_error_mutex; // a breaker that throws would end the process: its error is kept
            std::string breaker_error;
            std::vector<std::jthread> breakers;
            breakers.reserve(2);
            for (int i = 0; i < 2; ++i)
                breakers.emplace_back([&](std::stop_token const& stop) { // stopped also when a check throws
                    while (!stop.stop_requested()) {
                        try {
                            if (openlock::break_lock(path, false, settings) ==
                                openlock::break_result::removed)
                                ++breaks;
                        } catch (openlock::lock_error const& e) {
                            std::lock_guard guard{breaker_error_mutex};
                            if (breaker_error.empty()) breaker_error = e.what();
                        }
                    }
                });
            openlock::file_lock lock{path, std::nullopt, settings};
            int kept = 0;
            int lost = 0;
            int wrong = 0;
            auto const until = std::chrono::steady_clock::now() + timing_scale * 3s;
            unsigned pause = 1;
            while (std::chrono::steady_clock::now() < until && (kept < 20 || lost < 20)) {
                if (!lock.owns_lock()) lock.acquire();
                pause = pause * 1103515245u + 12345u;
                std::this_thread::sleep_for(timing_scale *
                                            std::chrono::microseconds{15000 + (pause >> 8) % 10000});
                std::error_code error;
                auto const refreshed = std::chrono::steady_clock::now();
                lock.refresh(error);
                if (!error) {
                    ++kept;
                    // A loaded machine may pause this thread past the whole new lease before still_held()
                    // looks; a breaker may then break it rightly. Only a loss inside the lease is wrong.
                    bool const held = lock.still_held();
                    if (!held && std::chrono::steady_clock::now() - refreshed < *settings.lifetime) ++wrong;
                } else if (error == openlock::errc::not_locked) {
                    ++lost;
                    if (lock.still_held()) ++wrong;
                } else if (error != openlock::errc::timeout) { // timeout: a breaker held the guard too long
                    FAIL("refresh failed: " << error.message());
                }
            }
            breakers.clear();
            CHECK(breaker_error == "");
            CHECK(wrong == 0);
            CHECK(kept > 0);
            CHECK(lost > 0);
            CHECK(breaks >= lost);
        }
    }

} // TEST_SUITE
