// SPDX-License-Identifier: MIT
// Which file systems other machines share, behind the :sys seam (Linux).
//
// Why statfs(2): its f_type names the file system's driver, and through the drivers below other machines (or
// a user-space server) change files without this kernel seeing it: inotify misses those changes, so waiters
// poll there (wake_sources.cpp), and the automatic claim method links nameless files only on local file
// systems (claim.cpp). A directory whose file system cannot be told counts as shared.
module;
#include <array>
#include <cstdint>
#include <filesystem>
#include <sys/statfs.h>

module openlock;
import :sys;

namespace openlock::sys {
namespace {

// statfs f_type values of file systems that other machines (or a user-space server) may change.
constexpr std::array<std::uint64_t, 16> shared_file_systems{
    0x6969,     // NFS
    0x517b,     // SMB
    0xff534d42, // CIFS
    0xfe534d42, // SMB2
    0x65735546, // FUSE (sshfs, bindfs, s3fs, ...)
    0x00c36400, // Ceph
    0x01021997, // 9p (v9fs)
    0x5346414f, // AFS
    0x6b414653, // kAFS
    0x73757245, // Coda
    0x564c,     // NCP
    0x01161970, // GFS2
    0x7461636f, // OCFS2
    0x0bd00bd0, // Lustre
    0x47504653, // GPFS
    0x013111a8, // IBRIX
};

} // namespace

bool is_network_file_system(std::filesystem::path const& directory) {
    struct statfs info{};
    if (::statfs(directory.c_str(), &info) != 0) return true; // cannot tell: do not trust local events
    auto const type = static_cast<std::uint64_t>(static_cast<std::uint32_t>(info.f_type));
    for (auto const shared : shared_file_systems)
        if (type == shared) return true;
    return false;
}

} // namespace openlock::sys
