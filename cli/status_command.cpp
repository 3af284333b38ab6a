// SPDX-License-Identifier: MIT
// `openlock status` and `openlock break`: look at a lock from outside, and remove a stale one.
#include "cli.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

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

// The length of the well-formed UTF-8 sequence at the start of text (RFC 3629: no overlong forms, no
// surrogates, at most U+10FFFF); 0 when its first byte starts none.
std::size_t utf8_length(std::string_view text) {
    auto const byte = [text](std::size_t at) {
        return at < text.size() ? static_cast<unsigned char>(text[at]) : 0u;
    };
    auto const in = [](unsigned value, unsigned low, unsigned high) { return value >= low && value <= high; };
    auto const lead = byte(0);
    if (lead < 0x80) return 1;
    if (in(lead, 0xc2, 0xdf)) return in(byte(1), 0x80, 0xbf) ? 2 : 0;
    if (in(lead, 0xe0, 0xef)) {
        bool const second = in(byte(1), lead == 0xe0 ? 0xa0 : 0x80, lead == 0xed ? 0x9f : 0xbf);
        return second && in(byte(2), 0x80, 0xbf) ? 3 : 0;
    }
    if (in(lead, 0xf0, 0xf4)) {
        bool const second = in(byte(1), lead == 0xf0 ? 0x90 : 0x80, lead == 0xf4 ? 0x8f : 0xbf);
        return second && in(byte(2), 0x80, 0xbf) && in(byte(3), 0x80, 0xbf) ? 4 : 0;
    }
    return 0;
}

// Always valid UTF-8 JSON, whatever bytes a record holds: control characters (C0, DEL and C1) as \u00XX, and
// each byte that is not part of well-formed UTF-8 as U+FFFD (\ufffd), as a UTF-8 decoder replaces it.
std::string json_string(std::string_view text) {
    std::string out = "\"";
    auto const escape = [&out](unsigned code) {
        char escaped[8];
        std::snprintf(escaped, sizeof escaped, "\\u%04x", code);
        out += escaped;
    };
    for (std::size_t at = 0; at < text.size();) {
        auto const length = utf8_length(text.substr(at));
        auto const lead = static_cast<unsigned char>(text[at]);
        if (length == 0) {
            escape(0xfffd);
            ++at;
            continue;
        }
        if (length == 2 && lead == 0xc2 && static_cast<unsigned char>(text[at + 1]) < 0xa0) {
            escape(static_cast<unsigned char>(text[at + 1])); // U+0080 to U+009F: C1 control characters
        } else if (lead < 0x20 || lead == 0x7f) {
            escape(lead);
        } else if (lead == '"' || lead == '\\') {
            out += '\\';
            out += static_cast<char>(lead);
        } else {
            out.append(text.substr(at, length));
        }
        at += length;
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
        if (record.process_group) out += ",\"process_group\":" + std::to_string(*record.process_group);
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
        return name + ": invalid: " + displayable(status.problem);
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

namespace {

// What a lock was, in words, for a break that could not remove it.
std::string what_it_was(lock_status const& status) {
    switch (status.state) {
    case lock_state::invalid:
        return "not a lock record (" + displayable(status.problem) + ")";
    case lock_state::stale:
        return "the stale lock of " + describe_holder(*status.record);
    case lock_state::ours_expired:
    case lock_state::theirs_expired:
        return "the expired lock of " + describe_holder(*status.record);
    case lock_state::unknown:
        return "the lock of " + describe_holder(*status.record) + ", which cannot be judged here";
    case lock_state::unlocked:
        return "unlocked";
    default:
        return "the live lock of " + describe_holder(*status.record);
    }
}

} // namespace

int break_command(std::span<char* const> arguments) {
    auto const request = parse(arguments, "break", "--force");
    auto const before = inspect(request.lock_file);
    // What the library says it removed is what we say: a message never claims a removal that did not happen.
    std::vector<diagnostic> said;
    auto settings = get_defaults();
    settings.on_diagnostic = [&said](diagnostic const& what) { said.push_back(what); };
    auto const tell_leftovers = [&said] {
        std::vector<std::filesystem::path> told; // a guard tried twice is told once
        for (auto const& what : said) {
            if (what.what != diagnostic::kind::leftover_removed ||
                std::find(told.begin(), told.end(), what.path) != told.end())
                continue;
            told.push_back(what.path);
            std::error_code ignored;
            auto const path = displayable(what.path.string());
            if (std::filesystem::exists(std::filesystem::symlink_status(what.path, ignored)))
                complain(path + " is still there (" + displayable(what.detail) +
                         "): it could not be removed, or another process made it anew");
            else
                complain("removed " + path + " (" + displayable(what.detail) + ")");
        }
    };
    break_result result{};
    try {
        result = break_lock(request.lock_file, request.flag, settings);
    } catch (invalid_lock_file const&) {
        throw; // main: "not a lock file"
    } catch (lock_error const& e) {
        tell_leftovers();
        // The library's message says what stood in the way (a guard, the token file) and whose it is.
        complain("cannot remove " + request.lock_file.string() + ", " + what_it_was(before) + " (" +
                 displayable(e.what()) + ")");
        return cannot_lock;
    }
    tell_leftovers();
    switch (result) {
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
            complain(request.lock_file.string() + ": " + displayable(before.problem) +
                     (request.flag || !garbage ? "; not removed"
                                               : "; not removed (use --force for a garbage file)"));
            return invalid_lock;
        }
        complain(as_text(request.lock_file, before) + "; not removed (use --force to remove a live lock)");
        return refused;
    case break_result::removed:
        break;
    }
    // The record the library removed; when it is not the one we looked at first (it changed in between),
    // it is named as the library names it.
    auto const removed = std::find_if(said.begin(), said.end(), [](diagnostic const& what) {
        return what.what == diagnostic::kind::stale_lock_removed ||
               what.what == diagnostic::kind::expired_lock_broken;
    });
    bool const as_seen = removed == said.end() || !before.record ||
                         removed->detail.find(describe_holder(*before.record)) != std::string::npos;
    if (!as_seen) {
        complain("warning: removed " + request.lock_file.string() + ", which changed while we looked (" +
                 displayable(removed->detail) + ")");
    } else if (before.state == lock_state::stale) {
        std::puts(("removed the stale lock of " + describe_holder(*before.record)).c_str());
    } else if (before.state == lock_state::theirs_expired || before.state == lock_state::ours_expired) {
        std::puts(("removed the expired lock of " + describe_holder(*before.record)).c_str());
    } else if (before.state == lock_state::invalid) {
        complain("warning: removed " + request.lock_file.string() + ", which held no lock record (" +
                 displayable(before.problem) + ")");
    } else {
        complain("warning: removed " + as_text(request.lock_file, before) +
                 "; its holder may still be running");
    }
    return success;
}

} // namespace openlock::cli
