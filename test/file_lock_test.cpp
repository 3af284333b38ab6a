// The single-process API of file_lock: what it touches on disk, what it reports, what it throws.
#include "support/support.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <optional>
#include <string>
#include <system_error>
#include <vector>

#ifndef _WIN32
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#endif

import openlock;

using namespace std::chrono_literals;

namespace {

namespace fs = std::filesystem;
using steady = std::chrono::steady_clock;

bool is_nonce(std::string const& text) {
    return text.size() == 32 &&
           std::ranges::all_of(text, [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

// Options that keep every wait in these tests short.
openlock::options quick(openlock::claim_method method = openlock::claim_method::automatic) {
    openlock::options settings;
    settings.retry_period = 20ms;
    settings.method = method;
    return settings;
}

// This process's own record, as a real acquisition writes it (read back from a probe lock).
openlock::lock_record record_of_this_process(fs::path const& directory) {
    auto const probe = directory / "probe.lock";
    openlock::file_lock lock{probe};
    lock.acquire();
    auto const parsed = openlock::parse_record(test::read_file(probe));
    lock.release();
    REQUIRE(parsed.status == openlock::record_status::ok);
    return parsed.record;
}

// This process's record with the pid of a process that is gone: provably stale.
openlock::lock_record stale_record(fs::path const& directory) {
    auto record = record_of_this_process(directory);
    record.pid = test::pid_of_a_reaped_child();
    record.nonce = "0123456789abcdef0123456789abcdef";
    return record;
}

// Replaces the file at `path` by a new file (a new inode) holding `bytes`, as another process's claim would.
void replace_file(fs::path const& path, std::string const& bytes) {
    auto const staged = path.parent_path() / "replacement.tmp";
    test::write_file(staged, bytes);
    fs::rename(staged, path);
}

template <class Operation>
std::chrono::milliseconds time_of(Operation&& operation) {
    auto const started = steady::now();
    operation();
    return std::chrono::duration_cast<std::chrono::milliseconds>(steady::now() - started);
}

} // namespace

TEST_CASE("constructing a file_lock touches nothing on disk") {
    test::scratch_dir dir;
    {
        openlock::file_lock plain{dir / "a.lock"};
        openlock::file_lock timed{dir / "b.lock", 5s};
        openlock::file_lock configured{dir / "c.lock", std::nullopt,
                                       quick(openlock::claim_method::hard_link)};
        CHECK(test::names_in(dir.path()).empty());
        CHECK_FALSE(plain.owns_lock());
        CHECK_FALSE(timed.owns_lock());
        CHECK_FALSE(configured.owns_lock());
    }
    CHECK(test::names_in(dir.path()).empty()); // nor does destroying one that never acquired
}

TEST_CASE("lock_file and timeout and settings report what the lock was made with") {
    test::scratch_dir dir;
    auto const path = dir / "report.lock";

    openlock::file_lock forever{path};
    CHECK(forever.lock_file() == path);
    CHECK_FALSE(forever.timeout().has_value());

    openlock::file_lock five{path, 5s};
    REQUIRE(five.timeout().has_value());
    CHECK(*five.timeout() == 5s);

    openlock::file_lock fractional{path, std::chrono::duration<double>{1.5}};
    REQUIRE(fractional.timeout().has_value());
    CHECK(*fractional.timeout() == 1500ms);

    // Fractions of a nanosecond round up: a positive wait never becomes "try once".
    openlock::file_lock half_nanosecond{path, std::chrono::duration<double, std::nano>{0.5}};
    CHECK(half_nanosecond.timeout() == std::chrono::nanoseconds{1});
    openlock::file_lock odd{path, std::chrono::duration<double, std::nano>{2.25}};
    CHECK(odd.timeout() == std::chrono::nanoseconds{3});

    // A negative timeout means "try once".
    openlock::file_lock negative{path, -1s};
    CHECK(negative.timeout() == std::chrono::nanoseconds::zero());
    openlock::file_lock negative_optional{path, std::optional<openlock::file_lock::duration>{-5ms}};
    CHECK(negative_optional.timeout() == std::chrono::nanoseconds::zero());

    auto settings = openlock::get_defaults();
    settings.tries = 5;
    settings.retry_period = 50ms;
    settings.race_delay = 70ms;
    settings.slow_system_exception = true;
    settings.method = openlock::claim_method::exclusive_create;
    openlock::file_lock configured{path, 2s, settings};
    CHECK(configured.settings().tries == 5);
    CHECK(configured.settings().retry_period == 50ms);
    CHECK(configured.settings().race_delay == 70ms);
    CHECK(configured.settings().slow_system_exception);
    CHECK(configured.settings().method == openlock::claim_method::exclusive_create);
    CHECK(configured.timeout() == 2s);
}

TEST_CASE("acquire then release leaves the directory empty") {
    for (auto const method :
         {openlock::claim_method::automatic, openlock::claim_method::hard_link,
          openlock::claim_method::anonymous_link, openlock::claim_method::exclusive_create}) {
        if (!test::supported(method)) continue;
        CAPTURE(static_cast<int>(method));
        test::scratch_dir dir;
        auto const path = dir / "cycle.lock";
        openlock::file_lock lock{path, std::nullopt, quick(method)};
        lock.acquire();
        CHECK(lock.owns_lock());
        CHECK(fs::is_regular_file(fs::symlink_status(path)));
        lock.release();
        CHECK_FALSE(lock.owns_lock());
        CHECK(test::names_in(dir.path()).empty());
        // And again: an object can be used many times.
        lock.acquire();
        lock.release();
        CHECK(test::names_in(dir.path()).empty());
    }
}

TEST_CASE("try_acquire takes a free lock and a second object on the same path gets false") {
    test::scratch_dir dir;
    auto const path = dir / "try.lock";
    openlock::file_lock first{path};
    openlock::file_lock second{path};
    CHECK(first.try_acquire());
    auto const record = test::read_file(path);
    CHECK_FALSE(second.try_acquire());
    CHECK_FALSE(second.owns_lock());
    CHECK(first.owns_lock());
    CHECK(test::read_file(path) == record); // the failed attempt changed nothing
    first.release();
    CHECK(second.try_acquire());
    CHECK_FALSE(first.try_acquire());
    second.release();
    CHECK(test::names_in(dir.path()).empty());
}

TEST_CASE("owns_lock and locked and getpid and owner describe the holder") {
    test::scratch_dir dir;
    auto const path = dir / "who.lock";
    openlock::file_lock lock{path};
    openlock::file_lock other{path};

    CHECK_FALSE(lock.owns_lock());
    CHECK_FALSE(lock.locked());
    CHECK_FALSE(lock.getpid().has_value());
    CHECK_FALSE(lock.owner().has_value());

    lock.acquire();
    CHECK(lock.owns_lock());
    CHECK(lock.locked());
    CHECK(lock.getpid() == std::int64_t{test::this_pid()});
    auto const holder = lock.owner();
    REQUIRE(holder.has_value());
    CHECK(holder->pid == test::this_pid());
    CHECK(holder->version == 1);
    CHECK_FALSE(holder->name.empty());
    CHECK_FALSE(holder->host.empty());
    CHECK(is_nonce(holder->nonce));
    CHECK(holder->start_time.has_value());
    CHECK(holder->acquired.has_value());
    CHECK(holder == openlock::parse_record(test::read_file(path)).record);

    // Another object on the same path sees the same holder but does not own it.
    CHECK_FALSE(other.owns_lock());
    CHECK(other.locked());
    CHECK(other.getpid() == std::int64_t{test::this_pid()});
    CHECK(other.owner() == holder);

    lock.release();
    CHECK_FALSE(lock.owns_lock());
    CHECK_FALSE(lock.locked());
    CHECK_FALSE(other.getpid().has_value());
    CHECK_FALSE(other.owner().has_value());

    // Every acquisition gets a new nonce.
    lock.acquire();
    CHECK(lock.owner()->nonce != holder->nonce);
    lock.release();
}

TEST_CASE("release by an object that does not hold the lock throws invalid_release") {
    test::scratch_dir dir;
    auto const path = dir / "release.lock";
    openlock::file_lock holder{path};
    openlock::file_lock bystander{path};

    // Never acquired.
    try {
        bystander.release();
        FAIL_CHECK("expected openlock::invalid_release");
    } catch (openlock::invalid_release const& e) {
        CHECK(e.code() == openlock::errc::invalid_release);
        CHECK(e.path() == path);
    }

    // While another object holds it: the holder's file is left alone.
    holder.acquire();
    auto const record = test::read_file(path);
    CHECK_THROWS_AS(bystander.release(), openlock::invalid_release);
    std::error_code error;
    bystander.release(error);
    CHECK(error == openlock::errc::invalid_release);
    CHECK(test::read_file(path) == record);
    CHECK(holder.owns_lock());

    // Twice by the holder.
    holder.release();
    CHECK_THROWS_AS(holder.release(), openlock::invalid_release);
    holder.release(error);
    CHECK(error == openlock::errc::invalid_release);
    CHECK(test::names_in(dir.path()).empty());
}

TEST_CASE("acquire by the thread that holds the lock throws already_locked instead of deadlocking") {
    test::scratch_dir dir;
    auto const path = dir / "again.lock";
    openlock::file_lock timed{path, 2s};
    timed.acquire();
    try {
        timed.acquire();
        FAIL_CHECK("expected openlock::already_locked");
    } catch (openlock::already_locked const& e) {
        CHECK(e.code() == openlock::errc::already_locked);
        CHECK(e.path() == path);
    }
    CHECK_THROWS_AS(timed.acquire(10s), openlock::already_locked);
    CHECK_THROWS_AS((void)timed.try_acquire(), openlock::already_locked);
    std::error_code error;
    timed.acquire(error);
    CHECK(error == openlock::errc::already_locked);
    CHECK(timed.owns_lock()); // still held, and still releasable
    timed.release();

    // The same with an object that would otherwise wait forever.
    openlock::file_lock forever{path};
    forever.acquire();
    REQUIRE_THROWS_AS(forever.acquire(), openlock::already_locked);
    forever.release();
    CHECK(test::names_in(dir.path()).empty());
}

TEST_CASE("a lock file removed behind the holder's back makes release throw not_locked") {
    for (auto const method : {openlock::claim_method::hard_link, openlock::claim_method::anonymous_link,
                              openlock::claim_method::exclusive_create}) {
        if (!test::supported(method)) continue;
        // A pinned lock file deleted under Wine stays visible until its holder closes it: still ours.
        if (method == openlock::claim_method::exclusive_create && test::under_wine()) continue;
        CAPTURE(static_cast<int>(method));
        test::scratch_dir dir;
        auto const path = dir / "removed.lock";
        openlock::file_lock lock{path, std::nullopt, quick(method)};
        lock.acquire();
        fs::remove(path);
        try {
            lock.release();
            FAIL_CHECK("expected openlock::not_locked");
        } catch (openlock::not_locked const& e) {
            CHECK(e.code() == openlock::errc::not_locked);
            CHECK(e.path() == path);
        }
        CHECK_FALSE(lock.owns_lock());
        CHECK_THROWS_AS(lock.release(), openlock::invalid_release);
        CHECK(test::names_in(dir.path()).empty()); // the claim file (hard_link) went too

        // The object is usable again, and the error_code form reports the same.
        lock.acquire();
        fs::remove(path);
        std::error_code error;
        lock.release(error);
        CHECK(error == openlock::errc::not_locked);
        CHECK_FALSE(lock.owns_lock());
    }
}

#ifndef _WIN32
// Makes unlink(2) in a directory fail until destroyed: a read-only bind mount of the directory over itself as
// root (permission bits do not stop root), its write permission taken away otherwise.
class unlinks_refused {
public:
    explicit unlinks_refused(fs::path directory) : directory_(std::move(directory)) {
        if (::geteuid() != 0) {
            fs::permissions(directory_, fs::perms::owner_read | fs::perms::owner_exec);
            expected_ = std::errc::permission_denied;
            active_ = true;
            return;
        }
        if (::mount(directory_.c_str(), directory_.c_str(), nullptr, MS_BIND, nullptr) != 0) {
            error_ = errno;
            return;
        }
        if (::mount("none", directory_.c_str(), nullptr, MS_REMOUNT | MS_BIND | MS_RDONLY, nullptr) != 0) {
            error_ = errno;
            ::umount2(directory_.c_str(), MNT_DETACH);
            return;
        }
        expected_ = std::errc::read_only_file_system;
        active_ = true;
        mounted_ = true;
    }
    unlinks_refused(unlinks_refused const&) = delete;
    unlinks_refused& operator=(unlinks_refused const&) = delete;
    ~unlinks_refused() { lift(); }
    void lift() {
        if (mounted_ && ::umount2(directory_.c_str(), 0) != 0) ::umount2(directory_.c_str(), MNT_DETACH);
        if (active_ && !mounted_) fs::permissions(directory_, fs::perms::owner_all);
        active_ = mounted_ = false;
    }
    [[nodiscard]] bool active() const { return active_; }
    [[nodiscard]] int error() const { return error_; }
    [[nodiscard]] std::errc expected() const { return expected_; }

private:
    fs::path directory_;
    std::errc expected_{};
    bool active_ = false;
    bool mounted_ = false;
    int error_ = 0;
};
#endif

// docs/protocol.md Q9: a release that cannot remove its lock file must not drop the claim (that would orphan
// a lock file nobody will ever remove: its holder is alive, so no one takes it over). It keeps holding,
// reports the OS error, and a later release removes the file.
TEST_CASE("a release whose unlink fails keeps the lock held and can be retried") {
#ifdef _WIN32
    OPENLOCK_SKIP(
        "needs a directory whose unlinks fail: a read-only bind mount (Linux) or write permission bits");
#else
    struct variant {
        openlock::claim_method method;
        bool leased;
        bool fenced;
    };
    for (auto const [method, leased, fenced] :
         {variant{openlock::claim_method::hard_link, false, false},
          variant{openlock::claim_method::anonymous_link, false, false},
          variant{openlock::claim_method::exclusive_create, false, false},
          variant{openlock::claim_method::anonymous_link, true, false},
          variant{openlock::claim_method::hard_link, false, true}}) {
        CAPTURE(static_cast<int>(method));
        CAPTURE(leased);
        CAPTURE(fenced);
        test::scratch_dir scratch;
        auto const dir = scratch / "locks";
        fs::create_directory(dir);
        auto const path = dir / "held.lock";
        auto settings = quick(method);
        if (leased) settings.lifetime = 60s;
        settings.fencing = fenced;
        openlock::file_lock lock{path, std::nullopt, settings};
        lock.acquire();
        auto const bytes = test::read_file(path);
        auto const names = test::names_in(dir);

        unlinks_refused refused{dir};
        if (!refused.active()) {
            REQUIRE_MESSAGE(refused.error() == EPERM, "mount failed: " << std::strerror(refused.error()));
            MESSAGE("skipped: running as root without the right to bind-mount (EPERM)");
            lock.release();
            return;
        }
        try {
            lock.release();
            FAIL_CHECK("expected openlock::lock_error");
        } catch (openlock::lock_error const& e) {
            CHECK(e.code() == refused.expected());
            // The unlink of the lock file, or (guarded releases) the making of the takeover guard's staging
            // directory beside it.
            CHECK(e.path().string().starts_with(path.string()));
        }
        CHECK(lock.owns_lock()); // still ours, and so is the duty to remove it
        std::error_code error;
        lock.release(error); // the error_code form says the same and keeps holding too
        CHECK(error == refused.expected());
        CHECK(lock.owns_lock());
        CHECK(test::read_file(path) == bytes);
        CHECK(test::names_in(dir) == names);

        // Held as far as everyone else can tell: nobody may take it over meanwhile.
        openlock::file_lock other{path, std::nullopt, quick(method)};
        CHECK(other.locked());
        CHECK(openlock::inspect(path).state == openlock::lock_state::ours);
        refused.lift();
        CHECK_FALSE(other.try_acquire());
        CHECK_THROWS_AS(other.acquire(30ms), openlock::timeout_error);
        CHECK(test::read_file(path) == bytes);

        lock.release(); // the retry removes it
        CHECK_FALSE(lock.owns_lock());
        CHECK_FALSE(fs::exists(fs::symlink_status(path)));
        auto const left = test::names_in(dir);
        if (fenced)
            CHECK(left == std::vector<std::string>{"held.lock.token"});
        else
            CHECK(left.empty());
        other.acquire(2s);
        other.release();
    }
#endif
}

// exclusive_create pins no inode, so a replacement may reuse the old inode number (docs/protocol.md 9.3).
TEST_CASE("a lock file replaced by another record makes release throw not_locked and keeps the replacement") {
    for (auto const method : {openlock::claim_method::hard_link, openlock::claim_method::anonymous_link}) {
        if (!test::supported(method)) continue;
        CAPTURE(static_cast<int>(method));
        test::scratch_dir dir;
        auto const path = dir / "replaced.lock";
        openlock::file_lock lock{path, std::nullopt, quick(method)};
        lock.acquire();
        auto record = openlock::parse_record(test::read_file(path)).record;
        record.nonce = "fedcba9876543210fedcba9876543210";
        auto const replacement = openlock::serialize_record(record);
        replace_file(path, replacement);

        CHECK_THROWS_AS(lock.release(), openlock::not_locked);
        CHECK_FALSE(lock.owns_lock());
        CHECK(test::read_file(path) == replacement);
        CHECK(test::names_in(dir.path()) == std::vector<std::string>{"replaced.lock"});

        // The error_code form, with a replacement record of another kind.
        fs::remove(path);
        lock.acquire();
        replace_file(path, "4242\nsomeone\n");
        std::error_code error;
        lock.release(error);
        CHECK(error == openlock::errc::not_locked);
        CHECK(test::read_file(path) == "4242\nsomeone\n");
    }
}

TEST_CASE("the error_code overloads never throw and report the same codes") {
    test::scratch_dir dir;
    auto const path = dir / "codes.lock";
    openlock::file_lock lock{path, std::nullopt, quick()};
    openlock::file_lock other{path, 30ms, quick()};
    std::error_code error = std::make_error_code(std::errc::io_error);

    CHECK_FALSE(lock.locked(error));
    CHECK_FALSE(error);
    lock.acquire(error);
    CHECK_FALSE(error);
    CHECK(lock.owns_lock());
    CHECK(lock.locked(error));
    CHECK_FALSE(error);

    lock.acquire(error);
    CHECK(error == openlock::errc::already_locked);
    lock.acquire(1s, error);
    CHECK(error == openlock::errc::already_locked);
    CHECK_FALSE(lock.try_acquire(error));
    CHECK(error == openlock::errc::already_locked);

    CHECK_FALSE(other.try_acquire(error));
    CHECK_FALSE(error); // contention is a value, not an error
    other.acquire(error);
    CHECK(error == openlock::errc::timeout);
    other.acquire(20ms, error);
    CHECK(error == openlock::errc::timeout);
    other.release(error);
    CHECK(error == openlock::errc::invalid_release);

    lock.release(error);
    CHECK_FALSE(error);
    lock.release(error);
    CHECK(error == openlock::errc::invalid_release);

    CHECK(other.try_acquire(error));
    CHECK_FALSE(error);
    fs::remove(path);
    other.release(error);
    CHECK(error == openlock::errc::not_locked);

    // Failures that are not about the lock's state: a garbage lock file and a missing directory.
    test::write_file(path, "not a lock record");
    openlock::file_lock picky{path, 2s, [] {
                                  auto settings = quick();
                                  settings.tries = 1;
                                  return settings;
                              }()};
    picky.acquire(error);
    CHECK(error == openlock::errc::invalid_lock_file);
    CHECK_FALSE(picky.try_acquire(error));
    CHECK(error == openlock::errc::invalid_lock_file);
    CHECK(picky.locked(error)); // an invalid file counts as held
    CHECK_FALSE(error);
    CHECK(test::read_file(path) == "not a lock record");

    openlock::file_lock nowhere{dir / "missing" / "x.lock", 1s, quick()};
    nowhere.acquire(error);
    CHECK(error == std::errc::no_such_file_or_directory);
    CHECK_FALSE(nowhere.try_acquire(error));
    CHECK(error == std::errc::no_such_file_or_directory);
    CHECK_FALSE(nowhere.locked(error));
    CHECK_FALSE(error);
    CHECK_FALSE(fs::exists(dir / "missing"));
}

TEST_CASE("acquire with a zero or negative timeout tries exactly once") {
    test::scratch_dir dir;
    auto const path = dir / "once.lock";
    openlock::file_lock lock{path};

    lock.acquire(0s); // free: taken at once
    CHECK(lock.owns_lock());
    lock.release();

    openlock::file_lock holder{path};
    holder.acquire();
    CHECK(time_of([&] { CHECK_THROWS_AS(lock.acquire(0s), openlock::timeout_error); }) < 2s);
    CHECK(time_of([&] { CHECK_THROWS_AS(lock.acquire(-5s), openlock::timeout_error); }) < 2s);
    CHECK(time_of([&] { CHECK_THROWS_AS(lock.acquire(-1ns), openlock::timeout_error); }) < 2s);
    openlock::file_lock impatient{path, -1s};
    CHECK(time_of([&] { CHECK_THROWS_AS(impatient.acquire(), openlock::timeout_error); }) < 2s);
    CHECK_FALSE(lock.owns_lock());
    holder.release();

    // One try includes taking over a stale lock.
    test::write_file(path, openlock::serialize_record(stale_record(dir.path())));
    lock.acquire(0s);
    CHECK(lock.owns_lock());
    CHECK(lock.owner()->pid == test::this_pid());
    lock.release();
    CHECK(test::names_in(dir.path()).empty());
}

TEST_CASE("a 30 ms timeout on a held lock throws timeout_error naming this process well within 2 s") {
    test::scratch_dir dir;
    auto const path = dir / "held.lock";
    openlock::file_lock holder{path};
    holder.acquire();
    openlock::file_lock waiter{path, 30ms};
    auto const took = time_of([&] {
        try {
            waiter.acquire();
            FAIL_CHECK("expected openlock::timeout_error");
        } catch (openlock::timeout_error const& e) {
            CHECK(e.code() == openlock::errc::timeout);
            CHECK(e.path() == path);
            CHECK(e.holder().find("pid " + std::to_string(test::this_pid())) != std::string::npos);
        }
    });
    CHECK(took >= 30ms);
    CHECK(took < 2s);
    CHECK_FALSE(waiter.owns_lock());
    CHECK(holder.owns_lock());
    holder.release();
    CHECK(test::names_in(dir.path()).empty());
}

TEST_CASE("std::unique_lock and std::lock_guard and std::scoped_lock drive a file_lock") {
    test::scratch_dir dir;
    auto const path = dir / "std.lock";
    openlock::file_lock lock{path, 1s};
    openlock::file_lock other{path, 30ms};
    {
        std::unique_lock guard{lock};
        CHECK(guard.owns_lock());
        CHECK(lock.owns_lock());
        CHECK_FALSE(other.try_lock());
        guard.unlock();
        CHECK_FALSE(lock.owns_lock());
        CHECK(guard.try_lock());
        CHECK(lock.owns_lock());
    }
    CHECK_FALSE(lock.owns_lock());
    CHECK(test::names_in(dir.path()).empty());
    {
        std::lock_guard guard{lock};
        CHECK(lock.owns_lock());
        std::unique_lock attempt{other, std::try_to_lock};
        CHECK_FALSE(attempt.owns_lock());
        std::unique_lock deferred{other, std::defer_lock};
        CHECK_THROWS_AS(deferred.lock(), openlock::timeout_error);
    }
    CHECK(test::names_in(dir.path()).empty());
    {
        openlock::file_lock second{dir / "second.lock", 1s};
        std::scoped_lock both{lock, second};
        CHECK(lock.owns_lock());
        CHECK(second.owns_lock());
    }
    {
        std::scoped_lock one{lock};
        CHECK(lock.owns_lock());
    }
    CHECK_FALSE(lock.owns_lock());
    CHECK(test::names_in(dir.path()).empty());
}

TEST_CASE("try_lock_for and try_lock_until with steady_clock and system_clock") {
    test::scratch_dir dir;
    auto const path = dir / "timed.lock";
    openlock::file_lock lock{path};
    openlock::file_lock other{path};

    CHECK(lock.try_lock_for(100ms));
    CHECK(time_of([&] { CHECK_FALSE(other.try_lock_for(30ms)); }) < 2s);
    CHECK(time_of([&] { CHECK_FALSE(other.try_lock_until(steady::now() + 30ms)); }) < 2s);
    CHECK(time_of([&] { CHECK_FALSE(other.try_lock_until(std::chrono::system_clock::now() + 30ms)); }) < 2s);
    CHECK(time_of([&] { CHECK_FALSE(other.try_lock_until(steady::now() - 1h)); }) < 2s);
    CHECK_FALSE(other.owns_lock());
    lock.unlock();

    CHECK(other.try_lock_until(std::chrono::system_clock::now() + 1s));
    other.unlock();
    CHECK(other.try_lock_until(steady::now() + 1s));
    other.unlock();
    CHECK(other.try_lock_until(std::chrono::system_clock::now() - 1h)); // a past deadline still tries once
    other.unlock();
    CHECK(other.try_lock_for(-1s));
    other.unlock();
    CHECK(test::names_in(dir.path()).empty());
}

TEST_CASE("the destructor releases the lock") {
    test::scratch_dir dir;
    auto const path = dir / "scoped.lock";
    {
        openlock::file_lock lock{path};
        lock.acquire();
        CHECK(fs::exists(path));
    }
    CHECK(test::names_in(dir.path()).empty());
    openlock::file_lock next{path};
    CHECK(next.try_acquire());
    next.release();

    // A destructor whose lock was removed behind its back swallows not_locked and removes nothing else.
    {
        openlock::file_lock lock{path};
        lock.acquire();
        replace_file(path, "77\nother\n");
    }
    CHECK(test::read_file(path) == "77\nother\n");
}

TEST_CASE("inspect tells unlocked and ours and stale and unknown and invalid apart") {
    test::scratch_dir dir;
    auto const path = dir / "inspect.lock";

    auto status = openlock::inspect(path);
    CHECK(status.state == openlock::lock_state::unlocked);
    CHECK_FALSE(status.record.has_value());
    CHECK(std::string{openlock::to_string(status.state)} == "unlocked");

    {
        openlock::file_lock lock{path};
        lock.acquire();
        status = openlock::inspect(path);
        CHECK(status.state == openlock::lock_state::ours);
        REQUIRE(status.record.has_value());
        CHECK(status.record == lock.owner());
        CHECK(std::string{openlock::to_string(status.state)} == "ours");
    }

    auto const stale = stale_record(dir.path());
    test::write_file(path, openlock::serialize_record(stale));
    status = openlock::inspect(path);
    CHECK(status.state == openlock::lock_state::stale);
    CHECK(status.record == stale);

    auto foreign = stale;
    foreign.host = "some-other-host.example";
    test::write_file(path, openlock::serialize_record(foreign));
    status = openlock::inspect(path);
    CHECK(status.state == openlock::lock_state::unknown);
    CHECK(status.record == foreign);

    test::write_file(path, "garbage without a newline");
    status = openlock::inspect(path);
    CHECK(status.state == openlock::lock_state::invalid);
    CHECK_FALSE(status.record.has_value());
    CHECK_FALSE(status.problem.empty());

    // Inspecting never changes anything, and the error_code form agrees.
    std::error_code error = std::make_error_code(std::errc::io_error);
    CHECK(openlock::inspect(path, error).state == openlock::lock_state::invalid);
    CHECK_FALSE(error);
    CHECK(test::read_file(path) == "garbage without a newline");
    CHECK(test::names_in(dir.path()) == std::vector<std::string>{"inspect.lock"});
}

TEST_CASE("break_lock answers nothing_to_break and removed and refused") {
    test::scratch_dir dir;
    auto const path = dir / "break.lock";
    auto const settings = quick();

    CHECK(openlock::break_lock(path, false, settings) == openlock::break_result::nothing_to_break);
    CHECK(openlock::break_lock(path, true, settings) == openlock::break_result::nothing_to_break);

    // A live holder (ourselves): refused without force, nothing touched.
    openlock::file_lock lock{path};
    lock.acquire();
    auto const record = test::read_file(path);
    CHECK(openlock::break_lock(path, false, settings) == openlock::break_result::refused);
    CHECK(test::read_file(path) == record);
    CHECK(lock.owns_lock());

    // With force it is removed, and the holder learns at release.
    CHECK(openlock::break_lock(path, true, settings) == openlock::break_result::removed);
    CHECK_FALSE(fs::exists(path));
    CHECK_THROWS_AS(lock.release(), openlock::not_locked);

    // A stale lock is removed without force.
    test::write_file(path, openlock::serialize_record(stale_record(dir.path())));
    CHECK(openlock::break_lock(path, false, settings) == openlock::break_result::removed);
    CHECK(test::names_in(dir.path()).empty());

    // A holder of another host is refused without force.
    auto foreign = stale_record(dir.path());
    foreign.host = "some-other-host.example";
    auto const foreign_bytes = openlock::serialize_record(foreign);
    test::write_file(path, foreign_bytes);
    CHECK(openlock::break_lock(path, false, settings) == openlock::break_result::refused);
    CHECK(test::read_file(path) == foreign_bytes);
    CHECK(openlock::break_lock(path, true, settings) == openlock::break_result::removed);
    CHECK(test::names_in(dir.path()).empty());

    // A file that is not a record: refused without force, removed with it.
    test::write_file(path, "garbage\n");
    CHECK(openlock::break_lock(path, false, settings) == openlock::break_result::refused);
    CHECK(test::read_file(path) == "garbage\n");
    CHECK(openlock::break_lock(path, true, settings) == openlock::break_result::removed);
    CHECK(test::names_in(dir.path()).empty());
}

TEST_CASE("release never removes a next holder's lock file that got the broken holder's inode number") {
    // hard_link pins the lock's inode with the claim file's name. A break may remove that too (flufl.lock's
    // claim files; a sweep of a holder it cannot judge, past its lease), and ext4 gives a freed inode number
    // to the next new file at once. Rewriting the lock file in place plays that next holder: our inode
    // number, another holder's record.
    test::scratch_dir dir;
    auto const path = dir / "reused.lock";
    openlock::file_lock lock{path, 2s, quick(openlock::claim_method::hard_link)};
    lock.acquire();
    for (auto const& name : test::names_in(dir.path()))
        if (name != "reused.lock") fs::remove(dir / name); // the claim file, as a break removes it
    auto next = record_of_this_process(dir.path());
    next.nonce = "fedcba9876543210fedcba9876543210";
    auto const next_bytes = openlock::serialize_record(next);
    {
        std::ofstream rewritten{path, std::ios::in | std::ios::out | std::ios::binary}; // same inode
        rewritten << next_bytes;
    }
    fs::resize_file(path, next_bytes.size());
    REQUIRE(test::read_file(path) == next_bytes);

    std::error_code error;
    lock.release(error);
    CHECK(error == openlock::errc::not_locked);
    CHECK(test::read_file(path) == next_bytes); // the next holder's lock file stays
}

TEST_CASE("a takeover leaves no guard behind while a reader has the guard's record open") {
    // Where a removed file stays listed while a reader has it open (Wine; Windows on FAT or SMB), the guard's
    // directory can go only after that reader is done: the takeover waits for it, not leaving it behind.
    test::scratch_dir dir;
    auto const path = dir / "read.lock";
    test::write_file(path, openlock::serialize_record(stale_record(dir.path())));
    std::jthread reader;
    bool guard_seen = false;
    auto settings = quick();
    settings.on_diagnostic = [&](openlock::diagnostic const& d) {
        if (d.what != openlock::diagnostic::kind::stale_lock_removed) return;
        auto const guard = dir / "read.lock.takeover"; // held while the takeover reports
        auto const names = test::names_in(guard);
        guard_seen = names.size() == 1;
        if (guard_seen) reader = test::read_for(guard / names.front(), 50ms);
    };
    openlock::file_lock lock{path, 2s, settings};
    lock.acquire();
    reader = {}; // joined: the reader is done
    lock.release();
    CHECK(guard_seen);
    CHECK(test::names_in(dir.path()) == std::vector<std::string>{});
}

TEST_CASE("on_diagnostic receives stale_lock_removed when a stale lock is taken over") {
    test::scratch_dir dir;
    auto const path = dir / "diagnosed.lock";
    auto const stale = stale_record(dir.path());
    test::write_file(path, openlock::serialize_record(stale));

    std::vector<openlock::diagnostic> seen;
    auto settings = quick();
    settings.on_diagnostic = [&seen](openlock::diagnostic const& d) { seen.push_back(d); };
    openlock::file_lock lock{path, 2s, settings};
    lock.acquire();
    CHECK(lock.owner()->pid == test::this_pid());
    auto const removed = std::ranges::find_if(
        seen, [](auto const& d) { return d.what == openlock::diagnostic::kind::stale_lock_removed; });
    REQUIRE(removed != seen.end());
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
