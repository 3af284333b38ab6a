// SPDX-License-Identifier: MIT
// :status — looking at a lock file from outside (no lock object): what `openlock status` and `openlock break`
// use.
module;
#include <chrono>
#include <filesystem>
#include <optional>
#include <string>
#include <system_error>

export module openlock:status;
import :options;
import :record;

export namespace openlock {

/// What a lock file says about its lock, judged from this process.
enum class lock_state {
    unlocked, ///< no lock file
    ours,     ///< held by this process (its lease, if any, has not expired)
    theirs,   ///< held by another live process of this host (its lease, if any, has not expired)
    stale,    ///< the holder is provably gone: the next acquire takes it over
    /// Held by a process of another host, boot or pid namespace, without an expired lease: cannot be judged
    /// here, counts as held.
    unknown,
    invalid, ///< the lock path holds something that is not a lock record (symlink, directory, garbage)
    /// Held by this process, but its lease expired more than clock_slop ago: others may break it now
    /// (refresh sooner, or use keep_alive).
    ours_expired,
    /// Held by another process (of any host) whose lease expired more than clock_slop ago: the next acquire
    /// breaks it.
    theirs_expired,
};

/// The name of a state as the CLI prints it ("unlocked", "ours", ...).
[[nodiscard]] char const* to_string(lock_state state) noexcept;

/// One look at a lock file.
struct lock_status {
    lock_state state = lock_state::unlocked;
    std::optional<lock_record> record; ///< when the file holds a record (any state but unlocked and invalid)
    std::optional<std::chrono::system_clock::time_point> expires; ///< when the record carries a lease
    std::string problem; ///< when invalid: what is wrong; when unknown for want of permission: whose file
};

/// Reads and judges the lock file; never modifies anything. Throws lock_error when it cannot be read.
/// A lease counts as expired clock_slop after its end (settings.clock_slop).
[[nodiscard]] lock_status inspect(std::filesystem::path const& lock_file,
                                  options const& settings = get_defaults());
[[nodiscard]] lock_status inspect(std::filesystem::path const& lock_file, std::error_code& error) noexcept;
[[nodiscard]] lock_status inspect(std::filesystem::path const& lock_file, options const& settings,
                                  std::error_code& error) noexcept;

/// The record this process writes when it takes a lock now (pid, name, host, boot, pid namespace, start time,
/// a fresh nonce, acquired = now): what lock services other than a file (openlock.etcd) store as the holder.
[[nodiscard]] lock_record this_process_record();

/// What break_lock did.
enum class break_result {
    nothing_to_break, ///< there was no lock file
    removed,          ///< the lock file was removed
    refused,          ///< the lock is held (or not a lock record) and force was not given: nothing removed
    busy,             ///< another process is taking the lock over right now: nothing removed
};

/// Removes a stale lock file (or one whose lease expired more than clock_slop ago), serialized with every
/// takeover, removing exactly the file that was judged. With force, also a live holder's lock or an invalid
/// lock file (never a directory, never through a symlink).
[[nodiscard]] break_result break_lock(std::filesystem::path const& lock_file, bool force = false,
                                      options const& settings = get_defaults());

} // namespace openlock
