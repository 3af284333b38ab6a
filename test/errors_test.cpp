// SPDX-License-Identifier: MIT
// The error vocabulary: openlock::errc, its category, and the exception types.
#include "support/support.hpp"

#include <doctest/doctest.h>

#include <chrono>
#include <filesystem>
#include <set>
#include <stdexcept>
#include <string>
#include <system_error>
#include <type_traits>
#include <vector>

import openlock;

namespace {

std::vector<openlock::errc> const every_errc = {
    openlock::errc::timeout,        openlock::errc::invalid_release, openlock::errc::invalid_lock_file,
    openlock::errc::invalid_option, openlock::errc::already_locked,  openlock::errc::not_locked,
    openlock::errc::slow_system,    openlock::errc::unavailable,     openlock::errc::server_error,
};

using test::contains;

std::filesystem::path const lock_path = "/var/lock/some-dir/app.lock";

// Checks what every exception of the library has: its code, its path, a what() naming the path.
template <class Exception>
void check_exception(Exception const& e, openlock::errc expected) {
    static_assert(std::is_base_of_v<openlock::lock_error, Exception>);
    static_assert(std::is_base_of_v<std::system_error, Exception>);
    static_assert(std::is_base_of_v<std::runtime_error, Exception>);
    CHECK(e.code() == expected);
    CHECK(e.code().category() == openlock::openlock_category());
    CHECK(e.path() == lock_path);
    CHECK(contains(e.what(), lock_path.string()));
    CHECK(contains(e.what(), openlock::make_error_code(expected).message()));
}

} // namespace

TEST_SUITE("errors") {

    TEST_CASE("the category of openlock errors is named openlock") {
        CHECK(std::string{openlock::openlock_category().name()} == "openlock");
        CHECK(&openlock::openlock_category() == &openlock::openlock_category());
        CHECK(openlock::openlock_category() != std::generic_category());
        CHECK(openlock::openlock_category() != std::system_category());
    }

    TEST_CASE("every errc has a non-empty message of its own") {
        std::set<std::string> messages;
        for (auto const e : every_errc) {
            auto const message = openlock::openlock_category().message(static_cast<int>(e));
            INFO("errc " << static_cast<int>(e) << ": " << message);
            CHECK_FALSE(message.empty());
            CHECK(openlock::make_error_code(e).message() == message);
            CHECK(messages.insert(message).second);
        }
        CHECK(messages.size() == every_errc.size());
        // A value outside the enumeration still has some message.
        CHECK_FALSE(openlock::openlock_category().message(999).empty());
    }

    TEST_CASE("the errc values are non-zero so that none of them means success") {
        for (auto const e : every_errc) {
            std::error_code const code = e;
            CHECK(static_cast<bool>(code));
            CHECK(code.value() != 0);
        }
    }

    TEST_CASE("make_error_code and implicit conversion give the same error_code") {
        std::error_code const ec = openlock::errc::timeout;
        CHECK(ec == openlock::make_error_code(openlock::errc::timeout));
        CHECK(ec == openlock::errc::timeout);
        CHECK(ec != openlock::errc::invalid_option);
        CHECK(ec.category() == openlock::openlock_category());
        CHECK(ec.value() == static_cast<int>(openlock::errc::timeout));
        CHECK(std::string{ec.category().name()} == "openlock");
        static_assert(std::is_error_code_enum_v<openlock::errc>);
        // Not to be confused with the OS's codes of the same value.
        CHECK(ec != std::error_code{static_cast<int>(openlock::errc::timeout), std::generic_category()});
        std::error_code assigned;
        assigned = openlock::errc::not_locked;
        CHECK(assigned == openlock::errc::not_locked);
    }

    TEST_CASE("timeout_error carries its code and path and names the holder") {
        openlock::timeout_error const e{lock_path, "pid 123 (make) on host h"};
        check_exception(e, openlock::errc::timeout);
        CHECK(e.holder() == "pid 123 (make) on host h");
        CHECK(contains(e.what(), "pid 123 (make) on host h"));
    }

    TEST_CASE("timeout_error without a holder has an empty holder") {
        openlock::timeout_error const e{lock_path, ""};
        check_exception(e, openlock::errc::timeout);
        CHECK(e.holder().empty());
        CHECK_FALSE(contains(e.what(), "held by"));
    }

    TEST_CASE("invalid_release carries its code and path") {
        check_exception(openlock::invalid_release{lock_path}, openlock::errc::invalid_release);
    }

    TEST_CASE("invalid_lock_file carries its code and path and the reason") {
        openlock::invalid_lock_file const e{lock_path, "the lock path is a symlink"};
        check_exception(e, openlock::errc::invalid_lock_file);
        CHECK(contains(e.what(), "the lock path is a symlink"));
    }

    TEST_CASE("already_locked carries its code and path") {
        check_exception(openlock::already_locked{lock_path}, openlock::errc::already_locked);
    }

    TEST_CASE("not_locked carries its code and path and the detail") {
        openlock::not_locked const e{lock_path, "removed by someone else"};
        check_exception(e, openlock::errc::not_locked);
        CHECK(contains(e.what(), "removed by someone else"));
    }

    TEST_CASE("slow_system carries its code and path and the detail") {
        openlock::slow_system const e{lock_path, "a takeover took 3 s"};
        check_exception(e, openlock::errc::slow_system);
        CHECK(contains(e.what(), "a takeover took 3 s"));
    }

    TEST_CASE("invalid_option has no path and says what is wrong") {
        static_assert(std::is_base_of_v<openlock::lock_error, openlock::invalid_option>);
        static_assert(std::is_base_of_v<std::system_error, openlock::invalid_option>);
        openlock::invalid_option const e{"tries must be at least 1"};
        CHECK(e.code() == openlock::errc::invalid_option);
        CHECK(e.path().empty());
        CHECK(contains(e.what(), "tries must be at least 1"));
    }

    TEST_CASE("lock_error carries an OS error code untouched") {
        openlock::lock_error const e{std::make_error_code(std::errc::permission_denied), lock_path, "open"};
        CHECK(e.code() == std::errc::permission_denied);
        CHECK(e.code().category() == std::generic_category());
        CHECK(e.path() == lock_path);
        CHECK(contains(e.what(), lock_path.string()));
        CHECK(contains(e.what(), "open"));
    }

    TEST_CASE("catching lock_error catches every exception of the library") {
        auto const caught = [](auto&& raise) {
            try {
                raise();
            } catch (openlock::lock_error const& e) {
                return static_cast<bool>(e.code());
            } catch (...) {
                return false;
            }
            return false;
        };
        CHECK(caught([] { throw openlock::timeout_error{lock_path, "pid 1"}; }));
        CHECK(caught([] { throw openlock::invalid_release{lock_path}; }));
        CHECK(caught([] { throw openlock::invalid_lock_file{lock_path, "garbage"}; }));
        CHECK(caught([] { throw openlock::invalid_option{"bad"}; }));
        CHECK(caught([] { throw openlock::already_locked{lock_path}; }));
        CHECK(caught([] { throw openlock::not_locked{lock_path, "gone"}; }));
        CHECK(caught([] { throw openlock::slow_system{lock_path, "slow"}; }));
    }

    TEST_CASE("catching std::system_error catches them too with the openlock code") {
        try {
            throw openlock::already_locked{lock_path};
        } catch (std::system_error const& e) {
            CHECK(e.code() == openlock::errc::already_locked);
        }
    }

    TEST_CASE("a real timeout from file_lock is a timeout_error naming the lock path") {
        test::scratch_dir dir;
        auto const path = dir / "held.lock";
        openlock::file_lock holder{path};
        holder.acquire();
        openlock::file_lock other{path};
        try {
            other.acquire(std::chrono::milliseconds{0});
            FAIL_CHECK("expected a timeout");
        } catch (openlock::lock_error const& e) {
            CHECK(e.code() == openlock::errc::timeout);
            CHECK(e.path() == path);
            CHECK(contains(e.what(), path.string()));
            auto const* timeout = dynamic_cast<openlock::timeout_error const*>(&e);
            REQUIRE(timeout != nullptr);
            CHECK(contains(timeout->holder(), "pid "));
        }
        holder.release();
    }

} // TEST_SUITE
