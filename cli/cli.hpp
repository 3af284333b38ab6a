// SPDX-License-Identifier: MIT
// The openlock command-line tool: shared declarations of its sub-commands.
#pragma once

#include <cstdint>
#include <ctime>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace openlock::cli {

/// Exit statuses of openlock's own failures (the command's status passes through `run` unchanged).
enum exit_status : int {
    success = 0,
    refused = 1,       // `break` would remove a live lock without --force
    usage_error = 64,  // EX_USAGE
    invalid_lock = 65, // EX_DATAERR: the lock path holds no lock record
    cannot_lock = 73,  // EX_CANTCREAT: an OS error creating or reading the lock file
    release_failed =
        74,         // EX_IOERR: `run` could not release the lock after the command (it may be left behind)
    timed_out = 75, // EX_TEMPFAIL
    not_executable = 126,
    command_not_found = 127,
};

/// Thrown for bad command lines; main prints "openlock: <message>" and exits with usage_error.
struct usage : std::runtime_error {
    using std::runtime_error::runtime_error;
};

/// Seconds as given on the command line ("5", "0.5"); usage on anything else or a negative value. A number
/// too small for a double (1e-400) is 0, one too large (1e400) the largest double.
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
/// While the command runs: SIGINT, SIGTERM, SIGHUP and SIGQUIT for us go to it (POSIX: kill(target, ...),
/// a negative target being the command's process group), and we stay to release the lock.
void forward_signals_to_command(int target);
void command_ended();
/// Opens /dev/null on whichever of descriptors 0, 1 and 2 is closed (POSIX), so that no file of ours gets
/// those numbers: what anything writes to "stderr" would land in it (a lock record).
void open_missing_standard_streams();
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

/// The command cannot be started; what to say and the exit status (command_not_found, not_executable).
struct command_failure : std::runtime_error {
    command_failure(std::string const& message, int status) : std::runtime_error(message), status(status) {}
    int status;
};

/// The command of `openlock run` (cli/command.cpp), started held back so that the lock can name its process
/// group: on POSIX forked at once into a group of its own, where it waits until run() lets it exec; on
/// Windows (no groups) started by run(). Throws command_failure when it cannot be started (not found, a
/// directory, no descriptors or processes left): then nothing ran.
class held_command {
public:
    explicit held_command(std::vector<std::string> const& command);
    held_command(held_command const&) = delete;
    held_command& operator=(held_command const&) = delete;
    /// abandon().
    ~held_command();
    /// The group to name in the lock record (options::process_group); none on Windows.
    [[nodiscard]] std::optional<std::int64_t> process_group() const;
    /// Lets the command run, with OPENLOCK_TOKEN=token unless token is 0, with the terminal's foreground and
    /// our signals; returns once it has ended and (POSIX) its process group has no member left. Its status as
    /// a shell shows it, or command_not_found / not_executable when it could not be executed (said on
    /// stderr).
    int run(std::uint64_t token);
    /// Kills a command that was not run to its end (its whole group) and waits until the group is empty.
    void abandon() noexcept;

private:
    struct impl;
    std::unique_ptr<impl> impl_;
};

int run_command(std::span<char* const> arguments);
int status_command(std::span<char* const> arguments);
int break_command(std::span<char* const> arguments);

} // namespace openlock::cli
