// SPDX-License-Identifier: MIT
// POSIX directory operations behind the :sys seam: opening, making, renaming, removing and listing
// directories (files inside them: files.cpp).
//
// Why these syscalls:
// - A directory is opened once (O_DIRECTORY, O_NOFOLLOW below the lock's directory, O_PATH where Linux
//   has it, so that search permission is all it needs) and names inside it are resolved from that
//   descriptor (mkdirat, renameat, unlinkat): it stays the directory that was judged, whoever swaps its name
//   for a symlink in a shared directory afterwards (docs/protocol.md 2.4, docs/security.md).
// - mkdir(2)/rename(2)/rmdir(2) on directories are the conditional operations the takeover guard is built
//   from: rename onto a non-empty directory fails, rmdir of a non-empty directory fails (docs/protocol.md).
// - A new directory gets the access its parent gives its group and others (fchmod through a descriptor of
//   what was made, never fchmodat by name), whatever the umask (docs/security.md).
// - Listing reads "." of the opened directory (fdopendir), never a name that could have been swapped since.
// - Every descriptor kept or read through is moved off 0, 1 and 2 (descriptors.hpp).
module;
#include <cerrno>
#include <cstdint>
#include <dirent.h>
#include <fcntl.h>
#include <filesystem>
#include <gsl/gsl>
#include <string>
#include <string_view>
#include <sys/stat.h>
#include <system_error>
#include <unistd.h>
#include <utility>
#include <vector>

#include "descriptors.hpp"

module openlock;
import :sys;

namespace openlock::sys {
namespace {

using posix::descriptor_of;
using posix::open_at;
using posix::unique_fd;

std::error_code last_error() noexcept {
    return {errno, std::system_category()};
}

std::error_code opened(int fd, std::filesystem::path path, directory& out) {
    if (fd < 0) return last_error();
    auto handle = posix::own_descriptor(fd);
    struct stat status{};
    if (::fstat(fd, &status) != 0) return last_error();
    if (!S_ISDIR(status.st_mode)) return std::make_error_code(std::errc::not_a_directory);
    out.handle = std::move(handle);
    out.path = std::move(path);
    out.identity = {static_cast<std::uint64_t>(status.st_dev), static_cast<std::uint64_t>(status.st_ino)};
    out.access = status.st_mode & 07777;
    return {};
}

// O_PATH needs no read permission on the directory (a group directory may grant search only); where there is
// none, reading it is what opening it takes.
#ifdef O_PATH
constexpr int directory_flags = O_PATH | O_DIRECTORY | O_CLOEXEC;
#else
constexpr int directory_flags = O_RDONLY | O_DIRECTORY | O_CLOEXEC;
#endif

} // namespace

std::error_code open_directory(std::filesystem::path const& path, directory& out) {
    auto const where = path.empty() ? std::filesystem::path{"."} : path;
    int fd = -1;
    do
        fd = ::open(where.c_str(), directory_flags);
    while (fd < 0 && errno == EINTR);
    return opened(posix::off_standard_streams(fd), where, out);
}

std::error_code open_subdirectory(directory const& parent, std::string_view name, directory& out) {
    // O_NOFOLLOW|O_DIRECTORY: a symlink, even to a directory, answers ENOTDIR (ELOOP without O_PATH).
    int const fd = open_at(parent, name, directory_flags | O_NOFOLLOW);
    if (fd < 0 && errno == ELOOP) return std::make_error_code(std::errc::not_a_directory);
    return opened(fd, parent / name, out);
}

std::error_code make_directory(directory const& at, std::string_view name) {
    if (!at.is_open()) {
        if (::mkdirat(AT_FDCWD, posix::name_in(at, name).c_str(), 0755) != 0) return last_error();
        return {};
    }
    auto const access = posix::directory_access(at.access);
    if (::mkdirat(descriptor_of(at), posix::name_in(at, name).c_str(), access) != 0) return last_error();
    // The umask may have taken bits the directory gives: set them through a descriptor of what we made (no
    // fchmodat: it would follow a symlink swapped in meanwhile).
    unique_fd made{open_at(at, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)};
    struct stat status{};
    if (!made.valid() || ::fstat(made.get(), &status) != 0) return last_error();
    if ((status.st_mode & 07777) != access && ::fchmod(made.get(), access) != 0) return last_error();
    return {};
}

std::error_code rename_directory(directory const& at, std::string_view from, std::string_view to) {
    int const fd = descriptor_of(at);
    if (::renameat(fd, posix::name_in(at, from).c_str(), fd, posix::name_in(at, to).c_str()) != 0)
        return last_error();
    return {};
}

std::error_code remove_directory(directory const& at, std::string_view name) {
    if (::unlinkat(descriptor_of(at), posix::name_in(at, name).c_str(), AT_REMOVEDIR) != 0)
        return last_error();
    return {};
}

std::error_code list_directory(directory const& at, std::vector<std::string>& names) {
    names.clear();
    // Listing needs a descriptor opened for reading: of the opened directory itself ("." from it), never of a
    // name that could have been swapped since.
    int const fd =
        at.is_open()
            ? open_at(at, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC)
            : posix::off_standard_streams(::open(at.path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (fd < 0) return last_error();
    DIR* listing = ::fdopendir(fd);
    if (listing == nullptr) {
        auto const error = last_error();
        ::close(fd);
        return error;
    }
    auto const close_listing = gsl::finally([listing] { ::closedir(listing); });
    errno = 0;
    while (dirent const* entry = ::readdir(listing)) {
        std::string_view const name{entry->d_name};
        if (name != "." && name != "..") names.emplace_back(name);
    }
    return errno != 0 ? last_error() : std::error_code{};
}

} // namespace openlock::sys
