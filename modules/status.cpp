// SPDX-License-Identifier: MIT
// Inspection and break (docs/protocol.md 10): inspect() says what holds a lock path, break_lock() removes a
// stale lock (or, forced, any lock) through the takeover (take_over, takeover.cpp).
module;
#include <filesystem>
#include <optional>
#include <string>
#include <system_error>

module openlock;
import :protocol;
import :protocol_internals;
import :sys;

namespace openlock {

char const* to_string(lock_state state) noexcept {
    switch (state) {
    case lock_state::unlocked:
        return "unlocked";
    case lock_state::ours:
        return "ours";
    case lock_state::theirs:
        return "theirs";
    case lock_state::stale:
        return "stale";
    case lock_state::unknown:
        return "unknown";
    case lock_state::invalid:
        return "invalid";
    case lock_state::ours_expired:
        return "ours_expired";
    case lock_state::theirs_expired:
        return "theirs_expired";
    }
    return "invalid";
}

lock_record this_process_record() {
    return detail::make_record(detail::random_nonce());
}

lock_status inspect(std::filesystem::path const& lock_file, options const& settings) {
    detail::observation seen;
    detail::failure failure;
    if (!detail::observe(lock_file, seen, failure)) detail::throw_failure(failure);
    lock_status status;
    switch (seen.what) {
    case detail::observation::kind::absent:
        return status;
    case detail::observation::kind::invalid:
        status.state = lock_state::invalid;
        status.problem = seen.problem;
        return status;
    case detail::observation::kind::unreadable:
        status.state = lock_state::unknown; // held by someone we cannot judge
        status.problem = seen.problem;
        return status;
    case detail::observation::kind::held:
        break;
    }
    status.expires = detail::lease_expiry(seen.record, seen.modified);
    // A flufl.lock record says no more than host and pid; flufl.lock calls that pair on this host "ours".
    bool const flufl = seen.record.format == lock_format::flufl;
    bool const this_process = seen.record.pid == sys::current_pid() &&
                              (flufl ? seen.record.host == sys::current_process().host
                                     : detail::judge(seen.record) == detail::verdict::live);
    switch (detail::judge(seen, settings)) {
    case detail::verdict::expired:
        status.state = this_process ? lock_state::ours_expired : lock_state::theirs_expired;
        break;
    case detail::verdict::stale:
        status.state = lock_state::stale;
        break;
    case detail::verdict::unknown:
        status.state = flufl && this_process ? lock_state::ours : lock_state::unknown;
        break;
    case detail::verdict::live:
        status.state = seen.record.pid == sys::current_pid() ? lock_state::ours : lock_state::theirs;
        break;
    }
    status.record = std::move(seen.record);
    return status;
}

lock_status inspect(std::filesystem::path const& lock_file, std::error_code& error) noexcept {
    try {
        return inspect(lock_file, get_defaults(), error);
    } catch (...) {
        error = std::make_error_code(std::errc::not_enough_memory);
    }
    return {};
}

lock_status inspect(std::filesystem::path const& lock_file, options const& settings,
                    std::error_code& error) noexcept {
    try {
        error = {};
        return inspect(lock_file, settings);
    } catch (std::system_error const& e) {
        error = e.code();
    } catch (...) {
        error = std::make_error_code(std::errc::not_enough_memory);
    }
    return {};
}

break_result break_lock(std::filesystem::path const& lock_file, bool force, options const& settings) {
    for (int attempt = 0; attempt < 100; ++attempt) {
        detail::observation seen;
        detail::failure failure;
        if (!detail::observe(lock_file, seen, failure)) detail::throw_failure(failure);
        if (seen.what == detail::observation::kind::absent) return break_result::nothing_to_break;
        bool const stale =
            seen.what == detail::observation::kind::held && detail::breakable(detail::judge(seen, settings));
        if (!stale && !force) return break_result::refused;
        if (seen.what == detail::observation::kind::invalid && !seen.content_problem)
            return break_result::refused; // a symlink, directory or device is never ours to remove
        auto const takeover = detail::take_over(
            lock_file, seen, force ? detail::takeover_mode::forced : detail::takeover_mode::breakable_only,
            settings, failure);
        switch (takeover.result) {
        case detail::takeover_result::removed:
            return break_result::removed;
        case detail::takeover_result::busy:
            return break_result::busy;
        case detail::takeover_result::failed:
            detail::throw_failure(failure);
        case detail::takeover_result::changed:
            break; // look again
        }
    }
    return break_result::busy;
}

} // namespace openlock
