// SPDX-License-Identifier: MIT
// Bad input at the lock path: every case gets a typed error, never hangs, and deletes or overwrites nothing.
// Here: lock paths that are not regular files (symlinks, directories, FIFOs, sockets, devices).
#include "support/support.hpp"

#include <doctest/doctest.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <future>
#include <string>
#include <system_error>

#ifndef _WIN32
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <sys/un.h>
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
using test::a_real_record;
using test::quick;
using test::snapshot;
using test::time_of;

// A lock path that is not a regular file: invalid_lock_file at once from every call, whatever the retry
// period; never followed, never removed, even by a forced break.
void check_wrong_type(test::scratch_dir const& dir, fs::path const& path) {
    auto const before = snapshot(dir.path());
    for (auto const method : every_method) {
        CAPTURE(static_cast<int>(method));
        openlock::file_lock lock{path, std::nullopt, quick(2, 10s, method)};
        auto const took = time_of([&] {
            try {
                lock.acquire(5s);
                FAIL_CHECK("expected openlock::invalid_lock_file");
            } catch (openlock::invalid_lock_file const& e) {
                CHECK(e.code() == openlock::errc::invalid_lock_file);
                CHECK(e.path() == path);
            }
            CHECK_THROWS_AS((void)lock.try_acquire(), openlock::invalid_lock_file);
            std::error_code error;
            CHECK_FALSE(lock.try_acquire(error));
            CHECK(error == openlock::errc::invalid_lock_file);
        });
        CHECK(took < 2s);
        CHECK_FALSE(lock.owns_lock());
        CHECK(lock.locked());
        CHECK_FALSE(lock.owner().has_value());
        CHECK(snapshot(dir.path()) == before);
    }
    auto const status = openlock::inspect(path);
    CHECK(status.state == openlock::lock_state::invalid);
    CHECK_FALSE(status.problem.empty());
    CHECK(openlock::break_lock(path, false) == openlock::break_result::refused);
    CHECK(openlock::break_lock(path, true) == openlock::break_result::refused);
    CHECK(snapshot(dir.path()) == before);
}

} // namespace

TEST_SUITE("bad input: file types") {

    TEST_CASE("a symlink to a regular file is never followed or removed") {
        test::scratch_dir dir;
        if (!test::symlinks_work(dir.path())) OPENLOCK_SKIP("this process may not create symlinks here");
        auto const target = dir / "target";
        test::write_file(target, a_real_record(dir.path())); // even a valid record behind it is not read
        fs::remove(dir / "probe.lock");
        fs::create_symlink(target, dir / "link.lock");
        check_wrong_type(dir, dir / "link.lock");
    }

    TEST_CASE("a symlink to a directory is never followed and nothing is created in it") {
        test::scratch_dir dir;
        if (!test::symlinks_work(dir.path())) OPENLOCK_SKIP("this process may not create symlinks here");
        fs::create_directory(dir / "target");
        fs::create_symlink(dir / "target", dir / "link.lock");
        check_wrong_type(dir, dir / "link.lock");
        CHECK(fs::is_empty(dir / "target"));
    }

    TEST_CASE("a dangling symlink is never followed and no file appears at its target") {
        test::scratch_dir dir;
        if (!test::symlinks_work(dir.path())) OPENLOCK_SKIP("this process may not create symlinks here");
        fs::create_symlink(dir / "nowhere", dir / "link.lock");
        check_wrong_type(dir, dir / "link.lock");
        CHECK_FALSE(fs::exists(fs::symlink_status(dir / "nowhere")));
    }

    TEST_CASE("a directory at the lock path is invalid_lock_file and is left as it is") {
        test::scratch_dir dir;
        fs::create_directory(dir / "dir.lock");
        test::write_file(dir / "dir.lock" / "inside", "kept\n");
        check_wrong_type(dir, dir / "dir.lock");
    }

    TEST_CASE("a FIFO at the lock path is invalid_lock_file without blocking") {
        test::scratch_dir dir;
#ifdef _WIN32
        OPENLOCK_SKIP("Windows has no FIFOs in directories (named pipes live in \\\\.\\pipe\\)");
#else
        auto const path = dir / "fifo.lock";
        REQUIRE(::mkfifo(path.c_str(), 0644) == 0);
        auto checked = std::async(std::launch::async, [&] { check_wrong_type(dir, path); });
        if (checked.wait_for(10s) != std::future_status::ready) {
            // Blocked in open(2) on the FIFO: a writer unblocks it so that the test can end.
            int const writer = ::open(path.c_str(), O_WRONLY | O_NONBLOCK);
            if (writer >= 0) ::close(writer);
            FAIL_CHECK("a call blocked on the FIFO");
        }
        checked.get();
        CHECK(fs::is_fifo(fs::symlink_status(path)));
#endif
    }

    TEST_CASE("a Unix socket at the lock path is invalid_lock_file and is never removed") {
#ifdef _WIN32
        OPENLOCK_SKIP("Windows has no Unix sockets in directories that a lock path could name here");
#else
        test::scratch_dir dir;
        auto const path = dir / "socket.lock";
        int const listener = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        REQUIRE(listener >= 0);
        sockaddr_un address{};
        address.sun_family = AF_UNIX;
        REQUIRE(path.native().size() < sizeof address.sun_path);
        std::strncpy(address.sun_path, path.c_str(), sizeof address.sun_path - 1);
        REQUIRE(::bind(listener, reinterpret_cast<sockaddr const*>(&address), sizeof address) == 0);
        REQUIRE(::listen(listener, 1) == 0); // a live socket that would accept a connect(2)
        check_wrong_type(dir, path);
        CHECK(fs::is_socket(fs::symlink_status(path)));
        ::close(listener);
#endif
    }

    TEST_CASE("a device node at the lock path is invalid_lock_file and is never removed") {
#ifdef _WIN32
        OPENLOCK_SKIP("Windows has no device nodes in directories");
#else
        // /dev/null's numbers (a character device every open(2) would succeed on) and a loop block device.
        struct node {
            char const* name;
            mode_t kind;
            dev_t device;
        };
        for (auto const& [name, kind, device] :
             {node{"null.lock", S_IFCHR, ::makedev(1, 3)}, node{"loop.lock", S_IFBLK, ::makedev(7, 0)}}) {
            CAPTURE(name);
            test::scratch_dir dir;
            auto const path = dir / name;
            if (::mknod(path.c_str(), kind | 0666, device) != 0) {
                REQUIRE_MESSAGE(errno == EPERM, "mknod failed: " << std::strerror(errno));
                MESSAGE("skipped: no right to make device nodes (CAP_MKNOD); runs as root in CI");
                return;
            }
            check_wrong_type(dir, path);
            auto const status = fs::symlink_status(path);
            CHECK((kind == S_IFCHR ? fs::is_character_file(status) : fs::is_block_file(status)));
        }
#endif
    }

    TEST_CASE("break_lock refuses symlinks and directories even with force") {
        test::scratch_dir dir;
        if (!test::symlinks_work(dir.path())) OPENLOCK_SKIP("this process may not create symlinks here");
        // A symlink to a file holding a stale record: removable if it were followed, so it must not be.
        auto record = openlock::parse_record(a_real_record(dir.path())).record;
        fs::remove(dir / "probe.lock");
        record.pid = test::pid_of_a_reaped_child();
        test::write_file(dir / "stale-target", openlock::serialize_record(record));
        REQUIRE(openlock::inspect(dir / "stale-target").state == openlock::lock_state::stale);
        fs::create_symlink(dir / "stale-target", dir / "to-stale.lock");
        fs::create_symlink(dir / "nowhere", dir / "dangling.lock");
        fs::create_directory(dir / "dir.lock");
        fs::create_directory(dir / "empty-dir.lock");
        test::write_file(dir / "dir.lock" / "inside", "kept\n");
        auto const before = snapshot(dir.path());

        for (auto const* name : {"to-stale.lock", "dangling.lock", "dir.lock", "empty-dir.lock"}) {
            CAPTURE(name);
            CHECK(openlock::break_lock(dir / name, false) == openlock::break_result::refused);
            CHECK(openlock::break_lock(dir / name, true) == openlock::break_result::refused);
            CHECK(openlock::inspect(dir / name).state == openlock::lock_state::invalid);
        }
        CHECK(snapshot(dir.path()) == before);
    }

} // TEST_SUITE
