// SPDX-License-Identifier: MIT
// Fencing tokens (docs/protocol.md 11.8): the highest token any acquisition of a lock has
// finished with, read from and recorded in "<stem>.token" beside it.
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

namespace {
bool read_last_token(sys::directory const& directory, fs::path const& lock_file, std::uint64_t& last,
                     failure& error);
void remove_token_leftovers(sys::directory const& directory, fs::path const& lock_file);
} // namespace

bool read_last_token(fs::path const& lock_file, std::uint64_t& last, failure& error) {
    return read_last_token(by_path(lock_file), lock_file, last, error);
}

// Under the guard: records `token` as the last one unless a later one is recorded already.
bool raise_last_token(sys::directory const& directory, fs::path const& lock_file, std::uint64_t token,
                      failure& error) {
    std::uint64_t last = 0;
    if (!read_last_token(directory, lock_file, last, error)) return false;
    if (last >= token) return true;
    remove_token_leftovers(directory, lock_file);
    auto const staged = helper_name(lock_file, ".token." + random_nonce());
    auto const name = helper_name(lock_file, ".token");
    sys::file_identity ignored;
    if (auto const code = sys::create_exclusive(directory, staged, std::to_string(token) + "\n", ignored)) {
        error = {code, directory / staged, "cannot write the fencing token"};
        return false;
    }
    if (auto const code = sys::replace_file(directory, staged, name)) {
        best_effort(sys::remove_file(directory, staged));
        sys::file_content standing;
        best_effort(sys::read_file(directory, name, 0, standing));
        error = {code, directory / name,
                 refused_by_permissions(code)
                     ? "cannot record the fencing token: " + permission_remedy(standing.owner)
                     : std::string{"cannot record the fencing token"}};
        return false;
    }
    return true;
}

namespace {

bool read_last_token(sys::directory const& directory, fs::path const& lock_file, std::uint64_t& last,
                     failure& error) {
    auto const name = helper_name(lock_file, ".token");
    sys::file_content content;
    if (auto const code = sys::read_file(directory, name, 64, content)) {
        error = {code, directory / name,
                 refused_by_permissions(code)
                     ? "cannot read the fencing token: " + permission_remedy(content.owner)
                     : std::string{"cannot read the fencing token"}};
        return false;
    }
    last = 0;
    if (content.kind == sys::entry_kind::absent) return true;
    std::string_view digits = content.bytes;
    if (digits.ends_with('\n')) digits.remove_suffix(1);
    auto const [end, code] = std::from_chars(digits.data(), digits.data() + digits.size(), last);
    // The largest value has no successor: a file that says so was not written by us.
    if (content.kind != sys::entry_kind::regular || digits.empty() || code != std::errc{} ||
        end != digits.data() + digits.size() || last == std::numeric_limits<std::uint64_t>::max()) {
        error = {errc::invalid_lock_file, directory / name, "the fencing token file does not hold a number"};
        return false;
    }
    return true;
}

// Under the guard: no other process writes the token file now, so a staged copy left there is a crash's.
void remove_token_leftovers(sys::directory const& directory, fs::path const& lock_file) {
    auto const prefix = helper_stem(lock_file) + ".token.";
    std::vector<std::string> names;
    if (sys::list_directory(directory, names)) return;
    for (auto const& name : names)
        if (name.starts_with(prefix) && is_nonce(std::string_view{name}.substr(prefix.size())))
            best_effort(sys::remove_file(directory, name));
}

} // namespace

} // namespace openlock::detail
