// SPDX-License-Identifier: MIT
// Lock records for tests: this process's own record, provably stale ones, another host's, and lock files
// replaced behind a holder's back. Include after every other header: it imports openlock.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

import openlock;

namespace test {

/// Nonces of crafted records, distinct from each other and from any that an acquisition makes.
inline constexpr char const* nonce_a = "0123456789abcdef0123456789abcdef";
inline constexpr char const* nonce_b = "fedcba9876543210fedcba9876543210";
inline constexpr char const* nonce_c = "00112233445566778899aabbccddeeff";

/// A v1 record as this library writes it, with every field.
extern std::string const full_record;
/// Bytes shown readably in failure messages: newlines as \n, other control and non-ASCII bytes as \xNN.
std::string visible(std::string_view bytes);
/// What parse_record makes of the text.
openlock::record_status status_of(std::string_view text);

/// This process's own record as a real acquisition writes it (read back from `directory`/probe.lock, which
/// is gone again): the starting point of every crafted record.
openlock::lock_record record_of_this_process(std::filesystem::path const& directory);

/// This process's record with the pid of a process that is gone (a reaped child): provably stale.
openlock::lock_record dead_record(std::filesystem::path const& directory, std::string nonce = nonce_a);

/// A holder on another host: never judged by its process, only by its lease (if any).
openlock::lock_record other_host_record();

/// Writes the record to `path`, replacing it; its bytes.
std::string write_record(std::filesystem::path const& path, openlock::lock_record const& record);

/// Replaces the file at `path` by a new file (a new name and inode, so every claim method sees a new file)
/// holding `bytes`, as another process's claim would.
void replace_file(std::filesystem::path const& path, std::string const& bytes);

/// Replaces the lock file by another holder's record: the same one with nonce_b. Its bytes.
std::string replace_with_another_holder(std::filesystem::path const& path);

} // namespace test
