// `openlock run`: acquire, run the command with Boost.Process, release; the command's status is ours.
#include "cli.hpp"

// Boost 1.81 Process v2 with std::filesystem needs boost::optional and the boost type traits in scope first.
#include <boost/optional.hpp>
#include <boost/type_traits.hpp>

#include <boost/asio/io_context.hpp>
#include <boost/process/v2/process.hpp>
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

namespace bp = boost::process::v2;
using clock = std::chrono::steady_clock;

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

int run_child(std::vector<std::string> const& command) {
    auto const program = find_program(command.front());
    if (program.empty() || !std::filesystem::exists(program)) {
        complain(command.front() + ": command not found");
        return command_not_found;
    }
    boost::asio::io_context context;
    std::vector<std::string> const arguments(command.begin() + 1, command.end());
    boost::system::error_code error;
    bp::process child{context, program, arguments};
    forward_signals_to_child(child.id());
    child.wait(error);
#ifdef _WIN32
    auto const status = native_exit_status(static_cast<int>(child.native_exit_code()), child.native_handle());
#else
    auto const status = child.native_exit_code();
#endif
    child_ended();
    if (error) {
        complain(command.front() + ": " + error.message());
        return not_executable;
    }
    return exit_status_of(status);
}

} // namespace

int run_command(std::span<char* const> arguments) {
    auto const request = parse(arguments);
    std::optional<file_lock> constructed;
    try {
        auto settings = get_defaults();
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
        constructed.emplace(request.lock_file, std::nullopt, std::move(settings));
    } catch (invalid_option const& e) {
        throw usage(std::string{"run: "} + e.what());
    }
    auto& lock = *constructed;
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
            complain(e.what());
            return cannot_lock;
        }
    }
    shown.done();
    if (request.verbose)
        complain("acquired " + request.lock_file.string() + " after " + seconds_text(clock::now() - started));

    int status = 0;
    try {
        if (auto const token = lock.token(); token != 0)
            set_environment("OPENLOCK_TOKEN", std::to_string(token)); // the child inherits our environment
        status = run_child(request.command);
    } catch (std::exception const& e) {
        complain(request.command.front() + ": " + e.what());
        status = not_executable;
    }
    std::error_code error;
    lock.release(error);
    if (error)
        complain("warning: " + request.lock_file.string() + ": " + error.message() +
                 " while the command ran");
    return status;
}

} // namespace openlock::cli
