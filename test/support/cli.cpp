// SPDX-License-Identifier: MIT
#include "support/cli.hpp"

#include <doctest/doctest.h>

#include <algorithm>

namespace test::cli {

std::size_t lines_in(std::string const& text) {
    return static_cast<std::size_t>(std::count(text.begin(), text.end(), '\n'));
}

std::string first_line(std::string const& text) {
    return text.substr(0, text.find('\n'));
}

void check_one_error_line(run_result const& result) {
    INFO("stderr: " << result.err);
    CHECK(result.err.starts_with("openlock: "));
    CHECK(result.err.ends_with("\n"));
    CHECK(lines_in(result.err) == 1);
}

void check_usage_error(std::vector<std::string> const& arguments) {
    auto const result = run_cli(arguments);
    CHECK(result.status == usage_error);
    CHECK(result.out.empty());
    check_one_error_line(result);
}

std::unique_ptr<child> hold(std::filesystem::path const& lock) {
    auto holder = start_helper({"hold", lock.string()});
    auto const line = holder->read_line();
    REQUIRE(line.starts_with("locked"));
    return holder;
}

void make_stale(std::filesystem::path const& lock) {
    auto holder = hold(lock);
    holder->kill_hard();
    REQUIRE(holder->wait() == killed_exit_code());
    REQUIRE(std::filesystem::exists(lock));
}

} // namespace test::cli
