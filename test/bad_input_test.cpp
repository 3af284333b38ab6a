// Bad input at the lock path: every case gets a typed error, never hangs, and deletes or overwrites nothing.
#include "support/support.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstring>
#include <filesystem>
#include <future>
#include <initializer_list>
#include <optional>
#include <string>
#include <system_error>
#include <vector>

#ifndef _WIN32
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <sys/un.h>
#include <unistd.h>
#endif

#include "support/records.hpp"
#include "support/timing.hpp"

import openlock;

using namespace std::chrono_literals;

namespace {

namespace fs = std::filesystem;
using steady = std::chrono::steady_clock;

constexpr auto const& every_method = test::every_method_and_automatic;
using test::quick;
using test::time_of;

// Everything in a directory tree, without following symlinks: names, kinds, file bytes and symlink targets.
std::vector<std::string> snapshot(fs::path const& directory) {
    std::vector<std::string> entries;
    for (auto const& entry : fs::recursive_directory_iterator{directory}) {
        auto const name = fs::relative(entry.path(), directory).string();
        auto const status = entry.symlink_status();
        if (fs::is_symlink(status))
            entries.push_back(name + " -> " + fs::read_symlink(entry.path()).string());
        else if (fs::is_regular_file(status))
            entries.push_back(name + " = " + test::read_file(entry.path()));
        else if (fs::is_directory(status))
            entries.push_back(name + "/");
        else
            entries.push_back(name + " (special)");
    }
    std::ranges::sort(entries);
    return entries;
}

// A lock file whose bytes are not a record: invalid_lock_file after `tries` reads, retry_period apart;
// try_acquire says busy or invalid at once; nothing is changed.
void check_unreadable_content(std::string const& bytes) {
    for (auto const method : every_method) {
        CAPTURE(static_cast<int>(method));
        test::scratch_dir dir;
        auto const path = dir / "bad.lock";
        test::write_file(path, bytes);
        auto const before = snapshot(dir.path());

        constexpr int tries = 3;
        constexpr auto retry_period = 20ms;
        openlock::file_lock lock{path, std::nullopt, quick(tries, retry_period, method)};
        auto const took = time_of([&] {
            try {
                lock.acquire(2s);
                FAIL_CHECK("expected openlock::invalid_lock_file");
            } catch (openlock::invalid_lock_file const& e) {
                CHECK(e.code() == openlock::errc::invalid_lock_file);
                CHECK(e.path() == path);
            }
        });
        CHECK(took >= (tries - 1) * retry_period); // re-read tries times, retry_period apart: never at once
        CHECK(took < 1500ms);                      // and never up to the timeout
        CHECK(snapshot(dir.path()) == before);

        auto const tried = time_of([&] {
            try {
                CHECK_FALSE(lock.try_acquire());
            } catch (openlock::invalid_lock_file const&) {
            }
        });
        CHECK(tried < 1500ms);
        CHECK_FALSE(lock.owns_lock());
        CHECK(lock.locked()); // counts as held
        CHECK(openlock::inspect(path).state == openlock::lock_state::invalid);
        CHECK(snapshot(dir.path()) == before);

        // With a single try the answer is immediate even with a long retry period.
        openlock::file_lock once{path, std::nullopt, quick(1, 10s, method)};
        CHECK(time_of([&] { CHECK_THROWS_AS(once.acquire(5s), openlock::invalid_lock_file); }) < 2s);
        CHECK(time_of([&] { CHECK_THROWS_AS((void)once.try_acquire(), openlock::invalid_lock_file); }) < 2s);
        CHECK(snapshot(dir.path()) == before);
    }
}

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

// The record of a lock held by this process, as a file somewhere else (what a symlink might point at).
std::string a_real_record(fs::path const& directory) {
    return openlock::serialize_record(test::record_of_this_process(directory));
}

// Expects lock_error with exactly this OS error from acquire and try_acquire, with nothing created.
// (Without an expected code: any OS error.)
void check_os_error(fs::path const& path, std::optional<std::errc> expected, openlock::claim_method method) {
    CAPTURE(static_cast<int>(method));
    openlock::file_lock lock{path, std::nullopt, quick(2, 20ms, method)};
    try {
        lock.acquire(2s);
        FAIL_CHECK("expected openlock::lock_error");
    } catch (openlock::lock_error const& e) {
        if (expected) CHECK(e.code() == *expected);
        CHECK(e.code().category() == std::system_category());
    }
    CHECK_THROWS_AS((void)lock.try_acquire(), openlock::lock_error);
    std::error_code error;
    CHECK_FALSE(lock.try_acquire(error));
    if (expected) CHECK(error == *expected);
    CHECK(error.category() == std::system_category());
    CHECK_FALSE(lock.owns_lock());
}

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

TEST_SUITE("bad input: contents") {

    TEST_CASE("an empty lock file is invalid_lock_file after the retries") {
        check_unreadable_content("");
    }

    TEST_CASE("a truncated record without its final newline is invalid_lock_file") {
        check_unreadable_content("12345\nsomeone\nversion=1\nhost=h\nboot_id=b\npid_ns=1\nnonce=0123");
    }

    TEST_CASE("garbage text is invalid_lock_file") {
        check_unreadable_content("this is not a lock file\nat all = really\n");
    }

    TEST_CASE("binary bytes with NULs are invalid_lock_file") {
        std::string const bytes{"12\0\x01\xff\xfe\n\0name\n\x7f", 13};
        REQUIRE(bytes.size() == 13);
        check_unreadable_content(bytes);
    }

    TEST_CASE("a 1 MiB lock file is invalid_lock_file and is not read to its end") {
        std::string bytes = "123\nsomeone\n";
        bytes.resize(std::size_t{1} << 20, 'x');
        check_unreadable_content(bytes);
    }

} // TEST_SUITE

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
