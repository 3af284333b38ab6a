// SPDX-License-Identifier: MIT
// The on-disk record (docs/protocol.md 3, 11.9): parse_record and serialize_record, pure and fuzzed, and
// describe_holder for messages. Helpers first; parse_record, serialize_record and describe_holder below.
module;
#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

module openlock;

namespace openlock {
namespace {

constexpr std::int64_t largest_pid = 4294967295; // DWORD on Windows; Linux pid_max is far below
constexpr std::size_t most_lines = 64;

struct line_reader {
    std::string_view rest;
    std::optional<std::string_view> next() {
        if (rest.empty()) return std::nullopt;
        auto const end = rest.find('\n');
        auto const line = rest.substr(0, end);
        rest.remove_prefix(end == std::string_view::npos ? rest.size() : end + 1);
        return line;
    }
};

template <class Integer>
bool parse_decimal(std::string_view text, Integer& out) {
    if (text.empty() || text.size() > 20 ||
        !std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; }))
        return false;
    auto const [end, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
    return ec == std::errc{} && end == text.data() + text.size();
}

bool valid_key(std::string_view key) {
    return !key.empty() && key.size() <= 64 && std::all_of(key.begin(), key.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
    });
}

// "<seconds>[.<9 digits>]": a time since the epoch or a length of time.
std::optional<std::chrono::nanoseconds> parse_seconds(std::string_view text) {
    auto const dot = text.find('.');
    std::int64_t seconds = 0;
    std::int64_t nanoseconds = 0;
    // system_clock counts nanoseconds in 64 bits on common platforms: beyond ~2262 it cannot hold the time.
    constexpr std::int64_t latest = 9'223'372'035;
    if (!parse_decimal(text.substr(0, dot), seconds) || seconds > latest) return std::nullopt;
    if (dot != std::string_view::npos) {
        auto const fraction = text.substr(dot + 1);
        if (fraction.size() != 9 || !parse_decimal(fraction, nanoseconds)) return std::nullopt;
    }
    return std::chrono::seconds{seconds} + std::chrono::nanoseconds{nanoseconds};
}

std::optional<std::chrono::system_clock::time_point> parse_time(std::string_view text) {
    auto const since_epoch = parse_seconds(text);
    if (!since_epoch) return std::nullopt;
    return std::chrono::system_clock::time_point{
        std::chrono::duration_cast<std::chrono::system_clock::duration>(*since_epoch)};
}

std::string format_seconds(std::chrono::nanoseconds length) {
    auto const seconds = length.count() / 1'000'000'000;
    auto fraction = std::to_string(length.count() % 1'000'000'000);
    fraction.insert(0, 9 - fraction.size(), '0');
    return std::to_string(seconds) + "." + fraction;
}

std::string format_time(std::chrono::system_clock::time_point when) {
    return format_seconds(std::chrono::duration_cast<std::chrono::nanoseconds>(when.time_since_epoch()));
}

std::string printable(std::string_view text) {
    std::string out{text};
    std::replace_if(out.begin(), out.end(), [](char c) { return c == '\n' || c == '\0'; }, '?');
    return out;
}

parsed_record failure(record_status status, std::string problem) {
    return {status, {}, std::move(problem)};
}

// flufl.lock 5 (Lock._set_claimfile, Lock.details): the lock file holds its claim file's path and nothing
// else, "<lock path><sep><host><sep><pid><sep><random>", split on the separator into exactly four parts. The
// separator is the character before the trailing random digits.
std::optional<lock_record> parse_flufl_claim(std::string_view text) {
    if (text.find_first_of(std::string_view{"\n\0", 2}) != std::string_view::npos) return std::nullopt;
    auto const last_non_digit = text.find_last_not_of("0123456789");
    if (last_non_digit == std::string_view::npos || last_non_digit + 1 == text.size()) return std::nullopt;
    char const separator = text[last_non_digit];
    if (!valid_flufl_separator(separator)) return std::nullopt;
    std::vector<std::string_view> parts;
    for (std::string_view rest = text;;) {
        auto const end = rest.find(separator);
        parts.push_back(rest.substr(0, end));
        if (end == std::string_view::npos || parts.size() > 4) break;
        rest.remove_prefix(end + 1);
    }
    lock_record record;
    std::uint64_t random = 0;
    if (parts.size() != 4 || parts[0].empty() || parts[1].empty() || !parse_decimal(parts[2], record.pid) ||
        record.pid <= 0 || record.pid > largest_pid || !parse_decimal(parts[3], random))
        return std::nullopt;
    record.format = lock_format::flufl;
    record.host = std::string{parts[1]};
    record.nonce = std::string{parts[3]};
    record.claim_file = std::string{text};
    return record;
}

} // namespace

bool valid_flufl_separator(char separator) noexcept {
    auto const c = static_cast<unsigned char>(separator);
    bool const punctuation =
        c > 0x20 && c < 0x7f && !(c >= '0' && c <= '9') && !(c >= 'a' && c <= 'z') && !(c >= 'A' && c <= 'Z');
    return punctuation && std::string_view{"/\\.-_"}.find(separator) == std::string_view::npos;
}

parsed_record parse_record(std::string_view text) {
    if (text.empty()) return failure(record_status::empty, "the lock file is empty");
    if (text.size() > max_record_size) return failure(record_status::too_large, "the lock file is too large");
    if (auto flufl = parse_flufl_claim(text)) return {record_status::ok, std::move(*flufl), {}};
    if (text.find('\0') != std::string_view::npos)
        return failure(record_status::malformed, "the lock file holds NUL bytes");
    if (text.back() != '\n')
        return failure(record_status::incomplete, "the lock record has no final newline");

    line_reader lines{text};
    parsed_record result{record_status::ok, {}, {}};
    auto& record = result.record;

    auto const pid_line = lines.next();
    if (!parse_decimal(*pid_line, record.pid) || record.pid <= 0 || record.pid > largest_pid)
        return failure(record_status::malformed, "the first line is not a process id");
    auto const name_line = lines.next();
    if (!name_line) return failure(record_status::incomplete, "the lock record has no process name");
    record.name = std::string{*name_line};

    std::size_t count = 2;
    std::vector<std::string_view> seen_keys;
    while (auto const line = lines.next()) {
        if (++count > most_lines)
            return failure(record_status::malformed, "the lock record has too many lines");
        auto const equals = line->find('=');
        if (equals == std::string_view::npos)
            return failure(record_status::malformed, "a line of the lock record is not key=value");
        auto const key = line->substr(0, equals);
        auto const value = line->substr(equals + 1);
        if (!valid_key(key))
            return failure(record_status::malformed, "a key of the lock record is not valid");
        if (std::find(seen_keys.begin(), seen_keys.end(), key) != seen_keys.end())
            return failure(record_status::malformed, "a key of the lock record repeats");
        seen_keys.push_back(key);

        if (key == "version") {
            if (!parse_decimal(value, record.version) || record.version < 1)
                return failure(record_status::malformed, "the version is not a positive number");
        } else if (key == "host") {
            record.host = value;
        } else if (key == "boot_id") {
            record.boot_id = value;
        } else if (key == "pid_ns") {
            record.pid_namespace = value;
        } else if (key == "start_time") {
            std::uint64_t ticks = 0;
            if (!parse_decimal(value, ticks))
                return failure(record_status::malformed, "the start time is not a number");
            record.start_time = ticks;
        } else if (key == "nonce") {
            record.nonce = value;
        } else if (key == "lifetime") {
            record.lifetime = parse_seconds(value);
            if (!record.lifetime || *record.lifetime <= std::chrono::nanoseconds::zero())
                return failure(record_status::malformed, "the lifetime is not a positive number of seconds");
        } else if (key == "token") {
            std::uint64_t number = 0;
            if (!parse_decimal(value, number) || number == 0)
                return failure(record_status::malformed, "the fencing token is not a positive number");
            record.token = number;
        } else if (key == "bell") {
            if (!parse_decimal(value, record.bell) || record.bell == 0)
                return failure(record_status::malformed, "the doorbell is not a positive number");
        } else if (key == "group") {
            std::int64_t group = 0;
            if (!parse_decimal(value, group) || group <= 0 || group > largest_pid)
                return failure(record_status::malformed, "the process group is not a process id");
            record.process_group = group;
        } else if (key == "group_start") {
            std::uint64_t ticks = 0;
            if (!parse_decimal(value, ticks))
                return failure(record_status::malformed, "the process group's start time is not a number");
            record.group_start_time = ticks;
        } else if (key == "acquired") {
            record.acquired = parse_time(value);
            if (!record.acquired)
                return failure(record_status::malformed, "the acquisition time is not valid");
        } else {
            record.extra.emplace_back(key, value);
        }
    }
    if (record.version == 0 && !seen_keys.empty())
        return failure(record_status::malformed, "the lock record has fields but no version");
    if (record.version >= 1 && record.nonce.empty())
        return failure(record_status::incomplete, "the lock record has no nonce");
    return result;
}

std::string serialize_record(lock_record const& record) {
    if (record.format == lock_format::flufl) return record.claim_file;
    std::string text;
    text.reserve(256);
    text += std::to_string(record.pid);
    text += '\n';
    text += printable(record.name);
    text += '\n';
    if (record.version == 0) return text;
    auto const field = [&text](std::string_view key, std::string_view value) {
        text += key;
        text += '=';
        text += printable(value);
        text += '\n';
    };
    field("version", std::to_string(record.version));
    field("host", record.host);
    field("boot_id", record.boot_id);
    field("pid_ns", record.pid_namespace);
    if (record.start_time) field("start_time", std::to_string(*record.start_time));
    field("nonce", record.nonce);
    if (record.acquired) field("acquired", format_time(*record.acquired));
    if (record.token && *record.token > 0) field("token", std::to_string(*record.token));
    if (record.lifetime && *record.lifetime > std::chrono::nanoseconds::zero())
        field("lifetime", format_seconds(*record.lifetime));
    if (record.bell > 0) field("bell", std::to_string(record.bell));
    if (record.process_group) field("group", std::to_string(*record.process_group));
    if (record.group_start_time) field("group_start", std::to_string(*record.group_start_time));
    for (auto const& [key, value] : record.extra)
        field(key, value);
    return text;
}

std::string displayable(std::string_view text) {
    std::string out;
    out.reserve(text.size());
    auto const escape = [&out](unsigned char byte) {
        constexpr char digits[] = "0123456789abcdef";
        out += "\\x";
        out += digits[byte >> 4];
        out += digits[byte & 0xf];
    };
    auto const byte_at = [text](std::size_t at) { return static_cast<unsigned char>(text[at]); };
    auto const continuation = [&](std::size_t at) {
        return at < text.size() && (byte_at(at) & 0xc0) == 0x80;
    };
    for (std::size_t at = 0; at < text.size();) {
        auto const lead = byte_at(at);
        if (lead < 0x20 || lead == 0x7f) {
            escape(lead);
            ++at;
            continue;
        }
        if (lead < 0x80) {
            out += static_cast<char>(lead);
            ++at;
            continue;
        }
        // The length of a well-formed UTF-8 sequence (RFC 3629: no overlong forms, no surrogates, at most
        // U+10FFFF); 0 for a byte that starts none.
        std::size_t length = 0;
        if (lead >= 0xc2 && lead <= 0xdf) {
            length = continuation(at + 1) ? 2 : 0;
        } else if (lead >= 0xe0 && lead <= 0xef) {
            auto const low = lead == 0xe0 ? 0xa0 : 0x80;
            auto const high = lead == 0xed ? 0x9f : 0xbf;
            length = at + 2 < text.size() && byte_at(at + 1) >= low && byte_at(at + 1) <= high &&
                             continuation(at + 2)
                         ? 3
                         : 0;
        } else if (lead >= 0xf0 && lead <= 0xf4) {
            auto const low = lead == 0xf0 ? 0x90 : 0x80;
            auto const high = lead == 0xf4 ? 0x8f : 0xbf;
            length = at + 3 < text.size() && byte_at(at + 1) >= low && byte_at(at + 1) <= high &&
                             continuation(at + 2) && continuation(at + 3)
                         ? 4
                         : 0;
        }
        if (length == 0) {
            escape(lead);
            ++at;
        } else if (length == 2 && lead == 0xc2 && byte_at(at + 1) < 0xa0) {
            escape(lead); // a C1 control character (U+0080 to U+009F): a terminal may act on it
            escape(byte_at(at + 1));
            at += 2;
        } else {
            out.append(text.substr(at, length));
            at += length;
        }
    }
    return out;
}

std::string describe_holder(lock_record const& record) {
    std::string text = "pid " + std::to_string(record.pid);
    if (!record.name.empty()) text += " (" + displayable(record.name) + ")";
    if (!record.host.empty()) text += " on host " + displayable(record.host);
    if (record.process_group) text += " with process group " + std::to_string(*record.process_group);
    if (record.format == lock_format::flufl) text += " (flufl.lock)";
    return text;
}

} // namespace openlock

namespace openlock::detail {

// The "lifetime=" line is never the first line (that is the pid); flufl.lock's record is one line with no
// newline.
bool is_lease_record(std::string_view bytes) noexcept {
    return bytes.find("\nlifetime=") != std::string_view::npos ||
           (!bytes.empty() && bytes.find('\n') == std::string_view::npos);
}

} // namespace openlock::detail
