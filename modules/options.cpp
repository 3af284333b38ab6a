module;
#include <chrono>
#include <mutex>
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
    if (candidate.keep_alive && !candidate.lifetime)
        throw invalid_option("keep_alive needs a lifetime (there is no lease to keep alive)");
    if (candidate.method != claim_method::automatic && candidate.method != claim_method::hard_link &&
        candidate.method != claim_method::anonymous_link &&
        candidate.method != claim_method::exclusive_create)
        throw invalid_option("unknown claim_method");
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
