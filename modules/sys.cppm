// SPDX-License-Identifier: MIT
// :sys — the OS seam, declared once. platform/<os>/ implements it; CMake picks the folder. Nothing here is
// exported to users. Every call reports the OS's own error code untouched.
module;
#include <array>
#include <boost/asio/awaitable.hpp>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

module openlock:sys;

namespace openlock::sys {

/// Which file a name pointed at; equal identities of two names mean one file.
struct file_identity {
    std::uint64_t device = 0;
    std::uint64_t inode = 0;
    friend bool operator==(file_identity const&, file_identity const&) = default;
};

/// The calling process as it writes itself into a lock record.
struct process_identity {
    std::int64_t pid = 0;
    std::string name;
    std::string host;
    std::string boot_id;
    std::string pid_namespace;
    std::optional<std::uint64_t> start_time;
    bool proc_is_ours = true; ///< /proc shows our pid namespace (else nothing is judged from it)
};

/// This process; cached, and recomputed in a child after fork().
process_identity current_process();

/// The calling process's id (cheap; correct after fork()).
std::int64_t current_pid() noexcept;

enum class process_state {
    alive,   ///< a process with this pid, start time and name runs now
    gone,    ///< provably not running: no such pid, a zombie, or another process reusing the pid
    unknown, ///< exists but cannot be inspected (permissions, no /proc)
};

/// Judges a process of this host, boot and pid namespace.
process_state local_process_state(std::int64_t pid, std::optional<std::uint64_t> start_time,
                                  std::string_view name);

/// The start time of a process of this host, boot and pid namespace, as process_identity::start_time gives
/// it; nullopt when it cannot be read (gone, hidden, no such thing on this OS).
std::optional<std::uint64_t> local_process_start_time(std::int64_t pid);

/// Judges a process group of this host, boot and pid namespace: alive while it has a member (even one that
/// cannot be inspected), gone when it has none or when its number now belongs to a process whose start time
/// is not `leader_start_time` (the number stays taken while the group has members, so the group ended).
/// Always gone where there are no process groups (Windows).
process_state local_process_group_state(std::int64_t group, std::optional<std::uint64_t> leader_start_time);

/// 128 bits from the OS's cryptographic random source (what a nonce is made of); throws std::system_error.
std::array<unsigned char, 16> random_128_bits();

/// A directory that names are looked up in (docs/protocol.md 2.2, "Names are resolved from a directory
/// handle"). Opened (open_directory, open_subdirectory), a name inside it always means an entry of this very
/// directory, whoever renames it or puts a symlink at its path meanwhile. Not opened (at_path), each call
/// resolves `path` again: only for the lock's own directory, whose path is the caller's and whose ancestors
/// are trusted (docs/security.md). Names given with it are single path components, never followed when they
/// are the last one.
struct directory {
    std::shared_ptr<void> handle; ///< the OS's open directory; empty: resolved by path
    std::filesystem::path path;   ///< where it is: messages, and the path for calls that are not relative
    file_identity identity;       ///< of the opened directory (zero when not opened)
    /// The access the directory gives its group and others (POSIX permission bits; 0 when not opened):
    /// whatever the library creates inside gets the same (docs/security.md), whatever the umask.
    unsigned access = 0;
    [[nodiscard]] bool is_open() const noexcept { return handle != nullptr; }
    /// The path of a name inside (UTF-8, as name_text gives it).
    [[nodiscard]] std::filesystem::path operator/(std::string_view name) const {
        return path / std::filesystem::path(std::u8string(name.begin(), name.end()));
    }
};

/// A file name as the protocol handles names: UTF-8 (on Windows path::string() would lose what the ANSI code
/// page cannot say; on POSIX the bytes are unchanged).
inline std::string name_text(std::filesystem::path const& name) {
    auto const text = name.u8string();
    return {text.begin(), text.end()};
}

/// The lock's directory by its path, not opened (hot paths: a look, a claim, a release).
inline directory at_path(std::filesystem::path const& path) {
    directory result;
    result.path = path.empty() ? std::filesystem::path{"."} : path;
    return result;
}
/// Opens a directory by its path (symlinks in the path are followed: the path is the caller's choice).
std::error_code open_directory(std::filesystem::path const& path, directory& out);
/// Opens the directory `name` inside `parent`, never through a symlink: not_a_directory when the name holds
/// anything but a directory (a symlink to one included).
std::error_code open_subdirectory(directory const& parent, std::string_view name, directory& out);

/// Creates `name` exclusively (never through a symlink), writes content in one go, and reports the new
/// file's identity. A write failure removes the file again. file_exists when the name is taken.
std::error_code create_exclusive(directory const& at, std::string_view name, std::string_view content,
                                 file_identity& created);

/// An open handle that keeps a file's identity from being reused while a lock is held (closed when released).
using pinned_file = std::shared_ptr<void>;

/// Creates a nameless file in `at` holding `content` (O_TMPFILE): nothing is visible until link_anonymous.
/// operation_not_supported where the file system or OS cannot.
std::error_code create_anonymous(directory const& at, std::string_view content, file_identity& created,
                                 pinned_file& handle);

/// create_exclusive that keeps the new file open in `handle` (pinning its inode while the lock is held).
std::error_code create_exclusive_pinned(directory const& at, std::string_view name, std::string_view content,
                                        file_identity& created, pinned_file& handle);

/// Sets the modification time of a pinned file (a lease's expiry; docs/protocol.md, "Leases").
std::error_code set_modified(pinned_file const& handle, std::chrono::system_clock::time_point when);
/// The same for a named file (never through a symlink): a claim file only this process writes.
std::error_code set_modified(directory const& at, std::string_view name,
                             std::chrono::system_clock::time_point when);

/// Gives a nameless file its name atomically; fails with file_exists when the name exists as anything.
std::error_code link_anonymous(pinned_file const& handle, directory const& at, std::string_view name);

/// link(existing, new_name), both in `at`: fails with file_exists when new_name exists as anything,
/// symlinks included.
std::error_code make_link(directory const& at, std::string_view existing, std::string_view new_name);

/// Removes a name that is not a directory.
std::error_code remove_file(directory const& at, std::string_view name);

enum class entry_kind { absent, regular, symlink, directory, other };

/// What a name holds, read without following a symlink and without blocking on a FIFO or device.
struct file_content {
    entry_kind kind = entry_kind::absent;
    file_identity identity;
    /// Status change time in ns: tells a new file from an old one with a reused inode.
    std::int64_t changed = 0;
    /// Modification time: as the open file's status gave it, unless the caller's fresh_time_rule says the
    /// bytes need it fresh (a lease, judged by this time); then read after the content, and fresh from the
    /// server where the OS can force that (network clients cache attributes for seconds).
    std::chrono::system_clock::time_point modified;
    std::string bytes; ///< at most limit + 1 bytes of a regular file
    /// The owner's user id (POSIX; -1 where unknown): whom to name when the file cannot be read or removed.
    std::int64_t owner = -1;
};

/// The name of the user with this id, for messages ("" when there is none, or on Windows).
std::string user_name(std::int64_t user_id);

/// Decides from the bytes just read whether a file's modification time must be taken fresh, after the
/// content (file_content::modified). The seam knows no record: the protocol supplies the rule.
using fresh_time_rule = bool (*)(std::string_view bytes);

/// Reads a file; absent is not an error. Reads at most limit + 1 bytes. permission_denied when the file
/// exists but may not be read, with kind, identity and owner filled in. The modification time is the one
/// the open file's status gave, unless `needs_fresh_time` (none: never) says otherwise of the bytes read.
std::error_code read_file(directory const& at, std::string_view name, std::size_t limit, file_content& out,
                          fresh_time_rule needs_fresh_time = nullptr);

/// The identity of the file a name holds now (lstat); no_such_file_or_directory when absent.
std::error_code identify(directory const& at, std::string_view name, file_identity& out);

/// mkdir, with the access `at` gives (see directory::access), whatever the umask.
std::error_code make_directory(directory const& at, std::string_view name);

/// rename(from, to) for a directory, both in `at`: succeeds only while `to` is absent or an empty directory.
std::error_code rename_directory(directory const& at, std::string_view from, std::string_view to);

/// rename(from, to) for a file, both in `at`: atomically replaces `to` (readers see the old or the new file).
std::error_code replace_file(directory const& at, std::string_view from, std::string_view to);

/// rmdir: succeeds only on an empty directory.
std::error_code remove_directory(directory const& at, std::string_view name);

/// The names in a directory, without "." and "..".
std::error_code list_directory(directory const& at, std::vector<std::string>& names);

/// True where the link() error means "this file system has no hard links" (fall back to exclusive create).
bool means_no_hard_links(std::error_code const& error) noexcept;

/// True where a removed file's name is gone at once although a descriptor still holds the file open (POSIX);
/// false where the name stays until the last handle closes (Windows without POSIX delete semantics, Wine).
bool removed_name_vanishes_while_open() noexcept;

/// True when processes on other machines may change this directory (NFS, SMB, FUSE, ...): local change events
/// cannot see their changes, so waiting there is polling only.
bool is_network_file_system(std::filesystem::path const& directory);

/// Wakes one listener of the lock's doorbell, if this process's doorbell for the lock is the one `identity`
/// (a record's bell=) names; nothing where there are no doorbells, or nobody listens. For removals by anyone
/// but the holder (a break, a takeover): waiters that rely on the holder's ring would sleep through them.
void ring_doorbell(std::filesystem::path const& lock_file, std::uint64_t identity) noexcept;

/// Whether a waiter listens on the lock's doorbell (docs/protocol.md 8.6).
enum class doorbell_use { listen, none };
/// Whether directory events end a waiter's waits.
enum class directory_events { on, off };

/// What a waiter sleeps on until the lock may have changed hands: changes to the lock's (or its guard's) name
/// in its directory, the exit of a holder on this host, and the lock's doorbell. Where events are unavailable
/// it simply sleeps.
class wake_sources {
public:
    /// Starts watching; a change after this point is queued until drained or waited for. With
    /// doorbell_use::listen it also listens on the lock's doorbell, made if missing, where the OS has
    /// doorbells (docs/protocol.md 8.6): a release rung there wakes one listener instead of every waiter.
    wake_sources(std::filesystem::path const& lock_file, std::filesystem::path const& guard,
                 doorbell_use bell);
    wake_sources(wake_sources const&) = delete;
    wake_sources& operator=(wake_sources const&) = delete;
    ~wake_sources();

    /// Forgets queued events (call before the look that a following wait depends on).
    void drain();
    /// Also wake when this local process exits (replacing any earlier holder).
    void watch_holder(std::int64_t pid);
    /// Sleeps until an event or the timeout; true when an event woke it.
    bool wait_for(std::chrono::nanoseconds timeout);
    /// The same without blocking a thread, on the coroutine's executor; cancellation ends it with an
    /// exception.
    boost::asio::awaitable<bool> async_wait_for(std::chrono::nanoseconds timeout);
    /// True when directory events are delivered (a local file system, a watch could be set up).
    [[nodiscard]] bool watches_directory() const noexcept;
    /// The doorbell this waiter listens on, as holders' records name it; 0: none.
    [[nodiscard]] std::uint64_t doorbell() const noexcept;
    /// Wakes one listener of the doorbell (a release, or a wake-up passed on); nothing without one.
    void ring() noexcept;
    /// True when the exit of the holder last given to watch_holder ends waits.
    [[nodiscard]] bool watches_holder() const noexcept;
    /// Directory events end waits unless turned off (a holder that rings the doorbell needs none). Turning
    /// them back on returns true: a change before that went unseen, so look again before waiting.
    bool set_directory_events(directory_events setting);

private:
    struct impl;
    std::unique_ptr<impl> impl_;
};

} // namespace openlock::sys
