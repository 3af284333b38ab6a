// SPDX-License-Identifier: MIT
// :record — the on-disk lock record: parse and serialize, pure functions with no I/O (fuzzed in test/).
module;
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

export module openlock:record;

export namespace openlock {

/// Whose layout a lock file has (docs/protocol.md, "The flufl.lock format").
enum class lock_format {
    openlock, ///< this library's record (and Python openlock's "pid\nname\n")
    flufl,    ///< flufl.lock's: the lock file is a hard link of a claim file that holds its own path
};

/// Who holds a lock, as written in the lock file. Version 1 text format (docs/protocol.md):
///   "<pid>\n<name>\nversion=1\nhost=...\nboot_id=...\npid_ns=...\nstart_time=...\nnonce=...\nacquired=...\n"
/// and "lifetime=<seconds>\n" for a lease, "token=<n>\n" for a fenced lock, "bell=<inode>\n" for a holder
/// that rings a doorbell when it releases, "group=<pgid>\ngroup_start=<ticks>\n" for a lock that its holder's
/// command's process group holds too (`openlock run`). The first two lines are those of
/// Python openlock; unknown keys are kept, in order, for forward compatibility.
struct lock_record {
    std::int64_t pid = 0;
    std::string name;          ///< the holder's process name (what the OS reports for the pid)
    int version = 0;           ///< 0: a bare "pid\nname\n" record (Python openlock); 1: this library's
    std::string host;          ///< host name of the holder
    std::string boot_id;       ///< identity of the holder's boot; differs after a reboot
    std::string pid_namespace; ///< identity of the holder's pid namespace (containers)
    /// The holder process's start time, in OS ticks (PID-reuse guard).
    std::optional<std::uint64_t> start_time;
    std::string nonce; ///< unique per acquisition: tells our record from every other
    std::optional<std::chrono::system_clock::time_point> acquired; ///< when the lock was taken
    /// A lease: the lock expires `lifetime` after `acquired`, or at the lock file's modification time when
    /// the holder has refreshed it to a later one (docs/protocol.md, "Leases"). None: no lease.
    std::optional<std::chrono::nanoseconds> lifetime;
    /// The acquisition's fencing token (options::fencing): greater than every earlier acquisition's.
    std::optional<std::uint64_t> token;
    /// The doorbell the holder rings when it releases (the inode number of "<lock>.bell", a FIFO next to the
    /// lock; docs/protocol.md 8.6): waiters that listen on that same FIFO need no directory events. 0: none.
    std::uint64_t bell = 0;
    /// A process group that holds the lock too (options::process_group): when the holder's pid is gone, the
    /// lock still counts as held while this group, on the holder's host, boot and pid namespace, has a member
    /// (docs/protocol.md, "Process groups"). None: the holder's pid alone decides.
    std::optional<std::int64_t> process_group{};
    /// The start time of the group's leader when the lock was taken (OS ticks, as start_time): a process that
    /// has the group's number later with another start time shows that the group ended.
    std::optional<std::uint64_t> group_start_time{};
    std::vector<std::pair<std::string, std::string>> extra; ///< keys this version does not know
    /// flufl.lock's records say only "<lock path><sep><host><sep><pid><sep><random>" (pid, host and the
    /// random part as nonce are filled in, the name and the version stay empty): no start time, boot or
    /// namespace.
    lock_format format = lock_format::openlock;
    std::string claim_file; ///< flufl: the holder's claim file, whose path is all the lock file holds

    friend bool operator==(lock_record const&, lock_record const&) = default;
};

/// What a byte string turned out to be.
enum class record_status {
    ok,         ///< a lock record
    empty,      ///< no bytes (a file being written, or left by a crash during exclusive_create)
    incomplete, ///< no final newline or a required field missing: a record being written or truncated
    malformed,  ///< bytes that are not a lock record (bad pid, NUL, bad field, duplicate key)
    too_large,  ///< longer than max_record_size
};

/// The result of parse_record; record is meaningful only when status is ok.
struct parsed_record {
    record_status status = record_status::empty;
    lock_record record;
    std::string problem; ///< for anything but ok: what is wrong, in words
};

/// Records are small; anything larger is not one of ours and is not read further.
inline constexpr std::size_t max_record_size = 4096;

/// A lock file of flufl.lock names its holder's claim file "<lock path><sep><host><sep><pid><sep><random>";
/// the separator is one ASCII punctuation character that cannot occur in a host name or a path component's
/// structure ('|' by default, '^' on Windows; not '/', '\\', '.', '-' or '_').
[[nodiscard]] bool valid_flufl_separator(char separator) noexcept;

/// Parses untrusted bytes; never throws on bad input, never reads past text. A single line without a final
/// newline in flufl.lock's shape is a flufl record (format flufl).
[[nodiscard]] parsed_record parse_record(std::string_view text);

/// The canonical text of a record: parse_record(serialize_record(r)) == r for every record parse_record
/// accepted, as long as that text fits max_record_size (it writes out empty fields and time fractions, so it
/// can be longer than the text the record came from). Newlines and NULs in string fields are replaced by '?'.
[[nodiscard]] std::string serialize_record(lock_record const& record);

/// "pid 123 (name) on host h": how errors and the CLI name a holder. The name and host are displayable().
[[nodiscard]] std::string describe_holder(lock_record const& record);

/// Text from a lock file (anyone who may write the directory wrote it) as it may be shown on a terminal:
/// control characters (C0, DEL, C1) and bytes that are not UTF-8 become "\xHH" (a C1 character: its two UTF-8
/// bytes), everything else is unchanged. No escape sequence of a record reaches a terminal.
[[nodiscard]] std::string displayable(std::string_view text);

} // namespace openlock

namespace openlock::detail {

/// Whether these bytes of a lock file (or a claim file) are a lease, judged by the file's modification time:
/// a record with a "lifetime=" line, or flufl.lock's record (one line without a newline), whose lease is
/// nothing but that time. What sys::read_file is given to take that time fresh, after the content. Internal.
[[nodiscard]] bool is_lease_record(std::string_view bytes) noexcept;

} // namespace openlock::detail
