// SPDX-License-Identifier: MIT
// Observe and judge (docs/protocol.md 5, 11.2): what the lock path holds, and whether its holder still holds
// it: alive, provably gone (stale), beyond judging here (unknown), or past its lease (expired).
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
bool is_orphaned(std::string const& nonce);
std::string describe_type(sys::entry_kind kind);
} // namespace

bool observe(fs::path const& lock_file, observation& out, failure& error) {
    out = {};
    sys::file_content content;
    auto const code =
        sys::read_file(by_path(lock_file), name_of(lock_file), max_record_size, content, is_lease_record);
    out.identity = content.identity;
    out.changed = content.changed;
    out.modified = content.modified;
    out.owner = content.owner;
    if (code && refused_by_permissions(code) && content.kind == sys::entry_kind::regular) {
        // Another user's record that we may not read (written under a umask 077 by a version that did not
        // give it its directory's access): somebody holds the lock, we cannot say who or judge them.
        out.what = observation::kind::unreadable;
        out.problem = "a lock file of " + describe_owner(content.owner) + " that this user may not read";
        return true;
    }
    if (code) {
        error = {code, lock_file, "cannot read the lock file"};
        return false;
    }
    if (content.kind == sys::entry_kind::absent) return true;
    if (content.kind != sys::entry_kind::regular) {
        out.what = observation::kind::invalid;
        out.problem = describe_type(content.kind);
        return true;
    }
    auto parsed = parse_record(content.bytes);
    out.bytes = std::move(content.bytes);
    if (parsed.status != record_status::ok) {
        out.what = observation::kind::invalid;
        out.content_problem = true;
        out.problem = std::move(parsed.problem);
        return true;
    }
    out.what = observation::kind::held;
    out.record = std::move(parsed.record);
    return true;
}

verdict judge(lock_record const& record) {
    auto const me = sys::current_process();
    if (record.format == lock_format::flufl) {
        // A flufl.lock record names no start time, boot or pid namespace: its pid proves nothing (reused, or
        // another container's). As flufl.lock itself does, only its lease decides; our own orphans excepted.
        bool const orphan = record.host == me.host && record.pid == me.pid && is_orphaned(record.nonce);
        return orphan ? verdict::stale : verdict::unknown;
    }
    if (record.version != 1) return verdict::unknown;
    if (record.host != me.host || record.boot_id != me.boot_id || record.pid_namespace != me.pid_namespace)
        return verdict::unknown;
    if (record.pid == me.pid && is_orphaned(record.nonce)) return verdict::stale; // ours, and nobody holds it
    auto const as_verdict = [](sys::process_state state) {
        switch (state) {
        case sys::process_state::alive:
            return verdict::live;
        case sys::process_state::gone:
            return verdict::stale;
        case sys::process_state::unknown:
            return verdict::unknown;
        }
        return verdict::unknown;
    };
    auto const holder = as_verdict(sys::local_process_state(record.pid, record.start_time, record.name));
    // The holder's group holds the lock too (docs/protocol.md, "Process groups"): its command may outlive it.
    if (holder != verdict::stale || !record.process_group) return holder;
    return as_verdict(sys::local_process_group_state(*record.process_group, record.group_start_time));
}

std::optional<std::chrono::system_clock::time_point>
lease_expiry(lock_record const& record, std::chrono::system_clock::time_point modified) {
    if (record.format == lock_format::flufl) return modified; // flufl.lock's lease end is the file time
    if (!record.lifetime) return std::nullopt;
    if (!record.acquired) return modified;
    // Saturating: a record may say anything, and an overflow would look like a lease that ended long ago.
    using duration = std::chrono::system_clock::duration;
    auto const lifetime = std::chrono::duration_cast<duration>(*record.lifetime);
    auto const latest = std::chrono::system_clock::time_point::max();
    auto const first_end = *record.acquired > latest - lifetime ? latest : *record.acquired + lifetime;
    return std::max(first_end, modified);
}

verdict judge(lock_record const& record, std::chrono::system_clock::time_point modified,
              std::chrono::nanoseconds clock_slop) {
    auto const holder = judge(record);
    auto const expiry = lease_expiry(record, modified);
    if (holder == verdict::stale || !expiry) return holder;
    auto const slop = std::chrono::duration_cast<std::chrono::system_clock::duration>(clock_slop);
    auto const now = std::chrono::system_clock::now();
    return *expiry < now - slop ? verdict::expired : holder;
}

verdict judge(observation const& seen, options const& settings) {
    return judge(seen.record, seen.modified, settings.clock_slop);
}

// Whether a record file of ours (a claim file, a guard's owner file) was written by a process that is
// provably gone; with a lease's rules too, a claim file of another host's holder whose lease ran out (its
// time is the lease's end: refresh touches the same inode), so that crashed holders elsewhere leave none
// behind.
bool left_by_dead_process(sys::file_content const& content, options const& settings, writer_rules rules) {
    if (content.kind != sys::entry_kind::regular) return false;
    auto const parsed = parse_record(content.bytes);
    if (parsed.status != record_status::ok) return false;
    auto const holder = judge(parsed.record);
    if (holder == verdict::stale) return true;
    // A live local holder keeps its claim file even past its lease: the file pins the inode that its release
    // compares (a freed inode number may come back as the next holder's lock file).
    return rules == writer_rules::with_lease && holder != verdict::live &&
           judge(parsed.record, content.modified, settings.clock_slop) == verdict::expired;
}

namespace {

std::mutex orphans_mutex;
std::vector<std::string>& orphans() {
    static auto* const nonces = new std::vector<std::string>;
    return *nonces;
}

} // namespace

void remember_orphan(std::string const& nonce) {
    std::lock_guard guard{orphans_mutex};
    orphans().push_back(nonce);
}

namespace {

bool is_orphaned(std::string const& nonce) {
    std::lock_guard guard{orphans_mutex};
    return std::find(orphans().begin(), orphans().end(), nonce) != orphans().end();
}

std::string describe_type(sys::entry_kind kind) {
    switch (kind) {
    case sys::entry_kind::symlink:
        return "the lock path is a symbolic link (never followed)";
    case sys::entry_kind::directory:
        return "the lock path is a directory";
    case sys::entry_kind::other:
        return "the lock path is not a regular file (FIFO, socket or device)";
    default:
        return {};
    }
}

} // namespace

} // namespace openlock::detail
