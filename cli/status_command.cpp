// `openlock status` and `openlock break`: look at a lock from outside, and remove a stale one.
#include "cli.hpp"

#include <chrono>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <span>
#include <string>

import openlock;

namespace openlock::cli {
namespace {

struct target {
    std::filesystem::path lock_file;
    bool flag = false;
};

target parse(std::span<char* const> arguments, std::string_view command, std::string_view flag) {
    target parsed;
    for (std::string_view const argument : arguments) {
        if (argument == flag) {
            parsed.flag = true;
        } else if (argument.starts_with("-") && argument.size() > 1) {
            throw usage(std::string{command} + ": unknown option '" + std::string{argument} + "'");
        } else if (parsed.lock_file.empty()) {
            parsed.lock_file = argument;
        } else {
            throw usage(std::string{command} + ": one LOCKFILE only");
        }
    }
    if (parsed.lock_file.empty()) throw usage(std::string{command} + ": LOCKFILE is missing");
    return parsed;
}

std::string json_string(std::string_view text) {
    std::string out = "\"";
    for (char const c : text) {
        auto const byte = static_cast<unsigned char>(c);
        if (c == '"' || c == '\\') {
            out += '\\';
            out += c;
        } else if (byte < 0x20) {
            char escaped[8];
            std::snprintf(escaped, sizeof escaped, "\\u%04x", byte);
            out += escaped;
        } else {
            out += c;
        }
    }
    return out + "\"";
}

std::string utc_time(std::chrono::system_clock::time_point when) {
    auto const seconds = std::chrono::system_clock::to_time_t(when);
    auto const parts = utc_parts(seconds);
    char text[32];
    std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", &parts);
    return text;
}

// The CLI's five states: the library's ours/theirs/unknown are all "held", ours/theirs_expired "expired".
char const* cli_state(lock_state state) {
    switch (state) {
    case lock_state::unlocked:
        return "unlocked";
    case lock_state::stale:
        return "stale";
    case lock_state::ours_expired:
    case lock_state::theirs_expired:
        return "expired";
    case lock_state::invalid:
        return "invalid";
    default:
        return "held";
    }
}

std::string as_json(std::filesystem::path const& lock_file, lock_status const& status) {
    std::string out = "{\"lock_file\":" + json_string(lock_file.string()) +
                      ",\"state\":" + json_string(cli_state(status.state)) +
                      ",\"judged\":" + json_string(to_string(status.state));
    if (status.record) {
        auto const& record = *status.record;
        out += ",\"pid\":" + std::to_string(record.pid) + ",\"name\":" + json_string(record.name) +
               ",\"host\":" + json_string(record.host) + ",\"boot_id\":" + json_string(record.boot_id) +
               ",\"pid_ns\":" + json_string(record.pid_namespace) +
               ",\"version\":" + std::to_string(record.version) +
               ",\"format\":" + json_string(record.format == lock_format::flufl ? "flufl" : "openlock");
        if (record.start_time) out += ",\"start_time\":" + std::to_string(*record.start_time);
        if (record.acquired) out += ",\"acquired\":" + json_string(utc_time(*record.acquired));
        if (record.lifetime)
            out += ",\"lifetime\":" + std::to_string(std::chrono::duration<double>(*record.lifetime).count());
        if (status.expires) out += ",\"expires\":" + json_string(utc_time(*status.expires));
        if (record.token) out += ",\"token\":" + std::to_string(*record.token);
    }
    if (!status.problem.empty()) out += ",\"problem\":" + json_string(status.problem);
    return out + "}";
}

std::string as_text(std::filesystem::path const& lock_file, lock_status const& status) {
    auto const name = lock_file.string();
    switch (status.state) {
    case lock_state::unlocked:
        return name + ": unlocked";
    case lock_state::invalid:
        return name + ": invalid: " + status.problem;
    default:
        break;
    }
    auto const& record = *status.record;
    std::string since = record.acquired ? " since " + utc_time(*record.acquired) : "";
    if (status.expires) since += ", lease ends " + utc_time(*status.expires);
    if (record.token) since += ", token " + std::to_string(*record.token);
    switch (status.state) {
    case lock_state::ours_expired:
    case lock_state::theirs_expired:
        return name + ": expired: the lease of " + describe_holder(record) + since +
               " has run out; the next acquire breaks it";
    case lock_state::stale:
        return name + ": stale: " + describe_holder(record) + " is gone" + since;
    case lock_state::unknown:
        return name + ": held by " + describe_holder(record) + since +
               " (another host, boot or pid namespace: cannot be judged here)";
    default:
        return name + ": held by " + describe_holder(record) + since;
    }
}

} // namespace

int status_command(std::span<char* const> arguments) {
    auto const request = parse(arguments, "status", "--json");
    std::error_code error;
    auto const status = inspect(request.lock_file, error);
    if (error) {
        complain(request.lock_file.string() + ": " + error.message());
        return cannot_lock;
    }
    auto const text = request.flag ? as_json(request.lock_file, status) : as_text(request.lock_file, status);
    std::puts(text.c_str());
    return success;
}

int break_command(std::span<char* const> arguments) {
    auto const request = parse(arguments, "break", "--force");
    auto const before = inspect(request.lock_file);
    auto settings = get_defaults();
    settings.on_diagnostic = [](diagnostic const& said) {
        if (said.what == diagnostic::kind::leftover_removed)
            complain("removed " + said.path.string() + " (" + said.detail + ")");
    };
    switch (break_lock(request.lock_file, request.flag, settings)) {
    case break_result::nothing_to_break:
        std::puts((request.lock_file.string() + ": unlocked, nothing to break").c_str());
        return success;
    case break_result::busy:
        complain(request.lock_file.string() + ": another process is taking the lock over; try again" +
                 (request.flag ? ""
                               : " (--force removes a takeover guard left for over a minute by a process "
                                 "not alive here, such as a crash on another host)"));
        return timed_out;
    case break_result::refused:
        if (before.state == lock_state::invalid) {
            bool const garbage = std::filesystem::symlink_status(request.lock_file).type() ==
                                 std::filesystem::file_type::regular; // --force never removes anything else
            complain(request.lock_file.string() + ": " + before.problem +
                     (request.flag || !garbage ? "; not removed"
                                               : "; not removed (use --force for a garbage file)"));
            return invalid_lock;
        }
        complain(as_text(request.lock_file, before) + "; not removed (use --force to remove a live lock)");
        return refused;
    case break_result::removed:
        break;
    }
    if (before.state == lock_state::stale) {
        std::puts(("removed the stale lock of " + describe_holder(*before.record)).c_str());
    } else if (before.state == lock_state::theirs_expired || before.state == lock_state::ours_expired) {
        std::puts(("removed the expired lock of " + describe_holder(*before.record)).c_str());
    } else if (before.state == lock_state::invalid) {
        complain("warning: removed " + request.lock_file.string() + ", which held no lock record (" +
                 before.problem + ")");
    } else {
        complain("warning: removed " + as_text(request.lock_file, before) +
                 "; its holder may still be running");
    }
    return success;
}

} // namespace openlock::cli
