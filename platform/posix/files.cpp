// SPDX-License-Identifier: MIT
// POSIX file operations behind the :sys seam: files inside a directory (directories themselves:
// directories.cpp).
//
// Why these syscalls:
// - link(2) is the claim: atomic on every POSIX file system including NFS (flufl.lock, liblockfile), it never
//   follows a symlink at the new name, and it fails with EEXIST whatever occupies that name.
// - open(O_CREAT|O_EXCL|O_NOFOLLOW) is the fallback claim where link(2) is unsupported (EPERM on vfat and
//   some FUSE file systems) and creates claim files; it refuses to create through a symlink.
// - Reads use lstat(2) first and open(O_NOFOLLOW|O_NONBLOCK) second, then check with fstat(2) that the same
//   regular file was opened, so a symlink, FIFO or device at the lock path is reported, never followed or
//   blocked on. A lease's expiry (the modification time of a file whose bytes the caller's rule calls a
//   lease) is taken after the read, with statx(AT_STATX_FORCE_SYNC) where there is one: NFS and FUSE clients
//   serve plain stat(2) from a cache that is seconds old, and a stale time would break a live lease.
// - utimensat(AT_SYMLINK_NOFOLLOW) sets a claim file's modification time (a lease's expiry, as flufl.lock).
// - rename(2) replaces the fencing token file atomically.
// - Names are resolved from a directory descriptor (openat, unlinkat, fstatat/statx, linkat, renameat,
//   utimensat): a directory opened once by open_subdirectory stays the directory that was judged, whoever
//   swaps its name for a symlink in a shared directory afterwards (docs/protocol.md 2.4, docs/security.md).
// - What is created gets the access its directory gives its group and others (fchmod after a create whose
//   umask took bits away): in a setgid group directory every member can read the records and empty a dead
//   member's guard, whatever the creator's umask.
// - Every descriptor kept or written through is moved off 0, 1 and 2 (descriptors.hpp).
// - No fsync: a lock must survive its holder's crash, not the machine's; after a reboot the boot id differs.
// - statx is Linux's (4.11, glibc 2.28): used where the headers have it, the fallbacks fstatat and fstat
//   elsewhere, so that this file stays the POSIX part of the seam and linux/ holds what only Linux has
//   (/proc, O_TMPFILE, inotify, pidfds, doorbells).
module;
#include <cerrno>
#include <chrono>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <pwd.h>
#include <string>
#include <string_view>
#include <sys/stat.h>
#ifdef __linux__
#include <sys/sysmacros.h>
#endif
#include <system_error>
#include <unistd.h>
#include <vector>

#include "descriptors.hpp"

module openlock;
import :sys;

namespace openlock::sys {
namespace {

std::error_code last_error() noexcept {
    return {errno, std::system_category()};
}

file_identity identity_of(struct stat const& status) noexcept {
    return {static_cast<std::uint64_t>(status.st_dev), static_cast<std::uint64_t>(status.st_ino)};
}

entry_kind kind_of(mode_t mode) noexcept {
    if (S_ISREG(mode)) return entry_kind::regular;
    if (S_ISLNK(mode)) return entry_kind::symlink;
    if (S_ISDIR(mode)) return entry_kind::directory;
    return entry_kind::other;
}

// Saturating: a file time beyond what system_clock holds (year 2262) reads as the latest time there is.
std::chrono::system_clock::time_point as_time_point(std::int64_t seconds, std::int64_t nanoseconds) noexcept {
    using duration = std::chrono::system_clock::duration;
    constexpr auto most_seconds =
        std::chrono::duration_cast<std::chrono::seconds>(duration::max()).count() - 1;
    if (seconds >= most_seconds) return std::chrono::system_clock::time_point::max();
    if (seconds <= -most_seconds) return std::chrono::system_clock::time_point::min();
    return std::chrono::system_clock::time_point{std::chrono::duration_cast<duration>(
        std::chrono::seconds{seconds} + std::chrono::nanoseconds{nanoseconds})};
}

struct timespec as_timespec(std::chrono::system_clock::time_point when) noexcept {
    auto const since_epoch = std::chrono::duration_cast<std::chrono::nanoseconds>(when.time_since_epoch());
    return {static_cast<time_t>(since_epoch.count() / 1'000'000'000),
            static_cast<long>(since_epoch.count() % 1'000'000'000)};
}

// After the read: asking the server (FORCE_SYNC) where statx exists, else what fstat knows.
std::chrono::system_clock::time_point fresh_modification_time(int fd, struct stat const& fallback) noexcept {
#ifdef AT_STATX_FORCE_SYNC
    struct statx fresh{};
    if (::statx(fd, "", AT_EMPTY_PATH | AT_STATX_FORCE_SYNC, STATX_MTIME, &fresh) == 0 &&
        (fresh.stx_mask & STATX_MTIME) != 0)
        return as_time_point(fresh.stx_mtime.tv_sec, fresh.stx_mtime.tv_nsec);
#endif
    struct stat status{};
    auto const& known = ::fstat(fd, &status) == 0 ? status : fallback;
    return as_time_point(known.st_mtim.tv_sec, known.st_mtim.tv_nsec);
}

// fstatat(AT_SYMLINK_NOFOLLOW) that asks the server where statx can (NFS and FUSE clients answer plain lstat
// from a cache that may be seconds old: a release would misjudge its own lock file, a waiter see a file that
// is gone).
int fresh_stat_at(int directory, char const* name, struct stat& out) noexcept {
#ifndef AT_STATX_FORCE_SYNC
    return ::fstatat(directory, name, &out, AT_SYMLINK_NOFOLLOW);
#else
    struct statx fresh{};
    if (::statx(directory, name, AT_SYMLINK_NOFOLLOW | AT_STATX_FORCE_SYNC, STATX_BASIC_STATS, &fresh) != 0) {
        if (errno != ENOSYS && errno != EINVAL) return -1;
        return ::fstatat(directory, name, &out, AT_SYMLINK_NOFOLLOW);
    }
    out = {};
    out.st_mode = fresh.stx_mode;
    out.st_uid = fresh.stx_uid;
    out.st_dev = makedev(fresh.stx_dev_major, fresh.stx_dev_minor);
    out.st_ino = fresh.stx_ino;
    out.st_nlink = fresh.stx_nlink;
    out.st_size = static_cast<off_t>(fresh.stx_size);
    out.st_mtim = {static_cast<time_t>(fresh.stx_mtime.tv_sec), static_cast<long>(fresh.stx_mtime.tv_nsec)};
    out.st_ctim = {static_cast<time_t>(fresh.stx_ctime.tv_sec), static_cast<long>(fresh.stx_ctime.tv_nsec)};
    return 0;
#endif
}

using posix::descriptor_of;
using posix::open_at;
using posix::unique_fd;

// A name for the *at calls (see posix::name_in), kept for the length of one call.
class name_in {
public:
    name_in(directory const& at, std::string_view name) : text_(posix::name_in(at, name)) {}
    [[nodiscard]] char const* c_str() const noexcept { return text_.c_str(); }

private:
    std::string text_;
};

// Creates `name` exclusively, never through a symlink, writes content, and gives it its directory's access.
// The descriptor is returned open; on failure the name is removed again (ours: we just made it).
std::error_code create_written(directory const& at, std::string_view name, std::string_view content,
                               file_identity& created, int& descriptor) noexcept {
    descriptor = open_at(at, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY, 0644);
    if (descriptor < 0) return last_error();
    struct stat status{};
    std::error_code error;
    if (posix::write_all(descriptor, content) != 0) error = last_error();
    if (!error && ::fstat(descriptor, &status) != 0) error = last_error();
    if (!error && posix::grant_file_access(at, descriptor, status) != 0) error = last_error();
    if (error) {
        ::unlinkat(descriptor_of(at), name_in{at, name}.c_str(), 0);
        ::close(descriptor);
        descriptor = -1;
        return error;
    }
    created = identity_of(status);
    return {};
}

} // namespace

std::error_code create_exclusive(directory const& at, std::string_view name, std::string_view content,
                                 file_identity& created) {
    int descriptor = -1;
    auto const error = create_written(at, name, content, created, descriptor);
    if (descriptor >= 0) ::close(descriptor);
    return error;
}

std::error_code create_exclusive_pinned(directory const& at, std::string_view name, std::string_view content,
                                        file_identity& created, pinned_file& handle) {
    int descriptor = -1;
    if (auto const error = create_written(at, name, content, created, descriptor)) return error;
    handle = posix::own_descriptor(descriptor);
    return {};
}

std::error_code set_modified(pinned_file const& handle, std::chrono::system_clock::time_point when) {
    auto const times = as_timespec(when);
    struct timespec const both[2] = {times, times};
    if (::futimens(posix::descriptor_in(handle), both) != 0) return last_error();
    return {};
}

std::error_code make_link(directory const& at, std::string_view existing, std::string_view new_name) {
    int const fd = descriptor_of(at);
    if (::linkat(fd, name_in{at, existing}.c_str(), fd, name_in{at, new_name}.c_str(), 0) != 0)
        return last_error();
    return {};
}

std::error_code remove_file(directory const& at, std::string_view name) {
    if (::unlinkat(descriptor_of(at), name_in{at, name}.c_str(), 0) != 0) return last_error();
    return {};
}

std::error_code identify(directory const& at, std::string_view name, file_identity& out) {
    struct stat status{};
    if (fresh_stat_at(descriptor_of(at), name_in{at, name}.c_str(), status) != 0) return last_error();
    out = identity_of(status);
    return {};
}

std::string user_name(std::int64_t user_id) {
    if (user_id < 0) return {};
    struct passwd entry{};
    struct passwd* found = nullptr;
    std::vector<char> buffer(16384);
    if (::getpwuid_r(static_cast<uid_t>(user_id), &entry, buffer.data(), buffer.size(), &found) != 0 ||
        found == nullptr || entry.pw_name == nullptr)
        return {};
    return entry.pw_name;
}

std::error_code read_file(directory const& at, std::string_view name, std::size_t limit, file_content& out,
                          fresh_time_rule needs_fresh_time) {
    out = {};
    struct stat before{};
    if (fresh_stat_at(descriptor_of(at), name_in{at, name}.c_str(), before) != 0) {
        if (errno == ENOENT) return {};
        return last_error();
    }
    out.kind = kind_of(before.st_mode);
    out.identity = identity_of(before);
    out.owner = before.st_uid;
    out.modified = as_time_point(before.st_mtim.tv_sec, before.st_mtim.tv_nsec);
    if (out.kind != entry_kind::regular) return {};

    unique_fd fd{open_at(at, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | O_NOCTTY)};
    if (!fd.valid()) {
        if (errno == ENOENT) {
            out = {};
            return {};
        }
        if (errno == ELOOP) {
            out.kind = entry_kind::symlink; // replaced by a symlink between lstat and open
            return {};
        }
        return last_error(); // permission_denied: kind, identity and owner say whose it is
    }
    // A FUSE client may answer ENOENT here (NFS: ESTALE), after the open, for a file removed meanwhile by
    // another client: it is absent (the claim itself is decided by an atomic link, never by this read).
    auto const gone = [&out] {
        out = {};
        return std::error_code{};
    };
    struct stat opened{};
    if (::fstat(fd.get(), &opened) != 0) return errno == ENOENT || errno == ESTALE ? gone() : last_error();
    out.kind = kind_of(opened.st_mode);
    out.identity = identity_of(opened);
    out.owner = opened.st_uid;
    out.changed = static_cast<std::int64_t>(opened.st_ctim.tv_sec) * 1'000'000'000 + opened.st_ctim.tv_nsec;
    if (out.kind != entry_kind::regular) return {};

    out.bytes.resize(limit + 1);
    std::size_t filled = 0;
    while (filled < out.bytes.size()) {
        auto const got = ::read(fd.get(), out.bytes.data() + filled, out.bytes.size() - filled);
        if (got < 0) {
            if (errno == EINTR) continue;
            return errno == ENOENT || errno == ESTALE ? gone() : last_error();
        }
        if (got == 0) break;
        filled += static_cast<std::size_t>(got);
    }
    out.bytes.resize(filled);
    // The fresh time costs a statx that asks the server: only where the caller's rule wants it (a lease);
    // every other file gets the time fstat gave, and a waiter's look at a held lock one system call less.
    bool const fresh = needs_fresh_time != nullptr && needs_fresh_time(out.bytes);
    out.modified = fresh ? fresh_modification_time(fd.get(), opened)
                         : as_time_point(opened.st_mtim.tv_sec, opened.st_mtim.tv_nsec);
    return {};
}

std::error_code set_modified(directory const& at, std::string_view name,
                             std::chrono::system_clock::time_point when) {
    auto const times = as_timespec(when);
    struct timespec const both[2] = {times, times};
    if (::utimensat(descriptor_of(at), name_in{at, name}.c_str(), both, AT_SYMLINK_NOFOLLOW) != 0)
        return last_error();
    return {};
}

std::error_code replace_file(directory const& at, std::string_view from, std::string_view to) {
    int const fd = descriptor_of(at);
    if (::renameat(fd, name_in{at, from}.c_str(), fd, name_in{at, to}.c_str()) != 0) return last_error();
    return {};
}

bool removed_name_vanishes_while_open() noexcept {
    return true;
}

bool means_no_hard_links(std::error_code const& error) noexcept {
    if (error.category() != std::system_category()) return false;
    return error.value() == EPERM || error.value() == EOPNOTSUPP || error.value() == ENOSYS;
}

} // namespace openlock::sys
