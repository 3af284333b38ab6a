// SPDX-License-Identifier: MIT
// The doorbell FIFOs: one waiter woken at a release instead of the herd (Linux; docs/protocol.md 8.6).
//
// Why these syscalls: a FIFO per lock (mkfifo, in the user's /tmp/openlock-UID) that every waiting process
// keeps open and listens on through its epoll set with EPOLLEXCLUSIVE (watcher.cpp), so a byte written by a
// releasing holder wakes one sleeping epoll_wait, not all (Linux 4.5). A holder names the doorbell it rings
// in its record. FIFOs are opened O_RDWR (Linux: never blocks, and a write never meets "no reader") and
// O_NOFOLLOW, through a descriptor of the doorbell directory (openat, mkfifoat, unlinkat: the directory
// checked once is the one used). Listeners hold flock(LOCK_SH) on their FIFO; the last one leaving takes
// LOCK_EX without blocking, which only succeeds when no other process listens, and only then removes it. A
// ring opens the FIFO O_WRONLY|O_NONBLOCK: nobody listening answers ENXIO instead of blocking. Every
// descriptor is kept off 0, 1 and 2 (platform/posix/descriptors.hpp).
//
// A plain translation unit, not a module unit: what it defines is declared in doorbells.hpp, in the global
// module, for the watcher and the seam alike.
#include "doorbells.hpp"

#include "../posix/descriptors.hpp"

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <fcntl.h>
#include <filesystem>
#include <gsl/gsl>
#include <string>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include <utility>

namespace openlock::sys::linux_doorbells {
namespace {

int kept(int fd) noexcept {
    return posix::off_standard_streams(fd);
}

void close_if_open(int& fd) noexcept {
    if (fd >= 0) ::close(fd);
    fd = -1;
}

// The user's doorbell directory, /tmp/openlock-UID, opened (made first when `make`): -1 unless it is a
// directory of ours that nobody else may read or write. Never through a symlink (O_NOFOLLOW): another user
// may have made the name first. Everything after is done relative to this descriptor, so the directory
// checked is the one used.
int open_doorbell_directory(bool make) noexcept {
    char path[48];
    std::snprintf(path, sizeof path, "/tmp/openlock-%lu", static_cast<unsigned long>(::geteuid()));
    if (make && ::mkdir(path, 0700) != 0 && errno != EEXIST) return -1;
    int const fd = kept(::open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (fd < 0) return -1;
    struct stat mine{};
    if (::fstat(fd, &mine) != 0 || !S_ISDIR(mine.st_mode) || mine.st_uid != ::geteuid() ||
        (mine.st_mode & 077) != 0) {
        ::close(fd); // not ours alone: someone else could read (steal) the rings
        return -1;
    }
    return fd;
}

// What a record names: the FIFO's device and inode, mixed into one nonzero number (unique on this kernel
// while the FIFO exists; a collision with another kernel's FIFO costs a waiter at most a safety-net pause).
std::uint64_t identity_of(struct stat const& fifo) {
    std::uint64_t mixed = static_cast<std::uint64_t>(fifo.st_dev) * 0x9e3779b97f4a7c15ull ^
                          static_cast<std::uint64_t>(fifo.st_ino);
    return mixed == 0 ? 1 : mixed;
}

bool same_file(struct stat const& a, struct stat const& b) {
    return a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

} // namespace

// Not next to the lock, where a FIFO would be clutter that `cat *` blocks on. Processes of other users, or
// with another /tmp (containers), get other doorbells: their records name another one, so their waiters keep
// directory events.
std::string name_for(std::filesystem::path const& lock_file) {
    auto directory = lock_file.parent_path();
    if (directory.empty()) directory = ".";
    struct stat place{};
    if (::stat(directory.c_str(), &place) != 0) return {};
    std::uint64_t name_hash = 14695981039346656037ull; // FNV-1a
    for (unsigned char const c : lock_file.filename().string())
        name_hash = (name_hash ^ c) * 1099511628211ull;
    char name[80];
    std::snprintf(name, sizeof name, "%llx-%llx-%016llx.bell", static_cast<unsigned long long>(place.st_dev),
                  static_cast<unsigned long long>(place.st_ino), static_cast<unsigned long long>(name_hash));
    return name;
}

listening listen(std::string const& name) {
    int directory = open_doorbell_directory(true);
    if (directory < 0) return {};
    auto const close_directory = gsl::finally([&directory] { close_if_open(directory); });
    // A few rounds: a FIFO may be removed by its last listener elsewhere just as we open it.
    for (int round = 0; round < 4; ++round) {
        // Never a symlink, never anything but our own FIFO: looked at first (opening a device node may do
        // something), then O_NOFOLLOW, then fstat of what was opened.
        struct stat seen{};
        if (::fstatat(directory, name.c_str(), &seen, AT_SYMLINK_NOFOLLOW) != 0) {
            if (errno != ENOENT) return {};
            if (::mkfifoat(directory, name.c_str(), 0600) != 0 && errno != EEXIST) return {};
            continue;
        }
        if (!S_ISFIFO(seen.st_mode) || seen.st_uid != ::geteuid()) return {};
        int fd = kept(::openat(directory, name.c_str(), O_RDWR | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC));
        if (fd < 0) return {};
        auto close_fd = gsl::finally([&fd] { close_if_open(fd); });
        // Our shared lock tells a last listener elsewhere that the FIFO is in use. Refused: that listener
        // holds the exclusive one and removes the name: make or open the next FIFO.
        if (::flock(fd, LOCK_SH | LOCK_NB) != 0) continue;
        struct stat opened{};
        if (::fstat(fd, &opened) != 0 || !S_ISFIFO(opened.st_mode) || opened.st_uid != ::geteuid()) return {};
        // Still under its name: not removed between our look and our lock.
        struct stat named{};
        if (::fstatat(directory, name.c_str(), &named, AT_SYMLINK_NOFOLLOW) != 0 || !same_file(named, opened))
            continue;
        return {std::exchange(fd, -1), identity_of(opened)};
    }
    return {};
}

// The name goes only if no other process listens: our shared lock becomes exclusive only then, and while we
// hold it nobody starts listening (their shared lock is refused and they look again). The name is removed
// only while it still names this FIFO.
void leave(std::string const& name, int fd) noexcept {
    if (::flock(fd, LOCK_EX | LOCK_NB) != 0) return;
    int directory = open_doorbell_directory(false);
    struct stat named{};
    struct stat opened{};
    if (directory >= 0 && ::fstatat(directory, name.c_str(), &named, AT_SYMLINK_NOFOLLOW) == 0 &&
        ::fstat(fd, &opened) == 0 && same_file(named, opened))
        ::unlinkat(directory, name.c_str(), 0);
    close_if_open(directory);
}

void ring(std::filesystem::path const& lock_file, std::uint64_t identity) noexcept {
    std::string name;
    try {
        name = name_for(lock_file);
    } catch (...) { // no memory: the waiters' pause covers it
        return;
    }
    if (name.empty()) return;
    int directory = open_doorbell_directory(false);
    if (directory < 0) return;
    auto const close_directory = gsl::finally([&directory] { close_if_open(directory); });
    // As a listener opens it: never a symlink, never anything but our own FIFO, and only the one the record
    // names.
    struct stat seen{};
    if (::fstatat(directory, name.c_str(), &seen, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISFIFO(seen.st_mode) ||
        seen.st_uid != ::geteuid() || identity_of(seen) != identity)
        return;
    // O_NONBLOCK: a FIFO nobody has open for reading answers ENXIO (nobody listens), instead of blocking.
    int const fd = kept(::openat(directory, name.c_str(), O_WRONLY | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC));
    if (fd < 0) return;
    struct stat opened{};
    if (::fstat(fd, &opened) == 0 && S_ISFIFO(opened.st_mode) && identity_of(opened) == identity) {
        char const byte = 1;
        (void)!::write(fd, &byte, 1);
    }
    ::close(fd);
}

} // namespace openlock::sys::linux_doorbells
