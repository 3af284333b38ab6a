// SPDX-License-Identifier: MIT
// The doorbell FIFOs (Linux; docs/protocol.md 8.6), shared by the waiters' watcher (watcher.cpp), which
// listens on them, and the seam's ring_doorbell (wake_sources.cpp). Defined in doorbells.cpp. Included in the
// global module fragment of wake_sources.cpp and by the plain units watcher.cpp and doorbells.cpp.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>

namespace openlock::sys::linux_doorbells {

/// The doorbell's name in the user's doorbell directory, after the lock's directory and file name; empty: no
/// doorbell here.
std::string name_for(std::filesystem::path const& lock_file);

/// A FIFO opened to listen on, and its identity as records name it (fd -1: none).
struct listening {
    int fd = -1;
    std::uint64_t identity = 0;
};

/// Opens the doorbell `name` (made if missing) to listen on, holding a shared flock on it that tells a last
/// listener elsewhere that the FIFO is in use. fd -1 when it cannot (not ours, not a FIFO, no directory).
listening listen(std::string const& name);

/// This process's last listener of `name` (open as fd) leaves: removes the name if no other process listens
/// and it still names this FIFO. The caller closes fd.
void leave(std::string const& name, int fd) noexcept;

/// Writes one byte to the doorbell of `lock_file` if it is our own FIFO and the one `identity` names.
void ring(std::filesystem::path const& lock_file, std::uint64_t identity) noexcept;

} // namespace openlock::sys::linux_doorbells
