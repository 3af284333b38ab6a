// SPDX-License-Identifier: MIT
// The openlock command-line tool as a whole: its version, its help and the command lines it refuses.
#include "support/cli.hpp"
#include "support/support.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <csignal>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

import openlock;

namespace {

namespace fs = std::filesystem;
using namespace test::cli;
using test::contains;

} // namespace

TEST_SUITE("cli") {

    TEST_CASE("--version prints the version") {
        auto const result = test::run_cli({"--version"});
        CHECK(result.status == 0);
        CHECK(result.out == "openlock 0.1.0\n");
        CHECK(result.err.empty());
    }

    TEST_CASE("--help exits 0 and describes run and status and break") {
        auto const result = test::run_cli({"--help"});
        CHECK(result.status == 0);
        CHECK(contains(result.out, "run"));
        CHECK(contains(result.out, "status"));
        CHECK(contains(result.out, "break"));
        CHECK(contains(result.out, "usage"));
        CHECK(result.err.empty());
    }

    TEST_CASE("bad command lines exit 64 with one line on stderr") {
        test::scratch_dir dir;
        auto const lock = (dir / "x.lock").string();
        SUBCASE("no arguments") {
            check_usage_error({});
        }
        SUBCASE("an unknown command") {
            check_usage_error({"frobnicate"});
        }
        SUBCASE("run without --") {
            check_usage_error({"run", lock, "true"});
        }
        SUBCASE("run with a lock file only") {
            check_usage_error({"run", lock});
        }
        SUBCASE("run LOCK -- without a command") {
            check_usage_error({"run", lock, "--"});
        }
        SUBCASE("run without a lock file") {
            check_usage_error({"run", "--", TRUE_COMMAND});
        }
        SUBCASE("run --timeout -1") {
            check_usage_error({"run", "--timeout", "-1", lock, "--", TRUE_COMMAND});
        }
        SUBCASE("run --timeout abc") {
            check_usage_error({"run", "--timeout", "abc", lock, "--", TRUE_COMMAND});
        }
        SUBCASE("run --timeout without a value") {
            check_usage_error({"run", "--timeout"});
        }
        SUBCASE("run --timeout=nan") {
            check_usage_error({"run", "--timeout=nan", lock, "--", TRUE_COMMAND});
        }
        SUBCASE("run with an unknown option") {
            check_usage_error({"run", "--frob", lock, "--", TRUE_COMMAND});
        }
        SUBCASE("status without a path") {
            check_usage_error({"status"});
        }
        SUBCASE("status with two paths") {
            check_usage_error({"status", lock, lock});
        }
        SUBCASE("break without a path") {
            check_usage_error({"break"});
        }
        SUBCASE("break with an unknown option") {
            check_usage_error({"break", "--frob", lock});
        }
        CHECK(test::names_in(dir.path()).empty());
    }

} // TEST_SUITE
