// SPDX-License-Identifier: MIT
// A holder's steps (docs/protocol.md 4.4, 10, 11.4): whether the lock file is still ours, its release, and
// the refresh of its lease, the last two under the takeover guard where a breaker may be at work.
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

bool release_claim(fs::path const& lock_file, claim const& held, failure& error) {
    // A fenced lock records its token as the last one before its file goes, under the guard: a release that
    // checked "ours", then stalled while the lock was broken and taken again, would otherwise record an older
    // token over a newer one.
    // A leased lock's holder is alive while a breaker may remove it (its lease ran out): without the guard,
    // our check and our unlink could straddle the breaker's removal and a new holder's claim.
    sys::directory directory = by_path(lock_file); // outlives the guard, which refers to it
    std::optional<takeover_guard> guard;
    if (held.token || held.lifetime) {
        if (!open_lock_directory(lock_file, directory, error)) return false;
        guard.emplace(directory, lock_file);
        auto outcome = takeover_guard::outcome::busy;
        std::string guard_holder;
        for (int attempt = 0; attempt < 200 && outcome == takeover_guard::outcome::busy; ++attempt) {
            if (attempt > 0) std::this_thread::sleep_for(std::chrono::milliseconds{5});
            outcome = guard->try_hold(options{}, guard_holder, error);
        }
        if (outcome == takeover_guard::outcome::busy)
            error = {errc::timeout, lock_file, guard_holder + " holds the takeover guard"};
        if (outcome != takeover_guard::outcome::held) return false;
    }
    failure unclear;
    bool const ours = still_ours(lock_file, held, unclear);
    if (ours && held.token && !raise_last_token(directory, lock_file, *held.token, error)) return false;
    if (ours) {
        if (auto const removal = sys::remove_file(directory, name_of(lock_file))) {
            error = {removal, lock_file, "cannot remove the lock file"};
            return false;
        }
    }
    if (unclear.code) {
        // Still held as far as we know: the claim file stays, it pins the inode that proves ownership.
        error = unclear;
        return false;
    }
    if (!held.claim_file.empty())
        best_effort(sys::remove_file(directory, sys::name_text(held.claim_file.filename())));
    if (ours) return true;
    error = {errc::not_locked, lock_file, "the lock file was removed or replaced while held"};
    return false;
}

refresh_result refresh_claim(fs::path const& lock_file, claim const& held, std::chrono::nanoseconds lifetime,
                             options const& settings, std::chrono::system_clock::time_point& expires,
                             failure& error) {
    sys::directory directory;
    if (!open_lock_directory(lock_file, directory, error)) return refresh_result::failed;
    takeover_guard guard{directory, lock_file};
    std::string guard_holder;
    switch (guard.try_hold(settings, guard_holder, error)) {
    case takeover_guard::outcome::held:
        break;
    case takeover_guard::outcome::busy:
        error = {errc::timeout, lock_file, guard_holder + " is taking the lock over"};
        return refresh_result::busy;
    case takeover_guard::outcome::failed:
        return refresh_result::failed;
    }
    // Under the guard nobody breaks the lock: if it is ours now, it is ours when the new end is written.
    if (!still_ours(lock_file, held, error)) {
        if (error.code) return refresh_result::failed;
        error = {errc::not_locked, lock_file, "the lock file was removed or replaced while held"};
        return refresh_result::lost;
    }
    auto const new_end = lease_end(std::chrono::system_clock::now(), lifetime);
    // Our own inode, through our descriptor or our unique claim name: never another holder's file.
    auto const code = held.pin
                          ? sys::set_modified(held.pin, new_end)
                          : sys::set_modified(directory, sys::name_text(held.claim_file.filename()), new_end);
    if (code) {
        error = {code, lock_file, "cannot refresh the lease"};
        return refresh_result::failed;
    }
    expires = new_end;
    return refresh_result::refreshed;
}

bool still_ours(fs::path const& lock_file, claim const& held, failure& error) {
    // Our inode at the lock path proves it while the inode is pinned: by our nameless or created file's
    // descriptor, or by our claim file's name while that stands. A break may remove the claim file too
    // (flufl.lock's, or a sweep of a holder it cannot judge, past its lease), and a freed inode number may
    // come back as the next holder's lock file. Without a pin (that, or sshfs, which numbers inodes per name)
    // the content decides: only our acquisition wrote our nonce.
    std::error_code code;
    if (held.identity_is_proof) {
        sys::file_identity now_there;
        code = sys::identify(by_path(lock_file), name_of(lock_file), now_there);
        if (!code && now_there != held.identity) return false;
        if (!code) {
            // The claim file looked at after the lock file: standing now with our inode, it stood all along
            // (only we make that name), so the inode seen at the lock path was ours.
            sys::file_identity claim_there;
            if (held.claim_file.empty() ||
                (!sys::identify(by_path(lock_file), sys::name_text(held.claim_file.filename()),
                                claim_there) &&
                 claim_there == held.identity))
                return true;
        }
    }
    bool ours = false;
    if (!code) {
        observation now;
        failure unreadable;
        if (!observe(lock_file, now, unreadable)) code = unreadable.code;
        ours = !code && now.what == observation::kind::held && now.record.nonce == held.nonce;
    }
    if (code && code != std::errc::no_such_file_or_directory)
        error = {code, lock_file, "cannot check the lock file"};
    return ours;
}

} // namespace openlock::detail
