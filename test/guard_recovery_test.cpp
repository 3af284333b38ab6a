// SPDX-License-Identifier: MIT
// The recovery of takeover guards and claim files left by dead processes, and of guards that a reader keeps.
#include "support/support.hpp"

#include <doctest/doctest.h>

#include <chrono>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "support/diagnostics.hpp"
#include "support/records.hpp"
#include "support/timing.hpp"

import openlock;

using namespace std::chrono_literals;

namespace {

namespace fs = std::filesystem;
using test::dead_record;
using test::nonce_a;
using test::nonce_b;
using test::nonce_c;
using test::observed_options;
using test::quick;
using test::record_of_this_process;
using test::write_record;

} // namespace

TEST_SUITE("guard recovery") {

    TEST_CASE("a takeover guard left by a dead process is removed when taking over") {
        test::scratch_dir dir;
        auto const path = dir / "guarded.lock";
        auto const guard = dir / "guarded.lock.takeover";
        write_record(path, dead_record(dir.path(), nonce_a));
        fs::create_directory(guard);
        write_record(guard / nonce_b, dead_record(dir.path(), nonce_b));

        observed_options options;
        openlock::file_lock lock{path, 2s, options.settings};
        lock.acquire();
        CHECK(lock.owner()->pid == test::this_pid());
        CHECK(options.reported(openlock::diagnostic::kind::leftover_removed, guard));
        CHECK(options.reported(openlock::diagnostic::kind::stale_lock_removed, path));
        CHECK_FALSE(fs::exists(guard));
        lock.release();
        CHECK(test::names_in(dir.path()).empty());
    }

    TEST_CASE("a guard held by a live process blocks the takeover of a stale lock") {
        test::scratch_dir dir;
        auto const path = dir / "blocked.lock";
        auto const guard = dir / "blocked.lock.takeover";
        auto const stale_bytes = write_record(path, dead_record(dir.path(), nonce_a));
        auto live = record_of_this_process(dir.path());
        live.nonce = nonce_b;
        fs::create_directory(guard);
        auto const guard_bytes = write_record(guard / nonce_b, live);

        {
            observed_options options;
            options.settings.race_delay = 20ms;
            openlock::file_lock lock{path, std::nullopt, options.settings};
            try {
                lock.acquire(300ms);
                FAIL_CHECK("expected openlock::timeout_error");
            } catch (openlock::timeout_error const& e) {
                CHECK(e.holder().find("pid " + std::to_string(test::this_pid())) !=
                      std::string::npos); // the guard's holder
            }
            CHECK(options.reported(openlock::diagnostic::kind::slow_system, path));
            CHECK_FALSE(options.reported(openlock::diagnostic::kind::stale_lock_removed));
            CHECK_FALSE(lock.try_acquire());
            CHECK(openlock::break_lock(path, true, options.settings) == openlock::break_result::busy);
        }
        {
            observed_options options;
            options.settings.race_delay = 20ms;
            options.settings.slow_system_exception = true;
            openlock::file_lock lock{path, std::nullopt, options.settings};
            try {
                lock.acquire(2s);
                FAIL_CHECK("expected openlock::slow_system");
            } catch (openlock::slow_system const& e) {
                CHECK(e.code() == openlock::errc::slow_system);
                CHECK(e.path() == path);
            }
            CHECK_FALSE(lock.owns_lock());
        }
        // Nothing was removed while the guard was held.
        CHECK(test::read_file(path) == stale_bytes);
        CHECK(test::read_file(guard / nonce_b) == guard_bytes);
        CHECK(test::names_in(dir.path()) ==
              std::vector<std::string>{"blocked.lock", "blocked.lock.takeover"});

        // Once the guard's holder lets go, the stale lock is taken over.
        fs::remove_all(guard);
        openlock::file_lock lock{path, 2s};
        lock.acquire();
        lock.release();
        CHECK(test::names_in(dir.path()).empty());
    }

    TEST_CASE("an empty guard directory is held by nobody and never blocks a takeover") {
        // What a release leaves where its rmdir kept failing (Windows: a reader held the owner file open
        // while it was removed, so its name stayed listed). A directory cannot be renamed onto another there.
        test::scratch_dir dir;
        auto const path = dir / "emptied.lock";
        auto const guard = dir / "emptied.lock.takeover";
        write_record(path, dead_record(dir.path(), nonce_a));
        fs::create_directory(guard);

        openlock::file_lock lock{path, 2s};
        lock.acquire();
        CHECK(lock.owner()->pid == test::this_pid());
        lock.release();
        CHECK(test::names_in(dir.path()).empty());
    }

    TEST_CASE("a forced break removes a guard stuck for over a minute by a process not alive here") {
        test::scratch_dir dir;
        auto const path = dir / "stuck.lock";
        auto const guard = dir / "stuck.lock.takeover";
        auto const lock_bytes = write_record(path, dead_record(dir.path(), nonce_a)); // stale: taken over
        auto elsewhere = dead_record(dir.path(), nonce_b);
        elsewhere.host = "another-host.example"; // a takeover there crashed while it held the guard
        fs::create_directory(guard);
        auto const guard_bytes = write_record(guard / nonce_b, elsewhere);
        auto const unchanged = [&] {
            return test::read_file(path) == lock_bytes && test::read_file(guard / nonce_b) == guard_bytes;
        };
        auto const age = [&](std::chrono::seconds seconds) {
            fs::last_write_time(guard / nonce_b, fs::file_time_type::clock::now() - seconds);
        };

        // A guard is held for a takeover's few system calls: a young one may be in use, so even force waits.
        age(30s);
        CHECK(openlock::break_lock(path, true) == openlock::break_result::busy);
        CHECK(unchanged());

        // Old, but only a forced break removes it: acquires and plain breaks wait for it, as for any guard.
        age(120s);
        observed_options options;
        openlock::file_lock lock{path, std::nullopt, options.settings};
        CHECK_FALSE(lock.try_acquire());
        CHECK(openlock::break_lock(path, false, options.settings) == openlock::break_result::busy);
        CHECK(unchanged());
        CHECK_FALSE(options.reported(openlock::diagnostic::kind::leftover_removed));

        // Its owner is alive here: never removed, however old.
        auto live = record_of_this_process(dir.path());
        live.nonce = nonce_b;
        auto const live_bytes = write_record(guard / nonce_b, live);
        age(120s);
        CHECK(openlock::break_lock(path, true, options.settings) == openlock::break_result::busy);
        CHECK(test::read_file(guard / nonce_b) == live_bytes);

        // Old and owned by a process that cannot be judged here: the forced break removes guard and lock.
        write_record(guard / nonce_b, elsewhere);
        age(120s);
        CHECK(openlock::break_lock(path, true, options.settings) == openlock::break_result::removed);
        CHECK(options.reported(openlock::diagnostic::kind::leftover_removed, guard));
        CHECK(test::names_in(dir.path()).empty());
        CHECK(lock.try_acquire());
        lock.release();
    }

    TEST_CASE("claim files of dead processes are swept at takeover and live ones kept") {
        test::scratch_dir dir;
        auto const path = dir / "swept.lock";
        write_record(path, dead_record(dir.path(), nonce_a));
        auto const dead_claim = dir / (std::string{"swept.lock.claim."} + nonce_b);
        write_record(dead_claim, dead_record(dir.path(), nonce_b));
        auto live = record_of_this_process(dir.path());
        live.nonce = nonce_c;
        auto const live_claim = dir / (std::string{"swept.lock.claim."} + nonce_c);
        auto const live_bytes = write_record(live_claim, live);
        // A staging directory of a dead process's guard, left half-made.
        auto const staging = dir / (std::string{"swept.lock.takeover."} + nonce_b);
        fs::create_directory(staging);
        write_record(staging / nonce_b, dead_record(dir.path(), nonce_b));

        observed_options options;
        openlock::file_lock lock{path, 2s, options.settings};
        lock.acquire();
        CHECK(options.reported(openlock::diagnostic::kind::leftover_removed, dead_claim));
        CHECK(options.reported(openlock::diagnostic::kind::leftover_removed, staging));
        CHECK_FALSE(options.reported(openlock::diagnostic::kind::leftover_removed, live_claim));
        lock.release();
        CHECK(test::read_file(live_claim) == live_bytes);
        CHECK(test::names_in(dir.path()) == std::vector<std::string>{live_claim.filename().string()});
    }

    // The sweep of leftover claim files matches the exact "<stem>.claim.<32 hex>" shape, so another lock
    // whose name merely starts like a claim file is never unlinked without that lock's own guard.
    TEST_CASE("the sweep leaves another lock named like a claim file alone") {
        test::scratch_dir dir;
        auto const path = dir / "x.lock";
        write_record(path, dead_record(dir.path(), nonce_a));
        auto const other_lock = dir / "x.lock.claim.db";
        auto const other_bytes = write_record(other_lock, dead_record(dir.path(), nonce_b));
        openlock::file_lock lock{path, 2s};
        lock.acquire();
        lock.release();
        CHECK(test::read_file(other_lock) == other_bytes);
    }

    TEST_CASE("a takeover leaves no guard behind while a reader has the guard's record open") {
        // Where a removed file stays listed while a reader has it open (Wine; Windows on FAT or SMB), the
        // guard's directory can go only after that reader is done: the takeover waits for it, not leaving it
        // behind.
        test::scratch_dir dir;
        auto const path = dir / "read.lock";
        write_record(path, dead_record(dir.path()));
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

} // TEST_SUITE
