// SPDX-License-Identifier: MIT
// Options that keep the tests' waits short or event-driven, the claim methods to try, and a stopwatch.
// Include after every other header: it imports openlock.
#pragma once

#include <chrono>

import openlock;

namespace test {

using namespace std::chrono_literals;

/// Options that keep every wait short: retry_period 20 ms.
inline openlock::options quick(openlock::claim_method method = openlock::claim_method::automatic) {
    openlock::options settings;
    settings.retry_period = 20ms;
    settings.method = method;
    return settings;
}

/// Options with these tries and retry period.
inline openlock::options quick(int tries, std::chrono::nanoseconds retry_period,
                               openlock::claim_method method = openlock::claim_method::automatic) {
    openlock::options settings;
    settings.tries = tries;
    settings.retry_period = retry_period;
    settings.method = method;
    return settings;
}

/// The defaults with a 20 s poll interval: with the tests' 10 s timeouts only an event can end a wait.
inline openlock::options events_only() {
    auto settings = openlock::get_defaults();
    settings.retry_period = 20s;
    return settings;
}

/// quick() with a lease of `lifetime` and a clock slop of `slop`.
inline openlock::options leased(std::chrono::nanoseconds lifetime, std::chrono::nanoseconds slop = 50ms,
                                openlock::claim_method method = openlock::claim_method::automatic) {
    auto settings = quick(method);
    settings.lifetime = lifetime;
    settings.clock_slop = slop;
    return settings;
}

#ifdef _WIN32
// Windows has no nameless files: claim_method::anonymous_link is unsupported there (README, "Windows").
/// Every claim method this OS has, automatic aside.
inline constexpr openlock::claim_method every_method[] = {openlock::claim_method::hard_link,
                                                          openlock::claim_method::exclusive_create};
/// Every claim method this OS has, automatic first.
inline constexpr openlock::claim_method every_method_and_automatic[] = {
    openlock::claim_method::automatic, openlock::claim_method::hard_link,
    openlock::claim_method::exclusive_create};
#else
inline constexpr openlock::claim_method every_method[] = {openlock::claim_method::anonymous_link,
                                                          openlock::claim_method::hard_link,
                                                          openlock::claim_method::exclusive_create};
inline constexpr openlock::claim_method every_method_and_automatic[] = {
    openlock::claim_method::automatic, openlock::claim_method::hard_link,
    openlock::claim_method::anonymous_link, openlock::claim_method::exclusive_create};
#endif

/// How long `operation` took.
template <class Operation>
std::chrono::milliseconds time_of(Operation&& operation) {
    auto const started = std::chrono::steady_clock::now();
    operation();
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - started);
}

} // namespace test
