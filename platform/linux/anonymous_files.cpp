// SPDX-License-Identifier: MIT
// Nameless claim files behind the :sys seam (Linux).
//
// Why these syscalls: open(O_TMPFILE) makes a file with no name, so the record can be written completely
// before linkat() gives it the lock's name in one atomic step, exactly like a hard-linked claim file, but
// without a claim name that a crash could leave behind or that would wake every inotify waiter in the
// directory. linkat() names the descriptor with AT_EMPTY_PATH where the kernel allows that (Linux 6.10 for
// the file's own opener; before, CAP_DAC_READ_SEARCH), else goes through /proc/self/fd/N with
// AT_SYMLINK_FOLLOW. The open descriptor is kept while the lock is held: it pins the inode, so the lock
// file's identity cannot be reused by another file before we check it at release. File systems without
// O_TMPFILE (NFS, FUSE, old kernels) answer EOPNOTSUPP/EISDIR/EINVAL, and the caller falls back to a named
// claim file.
module;
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <fcntl.h>
#include <filesystem>
#include <memory>
#include <string_view>
#include <sys/stat.h>
#include <system_error>
#include <unistd.h>

#include "../posix/descriptors.hpp"

module openlock;
import :sys;

namespace openlock::sys {
namespace {

std::error_code last_error() noexcept {
    return {errno, std::system_category()};
}

bool proc_fd_available() {
    static bool const available = ::access("/proc/self/fd", X_OK) == 0;
    return available;
}

using posix::descriptor_of;
using posix::name_in;

} // namespace

std::error_code create_anonymous(directory const& at, std::string_view content, file_identity& created,
                                 pinned_file& handle) {
    if (!proc_fd_available()) return std::make_error_code(std::errc::operation_not_supported);
    // The record is read by every waiter, whoever they are: it gets the access its directory gives, as
    // files the POSIX seam creates do, whatever the umask (grant_file_access below).
    int fd = -1;
    auto const where = name_in(at, ".");
    do
        fd = ::openat(descriptor_of(at), where.c_str(), O_TMPFILE | O_WRONLY | O_CLOEXEC, 0644);
    while (fd < 0 && errno == EINTR);
    fd = posix::off_standard_streams(fd);
    if (fd < 0) {
        if (errno == EOPNOTSUPP || errno == EISDIR || errno == EINVAL)
            return std::make_error_code(std::errc::operation_not_supported);
        return last_error();
    }
    auto file = posix::own_descriptor(fd);
    if (posix::write_all(fd, content) != 0) return last_error();
    struct stat status{};
    if (::fstat(fd, &status) != 0) return last_error();
    if (posix::grant_file_access(at, fd, status) != 0) return last_error();
    created = {static_cast<std::uint64_t>(status.st_dev), static_cast<std::uint64_t>(status.st_ino)};
    handle = std::move(file);
    return {};
}

std::error_code link_anonymous(pinned_file const& handle, directory const& at, std::string_view name) {
    int const fd = posix::descriptor_in(handle);
    auto const new_name = name_in(at, name);
    // linkat(fd, "", AT_EMPTY_PATH) names the descriptor's file directly; the /proc/self/fd/N path walks
    // procfs and follows a magic link first, and costs about twice as much (the claim's only step after a
    // waiter wakes up). Linux 6.10 allows it for a descriptor the caller opened itself; before, only with
    // CAP_DAC_READ_SEARCH, and without it the answer is ENOENT (as for a missing directory): then the /proc
    // path decides, and once it works where AT_EMPTY_PATH did not, it is used from then on.
    static std::atomic<bool> empty_path_refused{false};
    if (!empty_path_refused.load(std::memory_order_relaxed)) {
        if (::linkat(fd, "", descriptor_of(at), new_name.c_str(), AT_EMPTY_PATH) == 0) return {};
        if (errno != ENOENT && errno != EPERM && errno != EINVAL) return last_error();
    }
    char source[48];
    std::snprintf(source, sizeof source, "/proc/self/fd/%d", fd);
    if (::linkat(AT_FDCWD, source, descriptor_of(at), new_name.c_str(), AT_SYMLINK_FOLLOW) != 0)
        return last_error();
    empty_path_refused.store(true, std::memory_order_relaxed);
    return {};
}

} // namespace openlock::sys
