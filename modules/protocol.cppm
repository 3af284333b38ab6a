// SPDX-License-Identifier: MIT
// :protocol — the portable steps of docs/protocol.md (claim, judge, guarded takeover, release), shared by
// file_lock and the inspection functions. Internal: nothing here is exported.
//
// Map: the step of docs/protocol.md (section), the function that does it, and its file in modules/.
//   2.1 helper names ........ helper_stem, helper_name, guard_path, token_path ... protocol_names.cpp
//   2.2 directory handles ... by_path, open_lock_directory, remove_if_unchanged .. protocol_names.cpp
//   3   record, nonce ....... make_record (claim.cpp), random_nonce (protocol_names.cpp), record.cpp
//   4.1 choosing the method . resolve_method, is_local ........................... claim.cpp
//   4.2-4.3 the claim ....... try_claim (then observe, to decide the outcome) ..... claim.cpp
//   4.4 ownership proof ..... still_ours ......................................... release.cpp
//   5   judging a holder .... observe, judge, left_by_dead_process ............... judge.cpp
//   6   the acquire loop .... acquisition::step ................................. acquisition.cpp
//   7.2 the takeover guard .. takeover_guard::try_hold, remove_dead_owner_directory takeover_guard.cpp
//   7.3 under the guard ..... take_over ......................................... takeover.cpp
//   7.4 sweep ............... sweep_leftovers (called by take_over) .............. takeover.cpp
//   8   waiting ............. sys::wake_sources ................. platform/<os>/wake_sources.cpp
//   8.5 pre-staged claim .... stage_claim, staged_claim_ready .................... claim.cpp
//   9.1 in-process gate ..... file_lock::impl::enter_gate, gate_for .............. path_gate.cpp
//   10  release ............. release_claim ..................................... release.cpp
//   10  exit ................ held_locks ........................................ held_locks.cpp
//   10  inspection, break ... inspect, break_lock (take_over, forced) ............ status.cpp
//   11.2 judging a lease .... lease_expiry, judge ............................... judge.cpp
//   11.4 refresh ............ refresh_claim ..................................... release.cpp
//   11.5 keep-alive ......... file_lock::impl::keep_alive ....................... lease.cpp
//   11.8 fencing tokens ..... read_last_token, raise_last_token .................. fencing.cpp
//   11.9 flufl.lock ......... name_flufl_claim (claim.cpp), remove_flufl_claim (takeover.cpp)
// An acquire: file_lock::acquire (file_lock.cpp) -> acquire_blocking -> enter_gate (path_gate.cpp) ->
// acquisition::step (acquisition.cpp) -> try_claim (claim.cpp) -> observe, judge (judge.cpp) -> take_over
// (takeover.cpp) -> takeover_guard::try_hold (takeover_guard.cpp) -> sweep_leftovers (takeover.cpp).
// Shared helpers of these units: :protocol_internals (protocol_internals.cppm).
module;
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <system_error>

module openlock:protocol;
import :errors;
import :options;
import :record;
import :sys;

namespace openlock::detail {

/// A failed call, with everything its typed exception needs.
struct failure {
    std::error_code code;
    std::filesystem::path path;
    std::string detail;
};

/// Throws the exception type that matches failure.code (defined in errors.cpp).
[[noreturn]] void throw_failure(failure const& what);

/// Whether the holder a record names still holds the lock.
enum class verdict {
    live,    ///< a running process of this host, boot and pid namespace
    stale,   ///< provably gone: the lock may be removed (under the takeover guard)
    unknown, ///< another host, boot, pid namespace or record version: cannot be judged here, counts as held
    expired, ///< its lease expired more than clock_slop ago: the lock may be broken, whoever holds it
};
/// Judges the holder alone (no lease): claim files, guard owners.
verdict judge(lock_record const& record);
/// When a lease ends: the later of acquired + lifetime and the file's modification time (which refresh()
/// moves forward). None without a lease.
std::optional<std::chrono::system_clock::time_point>
lease_expiry(lock_record const& record, std::chrono::system_clock::time_point modified);
/// Judges the holder and its lease.
verdict judge(lock_record const& record, std::chrono::system_clock::time_point modified,
              std::chrono::nanoseconds clock_slop);
/// True for the verdicts under which the lock file may be removed.
constexpr bool breakable(verdict judged) {
    return judged == verdict::stale || judged == verdict::expired;
}

/// What the lock path holds at one moment.
struct observation {
    /// unreadable: a regular file we may not read (another user's, EACCES): held by someone we cannot judge.
    enum class kind { absent, held, invalid, unreadable } what = kind::absent;
    /// Invalid because of its bytes (may be mid-write), not because of its type.
    bool content_problem = false;
    lock_record record;  ///< when held
    std::string problem; ///< when invalid or unreadable
    sys::file_identity identity;
    std::int64_t owner = -1;                        ///< the file's owner (POSIX user id; -1 where unknown)
    std::int64_t changed = 0;                       ///< status change time (ns)
    std::chrono::system_clock::time_point modified; ///< with a lease: its expiry once refreshed
    std::string bytes;
};
/// Judges an observed holder and its lease.
verdict judge(observation const& seen, options const& settings);
bool observe(std::filesystem::path const& lock_file, observation& out, failure& error);

/// What this process needs to remember about a lock it holds.
struct claim {
    std::string nonce;
    std::int64_t owner_pid = 0;
    std::filesystem::path claim_file; ///< kept while held with hard_link (pins the inode); empty otherwise
    sys::pinned_file pin;             ///< kept while held (anonymous_link, exclusive_create): pins the inode
    sys::file_identity identity;
    bool identity_is_proof = false; ///< the inode is pinned on a file system with stable inode numbers
    std::optional<std::chrono::nanoseconds> lifetime; ///< the lease it was taken with
    std::optional<std::uint64_t> token;               ///< its fencing token (options::fencing)
    std::chrono::system_clock::time_point acquired;
    std::uint64_t bell = 0; ///< the doorbell its record names (lock_record::bell): rung when it is released
};

/// What an acquisition writes into its record beyond the holder's identity.
struct claim_terms {
    std::optional<std::chrono::nanoseconds> lifetime;
    std::optional<std::uint64_t> token;
    lock_format format = lock_format::openlock; ///< flufl: a flufl.lock claim file (needs a lifetime)
    char flufl_separator = '|';
    std::uint64_t bell = 0; ///< the doorbell this process rings when it releases (lock_record::bell); 0: none
    std::optional<std::int64_t> process_group{}; ///< a group that holds the lock too (options::process_group)
};

/// The method a lock uses when asked for `automatic`.
claim_method resolve_method(claim_method requested, bool local);
/// True when the lock's directory is on a local file system (not NFS, SMB, FUSE, ...).
bool is_local(std::filesystem::path const& lock_file);

/// This process's record for a new acquisition.
lock_record make_record(std::string nonce, claim_terms const& terms = {});

/// A nameless claim file (anonymous_link) made and written before the waiter sleeps, so that when the lock
/// comes free only its link remains to be done (docs/protocol.md, "Pre-staged claim"). Never linked, it costs
/// nothing and leaves nothing behind: closing it frees it.
struct staged_claim {
    std::string nonce;
    sys::file_identity identity;
    sys::pinned_file pin;                           ///< empty: nothing staged
    std::chrono::system_clock::time_point acquired; ///< written into its record
    std::chrono::steady_clock::time_point made;     ///< for its age (immune to wall-clock steps)
    std::int64_t owner_pid = 0; ///< its record names this process: a child after fork() never links it
    std::uint64_t bell = 0;     ///< the doorbell its record names
};
/// How old a staged claim may be when it is linked: its record's `acquired` (informational without a lease)
/// is at most this much earlier than the acquisition. An older one is made anew.
inline constexpr std::chrono::milliseconds staged_claim_max_age{10};
/// Whether claims with these terms and this method may be staged: anonymous_link on a local file system, no
/// lease (its start must be the acquisition's) and no fencing token (it must be read just before the claim).
bool stageable(claim_method method, bool local, claim_terms const& terms);
/// Makes `staged` a fresh staged claim unless it holds one of ours younger than half of staged_claim_max_age.
/// Best effort: a failure (or exception) leaves it empty, and the next claim makes its file itself (and
/// reports the error).
void stage_claim(std::filesystem::path const& lock_file, staged_claim& staged, std::uint64_t bell) noexcept;
/// True when a claim would link `staged` (one of ours, younger than staged_claim_max_age).
bool staged_claim_ready(staged_claim const& staged);

enum class claim_result { acquired, taken, no_hard_links, no_anonymous_files, failed };
/// One attempt to make the lock file appear with our record; when taken, `seen` is what holds it.
/// `local`: the directory is on a local file system (stable inode numbers; see is_local).
/// `staged` (only where stageable()): a staged claim younger than staged_claim_max_age is linked instead of a
/// new file; when the link answers EEXIST (the file was certainly not linked), the attempt's own nameless
/// file is kept there for the next attempt.
claim_result try_claim(std::filesystem::path const& lock_file, claim_method method, bool local,
                       claim_terms const& terms, claim& out, observation& seen, failure& error,
                       staged_claim* staged = nullptr);

/// Fencing (docs/protocol.md, "Fencing tokens"): the highest token any acquisition of this lock has
/// finished with, kept in "<stem>.token" beside it (0 when there is none yet). Read fresh (open + read).
bool read_last_token(std::filesystem::path const& lock_file, std::uint64_t& last, failure& error);
std::filesystem::path token_path(std::filesystem::path const& lock_file);

/// Our claim with this nonce may stand at the lock path although we do not hold it (an unclear link, a
/// give-back that failed): judge() calls such a record stale, so that the next look removes it.
void remember_orphan(std::string const& nonce);

/// True when the lock file is still the one this claim made (identity where that proves it, else the nonce).
/// False with error empty when it was removed or replaced; false with error set when it cannot be checked.
bool still_ours(std::filesystem::path const& lock_file, claim const& held, failure& error);

/// Removes the lock file if it is still the one this claim made; not_locked when it is not. With a fencing
/// token, under the takeover guard and after recording the token as the last one.
bool release_claim(std::filesystem::path const& lock_file, claim const& held, failure& error);

enum class takeover_result {
    removed, ///< the observed lock file was removed
    changed, ///< the lock path no longer holds what was observed: nothing removed, look again
    busy,    ///< another live process is taking over right now
    failed,
};
struct takeover_report {
    takeover_result result = takeover_result::failed;
    std::string guard_holder; ///< when busy
};
/// Which lock files a takeover may remove.
enum class takeover_mode {
    breakable_only, ///< only a record judged stale or expired (breakable())
    /// Whatever was observed (break_lock with force, after an operator checked); a takeover guard stuck for
    /// over a minute whose owner is not alive here is removed too.
    forced,
};
/// The takeover: removes exactly the observed lock file, serialized with every other takeover by the guard
/// directory "<lock>.takeover", then sweeps what dead processes left beside it.
takeover_report take_over(std::filesystem::path const& lock_file, observation const& observed,
                          takeover_mode mode, options const& settings, failure& error);

enum class refresh_result {
    refreshed, ///< the lease now ends at the new expiry
    lost,      ///< the lock file is not ours any more (broken or replaced): nothing changed
    busy,      ///< another process holds the takeover guard (it is probably breaking this lock)
    failed,
};
/// Moves the lease's end to now + lifetime, under the takeover guard so that no breaker judges the old end
/// while the new one is being written.
refresh_result refresh_claim(std::filesystem::path const& lock_file, claim const& held,
                             std::chrono::nanoseconds lifetime, options const& settings,
                             std::chrono::system_clock::time_point& expires, failure& error);

std::filesystem::path guard_path(std::filesystem::path const& lock_file);

} // namespace openlock::detail
