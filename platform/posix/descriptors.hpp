// Descriptors the library opens on POSIX, kept off 0, 1 and 2.
//
// Why: a program started with stdin, stdout or stderr closed (`cmd 2>&-`, a daemon) gets its next open() on
// that number, and anything it (or a library it uses) writes to "stderr" lands in our file: a lock record, a
// claim file. Every descriptor the library keeps or writes through goes through here first.
#pragma once

#include <cerrno>
#include <fcntl.h>
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

} // namespace openlock::sys::posix
