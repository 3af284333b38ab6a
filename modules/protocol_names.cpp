// SPDX-License-Identifier: MIT
// The names the protocol makes and how it reaches them: nonces, helper names ("<stem>.takeover", ...), the
// lock's directory (docs/protocol.md 2, 2.1, 2.2), and the exact removal every cleanup step uses.
module;
#include <algorithm>
#include <array>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

module openlock;
import :protocol;
import :protocol_internals;
import :sys;

namespace openlock::detail {

namespace fs = std::filesystem;

// A nonce: 128 random bits as 32 lowercase hex digits (docs/protocol.md 3).
std::string random_nonce() {
    static constexpr char digits[] = "0123456789abcdef";
    auto const bytes = sys::random_128_bits();
    std::string text(2 * bytes.size(), '0');
    for (std::size_t i = 0; i < bytes.size(); ++i) {
        text[2 * i] = digits[bytes[i] >> 4];
        text[2 * i + 1] = digits[bytes[i] & 0xf];
    }
    return text;
}

bool is_nonce(std::string_view text) {
    return text.size() == 32 && text.find_first_not_of("0123456789abcdef") == std::string_view::npos;
}

// The stem of helper names: the lock's file name, or for a name too long to take the longest suffix
// (".takeover." + 32-hex nonce, 42 bytes) within NAME_MAX, a prefix of it plus a hash of all of it.
std::string helper_stem(fs::path const& lock_file) {
    constexpr std::size_t longest_plain = 255 - 42;
    auto name = sys::name_text(lock_file.filename()); // not const: returned by move
    if (name.size() <= longest_plain) return name;
    std::uint64_t hash = 14695981039346656037ull; // FNV-1a
    for (unsigned char const c : name)
        hash = (hash ^ c) * 1099511628211ull;
    static constexpr char digits[] = "0123456789abcdef";
    std::string tail(17, '~');
    for (int i = 16; i >= 1; --i, hash >>= 4)
        tail[static_cast<std::size_t>(i)] = digits[hash & 0xf];
    return name.substr(0, longest_plain - tail.size()) + tail;
}

std::string helper_name(fs::path const& lock_file, std::string const& suffix) {
    return helper_stem(lock_file) + suffix;
}

fs::path guard_path(fs::path const& lock_file) {
    return sys::at_path(lock_file.parent_path()) / helper_name(lock_file, ".takeover");
}

fs::path token_path(fs::path const& lock_file) {
    return sys::at_path(lock_file.parent_path()) / helper_name(lock_file, ".token");
}

std::string name_of(fs::path const& lock_file) {
    return sys::name_text(lock_file.filename());
}

// The lock's directory, resolved by path on every call: for the hot steps on the lock file itself (a look, a
// claim, a release), which name nothing below a name in the directory (docs/protocol.md 2.2).
sys::directory by_path(fs::path const& lock_file) {
    return sys::at_path(lock_file.parent_path());
}

// The lock's directory opened once, for the steps that list it or reach into a directory inside it (the
// guard, staging directories, the sweep, the token).
bool open_lock_directory(fs::path const& lock_file, sys::directory& out, failure& error) {
    if (auto const code = sys::open_directory(lock_file.parent_path(), out)) {
        error = {code, lock_file.parent_path(), "cannot open the lock's directory"};
        return false;
    }
    return true;
}

// Whether something (anything) stands at the lock path now.
bool name_taken(fs::path const& lock_file) {
    sys::file_identity ignored;
    return !sys::identify(by_path(lock_file), name_of(lock_file), ignored);
}

// Removes `name` from `at` if it is still the file that was read (`seen`), never another one swapped in.
std::error_code remove_if_unchanged(sys::directory const& at, std::string const& name,
                                    sys::file_identity const& seen) {
    sys::file_identity now;
    if (auto const code = sys::identify(at, name, now)) return code;
    if (now != seen) return std::make_error_code(std::errc::device_or_resource_busy);
    return sys::remove_file(at, name);
}

} // namespace openlock::detail
