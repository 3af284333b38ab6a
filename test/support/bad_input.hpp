// SPDX-License-Identifier: MIT
// Checks shared by the bad-input suites: a snapshot of a directory tree to show that nothing changed, the
// OS error an unusable lock path gives, and a real record to plant. Include after every other header: it
// imports openlock.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <system_error>
#include <vector>

import openlock;

namespace test {

/// Everything in a directory tree, without following symlinks: names, kinds, file bytes and symlink targets.
std::vector<std::string> snapshot(std::filesystem::path const& directory);

/// Expects lock_error with exactly this OS error from acquire and try_acquire, with nothing created.
/// (Without an expected code: any OS error.)
void check_os_error(std::filesystem::path const& path, std::optional<std::errc> expected,
                    openlock::claim_method method);

/// The record of a lock held by this process, as a file somewhere else (what a symlink might point at).
std::string a_real_record(std::filesystem::path const& directory);

} // namespace test
