// SPDX-License-Identifier: MIT
// Descriptors the library opens on POSIX, kept off 0, 1 and 2.
//
// Why: a program started with stdin, stdout or stderr closed (`cmd 2>&-`, a daemon) gets its next open() on
// that number, and anything it (or a library it uses) writes to "stderr" lands in our file: a lock record, a
// claim file. Every descriptor the library keeps or writes through goes through here first.
#pragma once

#include <cerrno>
#include <fcntl.h>
#include <memory>
#include <string>
#include <string_view>
#include <sys/stat.h>
#include <unistd.h>

namespace openlock::sys::posix {

/// Returns fd itself when it is above 2 (or -1, errno untouched); else a close-on-exec duplicate above 2, the
/// original closed. -1 with errno set when no duplicate can be made (the original is closed then too).
inline int off_standard_streams(int fd) noexcept {
    if (fd < 0 || fd > 2) return fd;
    int const moved = ::fcntl(fd, F_DUPFD_CLOEXEC, 3);
    int const saved = errno;
    ::close(fd);
    errno = saved;
    return moved;
}

/// An open descriptor as the seam's opaque handles (pinned files, directories) hold it: closed with the last
/// copy of the handle.
inline std::shared_ptr<void> own_descriptor(int fd) {
    return {new int{fd}, [](void* held) {
                ::close(*static_cast<int*>(held));
                delete static_cast<int*>(held);
            }};
}

/// The descriptor inside a handle made by own_descriptor.
inline int descriptor_in(std::shared_ptr<void> const& handle) noexcept {
    return *static_cast<int const*>(handle.get());
}

/// The descriptor a sys::directory's names are resolved from: its own, or AT_FDCWD for one used by path.
template <class Directory>
int descriptor_of(Directory const& at) noexcept {
    return at.is_open() ? descriptor_in(at.handle) : AT_FDCWD;
}

/// A name for the *at calls: the bare name inside an opened directory, else the path of the name.
template <class Directory>
std::string name_in(Directory const& at, std::string_view name) {
    return at.is_open() ? std::string{name} : (at.path / name).string();
}

/// Opens `name` in a directory (openat from its descriptor, or by path), retrying EINTR, off 0, 1 and 2.
template <class Directory>
int open_at(Directory const& at, std::string_view name, int flags, mode_t mode = 0) noexcept {
    auto const path = name_in(at, name);
    int fd = -1;
    do
        fd = ::openat(descriptor_of(at), path.c_str(), flags, mode);
    while (fd < 0 && errno == EINTR);
    return off_standard_streams(fd);
}

/// Owns a descriptor for the length of one call and closes it.
class unique_fd {
public:
    explicit unique_fd(int fd) noexcept : fd_(fd) {}
    unique_fd(unique_fd const&) = delete;
    unique_fd& operator=(unique_fd const&) = delete;
    ~unique_fd() {
        if (fd_ >= 0) ::close(fd_);
    }
    [[nodiscard]] int get() const noexcept { return fd_; }
    [[nodiscard]] bool valid() const noexcept { return fd_ >= 0; }

private:
    int fd_;
};

/// What a new file inside a directory with these permission bits must grant: read to whoever may enter the
/// directory (docs/security.md). Removing it takes the directory's write permission, not the file's.
inline mode_t file_access(unsigned directory_bits) noexcept {
    mode_t access = S_IRUSR | S_IWUSR;
    if ((directory_bits & S_IXGRP) != 0) access |= S_IRGRP;
    if ((directory_bits & S_IXOTH) != 0) access |= S_IROTH;
    return access;
}

/// What a new directory inside one with these bits must grant: search and read to whoever may enter, and, in
/// a setgid directory that its group may write (a group project directory: the new directory gets the same
/// group), write to that group, so that any member can empty a dead member's guard. Elsewhere (a sticky /tmp)
/// the new directory's group is merely the creator's, which the parent's bits say nothing about.
inline mode_t directory_access(unsigned directory_bits) noexcept {
    mode_t access = S_IRWXU;
    if ((directory_bits & S_IXGRP) != 0) access |= S_IRGRP | S_IXGRP;
    if ((directory_bits & (S_ISGID | S_IWGRP | S_IXGRP)) == (S_ISGID | S_IWGRP | S_IXGRP))
        access |= S_IWGRP | S_ISGID;
    if ((directory_bits & S_IXOTH) != 0) access |= S_IROTH | S_IXOTH;
    return access;
}

/// Gives a file we just created (open as fd, its status in `created`) at least the access its directory
/// calls for, whatever the umask took. The bits of a directory used by path are looked up only when the umask
/// took a read bit (the common umask 022 leaves 0644 alone: no system call).
template <class Directory>
int grant_file_access(Directory const& at, int fd, struct stat const& created) noexcept {
    auto const had = static_cast<mode_t>(created.st_mode & 07777);
    unsigned bits = at.access;
    if (!at.is_open()) {
        if ((had & 0644) == 0644) return 0;
        struct stat directory{};
        if (::stat(at.path.c_str(), &directory) != 0) return -1;
        bits = directory.st_mode;
    }
    auto const wanted = static_cast<mode_t>(had | file_access(bits));
    return wanted == had ? 0 : ::fchmod(fd, wanted);
}

/// Writes all of content to fd, through short writes and EINTR: 0, or -1 with errno set.
inline int write_all(int fd, std::string_view content) noexcept {
    while (!content.empty()) {
        auto const written = ::write(fd, content.data(), content.size());
        if (written < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        content.remove_prefix(static_cast<std::size_t>(written));
    }
    return 0;
}

} // namespace openlock::sys::posix
