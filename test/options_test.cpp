// SPDX-License-Identifier: MIT
// Options: the process-wide defaults, their validation, and what a file_lock takes from them.
#include "support/support.hpp"

#include <doctest/doctest.h>

#include <chrono>
#include <optional>
#include <string>

import openlock;

using namespace std::chrono_literals;

namespace {

// Puts the defaults back as they were when the test case began, whatever happens in it.
class restore_defaults {
public:
    restore_defaults() : saved_(openlock::get_defaults()) {}
    restore_defaults(restore_defaults const&) = delete;
    restore_defaults& operator=(restore_defaults const&) = delete;
    ~restore_defaults() { openlock::set_defaults(saved_); }

private:
    openlock::options saved_;
};

void check_factory_defaults(openlock::options const& settings) {
    CHECK(settings.tries == 2);
    CHECK(settings.retry_period == 300ms);
    CHECK(settings.race_delay == 200ms);
    CHECK(settings.slow_system_exception == false);
    CHECK(settings.method == openlock::claim_method::automatic);
    CHECK_FALSE(settings.on_diagnostic);
}

// Expects invalid_option with its code from `operation`.
template <class Operation>
void check_invalid_option(Operation&& operation) {
    try {
        operation();
        FAIL_CHECK("expected openlock::invalid_option");
    } catch (openlock::invalid_option const& e) {
        CHECK(e.code() == openlock::errc::invalid_option);
        CHECK(e.code() == openlock::make_error_code(openlock::errc::invalid_option));
        CHECK(std::string{e.what()}.size() > 0);
    }
}

} // namespace

TEST_SUITE("options") {

    TEST_CASE(
        "the factory defaults are 2 tries and 300 ms retry and 200 ms race delay and automatic claims") {
        check_factory_defaults(openlock::get_defaults());
        check_factory_defaults(openlock::options{});
        CHECK_NOTHROW(openlock::validate(openlock::options{}));
    }

    TEST_CASE("set_defaults changes what get_defaults returns") {
        restore_defaults restore;
        auto changed = openlock::get_defaults();
        changed.tries = 5;
        changed.retry_period = 50ms;
        changed.race_delay = 1s;
        changed.slow_system_exception = true;
        changed.method = openlock::claim_method::hard_link;
        openlock::set_defaults(changed);
        auto const seen = openlock::get_defaults();
        CHECK(seen.tries == 5);
        CHECK(seen.retry_period == 50ms);
        CHECK(seen.race_delay == 1s);
        CHECK(seen.slow_system_exception);
        CHECK(seen.method == openlock::claim_method::hard_link);
    }

    TEST_CASE("get_defaults returns a copy: changing it changes nothing") {
        restore_defaults restore;
        auto copy = openlock::get_defaults();
        copy.tries = 9;
        copy.method = openlock::claim_method::exclusive_create;
        check_factory_defaults(openlock::get_defaults());
    }

    TEST_CASE("new file_lock objects take the defaults in force when they are made") {
        restore_defaults restore;
        test::scratch_dir dir;
        openlock::file_lock before{dir / "before.lock"};
        check_factory_defaults(before.settings());

        auto changed = openlock::get_defaults();
        changed.tries = 7;
        changed.retry_period = 20ms;
        changed.race_delay = 500ms;
        changed.method = openlock::claim_method::exclusive_create;
        openlock::set_defaults(changed);

        openlock::file_lock after{dir / "after.lock"};
        CHECK(after.settings().tries == 7);
        CHECK(after.settings().retry_period == 20ms);
        CHECK(after.settings().race_delay == 500ms);
        CHECK(after.settings().method == openlock::claim_method::exclusive_create);
        openlock::file_lock timed{dir / "timed.lock", 2s};
        CHECK(timed.settings().tries == 7);
        CHECK(timed.timeout() == std::optional<openlock::file_lock::duration>{2s});

        check_factory_defaults(before.settings()); // made earlier: keeps what it was given
    }

    TEST_CASE("a file_lock given its own options uses them and not the defaults") {
        restore_defaults restore;
        test::scratch_dir dir;
        auto own = openlock::get_defaults();
        own.tries = 3;
        own.method = openlock::claim_method::hard_link;
        openlock::file_lock lock{dir / "own.lock", std::nullopt, own};
        CHECK(lock.settings().tries == 3);
        CHECK(lock.settings().method == openlock::claim_method::hard_link);
        CHECK_FALSE(lock.timeout().has_value());
        check_factory_defaults(openlock::get_defaults());
    }

    TEST_CASE("invalid option values throw invalid_option and leave the defaults unchanged") {
        restore_defaults restore;
        auto bad = openlock::get_defaults();
        SUBCASE("tries 0") {
            bad.tries = 0;
        }
        SUBCASE("negative tries") {
            bad.tries = -1;
        }
        SUBCASE("zero retry_period") {
            bad.retry_period = 0ns;
        }
        SUBCASE("negative retry_period") {
            bad.retry_period = -300ms;
        }
        SUBCASE("zero race_delay") {
            bad.race_delay = 0ns;
        }
        SUBCASE("negative race_delay") {
            bad.race_delay = -1ms;
        }
        SUBCASE("a retry_period of 48 h") {
            bad.retry_period = 48h;
        }
        SUBCASE("a race_delay of 48 h") {
            bad.race_delay = 48h;
        }
        SUBCASE("a claim_method cast from 99") {
            bad.method = static_cast<openlock::claim_method>(99);
        }
        SUBCASE("a claim_method cast from -1") {
            bad.method = static_cast<openlock::claim_method>(-1);
        }

        check_invalid_option([&] { openlock::validate(bad); });
        check_invalid_option([&] { openlock::set_defaults(bad); });
        check_factory_defaults(openlock::get_defaults());
    }

    TEST_CASE("a rejected set_defaults keeps earlier changes in force") {
        restore_defaults restore;
        auto changed = openlock::get_defaults();
        changed.tries = 4;
        openlock::set_defaults(changed);
        auto bad = changed;
        bad.tries = 1;
        bad.retry_period = 48h;
        check_invalid_option([&] { openlock::set_defaults(bad); });
        CHECK(openlock::get_defaults().tries == 4);
        CHECK(openlock::get_defaults().retry_period == 300ms);
    }

    TEST_CASE("values at the edge of the range are accepted") {
        restore_defaults restore;
        auto edge = openlock::get_defaults();
        edge.tries = 1;
        edge.retry_period = 1ns;
        edge.race_delay = 24h;
        CHECK_NOTHROW(openlock::validate(edge));
        CHECK_NOTHROW(openlock::set_defaults(edge));
        CHECK(openlock::get_defaults().race_delay == 24h);
        for (auto const method :
             {openlock::claim_method::automatic, openlock::claim_method::hard_link,
              openlock::claim_method::anonymous_link, openlock::claim_method::exclusive_create}) {
            edge.method = method;
            CHECK_NOTHROW(openlock::validate(edge));
        }
    }

    TEST_CASE("a file_lock made with invalid options throws invalid_option") {
        test::scratch_dir dir;
        auto bad = openlock::get_defaults();
        SUBCASE("tries 0") {
            bad.tries = 0;
        }
        SUBCASE("zero retry_period") {
            bad.retry_period = 0ns;
        }
        SUBCASE("zero race_delay") {
            bad.race_delay = 0ns;
        }
        SUBCASE("a retry_period of 48 h") {
            bad.retry_period = 48h;
        }
        SUBCASE("a claim_method cast from 99") {
            bad.method = static_cast<openlock::claim_method>(99);
        }

        check_invalid_option([&] { openlock::file_lock lock{dir / "bad.lock", std::nullopt, bad}; });
        check_invalid_option([&] { openlock::file_lock lock{dir / "bad.lock", 1s, bad}; });
        CHECK(test::names_in(dir.path()).empty());
        check_factory_defaults(openlock::get_defaults());
    }

    TEST_CASE("an empty lock path is rejected with invalid_option") {
        check_invalid_option([] { openlock::file_lock lock{""}; });
        check_invalid_option([] { openlock::file_lock lock{"", 1s}; });
    }

    TEST_CASE("a lock path ending in a slash is rejected with invalid_option") {
        test::scratch_dir dir;
        check_invalid_option([&] { openlock::file_lock lock{dir.path().string() + "/"}; });
        check_invalid_option([&] { openlock::file_lock lock{"some/dir/"}; });
        check_invalid_option([&] { openlock::file_lock lock{"/"}; });
        CHECK(test::names_in(dir.path()).empty());
    }

} // TEST_SUITE
