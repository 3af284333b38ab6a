// SPDX-License-Identifier: MIT
// Who may release a lock: never an object that does not hold it, never the thread that holds it twice, and
// never a lock file that is no longer the holder's.
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
#include <unistd.h>
#endif

#include "support/records.hpp"
#include "support/timing.hpp"

import openlock;

using namespace std::chrono_literals;

namespace {

namespace fs = std::filesystem;
using test::quick;

} // namespace

TEST_SUITE("ownership") {

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
    // Makes unlink(2) in a directory fail until destroyed: a read-only bind mount of the directory over
    // itself as root (permission bits do not stop root), its write permission taken away otherwise.
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
            if (::mount("none", directory_.c_str(), nullptr, MS_REMOUNT | MS_BIND | MS_RDONLY, nullptr) !=
                0) {
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

    // docs/protocol.md Q9: a release that cannot remove its lock file must not drop the claim (that would
    // orphan a lock file nobody will ever remove: its holder is alive, so no one takes it over). It keeps
    // holding, reports the OS error, and a later release removes the file.
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
                // The unlink of the lock file, or (guarded releases) the making of the takeover guard's
                // staging directory beside it.
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
    TEST_CASE(
        "a lock file replaced by another record makes release throw not_locked and keeps the replacement") {
        for (auto const method :
             {openlock::claim_method::hard_link, openlock::claim_method::anonymous_link}) {
            if (!test::supported(method)) continue;
            CAPTURE(static_cast<int>(method));
            test::scratch_dir dir;
            auto const path = dir / "replaced.lock";
            openlock::file_lock lock{path, std::nullopt, quick(method)};
            lock.acquire();
            auto const replacement = test::replace_with_another_holder(path);

            CHECK_THROWS_AS(lock.release(), openlock::not_locked);
            CHECK_FALSE(lock.owns_lock());
            CHECK(test::read_file(path) == replacement);
            CHECK(test::names_in(dir.path()) == std::vector<std::string>{"replaced.lock"});

            // The error_code form, with a replacement record of another kind.
            fs::remove(path);
            lock.acquire();
            test::replace_file(path, "4242\nsomeone\n");
            std::error_code error;
            lock.release(error);
            CHECK(error == openlock::errc::not_locked);
            CHECK(test::read_file(path) == "4242\nsomeone\n");
        }
    }

    TEST_CASE("release never removes a next holder's lock file that got the broken holder's inode number") {
        // hard_link pins the lock's inode with the claim file's name. A break may remove that too
        // (flufl.lock's claim files; a sweep of a holder it cannot judge, past its lease), and ext4 gives a
        // freed inode number to the next new file at once. Rewriting the lock file in place plays that next
        // holder: our inode number, another holder's record.
        test::scratch_dir dir;
        auto const path = dir / "reused.lock";
        openlock::file_lock lock{path, 2s, quick(openlock::claim_method::hard_link)};
        lock.acquire();
        for (auto const& name : test::names_in(dir.path()))
            if (name != "reused.lock") fs::remove(dir / name); // the claim file, as a break removes it
        auto next = test::record_of_this_process(dir.path());
        next.nonce = test::nonce_b;
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

} // TEST_SUITE
