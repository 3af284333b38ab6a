// SPDX-License-Identifier: MIT
// Bad input at the lock path: every case gets a typed error, never hangs, and deletes or overwrites nothing.
// Here: lock paths in directories that are missing or read-only.
#include "support/support.hpp"

#include <doctest/doctest.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <optional>
#include <system_error>
#include <utility>

#ifndef _WIN32
#include <sys/mount.h>
#include <unistd.h>
#endif

#include "support/bad_input.hpp"
#include "support/records.hpp"
#include "support/timing.hpp"

import openlock;

using namespace std::chrono_literals;

namespace {

namespace fs = std::filesystem;
constexpr auto const& every_method = test::every_method_and_automatic;
using test::check_os_error;

#ifndef _WIN32
// Mounts a read-only tmpfs on a directory for the test's duration.
class read_only_mount {
public:
    explicit read_only_mount(fs::path directory) : directory_(std::move(directory)) {
        if (::mount("none", directory_.c_str(), "tmpfs", MS_RDONLY, nullptr) == 0)
            mounted_ = true;
        else
            error_ = errno;
    }
    read_only_mount(read_only_mount const&) = delete;
    read_only_mount& operator=(read_only_mount const&) = delete;
    ~read_only_mount() {
        if (mounted_ && ::umount2(directory_.c_str(), 0) != 0) ::umount2(directory_.c_str(), MNT_DETACH);
    }
    [[nodiscard]] bool mounted() const { return mounted_; }
    [[nodiscard]] int error() const { return error_; }

private:
    fs::path directory_;
    bool mounted_ = false;
    int error_ = 0;
};
#endif

} // namespace

TEST_SUITE("bad input: directories") {

    TEST_CASE("a lock path in a missing directory is lock_error with no_such_file_or_directory") {
        test::scratch_dir dir;
        for (auto const method : every_method)
            check_os_error(dir / "missing" / "x.lock", std::errc::no_such_file_or_directory, method);
        CHECK(test::names_in(dir.path()).empty());
    }

    TEST_CASE("a read-only directory is lock_error with EACCES or EROFS") {
#ifdef _WIN32
        OPENLOCK_SKIP("Windows directories have no write permission bit (ACLs decide; not set up here)");
#else
        test::scratch_dir dir;
        auto const locked_down = dir / "ro";
        fs::create_directory(locked_down);
        auto const path = locked_down / "x.lock";
        std::errc expected = std::errc::permission_denied;
        std::optional<read_only_mount> mount;
        if (::geteuid() == 0) {
            // Root ignores permission bits: only a read-only file system stops it.
            mount.emplace(locked_down);
            if (!mount->mounted()) {
                REQUIRE_MESSAGE(mount->error() == EPERM, "mount failed: " << std::strerror(mount->error()));
                MESSAGE("skipped: running as root without the right to mount a read-only tmpfs (EPERM)");
                return;
            }
            expected = std::errc::read_only_file_system;
        } else {
            fs::permissions(locked_down, fs::perms::owner_read | fs::perms::owner_exec);
        }
        for (auto const method : every_method)
            check_os_error(path, expected, method);
        CHECK(fs::is_empty(locked_down));
        CHECK_FALSE(openlock::inspect(path).record.has_value());
        CHECK(openlock::break_lock(path, true) == openlock::break_result::nothing_to_break);
        mount.reset();
        fs::permissions(locked_down, fs::perms::owner_all);
#endif
    }

} // TEST_SUITE
