// SPDX-License-Identifier: MIT
// Running the openlock command-line tool in tests: its exit statuses, its one-line errors, and lock files
// held or left stale by a helper process.
#pragma once

#include "support/support.hpp"

#include <cstddef>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

namespace test::cli {

// The exit statuses of cli/cli.hpp.
constexpr int refused = 1;
constexpr int usage_error = 64;
constexpr int invalid_lock = 65;
constexpr int cannot_lock = 73;
constexpr int release_failed = 74;
constexpr int timed_out = 75;
constexpr int not_executable = 126;
constexpr int command_not_found = 127;

/// How many lines the text has (its newlines).
std::size_t lines_in(std::string const& text);
/// The text up to its first newline.
std::string first_line(std::string const& text);
/// openlock's own failures: exactly one line on stderr, "openlock: ...".
void check_one_error_line(run_result const& result);
/// The command line is refused with usage_error, nothing on stdout and one line on stderr.
void check_usage_error(std::vector<std::string> const& arguments);
/// A helper process holding `lock` until it is killed.
std::unique_ptr<child> hold(std::filesystem::path const& lock);
/// A lock file whose holder was SIGKILLed (and reaped), leaving the lock file behind.
void make_stale(std::filesystem::path const& lock);

} // namespace test::cli

// Commands for `run` that every OS has: on Windows the helper process stands in for true(1), echo(1) and
// exit statuses (Windows has no such programs).
#ifdef _WIN32
#define TRUE_COMMAND OPENLOCK_TEST_CHILD, "exit"
#define ECHO_COMMAND OPENLOCK_TEST_CHILD, "echo"
#define EXIT_7_COMMAND OPENLOCK_TEST_CHILD, "exit", "7"
#else
#define TRUE_COMMAND "true"
#define ECHO_COMMAND "echo"
#define EXIT_7_COMMAND "sh", "-c", "exit 7"
#endif
