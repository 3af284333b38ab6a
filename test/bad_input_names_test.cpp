// SPDX-License-Identifier: MIT
// Bad input at the lock path: every case gets a typed error, never hangs, and deletes or overwrites nothing.
// Here: lock file names that are not UTF-8, not ASCII, or long.
#include "support/support.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstddef>
#include <filesystem>
#include <string>
#include <system_error>
#include <vector>

#include "support/bad_input.hpp"
#include "support/records.hpp"
#include "support/timing.hpp"

import openlock;

using namespace std::chrono_literals;

namespace {

namespace fs = std::filesystem;
constexpr auto const& every_method = test::every_method_and_automatic;
using test::a_real_record;
using test::check_os_error;
using test::quick;

// Every claim method takes the lock at `path` (listed in `directory` as `name`), and its release leaves
// nothing.
void each_method_takes_and_releases(fs::path const& directory, fs::path const& path,
                                    std::string const& name) {
    for (auto const method : every_method) {
        CAPTURE(static_cast<int>(method));
        openlock::file_lock lock{path, 2s, quick(2, 20ms, method)};
        lock.acquire();
        CHECK(std::ranges::count(test::names_in(directory), name) == 1);
        CHECK(openlock::inspect(path).state == openlock::lock_state::ours);
        lock.release();
        CHECK(test::names_in(directory).empty());
    }
}

} // namespace

TEST_SUITE("bad input: names") {

    TEST_CASE("a lock file name that is not UTF-8 works") {
#ifdef _WIN32
        OPENLOCK_SKIP("Windows file names are UTF-16: bytes that are not UTF-8 cannot name a file");
#endif
        test::scratch_dir dir;
        std::string const name = "lock-\xff\xfe\x80-\xc3\x28.lock";
        auto const path = dir / name;
        each_method_takes_and_releases(dir.path(), path, name);
    }

    TEST_CASE("a lock file name with non-ASCII characters works with every claim method") {
        test::scratch_dir dir;
        // UTF-8 here; on Windows the file name is its UTF-16 form, and the claim file's name is built from
        // it.
        std::u8string const utf8 = u8"z\u00fcrich-\u9501-\u0394\u03b9\u03ac-\U0001F512.lock";
        std::string const name{reinterpret_cast<char const*>(utf8.data()), utf8.size()};
        auto const path = dir.path() / fs::path{utf8};
        each_method_takes_and_releases(dir.path(), path, name);
    }

    TEST_CASE("a very long lock file name within NAME_MAX works") {
        test::scratch_dir dir;
        auto const name_max = test::name_max(dir.path());
        REQUIRE(name_max > 10);
        std::string const name = std::string(static_cast<std::size_t>(name_max) - 5, 'n') + ".lock";
        REQUIRE(name.size() == static_cast<std::size_t>(name_max));
        auto const path = dir / name;
        openlock::file_lock lock{path, 2s};
        lock.acquire();
#ifdef _WIN32
        // Windows claims through a hard-linked claim file, which stays beside the lock file while it is held.
        auto const held = test::names_in(dir.path());
        CHECK(std::ranges::count(held, name) == 1);
        CHECK(held.size() == 2);
#else
        CHECK(test::names_in(dir.path()) == std::vector<std::string>{name});
#endif
        CHECK(lock.owner()->pid == test::this_pid());
        lock.release();
        CHECK(test::names_in(dir.path()).empty());
    }

    // Regression: helper files once appended ".claim.<32 hex>" (39 bytes) to the lock's name, so with
    // hard_link claims (the method on NFS) a valid name longer than NAME_MAX - 39 failed with ENAMETOOLONG.
    // Long names now get a shortened, hashed stem for their helper files.
    TEST_CASE("a very long lock file name within NAME_MAX works with hard_link claims") {
        test::scratch_dir dir;
        auto const name_max = test::name_max(dir.path());
        std::string const name = std::string(static_cast<std::size_t>(name_max) - 5, 'n') + ".lock";
        openlock::file_lock lock{dir / name, 2s, quick(2, 20ms, openlock::claim_method::hard_link)};
        std::error_code error;
        lock.acquire(error);
        CHECK_MESSAGE(!error, error.message());
        if (lock.owns_lock()) lock.release();
        CHECK(test::names_in(dir.path()).empty());
    }

    // Regression: the takeover guard and its staging directory once added up to 42 bytes to the lock's name,
    // so a stale lock with a name near NAME_MAX could never be taken over (ENAMETOOLONG on every acquire).
    TEST_CASE("a stale lock with a very long file name within NAME_MAX is taken over") {
        test::scratch_dir dir;
        auto const name_max = test::name_max(dir.path());
        std::string const name = std::string(static_cast<std::size_t>(name_max) - 5, 'n') + ".lock";
        auto const path = dir / name;
        // A stale record: this process's own with the pid of a reaped child.
        auto record = openlock::parse_record(a_real_record(dir.path())).record;
        fs::remove(dir / "probe.lock");
        record.pid = test::pid_of_a_reaped_child();
        test::write_file(path, openlock::serialize_record(record));
        REQUIRE(openlock::inspect(path).state == openlock::lock_state::stale);

        openlock::file_lock lock{path, 2s, quick(2, 20ms)};
        std::error_code error;
        lock.acquire(error);
        CHECK_MESSAGE(!error, error.message());
        if (lock.owns_lock()) lock.release();
        CHECK(test::names_in(dir.path()).empty());
    }

    TEST_CASE("a lock file name longer than NAME_MAX is lock_error with ENAMETOOLONG") {
        test::scratch_dir dir;
        auto const name_max = test::name_max(dir.path());
        REQUIRE(name_max > 0);
        auto const path = dir / std::string(static_cast<std::size_t>(name_max) + 1, 'y');
#ifdef _WIN32
        // Windows says ERROR_INVALID_NAME (123), Wine ERROR_FILE_NOT_FOUND (2): no ENAMETOOLONG to compare
        // with.
        for (auto const method : every_method)
            check_os_error(path, std::nullopt, method);
#else
        for (auto const method : every_method)
            check_os_error(path, std::errc::filename_too_long, method);
#endif
        CHECK(test::names_in(dir.path()).empty());
    }

} // TEST_SUITE
