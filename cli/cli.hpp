// The openlock command-line tool: shared declarations of its sub-commands.
#pragma once

#include <ctime>
#include <filesystem>
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

// The OS-dependent parts (cli/console.cpp).
/// Writes text to stderr in one write.
void write_stderr(std::string_view text);
bool stderr_is_terminal();
/// Sets a variable in our environment, which a command started afterwards inherits.
void set_environment(char const* name, std::string const& value);
std::tm utc_parts(std::time_t seconds);
/// While the command with this pid runs: signals for it reach it, and we stay to release the lock.
void forward_signals_to_child(int pid);
void child_ended();
/// The program a command names: a path as it is, else found in PATH (on Windows also with ".exe"); empty
/// when there is none.
std::filesystem::path find_program(std::string const& name);
/// The ended command's native status: Boost's, or on Windows the process handle's exit code (Boost 1.81 can
/// still report STILL_ACTIVE after a wait).
int native_exit_status(int boost_status, void* process_handle);
/// Puts stdout and stderr in binary mode where the C library would turn "\n" into "\r\n" (Windows): the
/// output is the same on every OS.
void use_binary_stdio();
/// The command's status as a shell shows it: its exit code, 128 + the signal that killed it (POSIX).
int exit_status_of(int native_status);

int run_command(std::span<char* const> arguments);
int status_command(std::span<char* const> arguments);
int break_command(std::span<char* const> arguments);

} // namespace openlock::cli
