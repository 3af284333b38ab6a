// SPDX-License-Identifier: MIT
// :options — the knobs of the protocol, process-wide defaults, and the diagnostics hook.
module;
#include <chrono>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>

export module openlock:options;
export import :record;

export namespace openlock {

/// How the lock file is made to appear atomically with its content.
enum class claim_method {
    automatic, ///< anonymous_link on local file systems that have it, else hard_link, else exclusive_create
    hard_link, ///< a unique claim file hard-linked to the lock path (NFS-safe; flufl.lock's method)
    anonymous_link,   ///< a nameless file (O_TMPFILE) linked to the lock path: no claim file, even briefly
    exclusive_create, ///< O_EXCL / CREATE_NEW on the lock path (readers may briefly see it half-written)
};

/// Something worth knowing that is not a failure of the call; the library reports it, it never prints.
struct diagnostic {
    enum class kind {
        slow_system,         ///< a takeover (ours or one we waited for) lasted longer than race_delay
        stale_lock_removed,  ///< a lock whose holder is provably gone was removed
        leftover_removed,    ///< a claim file or takeover guard of a dead process was cleaned up
        expired_lock_broken, ///< a lock whose lease had expired (by more than clock_slop) was removed
        lock_lost,           ///< a lock this process held was broken or replaced (keep-alive, unlock())
        release_failed,      ///< unlock() could not release the lock (the error is in detail)
    };
    kind what;
    std::filesystem::path path;
    std::string detail;
};

/// Protocol knobs; get_defaults() is where a file_lock takes them from unless it is given its own.
struct options {
    /// How often an unreadable or half-written lock file is read, retry_period apart, before acquire gives up
    /// with invalid_lock_file (so a corrupt file never makes a waiter hang forever).
    int tries = 2;
    /// The longest pause between two looks at a held lock; waits start short and back off to this.
    std::chrono::nanoseconds retry_period = std::chrono::milliseconds{300};
    /// How long a stale-lock takeover is expected to take at most; a longer one is a slow system (reported,
    /// and thrown when slow_system_exception is set). Safety never depends on it: takeovers are serialized.
    std::chrono::nanoseconds race_delay = std::chrono::milliseconds{200};
    /// Throw openlock::slow_system from acquire instead of only reporting the condition.
    bool slow_system_exception = false;
    /// How the lock file is created.
    claim_method method = claim_method::automatic;
    /// A lease, as in flufl.lock: with one, the lock file says when it expires, and once that moment is more
    /// than clock_slop past, any process on any host may break the lock, whoever holds it. refresh() (or
    /// keep_alive) extends it. None: the lock lasts until released or until its holder provably died, and a
    /// holder on another host, boot or pid namespace is never broken automatically (Python openlock's rule).
    std::optional<std::chrono::nanoseconds> lifetime;
    /// How far the clocks of the hosts that share a lock may disagree, plus the coarseness of file times on
    /// the file system (sshfs keeps whole seconds): an expired lease is broken only this long after expiry.
    std::chrono::nanoseconds clock_slop = std::chrono::seconds{2};
    /// With a lifetime: refresh the lease from a background thread every third of the lifetime while the
    /// lock is held. A refresh that finds the lock broken or replaced reports diagnostic::kind::lock_lost,
    /// calls on_lost, and stops; still_held() then says false.
    bool keep_alive = false;
    /// Fencing tokens: every acquisition gets a token() strictly greater than every earlier acquisition's of
    /// the same lock file (kept in "<lock>.token" beside it), so that a resource can refuse a holder whose
    /// lease was broken. Costs a guarded release (a few more file operations per acquire+release).
    bool fencing = false;
    /// The layout of the lock file and its claim file. lock_format::flufl writes exactly what flufl.lock
    /// (Python) writes, so that programs using either exclude each other on one lock file: hard_link claims
    /// named "<lock path><sep><host><sep><pid><sep><random>", holding that path; the lease's end as the
    /// file's modification time. It always has a lease (flufl's 15 s when lifetime is none), and no fencing
    /// tokens (the file has no room for one). Records of either layout are read whatever this says.
    lock_format format = lock_format::openlock;
    /// The separator of flufl claim names; '\0' is flufl.lock's default ('^' on Windows, '|' elsewhere).
    char flufl_separator = '\0';
    /// A process group that holds the lock with this process, as flock(1)'s lock is held by every process
    /// that inherited its descriptor: the record names the group (and its leader's start time), and while
    /// this process is gone the lock still counts as held as long as that group, on this host, boot and pid
    /// namespace, has a member. `openlock run` names its command's group, so that killing openlock does not
    /// free the lock while the command runs. A process that leaves the group (setsid, setpgid) is not
    /// covered; a lease still expires; the flufl.lock format has no room for it (ignored there); on Windows,
    /// which has no process groups, the group counts as gone. The group must exist when the lock is acquired.
    /// None: this process alone holds the lock.
    std::optional<std::int64_t> process_group{};
    /// Called (from the keep-alive thread) when keep-alive finds that the lock was lost.
    std::function<void(std::filesystem::path const&)> on_lost;
    /// Receives diagnostics; called from the thread that runs the lock operation. Empty: nothing is reported.
    std::function<void(diagnostic const&)> on_diagnostic;
};

/// flufl.lock's lifetime when none is given (DEFAULT_LOCK_LIFETIME).
inline constexpr std::chrono::nanoseconds flufl_default_lifetime = std::chrono::seconds{15};

/// The lease a lock with these options takes: lifetime, or flufl's default in its format.
[[nodiscard]] std::optional<std::chrono::nanoseconds> effective_lifetime(options const& settings);

/// The separator of flufl claim names under these options.
[[nodiscard]] char effective_flufl_separator(options const& settings) noexcept;

/// A copy of the process-wide defaults.
[[nodiscard]] options get_defaults();

/// Replaces the process-wide defaults after checking them; throws invalid_option and changes nothing on a bad
/// value.
void set_defaults(options const& new_defaults);

/// Throws invalid_option naming the first value out of range.
void validate(options const& candidate);

} // namespace openlock
