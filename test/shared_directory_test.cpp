// SPDX-License-Identifier: MIT
// Directories shared by several users (docs/security.md): what the library creates gets its directory's
// access whatever the umask, and nothing is ever reached through a guard that is not a real directory.
// The cases that need two users run as root in test/multiuser/.
#include "support/support.hpp"

#include <doctest/doctest.h>

#include <array>
#include <chrono>
#include <filesystem>
#include <string>

#ifndef _WIN32
#include <sys/stat.h>
#endif

#include "support/records.hpp"

import openlock;

using namespace std::chrono_literals;

#ifndef _WIN32
namespace {

namespace fs = std::filesystem;

constexpr std::array every_method{openlock::claim_method::hard_link, openlock::claim_method::anonymous_link,
                                  openlock::claim_method::exclusive_create};

// The umask of a holder who keeps everything private, for the length of one scope.
class private_umask {
public:
    private_umask() : saved_(::umask(077)) {}
    private_umask(private_umask const&) = delete;
    private_umask& operator=(private_umask const&) = delete;
    ~private_umask() { ::umask(saved_); }

private:
    mode_t saved_;
};

mode_t mode_of(fs::path const& path) {
    struct stat status{};
    REQUIRE(::lstat(path.c_str(), &status) == 0);
    return status.st_mode & 07777;
}

// A record of this host whose process is gone (its pid names a reaped child): provably stale.
std::string dead_record(fs::path const& directory, std::string const& nonce) {
    return openlock::serialize_record(test::dead_record(directory, nonce));
}

} // namespace

TEST_SUITE("shared directories") {

    TEST_CASE("a lock file is readable by whoever may enter its directory, whatever the holder's umask") {
        for (auto const method : every_method) {
            CAPTURE(static_cast<int>(method));
            test::scratch_dir dir;
            fs::permissions(dir.path(), fs::perms(0755));
            auto settings = openlock::get_defaults();
            settings.method = method;
            openlock::file_lock lock{dir / "shared.lock", std::nullopt, settings};
            {
                private_umask holder;
                lock.acquire();
            }
            // A waiter of another user reads the record to know whom it waits for; under umask 077 it got
            // 0600.
            CHECK((mode_of(dir / "shared.lock") & 0044) == 0044);
            lock.release();
        }
    }

    TEST_CASE("a lock file in a private directory stays private") {
        test::scratch_dir dir;
        fs::permissions(dir.path(), fs::perms(0700));
        openlock::file_lock lock{dir / "private.lock"};
        {
            private_umask holder;
            lock.acquire();
        }
        CHECK((mode_of(dir / "private.lock") & 0077) == 0);
        lock.release();
    }

    TEST_CASE("the fencing token file is readable by whoever may enter its directory, whatever the umask") {
        test::scratch_dir dir;
        fs::permissions(dir.path(), fs::perms(0755));
        auto settings = openlock::get_defaults();
        settings.fencing = true;
        openlock::file_lock lock{dir / "fenced.lock", std::nullopt, settings};
        {
            private_umask holder;
            lock.acquire();
            lock.release(); // records the token, under the guard
        }
        REQUIRE(fs::exists(dir / "fenced.lock.token"));
        // Another user's fenced run reads it before every claim; a 0600 token made them all fail at once.
        CHECK((mode_of(dir / "fenced.lock.token") & 0044) == 0044);
    }

    TEST_CASE("a symlink standing as the takeover guard is never entered: the file it leads to stays") {
        test::scratch_dir dir;
        test::scratch_dir elsewhere;
        auto const nonce = std::string(32, 'a');
        // What a dead guard's owner file looks like, in a directory the symlink leads to.
        test::write_file(elsewhere / nonce, dead_record(dir.path(), nonce));
        fs::create_directory_symlink(elsewhere.path(), dir / "victim.lock.takeover");
        test::write_file(dir / "victim.lock",
                         dead_record(dir.path(), std::string(32, 'b'))); // stale: a takeover is due

        openlock::file_lock lock{dir / "victim.lock", 0ms};
        std::error_code error;
        lock.acquire(error);
        CHECK(error); // the guard cannot be taken while a symlink stands there
        CHECK(fs::exists(elsewhere / nonce));
        CHECK(fs::is_symlink(dir / "victim.lock.takeover"));
    }

    TEST_CASE("a dead process's guard is recovered at once, and a takeover goes on") {
        test::scratch_dir dir;
        auto const nonce = std::string(32, 'c');
        fs::create_directory(dir / "dead.lock.takeover");
        test::write_file(dir / "dead.lock.takeover" / nonce, dead_record(dir.path(), nonce));
        test::write_file(dir / "dead.lock", dead_record(dir.path(), std::string(32, 'd')));

        openlock::file_lock lock{dir / "dead.lock"};
        auto const started = std::chrono::steady_clock::now();
        CHECK(lock.try_acquire());
        // Each encounter with a guard that could not be emptied cost half a second of retries.
        CHECK(std::chrono::steady_clock::now() - started < 200ms);
        CHECK_FALSE(fs::exists(dir / "dead.lock.takeover"));
        lock.release();
    }

} // TEST_SUITE
#endif
