// SPDX-License-Identifier: MIT
// What on_diagnostic reports, collected for a test to look at. Include after every other header: it imports
// openlock.
#pragma once

#include <algorithm>
#include <cstddef>
#include <filesystem>
#include <mutex>
#include <vector>

#include "support/timing.hpp"

import openlock;

namespace test {

/// Collects the diagnostics of every lock whose options it made (`collecting`); safe to report to from any
/// thread (keep-alive reports from its own). It must outlive those locks.
class diagnostics_seen {
public:
    diagnostics_seen() = default;
    diagnostics_seen(diagnostics_seen const&) = delete;
    diagnostics_seen& operator=(diagnostics_seen const&) = delete;

    /// `settings` with on_diagnostic reporting here.
    [[nodiscard]] openlock::options collecting(openlock::options settings) {
        settings.on_diagnostic = [this](openlock::diagnostic const& d) {
            std::scoped_lock hold{mutex_};
            seen_.push_back(d);
        };
        return settings;
    }
    [[nodiscard]] std::vector<openlock::diagnostic> all() const {
        std::scoped_lock hold{mutex_};
        return seen_;
    }
    [[nodiscard]] bool empty() const { return all().empty(); }
    [[nodiscard]] std::size_t count(openlock::diagnostic::kind what) const {
        auto const seen = all();
        return static_cast<std::size_t>(
            std::ranges::count_if(seen, [&](auto const& d) { return d.what == what; }));
    }
    [[nodiscard]] bool reported(openlock::diagnostic::kind what) const { return count(what) > 0; }
    [[nodiscard]] bool reported(openlock::diagnostic::kind what, std::filesystem::path const& path) const {
        auto const seen = all();
        return std::ranges::any_of(seen, [&](auto const& d) { return d.what == what && d.path == path; });
    }
    void clear() {
        std::scoped_lock hold{mutex_};
        seen_.clear();
    }

private:
    mutable std::mutex mutex_;
    std::vector<openlock::diagnostic> seen_;
};

/// quick() options that collect their diagnostics.
struct observed_options {
    diagnostics_seen seen;
    openlock::options settings = seen.collecting(quick());

    [[nodiscard]] bool reported(openlock::diagnostic::kind what) const { return seen.reported(what); }
    [[nodiscard]] bool reported(openlock::diagnostic::kind what, std::filesystem::path const& path) const {
        return seen.reported(what, path);
    }
};

} // namespace test
