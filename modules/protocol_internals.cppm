// SPDX-License-Identifier: MIT
// :protocol_internals — what the protocol's implementation units (claim.cpp, judge.cpp, takeover.cpp, ...)
// share and nothing else needs: helper names, exact removals, the takeover guard. Internal: never exported.
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

module openlock:protocol_internals;
import :errors;
import :options;
import :protocol;
import :record;
import :sys;

namespace openlock::detail {

// --- protocol_names.cpp: nonces, helper names, the lock's directory, exact removals

/// A nonce: 128 random bits as 32 lowercase hex digits (docs/protocol.md 3).
std::string random_nonce();
/// True for the text of a nonce (random_nonce's shape).
bool is_nonce(std::string_view text);
/// The stem of helper names ("<stem>.takeover", "<stem>.claim.<nonce>", "<stem>.token"): the lock's file
/// name, shortened with a hash where the longest suffix would not fit within NAME_MAX.
std::string helper_stem(std::filesystem::path const& lock_file);
std::string helper_name(std::filesystem::path const& lock_file, std::string const& suffix);
/// The lock's file name.
std::string name_of(std::filesystem::path const& lock_file);
/// The lock's directory, resolved by path on every call: for the hot steps on the lock file itself (a look, a
/// claim, a release), which name nothing below a name in the directory (docs/protocol.md 2.2).
sys::directory by_path(std::filesystem::path const& lock_file);
/// The lock's directory opened once, for the steps that list it or reach into a directory inside it (the
/// guard, staging directories, the sweep, the token).
bool open_lock_directory(std::filesystem::path const& lock_file, sys::directory& out, failure& error);
/// Whether something (anything) stands at the lock path now.
bool name_taken(std::filesystem::path const& lock_file);
/// Removes `name` from `at` if it is still the file that was read (`seen`), never another one swapped in.
std::error_code remove_if_unchanged(sys::directory const& at, std::string const& name,
                                    sys::file_identity const& seen);

// --- protocol_messages.cpp: what an operator is told

/// Another user's file in a sticky directory (/tmp), or in a directory we may not write: removing or
/// replacing it is refused, and waiting will not change that.
bool refused_by_permissions(std::error_code const& code);
/// Whose file it is, as an operator knows them: "alice (user id 1001)".
std::string describe_owner(std::int64_t owner_id);
/// What to tell an operator whose removal, replacement or read of another user's file was refused.
std::string permission_remedy(std::int64_t owner_id);
/// Passes a diagnostic to options::on_diagnostic, if set.
void report(options const& settings, diagnostic::kind what, std::filesystem::path const& path,
            std::string detail);

// --- judge.cpp

/// Which rules decide whether a record file of ours (a claim file, a guard's owner file) was left behind:
/// holder_only, its writer is provably gone; with_lease, also a claim file of another host's holder whose
/// lease ran out (its time is the lease's end: refresh touches the same inode).
enum class writer_rules { holder_only, with_lease };
bool left_by_dead_process(sys::file_content const& content, options const& settings, writer_rules rules);

// --- claim.cpp

/// The end of a lease that starts at `from`.
std::chrono::system_clock::time_point lease_end(std::chrono::system_clock::time_point from,
                                                std::chrono::nanoseconds lifetime);

// --- fencing.cpp

/// Under the guard: records `token` as the last one unless a later one is recorded already.
bool raise_last_token(sys::directory const& directory, std::filesystem::path const& lock_file,
                      std::uint64_t token, failure& error);

// --- takeover_guard.cpp

/// What removing a guard-like directory (the guard, or a staging directory) came to.
enum class guard_removal { removed, kept, refused };
/// Removes a guard-like directory whose single owner file was written by a dead process; exact removals only.
/// refused (with `refusal` set): another user's, in a directory that does not let us remove it.
guard_removal remove_dead_owner_directory(sys::directory const& parent, std::string const& name,
                                          options const& settings, failure* refusal = nullptr);

/// The takeover guard (docs/protocol.md 7): a directory "<lock>.takeover" holding its owner's record, made
/// under a fresh staging name and renamed into place. Every step inside it goes through the lock's opened
/// directory and a descriptor of the guard opened without following a symlink. Released when destroyed.
class takeover_guard {
public:
    takeover_guard(sys::directory const& directory, std::filesystem::path const& lock_file);
    takeover_guard(takeover_guard const&) = delete;
    takeover_guard& operator=(takeover_guard const&) = delete;
    ~takeover_guard();

    enum class outcome { held, busy, failed };
    /// Makes a directory holding our record and renames it into place: rename fails while another guard (a
    /// non-empty directory) is there, so at most one process holds the guard. A forced takeover also
    /// removes a guard stuck for over a minute whose owner is not alive here.
    outcome try_hold(options const& settings, std::string& holder, failure& error,
                     takeover_mode mode = takeover_mode::breakable_only);

private:
    std::error_code stage();
    void unstage();
    std::string describe_guard_holder() const;

    sys::directory const& directory_;
    std::filesystem::path lock_file_;
    std::string guard_name_;
    std::string nonce_;
    std::string staging_name_;
    sys::directory staging_;
    sys::file_identity owner_identity_;
    bool held_ = false;
};

} // namespace openlock::detail
