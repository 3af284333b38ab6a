// SPDX-License-Identifier: MIT
// Options (modules/options.cppm): the process-wide defaults, validate(), and what an option set comes to
// (the effective lease, the flufl.lock separator).
module;
#include <chrono>
#include <filesystem>
#include <mutex>
#include <optional>
#include <string>

module openlock;

namespace openlock {
namespace {

std::mutex defaults_mutex;

options& defaults() {
    static options instance;
    return instance;
}

constexpr auto longest_sensible_period = std::chrono::hours{24};

} // namespace

void validate(options const& candidate) {
    if (candidate.tries < 1)
        throw invalid_option("tries must be at least 1, not " + std::to_string(candidate.tries));
    if (candidate.retry_period <= std::chrono::nanoseconds::zero() ||
        candidate.retry_period > longest_sensible_period)
        throw invalid_option("retry_period must be positive and at most 24 h");
    if (candidate.race_delay <= std::chrono::nanoseconds::zero() ||
        candidate.race_delay > longest_sensible_period)
        throw invalid_option("race_delay must be positive and at most 24 h");
    // A lease must fit system_clock arithmetic comfortably; ten years is longer than any sensible one.
    constexpr auto longest_lifetime = std::chrono::hours{24 * 3660};
    if (candidate.lifetime &&
        (*candidate.lifetime <= std::chrono::nanoseconds::zero() || *candidate.lifetime > longest_lifetime))
        throw invalid_option("lifetime must be positive and at most ten years");
    if (candidate.clock_slop < std::chrono::nanoseconds::zero() ||
        candidate.clock_slop > longest_sensible_period)
        throw invalid_option("clock_slop must be zero or positive and at most 24 h");
    // A pid: positive, and at most what a DWORD holds (records refuse larger ones).
    if (candidate.process_group && (*candidate.process_group <= 0 || *candidate.process_group > 4294967295))
        throw invalid_option("process_group must be a process group id (positive)");
    if (candidate.keep_alive && !effective_lifetime(candidate))
        throw invalid_option("keep_alive needs a lifetime (there is no lease to keep alive)");
    if (candidate.method != claim_method::automatic && candidate.method != claim_method::hard_link &&
        candidate.method != claim_method::anonymous_link &&
        candidate.method != claim_method::exclusive_create)
        throw invalid_option("unknown claim_method");
    if (candidate.format != lock_format::openlock && candidate.format != lock_format::flufl)
        throw invalid_option("unknown lock_format");
    if (candidate.format == lock_format::flufl) {
        if (candidate.method != claim_method::automatic && candidate.method != claim_method::hard_link)
            throw invalid_option("the flufl.lock format claims with hard links (claim_method::hard_link)");
        if (candidate.fencing)
            throw invalid_option(
                "fencing tokens need openlock's format: a flufl.lock lock file holds only the "
                "path of its claim file");
    }
    if (candidate.flufl_separator != '\0' && !valid_flufl_separator(candidate.flufl_separator))
        throw invalid_option("flufl_separator must be one ASCII punctuation character other than / \\ . - _");
}

std::optional<std::chrono::nanoseconds> effective_lifetime(options const& settings) {
    if (settings.lifetime || settings.format != lock_format::flufl) return settings.lifetime;
    return flufl_default_lifetime;
}

char effective_flufl_separator(options const& settings) noexcept {
    if (settings.flufl_separator != '\0') return settings.flufl_separator;
    return std::filesystem::path::preferred_separator == '\\' ? '^' : '|'; // flufl.lock's SEP
}

options get_defaults() {
    std::lock_guard guard{defaults_mutex};
    return defaults();
}

void set_defaults(options const& new_defaults) {
    validate(new_defaults);
    std::lock_guard guard{defaults_mutex};
    defaults() = new_defaults;
}

} // namespace openlock
