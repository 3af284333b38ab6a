// SPDX-License-Identifier: MIT
// Keep-alive (options::keep_alive): a lease refreshed in the background for as long as it is held, and a lost
// lock reported, never kept silently.
#include "support/support.hpp"

#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <string>
#include <thread>

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

} // namespace

TEST_SUITE("keep-alive") {

    TEST_CASE("keep-alive holds a lease for many lifetimes") {
        for (auto const method : every_method) {
            CAPTURE(static_cast<int>(method));
            test::scratch_dir dir;
            auto const path = dir / "kept.lock";
            // Refreshes every 200 ms: one may come up to 400 ms late (a loaded machine, sanitizers) before
            // the lease runs out.
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

    TEST_CASE("keep-alive reports a lost lock through on_lost and the diagnostics, never silently") {
        for (auto const method : every_method) {
            // Wine refuses to rename over a file its holder keeps open (exclusive_create pins it).
            if (method == openlock::claim_method::exclusive_create && test::under_wine()) continue;
            CAPTURE(static_cast<int>(method));
            test::scratch_dir dir;
            auto const path = dir / "lost.lock";
            std::atomic<int> lost_calls{0};
            test::diagnostics_seen seen;
            auto settings = seen.collecting(leased(150ms, 0ms, method));
            settings.keep_alive = true;
            settings.on_lost = [&](fs::path const& which) {
                if (which == path) ++lost_calls;
            };
            openlock::file_lock lock{path, std::nullopt, settings};
            lock.acquire();
            test::replace_with_another_holder(path);
            auto const deadline = std::chrono::steady_clock::now() + 3s;
            while (lost_calls == 0 && std::chrono::steady_clock::now() < deadline)
                std::this_thread::sleep_for(10ms);
            CHECK(lost_calls == 1);
            CHECK(seen.count(openlock::diagnostic::kind::lock_lost) == 1);
            CHECK_FALSE(lock.still_held());
            CHECK_THROWS_AS(lock.release(), openlock::not_locked);
            CHECK(test::read_file(path).find("fedcba9876543210fedcba9876543210") != std::string::npos);
        }
    }

} // TEST_SUITE
