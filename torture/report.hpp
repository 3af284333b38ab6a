// SPDX-License-Identifier: MIT
// What the supervisor's reports print: a file's bytes made printable, a process's state, a directory's
// entries.
#pragma once
#include <filesystem>
#include <string>
#include <sys/types.h>
#include <vector>

namespace torture::detail {

/// A whole file's bytes; empty when it cannot be read.
std::string read_all(std::filesystem::path const& path);
/// Bytes with newlines and non-printable bytes escaped (\n, \xNN).
std::string printable(std::string const& bytes);
/// The state letter of /proc/PID/stat (R, S, T, Z, ...), '?' when unreadable.
char process_state(pid_t pid);
/// Every entry of the lock directory, with its content when it is a file: for the stall and leftover reports.
std::vector<std::string> describe_directory(std::filesystem::path const& directory);

} // namespace torture::detail
