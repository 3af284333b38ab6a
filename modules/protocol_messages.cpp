// SPDX-License-Identifier: MIT
// What the protocol tells an operator: whose file a refusal was about and what to do, and the diagnostics it
// passes to options::on_diagnostic.
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

// Another user's file in a sticky directory (/tmp), or in a directory we may not write: removing or replacing
// it is refused, and waiting will not change that.
bool refused_by_permissions(std::error_code const& code) {
    return code == std::errc::operation_not_permitted || code == std::errc::permission_denied;
}

// Whose file it is, as an operator knows them: "alice (user id 1001)".
std::string describe_owner(std::int64_t owner_id) {
    if (owner_id < 0) return "another user";
    auto const name = sys::user_name(owner_id);
    auto const id = "user id " + std::to_string(owner_id);
    return name.empty() ? id : name + " (" + id + ")";
}

// What to tell an operator whose removal, replacement or read of another user's file was refused: a sticky
// directory (/tmp) lets only a name's owner remove or replace it, and an older version's files may lack read
// access.
std::string permission_remedy(std::int64_t owner_id) {
    return "it belongs to " + describe_owner(owner_id) +
           ", and this directory does not let this user remove, replace or read it (a sticky directory such "
           "as "
           "/tmp lets only a file's owner remove it): share locks between users in a setgid group directory "
           "(chmod 2775, one group for all of them) instead";
}

void report(options const& settings, diagnostic::kind what, fs::path const& path, std::string detail) {
    if (settings.on_diagnostic) settings.on_diagnostic(diagnostic{what, path, std::move(detail)});
}

} // namespace openlock::detail
