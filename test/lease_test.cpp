// Leases (options::lifetime, flufl.lock's model): the expiry a lock file carries, refresh, state, breaking an
// expired lock whoever holds it, and keep-alive that keeps a lease or reports its loss.
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

import openlock;

using namespace std::chrono_literals;

namespace {

namespace fs = std::filesystem;
using system_clock = std::chrono::system_clock;

openlock::options leased(std::chrono::nanoseconds lifetime, std::chrono::nanoseconds slop = 50ms,
                         openlock::claim_method method = openlock::claim_method::automatic) {
    openlock::options settings;
    settings.retry_period = 20ms;
    settings.lifetime = lifetime;
    settings.clock_slop = slop;
    settings.method = method;
    return settings;
}

#ifdef _WIN32
// Windows has no nameless files: claim_method::anonymous_link is unsupported there (README, "Windows").
constexpr openlock::claim_method every_method[] = {openlock::claim_method::hard_link,
                                                   openlock::claim_method::exclusive_create};
#else
constexpr openlock::claim_method every_method[] = {openlock::claim_method::anonymous_link,
                                                   openlock::claim_method::hard_link,
                                                   openlock::claim_method::exclusive_create};
#endif

// A holder on another host: never judged by its process, only by its lease (if any).
openlock::lock_record other_host_record() {
    openlock::lock_record record;
    record.pid = 4242;
    record.name = "worker";
    record.version = 1;
    record.host = "some-other-host";
    record.nonce = "0123456789abcdef0123456789abcdef";
    return record;
}

// Replaces the lock file by another holder's record (a new name, so every method sees a new file).
void replace_with_other_record(fs::path const& path) {
    auto record = openlock::parse_record(test::read_file(path)).record;
    record.nonce = "fedcba9876543210fedcba9876543210";
    auto const staging = path.string() + ".replacement";
    test::write_file(staging, openlock::serialize_record(record));
    fs::rename(staging, path);
}

} // namespace

TEST_CASE("leases: the record carries the lifetime and expiration() is acquisition + lifetime") {
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

TEST_CASE("leases: without a lifetime there is no lease, and refresh says so") {
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

TEST_CASE("leases: refresh moves the end of the lease forward, for every claim method") {
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
        // Past the first end (a late wake-up only goes further past it), with 550 ms to spare before the new
        // one on a loaded machine: only the refresh keeps it ours.
        std::this_thread::sleep_until(first + 50ms);
        CHECK(lock.state() == openlock::lock_state::ours);
        lock.refresh(10s);
        CHECK(lock.lifetime() == std::optional<std::chrono::nanoseconds>{10s});
        CHECK(*lock.expiration() >= system_clock::now() + 9s);
        lock.release();
        CHECK(test::names_in(dir.path()).empty());
    }
}

TEST_CASE("leases: an expired lease of our own shows as ours_expired") {
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

TEST_CASE("leases: a frozen holder past its lease is broken, and learns on thawing that it lost the lock") {
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

TEST_CASE("leases: a holder on another host is broken only once its lease expired") {
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

TEST_CASE("leases: the clock slop delays breaking by that much") {
    test::scratch_dir dir;
    auto const path = dir / "slop.lock";
    auto record = other_host_record();
    record.acquired = system_clock::now() - 10s;
    record.lifetime = 9s; // ended a second ago
    test::write_file(path, openlock::serialize_record(record));
    // The file's modification time counts as a refreshed end: make it the acquisition time, as a claim does.
    fs::last_write_time(path, fs::file_time_type::clock::now() - 10s);
    CHECK(openlock::inspect(path, leased(1s, 5s)).state == openlock::lock_state::unknown);
    CHECK(openlock::inspect(path, leased(1s, 0s)).state == openlock::lock_state::theirs_expired);
    openlock::file_lock patient{path, std::nullopt, leased(1s, 5s)};
    CHECK_FALSE(patient.try_acquire());
    openlock::file_lock strict{path, std::nullopt, leased(1s, 0s)};
    CHECK(strict.try_acquire());
    strict.release();
}

TEST_CASE("leases: keep-alive holds a lease for many lifetimes") {
    for (auto const method : every_method) {
        CAPTURE(static_cast<int>(method));
        test::scratch_dir dir;
        auto const path = dir / "kept.lock";
        // Refreshes every 200 ms: one may come up to 400 ms late (a loaded machine, sanitizers) before the
        // lease runs out.
        auto settings = leased(600ms, 0ms, method);
        settings.keep_alive = true;
        openlock::file_lock lock{path, std::nullopt, settings};
        lock.acquire();
        std::this_thread::sleep_for(2400ms); // four lifetimes
        CHECK(openlock::inspect(path, leased(1s, 0ms)).state == openlock::lock_state::ours);
        CHECK(*lock.expiration() > system_clock::now());
        CHECK(lock.still_held());
        lock.release(); // stops the keeper first
        CHECK(test::names_in(dir.path()).empty());
    }
}

TEST_CASE("leases: keep-alive reports a lost lock through on_lost and the diagnostics, never silently") {
    for (auto const method : every_method) {
        // Wine refuses to rename over a file its holder keeps open (exclusive_create pins it).
        if (method == openlock::claim_method::exclusive_create && test::under_wine()) continue;
        CAPTURE(static_cast<int>(method));
        test::scratch_dir dir;
        auto const path = dir / "lost.lock";
        std::atomic<int> lost_calls{0};
        std::atomic<int> lost_diagnostics{0};
        auto settings = leased(150ms, 0ms, method);
        settings.keep_alive = true;
        settings.on_lost = [&](fs::path const& which) {
            if (which == path) ++lost_calls;
        };
        settings.on_diagnostic = [&](openlock::diagnostic const& what) {
            if (what.what == openlock::diagnostic::kind::lock_lost) ++lost_diagnostics;
        };
        openlock::file_lock lock{path, std::nullopt, settings};
        lock.acquire();
        replace_with_other_record(path);
        auto const deadline = std::chrono::steady_clock::now() + 3s;
        while (lost_calls == 0 && std::chrono::steady_clock::now() < deadline)
            std::this_thread::sleep_for(10ms);
        CHECK(lost_calls == 1);
        CHECK(lost_diagnostics == 1);
        CHECK_FALSE(lock.still_held());
        CHECK_THROWS_AS(lock.release(), openlock::not_locked);
        CHECK(test::read_file(path).find("fedcba9876543210fedcba9876543210") != std::string::npos);
    }
}

TEST_CASE("leases: invalid lifetimes, slops and keep-alive without a lease are rejected") {
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

TEST_CASE("leases: the record format keeps the lifetime exactly and rejects a bad one") {
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

TEST_CASE("leases: a lifetime far beyond what system_clock holds never reads as expired") {
    test::scratch_dir dir;
    auto const path = dir / "forever.lock";
    auto record = other_host_record();
    record.acquired = system_clock::now();
    record.lifetime = std::chrono::seconds{8'000'000'000}; // acquired + lifetime overflows 64-bit nanoseconds
    test::write_file(path, openlock::serialize_record(record));
    CHECK(openlock::inspect(path, leased(1s, 0s)).state == openlock::lock_state::unknown);
    openlock::file_lock lock{path, std::nullopt, leased(1s, 0s)};
    CHECK_FALSE(lock.try_acquire());
}

TEST_CASE("unlock() never throws: a lost lock is reported as lock_lost instead") {
    test::scratch_dir dir;
    auto const path = dir / "unlocked.lock";
    int lost = 0;
    auto settings = leased(30s);
    settings.on_diagnostic = [&](openlock::diagnostic const& what) {
        if (what.what == openlock::diagnostic::kind::lock_lost) ++lost;
    };
    openlock::file_lock lock{path, std::nullopt, settings};
    {
        std::unique_lock guard{lock};
        replace_with_other_record(path);
    } // unlock() from the destructor: would be std::terminate if it threw
    CHECK(lost == 1);
    CHECK_FALSE(lock.owns_lock());
    static_assert(noexcept(lock.unlock()));
}

TEST_CASE("fencing: every acquisition's token is greater than every earlier one, across objects and breaks") {
    for (auto const method : every_method) {
        // Wine cannot remove a lock file that its (expired but alive) holder keeps open (exclusive_create
        // pins it): the breaker would wait for it.
        if (method == openlock::claim_method::exclusive_create && test::under_wine()) continue;
        CAPTURE(static_cast<int>(method));
        test::scratch_dir dir;
        auto const path = dir / "fenced.lock";
        auto settings = leased(200ms, 0ms, method);
        settings.fencing = true;
        openlock::file_lock first{path, std::nullopt, settings};
        CHECK(first.token() == 0); // not held
        first.acquire();
        auto const one = first.token();
        CHECK(one >= 1);
        CHECK(openlock::parse_record(test::read_file(path)).record.token ==
              std::optional<std::uint64_t>{one});
        first.release();
        CHECK(first.token() == 0);

        openlock::file_lock second{path, std::nullopt, settings};
        second.acquire();
        auto const two = second.token();
        CHECK(two > one);
        // A holder whose lease runs out is broken by the next acquirer, who still gets a greater token.
        std::this_thread::sleep_for(300ms);
#ifdef _WIN32
        // No fork(): the breaker is the helper process, with the same settings.
        auto breaker = test::start_helper(
            {"fence", path.string(),
             method == openlock::claim_method::exclusive_create ? "exclusive_create" : "hard_link"});
        auto const three = std::stoull("0" + breaker->read_line());
        CHECK(breaker->wait() == 0);
#else
        int ready[2];
        REQUIRE(::pipe(ready) == 0);
        pid_t const breaker = ::fork();
        if (breaker == 0) {
            ::close(ready[0]);
            int status = 1;
            try {
                openlock::file_lock other{path, std::nullopt, settings};
                other.acquire(5s);
                auto const three = other.token();
                (void)!::write(ready[1], &three, sizeof three);
                other.release();
                status = 0;
            } catch (...) {
            }
            ::_exit(status);
        }
        ::close(ready[1]);
        std::uint64_t three = 0;
        REQUIRE(::read(ready[0], &three, sizeof three) == sizeof three);
        ::close(ready[0]);
        int status = -1;
        REQUIRE(::waitpid(breaker, &status, 0) == breaker);
        CHECK(WIFEXITED(status));
        CHECK(WEXITSTATUS(status) == 0);
#endif
        CHECK(three > two);
        CHECK_FALSE(second.still_held());
        CHECK_THROWS_AS(second.release(), openlock::not_locked);

        first.acquire();
        CHECK(first.token() > three);
        first.release();
        // The last token stays beside the lock: nothing else is left.
        CHECK(test::names_in(dir.path()) == std::vector<std::string>{"fenced.lock.token"});
    }
}

TEST_CASE("fencing: a token file that holds no number is a typed error and is left alone") {
    test::scratch_dir dir;
    auto const path = dir / "bad-token.lock";
    test::write_file(dir / "bad-token.lock.token", "not a number\n");
    openlock::options settings;
    settings.fencing = true;
    openlock::file_lock lock{path, std::nullopt, settings};
    CHECK_THROWS_AS(lock.acquire(), openlock::invalid_lock_file);
    CHECK(test::read_file(dir / "bad-token.lock.token") == "not a number\n");
    CHECK_FALSE(fs::exists(path));
}

TEST_CASE("fencing: a token file at the largest value is a typed error, not an endless retry") {
    test::scratch_dir dir;
    auto const path = dir / "max-token.lock";
    test::write_file(dir / "max-token.lock.token", "18446744073709551615\n");
    openlock::options settings;
    settings.fencing = true;
    openlock::file_lock lock{path, std::nullopt, settings};
    CHECK_THROWS_AS((void)lock.try_acquire(), openlock::invalid_lock_file);
    CHECK_FALSE(fs::exists(path));
}

TEST_CASE("leases: a lock file time beyond what system_clock holds saturates instead of overflowing") {
    test::scratch_dir dir;
    auto const path = dir / "far-future.lock";
    auto record = other_host_record();
    record.acquired = system_clock::now() - 1h;
    record.lifetime = 1s;
    test::write_file(path, openlock::serialize_record(record));
    // Year 2400 (ext4 and tmpfs keep it): beyond 64-bit nanoseconds since 1970. A refreshed end that far out
    // keeps the lease alive; it must not wrap into the past.
#ifdef _WIN32
    // NTFS keeps times up to year 30828: 2400-01-01 in 100 ns ticks since 1601.
    constexpr std::uint64_t ticks = (13'569'465'600ull + 11'644'473'600ull) * 10'000'000ull;
    FILETIME const year_2400{static_cast<DWORD>(ticks & 0xffffffffu), static_cast<DWORD>(ticks >> 32)};
    HANDLE const file = ::CreateFileW(path.c_str(), FILE_WRITE_ATTRIBUTES, FILE_SHARE_READ | FILE_SHARE_WRITE,
                                      nullptr, OPEN_EXISTING, 0, nullptr);
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

TEST_CASE("fencing: the record format rejects a zero or unparsable token") {
    auto const good = openlock::parse_record("1\nsh\nversion=1\nnonce=n\ntoken=42\n");
    REQUIRE(good.status == openlock::record_status::ok);
    CHECK(good.record.token == std::optional<std::uint64_t>{42});
    CHECK(openlock::parse_record(openlock::serialize_record(good.record)).record == good.record);
    for (char const* bad : {"0", "-1", "x", "", "18446744073709551616", "1.5"}) {
        CAPTURE(bad);
        auto const text = std::string{"1\nsh\nversion=1\nnonce=n\ntoken="} + bad + "\n";
        CHECK(openlock::parse_record(text).status == openlock::record_status::malformed);
    }
}
