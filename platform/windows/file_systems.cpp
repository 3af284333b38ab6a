// SPDX-License-Identifier: MIT
// Which file systems other machines share, behind the :sys seam (Windows).
//
// Why these calls: a UNC path (\\server\share) is remote by its name; any other path is on the volume that
// GetVolumePathNameW finds, whose GetDriveTypeW says DRIVE_REMOTE for a mapped network drive. Change
// notifications there report only this machine's changes reliably, so waiters poll (wake_sources.cpp). A
// path whose volume cannot be told counts as shared.
module;
#include "win32.hpp"

#include <filesystem>

module openlock;
import :sys;

namespace openlock::sys {

bool is_network_file_system(std::filesystem::path const& directory) {
    auto const name = win32::long_path(directory);
    if (name.starts_with(LR"(\\?\UNC\)")) return true;
    wchar_t volume[MAX_PATH + 1];
    if (!::GetVolumePathNameW(name.c_str(), volume, MAX_PATH + 1)) return true; // cannot tell: poll
    return ::GetDriveTypeW(volume) == DRIVE_REMOTE;
}

} // namespace openlock::sys
