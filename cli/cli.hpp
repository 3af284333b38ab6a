// The openlock command-line tool: shared declarations of its sub-commands.
#pragma once

#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>

namespace openlock::cli {

/// Exit statuses of openlock's own failures (the command's status passes through `run` unchanged).
enum exit_status : int {
    success = 0,
    refused = 1,       // `break` would remove a live lock without --force
    usage_error = 64,  // EX_USAGE
    invalid_lock = 65, // EX_DATAERR: the lock path holds no lock record
    cannot_lock = 73,  // EX_CANTCREAT: an OS error creating or reading the lock file
    timed_out = 75,    // EX_TEMPFAIL
    not_executable = 126,
    command_not_found = 127,
};

/// Thrown for bad command lines; main prints "openlock: <message>" and exits with usage_error.
struct usage : std::runtime_error {
    using std::runtime_error::runtime_error;
};

/// Seconds as given on the command line ("5", "0.5"); usage on anything else or a negative value.
double parse_seconds(std::string_view option, std::string_view text);

/// Writes "openlock: <message>\n" to stderr in one write.
void complain(std::string const& message);

int run_command(std::span<char* const> arguments);
int status_command(std::span<char* const> arguments);
int break_command(std::span<char* const> arguments);

} // namespace openlock::cli
