// SPDX-License-Identifier: MIT
// `openlock run`: start the command held back, acquire naming its process group, let it run, release; the
// command's status is ours.
#include "cli.hpp"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <vector>

import openlock;

namespace openlock::cli {
namespace {

using clock = std::chrono::steady_clock;

constexpr double shortest_lifetime_seconds = 0.1;

struct run_request {
    std::optional<double> timeout_seconds;
    std::optional<double> lifetime_seconds;
    lock_format format = lock_format::openlock;
    bool verbose = false;
    std::filesystem::path lock_file;
    std::vector<std::string> command;
};

run_request parse(std::span<char* const> arguments) {
    run_request request;
    std::size_t i = 0;
    for (; i < arguments.size(); ++i) {
        std::string_view const argument = arguments[i];
        if (argument == "--") break;
        if (argument == "--timeout" || argument == "-t") {
            if (++i == arguments.size()) throw usage("--timeout needs a number of seconds");
            request.timeout_seconds = parse_seconds("--timeout", arguments[i]);
        } else if (argument.starts_with("--timeout=")) {
            request.timeout_seconds = parse_seconds("--timeout", argument.substr(10));
        } else if (argument == "--lifetime" || argument == "-l") {
            if (++i == arguments.size()) throw usage("--lifetime needs a number of seconds");
            request.lifetime_seconds = parse_seconds("--lifetime", arguments[i]);
        } else if (argument.starts_with("--lifetime=")) {
            request.lifetime_seconds = parse_seconds("--lifetime", argument.substr(11));
        } else if (argument == "--format" || argument.starts_with("--format=")) {
            std::string_view value;
            if (argument == "--format") {
                if (++i == arguments.size()) throw usage("--format needs openlock or flufl");
                value = arguments[i];
            } else {
                value = argument.substr(9);
            }
            if (value == "flufl")
                request.format = lock_format::flufl;
            else if (value != "openlock")
                throw usage("--format must be openlock or flufl, not '" + std::string{value} + "'");
        } else if (argument == "--verbose" || argument == "-v") {
            request.verbose = true;
        } else if (argument.starts_with("-") && argument.size() > 1) {
            throw usage("run: unknown option '" + std::string{argument} + "'");
        } else if (request.lock_file.empty()) {
            request.lock_file = argument;
        } else {
            throw usage("run: put '--' between LOCKFILE and the command");
        }
    }
    // Keep-alive refreshes every third of the lifetime: a shorter lease would have it spin.
    if (request.lifetime_seconds && *request.lifetime_seconds < shortest_lifetime_seconds)
        throw usage("--lifetime must be at least 0.1 s");
    if (request.lock_file.empty()) throw usage("run: LOCKFILE is missing");
    if (i == arguments.size() || i + 1 == arguments.size())
        throw usage("run: the command after '--' is missing");
    for (++i; i < arguments.size(); ++i)
        request.command.emplace_back(arguments[i]);
    return request;
}

std::string seconds_text(clock::duration waited) {
    char text[32];
    std::snprintf(text, sizeof text, "%.1f s", std::chrono::duration<double>(waited).count());
    return text;
}

// Shows who holds the lock while we wait: rewritten in place on a terminal, a line every 10 s otherwise.
class progress {
public:
    progress(bool enabled, std::filesystem::path const& lock_file)
        : enabled_(enabled), terminal_(stderr_is_terminal()), lock_file_(lock_file.string()) {}

    void waiting(std::string const& holder, clock::duration waited) {
        if (!enabled_) return;
        auto const now = clock::now();
        bool const due = terminal_ || holder != last_holder_ || now - last_line_ >= std::chrono::seconds{10};
        if (!due) return;
        auto line = "waiting for " + lock_file_ + ", held by " + (holder.empty() ? "?" : holder) + ", " +
                    seconds_text(waited);
        if (terminal_) {
            line = "\r\033[Kopenlock: " + line;
            write_stderr(line);
            shown_ = true;
        } else {
            complain(line);
        }
        last_holder_ = holder;
        last_line_ = now;
    }

    void done() {
        if (!shown_) return;
        write_stderr("\r\033[K");
    }

private:
    bool enabled_;
    bool terminal_;
    bool shown_ = false;
    std::string lock_file_;
    std::string last_holder_;
    clock::time_point last_line_{};
};

// The lock path holds something that is not a lock record's file (a directory, /proc/self/status): what
// made the claim fail is that, not the OS. Empty when it is not so.
std::string not_a_lock_file(std::filesystem::path const& lock_file) {
    std::error_code error;
    auto const status = inspect(lock_file, error);
    if (error || status.state != lock_state::invalid) return {};
    return lock_file.string() + ": " + status.problem;
}

// The library's message says what stood in the way (the token file of another user, a full disk) and whose it
// is; the command's own status is still said.
std::string release_failure(std::filesystem::path const& lock_file, lock_error const& failure, int status) {
    auto const command_said = "the command exited with " + std::to_string(status);
    if (failure.code() == make_error_code(errc::not_locked))
        return "lost the lock " + lock_file.string() +
               " while the command ran (it was broken or replaced; nothing of ours is left behind); " +
               command_said;
    return "cannot release " + lock_file.string() + " (" + displayable(failure.what()) +
           "); the lock file is left behind (stale once openlock has exited); " + command_said;
}

} // namespace

int run_command(std::span<char* const> arguments) {
    auto const request = parse(arguments);
    auto settings = get_defaults();
    try {
        settings.format = request.format;
        if (request.lifetime_seconds) {
            settings.lifetime = std::chrono::ceil<std::chrono::nanoseconds>(
                std::chrono::duration<double>(std::min(*request.lifetime_seconds, 3e8)));
        }
        if (effective_lifetime(settings)) {
            // A lease (flufl's format always has one) kept alive while the command runs; losing it (we were
            // frozen past it, or someone broke it) is said at once: the command may no longer be alone.
            settings.keep_alive = true;
            // The command gets OPENLOCK_TOKEN to hand to what it protects; flufl's lock file has no room for
            // a token.
            settings.fencing = request.format == lock_format::openlock;
            settings.on_lost = [](std::filesystem::path const& lost) {
                complain("warning: lost the lock " + lost.string() +
                         " while the command runs (its lease was broken or the file replaced)");
            };
        }
        validate(settings);
    } catch (invalid_option const& e) {
        throw usage(std::string{"run: "} + e.what());
    }

    // The command first, held back (cli/command.cpp): the lock names its process group, so that the lock
    // stays held while the command runs even when openlock is killed. Until run(), nothing of it has run,
    // and leaving (a timeout, an error) kills it.
    // Declared first, destroyed last: whatever happens, the command's group has ended before the lock goes.
    std::optional<file_lock> held;
    std::optional<held_command> command;
    try {
        command.emplace(request.command);
    } catch (command_failure const& e) {
        complain(e.what());
        return e.status;
    }
    settings.process_group = command->process_group();
    auto& lock = held.emplace(request.lock_file, std::nullopt, std::move(settings));

    auto const started = clock::now();
    std::optional<clock::time_point> deadline;
    constexpr double forever =
        100.0 * 365 * 24 * 3600; // longer than that is no deadline (and would overflow)
    if (request.timeout_seconds && *request.timeout_seconds < forever)
        deadline = started + std::chrono::ceil<clock::duration>(
                                 std::chrono::duration<double>(*request.timeout_seconds));

    progress shown{request.verbose || stderr_is_terminal(), request.lock_file};
    constexpr auto slice = std::chrono::milliseconds{250};
    for (;;) {
        auto wait = std::chrono::duration_cast<clock::duration>(slice);
        if (deadline) wait = std::max(clock::duration::zero(), std::min(wait, *deadline - clock::now()));
        try {
            lock.acquire(wait);
            break;
        } catch (timeout_error const& e) {
            if (deadline && clock::now() >= *deadline) {
                shown.done();
                complain("timed out after " + seconds_text(clock::now() - started) + " waiting for " +
                         request.lock_file.string() + (e.holder().empty() ? "" : ", held by " + e.holder()));
                return timed_out;
            }
            shown.waiting(e.holder(), clock::now() - started);
        } catch (invalid_option const& e) {
            shown.done();
            complain(e.what());
            return usage_error;
        } catch (invalid_lock_file const& e) {
            shown.done();
            complain(e.what());
            return invalid_lock;
        } catch (lock_error const& e) {
            shown.done();
            if (auto const problem = not_a_lock_file(request.lock_file); !problem.empty()) {
                complain(problem);
                return invalid_lock;
            }
            complain(e.what());
            return cannot_lock;
        }
    }
    shown.done();
    if (request.verbose)
        complain("acquired " + request.lock_file.string() + " after " + seconds_text(clock::now() - started));

    // run() returns once the command (and on POSIX its whole group) has ended; should it throw, the command
    // object kills and waits for the group before the lock below is released.
    auto const status = command->run(lock.token());
    command.reset();
    try {
        lock.release();
    } catch (lock_error const& failure) {
        complain(release_failure(request.lock_file, failure, status));
        return release_failed;
    }
    return status;
}

} // namespace openlock::cli
