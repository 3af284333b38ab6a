// SPDX-License-Identifier: MIT
// The name of the file system a benchmark runs on (statfs f_type), for its report. Linux only, as the
// benchmarks.
#pragma once

#include <cstdio>
#include <filesystem>
#include <string>
#include <sys/statfs.h>

inline std::string file_system_name(std::filesystem::path const& directory) {
    struct statfs info{};
    if (::statfs(directory.c_str(), &info) != 0) return "unknown";
    switch (static_cast<unsigned long>(static_cast<unsigned int>(info.f_type))) {
    case 0xEF53: // ext2, ext3 and ext4 share it
        return "ext4";
    case 0x01021994:
        return "tmpfs";
    case 0x58465342:
        return "xfs";
    case 0x9123683E:
        return "btrfs";
    case 0x794C7630:
        return "overlayfs";
    case 0x2FC12FC1:
        return "zfs";
    case 0xF2F52010:
        return "f2fs";
    case 0x6969:
        return "nfs";
    case 0x65735546:
        return "fuse";
    default: {
        char hex[24];
        std::snprintf(hex, sizeof hex, "fs_%lx", static_cast<unsigned long>(info.f_type));
        return hex;
    }
    }
}
