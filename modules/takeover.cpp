// SPDX-License-Identifier: MIT
// The takeover (docs/protocol.md 7.3, 7.4, 11.3): under the takeover guard, removing exactly the lock file
// that was observed and judged breakable, then sweeping what dead processes left beside it.
module;
#include <algorithm>
#include <array>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

module openlock;
import :protocol;
import :protocol_internals;
import :sys;

namespace openlock::detail {

namespace fs = std::filesystem;

namespace {
void remove_flufl_claim(sys::directory const& directory, fs::path const& lock_file,
                        observation const& removed);
void sweep_leftovers(sys::directory const& directory, fs::path const& lock_file, options const& settings);
} // namespace

takeover_report take_over(fs::path const& lock_file, observation const& observed, takeover_mode mode,
                          options const& settings, failure& error) {
    takeover_report report_back;
    auto const started = std::chrono::steady_clock::now();
    sys::directory directory;
    if (!open_lock_directory(lock_file, directory, error)) {
        report_back.result = takeover_result::failed;
        return report_back;
    }
    takeover_guard guard{directory, lock_file};
    switch (guard.try_hold(settings, report_back.guard_holder, error, mode)) {
    case takeover_guard::outcome::held:
        break;
    case takeover_guard::outcome::busy:
        report_back.result = takeover_result::busy;
        return report_back;
    case takeover_guard::outcome::failed:
        report_back.result = takeover_result::failed;
        return report_back;
    }

    // Under the guard nobody else removes the lock file, and a stale holder cannot come back: what we read
    // now stays at the lock path until we remove it.
    observation now;
    if (!observe(lock_file, now, error)) {
        report_back.result = takeover_result::failed;
        return report_back;
    }
    // The bytes hold the holder's nonce, unique to one acquisition: equal bytes are the same lock file.
    // (Inode numbers are not compared: some file systems give a name a new one on every lookup.) A file we
    // may not read has no bytes to compare: its identity decides (only a forced break removes one).
    bool const same = now.what == observed.what && now.bytes == observed.bytes &&
                      (now.what != observation::kind::unreadable || now.identity == observed.identity);
    auto const judged = now.what == observation::kind::held ? judge(now, settings) : verdict::unknown;
    bool const removable = mode == takeover_mode::forced || breakable(judged);
    report_back.result = takeover_result::changed;
    if (same && removable && now.what != observation::kind::absent) {
        if (now.what == observation::kind::held && now.record.token &&
            !raise_last_token(directory, lock_file, *now.record.token, error)) {
            report_back.result = takeover_result::failed;
            return report_back;
        }
        auto const code = sys::remove_file(directory, name_of(lock_file));
        // Gone already (a removal outside the protocol; Windows: a name that was going away, delete pending,
        // when we read it): nothing left to remove, and the caller looks again.
        if (code && code == std::errc::no_such_file_or_directory) {
            sweep_leftovers(directory, lock_file, settings);
            return report_back;
        }
        if (code) {
            // A forced break removes a live or garbage lock too: the message says which it was.
            std::string const what = judged == verdict::stale     ? "the stale lock file"
                                     : judged == verdict::expired ? "the expired lock file"
                                                                  : "the lock file";
            error = {code, lock_file,
                     refused_by_permissions(code)
                         ? "cannot remove " + what + ": " + permission_remedy(now.owner)
                         : "cannot remove " + what};
            report_back.result = takeover_result::failed;
            return report_back;
        }
        report_back.result = takeover_result::removed;
        // Waiters behind a holder that rings may sleep with directory events off (docs/protocol.md 8.6).
        if (now.what == observation::kind::held && now.record.bell != 0)
            sys::ring_doorbell(lock_file, now.record.bell);
        if (now.what == observation::kind::held && now.record.format == lock_format::flufl)
            remove_flufl_claim(directory, lock_file, now);
        if (judged == verdict::expired)
            report(settings, diagnostic::kind::expired_lock_broken, lock_file,
                   "the lease of " + describe_holder(now.record) + " had expired");
        else
            report(settings, diagnostic::kind::stale_lock_removed, lock_file,
                   now.what == observation::kind::held ? describe_holder(now.record) : now.problem);
    }
    sweep_leftovers(directory, lock_file, settings);

    auto const took = std::chrono::steady_clock::now() - started;
    if (took > settings.race_delay)
        report(settings, diagnostic::kind::slow_system, lock_file,
               "a takeover took " +
                   std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(took).count()) +
                   " ms");
    return report_back;
}

namespace {

// After removing a broken flufl.lock lock file: its holder's claim file, found by the name the lock file held
// (in the lock's directory whatever path the holder used) and removed only when it holds that same name.
void remove_flufl_claim(sys::directory const& directory, fs::path const& lock_file,
                        observation const& removed) {
    auto const named = sys::name_text(fs::path{removed.record.claim_file}.filename());
    auto const prefix = name_of(lock_file);
    if (!named.starts_with(prefix) || named.size() == prefix.size()) return;
    sys::file_content content;
    if (!sys::read_file(directory, named, max_record_size, content) &&
        content.kind == sys::entry_kind::regular && content.bytes == removed.bytes)
        best_effort(remove_if_unchanged(directory, named, content.identity));
}

// A process killed between creating a helper file (or directory) and writing its record leaves it empty, with
// no owner to judge. Nothing of ours stays empty for long: after this much time it is abandoned.
constexpr auto abandoned_after = std::chrono::minutes{1};

bool older_than(std::chrono::system_clock::time_point modified, std::chrono::minutes age) {
    return std::chrono::system_clock::now() - modified > age;
}

bool remove_abandoned_empty_directory(sys::directory const& parent, std::string const& name) {
    sys::directory opened;
    std::vector<std::string> names;
    sys::file_content status;
    if (sys::open_subdirectory(parent, name, opened) || sys::list_directory(opened, names) || !names.empty())
        return false;
    if (sys::read_file(parent, name, 0, status) || status.kind != sys::entry_kind::directory ||
        status.identity != opened.identity || !older_than(status.modified, abandoned_after))
        return false;
    return !sys::remove_directory(parent, name); // rmdir: only if empty
}

// Under the guard: claim files and half-made guard directories of dead processes next to this lock, each
// judged and removed through the lock's directory descriptor (docs/protocol.md 2.2).
void sweep_leftovers(sys::directory const& directory, fs::path const& lock_file, options const& settings) {
    auto const stem = helper_stem(lock_file);
    auto const claim_prefix = stem + ".claim.";
    auto const guard_prefix = stem + ".takeover.";
    std::vector<std::string> names;
    if (sys::list_directory(directory, names)) return;
    // Only names this library makes (prefix + a 32-hex-digit nonce) are candidates; contents decide.
    for (auto const& name : names) {
        bool removed = false;
        if (name.starts_with(claim_prefix) && is_nonce(std::string_view{name}.substr(claim_prefix.size()))) {
            sys::file_content content;
            if (sys::read_file(directory, name, max_record_size, content, is_lease_record)) continue;
            bool const abandoned = content.kind == sys::entry_kind::regular && content.bytes.empty() &&
                                   older_than(content.modified, abandoned_after);
            removed = (left_by_dead_process(content, settings, writer_rules::with_lease) || abandoned) &&
                      !remove_if_unchanged(directory, name, content.identity);
        } else if (name.starts_with(guard_prefix) &&
                   is_nonce(std::string_view{name}.substr(guard_prefix.size()))) {
            removed = remove_dead_owner_directory(directory, name, settings) == guard_removal::removed ||
                      remove_abandoned_empty_directory(directory, name);
        }
        if (removed)
            report(settings, diagnostic::kind::leftover_removed, directory / name,
                   "left by a process that is gone");
    }
}

} // namespace

} // namespace openlock::detail
