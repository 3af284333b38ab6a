// SPDX-License-Identifier: MIT
// A worker: acquires the one lock in a loop with a mix of calls, runs the critical section, releases. Runs in
// its own exec'd process so that the fault shim can be LD_PRELOADed into it. Errors are expected under fault
// injection: they are counted (and the first few written to stderr, which the supervisor sends to a log),
// never fatal; only the critical section's checks decide correctness.
#include "shared_state.hpp"
#include "torture.hpp"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <unistd.h>
#include <vector>

import openlock;

namespace torture {
namespace {

using namespace std::chrono_literals;

openlock::claim_method method_named(std::string_view name) {
    if (name == "hard_link") return openlock::claim_method::hard_link;
    if (name == "exclusive_create") return openlock::claim_method::exclusive_create;
    if (name == "anonymous_link") return openlock::claim_method::anonymous_link;
    return openlock::claim_method::automatic;
}

enum class call { acquire, try_acquire, timed, unlocked };

std::vector<call> calls_named(std::string_view list) {
    std::vector<call> calls;
    if (list.find("acquire") != std::string_view::npos) calls.push_back(call::acquire);
    if (list.find("try") != std::string_view::npos) calls.push_back(call::try_acquire);
    if (list.find("timed") != std::string_view::npos) calls.push_back(call::timed);
    if (calls.empty()) calls.push_back(call::acquire);
    // The self-test: a worker that sometimes enters without the lock must be caught.
    if (list.find("unlocked") != std::string_view::npos) calls.push_back(call::unlocked);
    return calls;
}

class error_log {
public:
    explicit error_log(std::uint32_t slot) : slot_(slot) {}
    // The first five of each kind (acquire, release) per process: enough to diagnose, not a flood.
    void note(char const* what, std::exception const& error) {
        int& written = what[0] == 'r' ? releases_ : acquires_;
        if (written++ < 5)
            std::fprintf(stderr, "worker %u pid %d: %s: %s\n", slot_, static_cast<int>(::getpid()), what,
                         error.what());
    }

private:
    std::uint32_t slot_;
    int acquires_ = 0;
    int releases_ = 0;
};

// What the lock file really holds (the supervisor's view: the backing directory, not a caching client): tells
// a lock file that was removed from one that a stale read only made look removed.
void log_true_lock_file() {
    char const* path = std::getenv("OPENLOCK_TORTURE_TRUE_LOCK");
    if (path == nullptr) return;
    std::ifstream in{path};
    std::string pid;
    std::getline(in, pid);
    std::fprintf(stderr, "  pid %d: the lock file in the backing directory now: %s\n",
                 static_cast<int>(::getpid()),
                 in || !pid.empty() ? ("held by pid " + pid).c_str() : "absent");
}

int hold_once(shared_state& shared, worker_config const& config, openlock::options const& settings) {
    auto& me = shared.slots[config.slot];
    openlock::file_lock lock{config.lock_file, std::nullopt, settings};
    try {
        lock.acquire(20s);
    } catch (std::exception const& error) {
        std::fprintf(stderr, "hold worker: the final acquire failed: %s\n", error.what());
        return 3;
    }
    auto const acquired = monotonic_ns();
    me.acquisitions.fetch_add(1);
    critical_section(shared, config.slot, me.generation.load(), acquired);
    me.holding.store(1);
    for (;;)
        ::pause(); // killed here while holding: the supervisor's own acquire must take the lock over
}

} // namespace

int run_worker(worker_config const& config) {
    auto* shared = map_shared_state(config.shared_file.c_str(), false);
    if (shared == nullptr) {
        std::perror("worker: cannot map the shared state");
        return 2;
    }
    auto settings = openlock::get_defaults();
    settings.method = method_named(config.method);
    if (config.hold) return hold_once(*shared, config, settings);

    auto& me = shared->slots[config.slot];
    auto const generation = me.generation.load();
    auto const calls = calls_named(config.calls);
    std::mt19937_64 random{config.seed};
    error_log log{config.slot};
    openlock::file_lock lock{config.lock_file, std::nullopt, settings};

    while (shared->stop.load() == 0) {
        auto const chosen = calls[random() % calls.size()];
        bool acquired = false;
        try {
            switch (chosen) {
            case call::acquire:
                lock.acquire();
                acquired = true;
                break;
            case call::try_acquire:
                acquired = lock.try_acquire();
                break;
            case call::timed:
                lock.acquire(std::chrono::microseconds{random() % 50'000});
                acquired = true;
                break;
            case call::unlocked:
                critical_section(*shared, config.slot, generation, monotonic_ns());
                continue;
            }
        } catch (openlock::timeout_error const&) {
        } catch (openlock::invalid_lock_file const& error) {
            me.invalid_lock_file.fetch_add(1);
            me.errors.fetch_add(1);
            log.note("acquire", error);
        } catch (std::system_error const& error) {
            me.errors.fetch_add(1);
            me.last_error_value.store(error.code().value());
            log.note("acquire", error);
        }
        if (!acquired) {
            me.timeouts.fetch_add(1);
            // A failed try must not spin: on two cores a spinning worker starves the holder.
            std::this_thread::sleep_for(std::chrono::microseconds{random() % 2000});
            continue;
        }
        auto const acquired_ns = monotonic_ns();
        me.holding.store(1);
        me.acquisitions.fetch_add(1);
        critical_section(*shared, config.slot, generation, acquired_ns);
        if (me.kill_request.load() != 0) {
            me.holding.store(2); // the supervisor kills only holders in this run: wait for it, holding
            for (;;)
                ::pause();
        }
        me.holding.store(0);
        try {
            lock.release();
        } catch (openlock::not_locked const& error) {
            // Nobody but us may remove our lock file while we live (no forced breaks here): it was taken
            // from a live holder.
            me.lost_while_held.fetch_add(1);
            me.release_errors.fetch_add(1);
            log.note("release", error);
            log_true_lock_file();
        } catch (std::system_error const& error) {
            me.release_errors.fetch_add(1);
            me.last_error_value.store(error.code().value());
            log.note("release", error);
        }
        // A release that could not remove the file keeps the lock held (file_lock::release): try again, as a
        // careful application would, until it is gone or found broken.
        while (lock.owns_lock()) {
            std::this_thread::sleep_for(std::chrono::milliseconds{1});
            std::error_code error;
            lock.release(error);
            if (error && error != openlock::errc::not_locked) me.release_errors.fetch_add(1);
        }
    }
    return 0;
}

} // namespace torture
