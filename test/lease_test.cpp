// SPDX-License-Identifier: MIT
// Leases (options::lifetime, flufl.lock's model): the expiry a lock file carries, refresh, state, and
// breaking an expired lock whoever holds it.
#include "support/support.hpp"

#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <filesystem>
#include <mutex>
#include <optional>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#ifdef _WIN32
#include <windows.h>
#else
#include <fcntl.h>
#include <sys/stat.h>
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
using system_clock = std::chrono::system_clock;
using test::every_method;
using test::leased;
using test::other_host_record;

} // namespace

TEST_SUITE("leases") {

    TEST_CASE("the record carries the lifetime and expiration() is acquisition + lifetime") {
        for (auto const method : every_method) {
            CAPTURE(static_cast<int>(method));
            test::scratch_dir dir;
            auto const path = dir / "lease.lock";
            openlock::file_lock lock{path, std::nullopt, leased(30s, 2s, method)};
            CHECK(lock.lifetime() == std::optional<std::chrono::nanoseconds>{30s});
            CHECK_FALSE(lock.expiration().has_value()); // not held: no lease
            lock.acquire();
            auto const record = openlock::parse_record(test::read_file(path)).record;
            REQUIRE(record.lifetime.has_value());
            CHECK(*record.lifetime == 30s);
            REQUIRE(record.acquired.has_value());
            auto const expires = lock.expiration();
            REQUIRE(expires.has_value());
            CHECK(*expires == *record.acquired + 30s);
            CHECK(lock.state() == openlock::lock_state::ours);
            CHECK(lock.still_held());
            lock.release();
            CHECK(test::names_in(dir.path()).empty());
        }
    }

    TEST_CASE("without a lifetime there is no lease, and refresh says so") {
        test::scratch_dir dir;
        auto const path = dir / "plain.lock";
        openlock::file_lock lock{path, std::nullopt};
        CHECK_FALSE(lock.lifetime().has_value());
        lock.acquire();
        CHECK_FALSE(openlock::parse_record(test::read_file(path)).record.lifetime.has_value());
        CHECK_FALSE(lock.expiration().has_value());
        CHECK_THROWS_AS(lock.refresh(), openlock::invalid_option);
        lock.release();
        CHECK_THROWS_AS(lock.refresh(), openlock::invalid_release);
        std::error_code error;
        lock.refresh(error);
        CHECK(error == openlock::errc::invalid_release);
    }

    TEST_CASE("refresh moves the end of the lease forward, for every claim method") {
        for (auto const method : every_method) {
            CAPTURE(static_cast<int>(method));
            test::scratch_dir dir;
            auto const path = dir / "refresh.lock";
            openlock::file_lock lock{path, std::nullopt, leased(1s, 0ms, method)};
            lock.acquire();
            auto const first = *lock.expiration();
            std::this_thread::sleep_for(600ms);
            lock.refresh();
            auto const second = *lock.expiration();
            CHECK(second >= first + 550ms);
            // Past the first end (a late wake-up only goes further past it), with 550 ms to spare before the
            // new one on a loaded machine: only the refresh keeps it ours.
            std::this_thread::sleep_until(first + 50ms);
            CHECK(lock.state() == openlock::lock_state::ours);
            lock.refresh(10s);
            CHECK(lock.lifetime() == std::optional<std::chrono::nanoseconds>{10s});
            CHECK(*lock.expiration() >= system_clock::now() + 9s);
            lock.release();
            CHECK(test::names_in(dir.path()).empty());
        }
    }

    TEST_CASE("an expired lease of our own shows as ours_expired") {
        test::scratch_dir dir;
        auto const path = dir / "own.lock";
        openlock::file_lock lock{path, std::nullopt, leased(100ms, 0ms)};
        lock.acquire();
        std::this_thread::sleep_for(200ms);
        CHECK(lock.state() == openlock::lock_state::ours_expired);
        CHECK(to_string(openlock::lock_state::ours_expired) == std::string{"ours_expired"});
        lock.refresh(); // nobody broke it yet: still ours, and alive again
        CHECK(lock.state() == openlock::lock_state::ours);
        lock.release();
    }

    TEST_CASE("a frozen holder past its lease is broken, and learns on thawing that it lost the lock") {
#ifdef _WIN32
        OPENLOCK_SKIP("Windows has no fork() and no SIGSTOP/SIGCONT to freeze the holder");
#else
        for (auto const method : every_method) {
            CAPTURE(static_cast<int>(method));
            test::scratch_dir dir;
            auto const path = dir / "frozen.lock";
            int ready[2];
            REQUIRE(::pipe(ready) == 0);
            pid_t const holder = ::fork();
            if (holder == 0) {
                ::close(ready[0]);
                int status = 1;
                try {
                    openlock::file_lock lock{path, std::nullopt, leased(300ms, 50ms, method)};
                    lock.acquire();
                    (void)!::write(ready[1], "h", 1);
                    ::raise(SIGSTOP); // frozen past its lease
                    bool const lost = !lock.still_held();
                    try {
                        lock.release();
                    } catch (openlock::not_locked const&) {
                        status = lost ? 0 : 2;
                    }
                } catch (...) {
                    status = 3;
                }
                ::_exit(status);
            }
            ::close(ready[1]);
            char byte = 0;
            REQUIRE(::read(ready[0], &byte, 1) == 1);
            ::close(ready[0]);

            openlock::file_lock breaker{path, std::nullopt, leased(30s, 50ms, method)};
            CHECK_FALSE(breaker.try_acquire()); // the lease still runs
            CHECK(breaker.state() == openlock::lock_state::theirs);
            auto const started = std::chrono::steady_clock::now();
            breaker.acquire(5s);
            auto const waited = std::chrono::steady_clock::now() - started;
            CHECK(waited < 2s);
            CHECK(breaker.state() == openlock::lock_state::ours);

            ::kill(holder, SIGCONT);
            int status = -1;
            REQUIRE(::waitpid(holder, &status, 0) == holder);
            CHECK(WIFEXITED(status));
            CHECK(WEXITSTATUS(status) == 0); // it saw still_held() false and release() threw not_locked
            CHECK(breaker.still_held());     // and its release removed nothing of ours
            breaker.release();
            CHECK(test::names_in(dir.path()).empty());
        }
#endif
    }

    TEST_CASE("a holder on another host is broken only once its lease expired") {
        test::scratch_dir dir;
        auto const path = dir / "remote.lock";
        auto record = other_host_record();
        record.boot_id = "another-boot";
        record.pid_namespace = "pid:[1]";
        record.acquired = system_clock::now();
        record.lifetime = 600ms;
        test::write_file(path, openlock::serialize_record(record));

        openlock::file_lock lock{path, std::nullopt, leased(30s, 100ms)};
        CHECK(lock.state() == openlock::lock_state::unknown);
        CHECK_FALSE(lock.try_acquire());
        std::this_thread::sleep_for(800ms); // past expiry + slop
        CHECK(lock.state() == openlock::lock_state::theirs_expired);
        CHECK(lock.try_acquire());
        lock.release();
        CHECK(test::names_in(dir.path()).empty());

        // Without a lease the same holder is never broken.
        record.lifetime.reset();
        record.acquired = system_clock::now() - 24h;
        test::write_file(path, openlock::serialize_record(record));
        CHECK_FALSE(lock.try_acquire());
        CHECK(lock.state() == openlock::lock_state::unknown);
    }

    TEST_CASE("the clock slop delays breaking by that much") {
        test::scratch_dir dir;
        auto const path = dir / "slop.lock";
        auto record = other_host_record();
        record.acquired = system_clock::now() - 10s;
        record.lifetime = 9s; // ended a second ago
        test::write_file(path, openlock::serialize_record(record));
        // The file's modification time counts as a refreshed end: make it the acquisition time, as a claim
        // does.
        fs::last_write_time(path, fs::file_time_type::clock::now() - 10s);
        CHECK(openlock::inspect(path, leased(1s, 5s)).state == openlock::lock_state::unknown);
        CHECK(openlock::inspect(path, leased(1s, 0s)).state == openlock::lock_state::theirs_expired);
        openlock::file_lock patient{path, std::nullopt, leased(1s, 5s)};
        CHECK_FALSE(patient.try_acquire());
        openlock::file_lock strict{path, std::nullopt, leased(1s, 0s)};
        CHECK(strict.try_acquire());
        strict.release();
    }

    TEST_CASE("invalid lifetimes, slops and keep-alive without a lease are rejected") {
        openlock::options settings;
        settings.lifetime = 0s;
        CHECK_THROWS_AS(openlock::validate(settings), openlock::invalid_option);
        settings.lifetime = -1s;
        CHECK_THROWS_AS(openlock::validate(settings), openlock::invalid_option);
        settings.lifetime = std::chrono::hours{24 * 365 * 20};
        CHECK_THROWS_AS(openlock::validate(settings), openlock::invalid_option);
        settings.lifetime = 1s;
        settings.clock_slop = -1ms;
        CHECK_THROWS_AS(openlock::validate(settings), openlock::invalid_option);
        settings.clock_slop = 0s;
        CHECK_NOTHROW(openlock::validate(settings));
        settings.lifetime.reset();
        settings.keep_alive = true;
        CHECK_THROWS_AS(openlock::validate(settings), openlock::invalid_option);

        test::scratch_dir dir;
        openlock::file_lock lock{dir / "x.lock"};
        CHECK_THROWS_AS(lock.lifetime(0s), openlock::invalid_option);
        CHECK_FALSE(lock.lifetime().has_value());
        lock.lifetime(5s);
        CHECK(lock.lifetime() == std::optional<std::chrono::nanoseconds>{5s});
    }

    TEST_CASE("the record format keeps the lifetime exactly and rejects a bad one") {
        auto const parsed = openlock::parse_record("1\nsh\nversion=1\nnonce=n\nlifetime=2.500000000\n");
        REQUIRE(parsed.status == openlock::record_status::ok);
        CHECK(parsed.record.lifetime == std::optional<std::chrono::nanoseconds>{2500ms});
        CHECK(openlock::parse_record(openlock::serialize_record(parsed.record)).record == parsed.record);
        for (char const* bad : {"0", "0.000000000", "-1", "x", "1.5", ""}) {
            CAPTURE(bad);
            auto const text = std::string{"1\nsh\nversion=1\nnonce=n\nlifetime="} + bad + "\n";
            CHECK(openlock::parse_record(text).status == openlock::record_status::malformed);
        }
    }

    TEST_CASE("a lifetime far beyond what system_clock holds never reads as expired") {
        test::scratch_dir dir;
        auto const path = dir / "forever.lock";
        auto record = other_host_record();
        record.acquired = system_clock::now();
        record.lifetime =
            std::chrono::seconds{8'000'000'000}; // acquired + lifetime overflows 64-bit nanoseconds
        test::write_file(path, openlock::serialize_record(record));
        CHECK(openlock::inspect(path, leased(1s, 0s)).state == openlock::lock_state::unknown);
        openlock::file_lock lock{path, std::nullopt, leased(1s, 0s)};
        CHECK_FALSE(lock.try_acquire());
    }

    TEST_CASE("unlock() never throws: a lost lock is reported as lock_lost instead") {
        test::scratch_dir dir;
        auto const path = dir / "unlocked.lock";
        test::diagnostics_seen seen;
        auto const settings = seen.collecting(leased(30s));
        openlock::file_lock lock{path, std::nullopt, settings};
        {
            std::unique_lock guard{lock};
            test::replace_with_another_holder(path);
        } // unlock() from the destructor: would be std::terminate if it threw
        CHECK(seen.count(openlock::diagnostic::kind::lock_lost) == 1);
        CHECK_FALSE(lock.owns_lock());
        static_assert(noexcept(lock.unlock()));
    }

    TEST_CASE("a lock file time beyond what system_clock holds saturates instead of overflowing") {
        test::scratch_dir dir;
        auto const path = dir / "far-future.lock";
        auto record = other_host_record();
        record.acquired = system_clock::now() - 1h;
        record.lifetime = 1s;
        test::write_file(path, openlock::serialize_record(record));
        // Year 2400 (ext4 and tmpfs keep it): beyond 64-bit nanoseconds since 1970. A refreshed end that far
        // out keeps the lease alive; it must not wrap into the past.
#ifdef _WIN32
        // NTFS keeps times up to year 30828: 2400-01-01 in 100 ns ticks since 1601.
        constexpr std::uint64_t ticks = (13'569'465'600ull + 11'644'473'600ull) * 10'000'000ull;
        FILETIME const year_2400{static_cast<DWORD>(ticks & 0xffffffffu), static_cast<DWORD>(ticks >> 32)};
        HANDLE const file =
            ::CreateFileW(path.c_str(), FILE_WRITE_ATTRIBUTES, FILE_SHARE_READ | FILE_SHARE_WRITE, nullptr,
                          OPEN_EXISTING, 0, nullptr);
        bool const kept = file != INVALID_HANDLE_VALUE && ::SetFileTime(file, nullptr, nullptr, &year_2400);
        if (file != INVALID_HANDLE_VALUE) ::CloseHandle(file);
        if (!kept) {
#else
        struct timespec const year_2400[2] = {{13'569'465'600, 0}, {13'569'465'600, 0}};
        if (::utimensat(AT_FDCWD, path.c_str(), year_2400, 0) != 0) {
#endif
            MESSAGE("the file system does not keep a time in 2400: skipped");
            return;
        }
        auto const status = openlock::inspect(path, leased(1s, 0s));
        CHECK(status.state == openlock::lock_state::unknown);
        REQUIRE(status.expires.has_value());
        CHECK(*status.expires > system_clock::now() + std::chrono::hours{24 * 365 * 200});
    }

} // TEST_SUITE
