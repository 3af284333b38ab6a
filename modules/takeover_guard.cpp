// SPDX-License-Identifier: MIT
// The takeover guard (docs/protocol.md 7.2): a directory "<lock>.takeover" that one process at a time holds
// while it removes a lock file, and the removal of guards (and half-made ones) that dead processes left.
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
// A guard-like directory (the guard, or a staging directory) opened without following a symlink, and the one
// owner file it holds, read through that descriptor: what is judged is what is removed.
struct guard_directory {
    sys::directory opened;
    std::string owner_name;
    sys::file_content owner;
};

enum class opened_guard { one_owner, other, unreadable };

opened_guard open_guard_directory(sys::directory const& parent, std::string const& name,
                                  guard_directory& out) {
    if (sys::open_subdirectory(parent, name, out.opened)) return opened_guard::other;
    std::vector<std::string> names;
    if (sys::list_directory(out.opened, names) || names.size() != 1 || !is_nonce(names.front()))
        return opened_guard::other;
    out.owner_name = names.front();
    auto const code = sys::read_file(out.opened, out.owner_name, max_record_size, out.owner, is_lease_record);
    if (code) return refused_by_permissions(code) ? opened_guard::unreadable : opened_guard::other;
    return out.owner.kind == sys::entry_kind::regular ? opened_guard::one_owner : opened_guard::other;
}

guard_removal remove_guard_directory(sys::directory const& parent, std::string const& name,
                                     guard_directory const& judged, failure* refusal = nullptr);
guard_removal remove_stuck_guard(sys::directory const& parent, std::string const& name,
                                 options const& settings, failure* refusal);
void remove_emptied_directory(sys::directory const& parent, std::string const& name,
                              sys::directory const& emptied, std::string const& removed_name);
bool remove_own_leaked_guard(sys::directory const& directory, std::string const& guard_name);
void remember_leaked_guard(std::string const& nonce);
constexpr int guard_removal_attempts = 10;
} // namespace

takeover_guard::takeover_guard(sys::directory const& directory, fs::path const& lock_file)
    : directory_(directory)
    , lock_file_(lock_file)
    , guard_name_(helper_name(lock_file, ".takeover"))
    , nonce_(random_nonce())
    , staging_name_(helper_name(lock_file, ".takeover." + nonce_)) {}

takeover_guard::~takeover_guard() {
    if (!held_) return;
    // A guard left standing by a live process blocks every takeover until that process exits: a failed
    // removal (EACCES, EIO) is retried, and if it still fails, remembered, so that this process removes
    // its own leftover at its next attempt (try_hold) instead of waiting for it as if someone held it.
    sys::directory guard;
    std::error_code failed = sys::open_subdirectory(directory_, guard_name_, guard);
    for (int attempt = 0; !failed && attempt < guard_removal_attempts; ++attempt) {
        failed = remove_if_unchanged(guard, nonce_, owner_identity_);
        if (!failed || failed == std::errc::no_such_file_or_directory) break;
        std::this_thread::sleep_for(std::chrono::milliseconds{1});
    }
    if (failed && failed != std::errc::no_such_file_or_directory)
        remember_leaked_guard(nonce_);
    else if (guard.is_open())
        remove_emptied_directory(directory_, guard_name_, guard, nonce_);
}

takeover_guard::outcome takeover_guard::try_hold(options const& settings, std::string& holder, failure& error,
                                                 takeover_mode mode) {
    for (int attempt = 0; attempt < 2; ++attempt) {
        if (attempt > 0) {
            // A fresh name: where a removed name stays while someone has it open (Windows without POSIX
            // delete semantics), the first staging directory may still be there, delete pending.
            nonce_ = random_nonce();
            staging_name_ = helper_name(lock_file_, ".takeover." + nonce_);
        }
        if (auto const code = stage(); code) {
            error = {code, directory_ / staging_name_, "cannot prepare the takeover guard"};
            return outcome::failed;
        }
        auto const code = sys::rename_directory(directory_, staging_name_, guard_name_);
        if (!code) {
            held_ = true;
            staging_ = {}; // the guard now; released through a descriptor opened by its name
            return outcome::held;
        }
        unstage();
        // sshfs answers EPERM where POSIX says ENOTEMPTY: a guard directory standing there means "taken".
        sys::directory standing;
        bool const taken = code == std::errc::directory_not_empty || code == std::errc::file_exists ||
                           (code == std::errc::operation_not_permitted &&
                            !sys::open_subdirectory(directory_, guard_name_, standing));
        if (!taken) {
            error = {code, directory_ / guard_name_, "cannot take the takeover guard"};
            return outcome::failed;
        }
        if (remove_own_leaked_guard(directory_, guard_name_)) continue;
        failure refusal;
        auto removal = remove_dead_owner_directory(directory_, guard_name_, settings, &refusal);
        char const* removed_what = "takeover guard of a process that is gone";
        if (removal == guard_removal::kept && mode == takeover_mode::forced) {
            removal = remove_stuck_guard(directory_, guard_name_, settings, &refusal);
            removed_what =
                "takeover guard that stood for over a minute, its owner not alive here (forced break)";
        }
        if (removal == guard_removal::refused) {
            error = refusal;
            return outcome::failed;
        }
        if (removal == guard_removal::kept) {
            holder = describe_guard_holder();
            return outcome::busy;
        }
        report(settings, diagnostic::kind::leftover_removed, directory_ / guard_name_, removed_what);
    }
    holder = describe_guard_holder();
    return outcome::busy;
}

std::error_code takeover_guard::stage() {
    if (auto const code = sys::make_directory(directory_, staging_name_)) {
        best_effort(sys::remove_directory(directory_, staging_name_));
        return code;
    }
    auto code = sys::open_subdirectory(directory_, staging_name_, staging_);
    if (!code)
        code =
            sys::create_exclusive(staging_, nonce_, serialize_record(make_record(nonce_)), owner_identity_);
    if (code) unstage();
    return code;
}

void takeover_guard::unstage() {
    if (!staging_.is_open()) {
        best_effort(sys::remove_directory(directory_, staging_name_)); // empty, or not ours to empty
        return;
    }
    best_effort(remove_if_unchanged(staging_, nonce_, owner_identity_));
    remove_emptied_directory(directory_, staging_name_, staging_, nonce_);
    staging_ = {};
}

std::string takeover_guard::describe_guard_holder() const {
    guard_directory guard;
    switch (open_guard_directory(directory_, guard_name_, guard)) {
    case opened_guard::other:
        return "another process";
    case opened_guard::unreadable:
        return "a process of " + describe_owner(guard.owner.owner) + " (its record is not readable)";
    case opened_guard::one_owner:
        break;
    }
    auto const parsed = parse_record(guard.owner.bytes);
    return parsed.status == record_status::ok ? describe_holder(parsed.record) : "another process";
}

// Removes a guard-like directory whose single owner file was written by a dead process; exact removals only.
guard_removal remove_dead_owner_directory(sys::directory const& parent, std::string const& name,
                                          options const& settings, failure* refusal) {
    guard_directory guard;
    if (open_guard_directory(parent, name, guard) != opened_guard::one_owner ||
        !left_by_dead_process(guard.owner, settings, writer_rules::holder_only))
        return guard_removal::kept;
    return remove_guard_directory(parent, name, guard, refusal);
}

namespace {

// Removes the owner file judged (exactly that file, through the opened directory) and then the emptied
// directory. refused: another user's, in a directory that does not let us remove it.
guard_removal remove_guard_directory(sys::directory const& parent, std::string const& name,
                                     guard_directory const& judged, failure* refusal) {
    auto const code = remove_if_unchanged(judged.opened, judged.owner_name, judged.owner.identity);
    if (code && code != std::errc::no_such_file_or_directory) {
        if (!refused_by_permissions(code)) return guard_removal::kept;
        if (refusal)
            *refusal = {code, parent / name,
                        "cannot remove a dead process's takeover guard: " +
                            permission_remedy(judged.owner.owner)};
        return guard_removal::refused;
    }
    remove_emptied_directory(parent, name, judged.opened, judged.owner_name);
    return guard_removal::removed;
}

// A guard is held for the few system calls of one takeover. One that has stood this long, owned by a process
// that cannot be judged here (another host, boot or pid namespace: R6), was left by a crash: a forced break
// (an operator who has checked) removes it. Exact removals only, as for a dead owner's guard.
constexpr auto stuck_guard_age = std::chrono::seconds{60};

guard_removal remove_stuck_guard(sys::directory const& parent, std::string const& name,
                                 options const& settings, failure* refusal) {
    guard_directory guard;
    if (open_guard_directory(parent, name, guard) != opened_guard::one_owner) return guard_removal::kept;
    auto const parsed = parse_record(guard.owner.bytes);
    if (parsed.status == record_status::ok && judge(parsed.record) == verdict::live)
        return guard_removal::kept;
    if (std::chrono::system_clock::now() - guard.owner.modified < stuck_guard_age + settings.clock_slop)
        return guard_removal::kept;
    return remove_guard_directory(parent, name, guard, refusal);
}

// rmdir of a guard (or staged guard) directory whose one file was just removed, if the name still holds that
// directory. Where a removed name stays until the last handle to it closes (Windows without POSIX delete
// semantics: Wine, FAT, SMB), a process reading that record at the moment (a waiter naming the guard's
// holder, a sweep) keeps the name listed, and rmdir fails: it is tried again while that name is all the
// directory holds (or nothing: it went just now), for a moment. An empty directory left after that takes no
// one's place: the next guard replaces it, and a staged one is swept once abandoned. Refused for want of
// permission, it is not tried again.
void remove_emptied_directory(sys::directory const& parent, std::string const& name,
                              sys::directory const& emptied, std::string const& removed_name) {
    auto const give_up = std::chrono::steady_clock::now() + std::chrono::milliseconds{250};
    for (;;) {
        sys::file_identity standing;
        if (sys::identify(parent, name, standing) || standing != emptied.identity) return; // not ours now
        auto const refused = sys::remove_directory(parent, name);
        if (!refused || refused == std::errc::no_such_file_or_directory || refused_by_permissions(refused) ||
            std::chrono::steady_clock::now() > give_up)
            return;
        std::vector<std::string> names;
        if (sys::list_directory(emptied, names) || names.size() > 1 ||
            (names.size() == 1 && names.front() != removed_name))
            return; // another guard was renamed into place: not ours
        std::this_thread::sleep_for(std::chrono::milliseconds{1});
    }
}

std::mutex leaked_guards_mutex;
std::vector<std::string>& leaked_guards() {
    static auto* const nonces = new std::vector<std::string>; // never destroyed: guards are released at exit
    return *nonces;
}

void remember_leaked_guard(std::string const& nonce) {
    std::lock_guard guard{leaked_guards_mutex};
    leaked_guards().push_back(nonce);
}

// A guard directory whose one owner file carries the nonce of a guard of ours that is already released (its
// removal failed): ours to remove, as nobody holds it.
bool remove_own_leaked_guard(sys::directory const& directory, std::string const& guard_name) {
    guard_directory guard;
    if (open_guard_directory(directory, guard_name, guard) == opened_guard::other) return false;
    std::lock_guard lock{leaked_guards_mutex};
    auto& nonces = leaked_guards();
    auto const ours = std::find(nonces.begin(), nonces.end(), guard.owner_name);
    if (ours == nonces.end()) return false;
    auto const removed = remove_if_unchanged(guard.opened, guard.owner_name, guard.owner.identity);
    if (removed && removed != std::errc::no_such_file_or_directory) return false;
    remove_emptied_directory(directory, guard_name, guard.opened, guard.owner_name);
    nonces.erase(ours);
    return true;
}

} // namespace

} // namespace openlock::detail
