// SPDX-License-Identifier: MIT
// The driver's two roles: the supervisor (runs, kills, freezes, checks) and the worker it fork+execs.
#pragma once
#include "cpu_throttle.hpp"

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace torture {

/// What one worker process does; passed on its command line.
struct worker_config {
    std::string shared_file;
    std::uint32_t slot = 0;
    std::string lock_file;
    std::string method; ///< anonymous_link, hard_link or exclusive_create
    std::string calls;  ///< comma list of acquire, try, timed
    std::uint64_t seed = 0;
    bool hold = false; ///< acquire once (taking over whatever is there), then wait to be killed
};

int run_worker(worker_config const& config);

/// One hammering run on one fresh lock directory.
struct run_config {
    std::string method = "anonymous_link";
    std::string calls = "acquire,try,timed";
    int workers = 6;
    double seconds = 20;                ///< at least this long
    std::uint64_t min_acquisitions = 0; ///< and at least this many acquisitions
    std::uint64_t min_kills = 0;        ///< and at least this many SIGKILLs
    double max_seconds = 3600;          ///< but never longer
    double kill_every_ms = 40;          ///< mean pause between SIGKILLs (0: none)
    double freeze_every_ms = 150;       ///< mean pause between SIGSTOPs (0: none)
    bool idle_worker = true;            ///< worker 0 runs under SCHED_IDLE
    int throttled_workers = 1;       ///< workers 1..N run in a cgroup with a CPU quota (when `cgroup` is one)
    cgroup_site cgroup;              ///< where that cgroup is made (find_cgroup_site); empty: nowhere
    cpu_quota quota;                 ///< its quota (cpu.max "5000 100000")
    std::vector<std::string> faults; ///< link_eio, excl_eexist, delay, enospc, eacces
    double fault_pct = 5;
    int fault_delay_us = 300;
    std::uint32_t hold_us = 0; ///< time inside the critical section (0: a spin of about a microsecond)
    double stall_seconds = 10;
    std::uint64_t seed = 1;
    std::filesystem::path work; ///< a fresh directory of this run's own
    /// Where the lock directory is made (default: inside `work`); with `mounts`, the backing directory that
    /// each mount shows (bindfs or sshfs views: one client per mount), and the supervisor's own view.
    std::filesystem::path locks_root;
    std::vector<std::filesystem::path> mounts; ///< worker k uses mounts[k % size]
    bool progress = false;                     ///< a line every 10 s (long runs)
    bool kill_waiters = true;                  ///< false: SIGKILL only holders (waiters are still frozen)
    /// Known failures (README.md, "Known failures") are reported as KNOWN instead of failing the run.
    bool allow_known = false;
};

struct run_result {
    std::uint64_t acquisitions = 0;
    std::uint64_t completed = 0;
    std::uint64_t kills = 0;
    std::uint64_t holder_kills = 0;
    std::uint64_t freezes = 0;
    std::uint64_t throttled = 0;         ///< worker processes started inside the CPU-quota cgroup
    std::uint64_t throttled_periods = 0; ///< periods in which the kernel throttled that cgroup (cpu.stat)
    double throttled_seconds = 0;        ///< and for how long in all
    std::uint64_t killed_inside = 0;
    std::uint64_t violations = 0;
    std::uint64_t crashes = 0;
    std::uint64_t errors = 0;
    std::uint64_t release_errors = 0;
    std::uint64_t lost_while_held = 0; ///< releases that found their lock file removed or replaced
    std::uint64_t timeouts = 0;
    std::size_t leftovers = 0;
    std::size_t known_leftovers = 0; ///< of `leftovers`: clutter the protocol documents (claim/staging)
    bool stalled = false;
    bool known_stall = false; ///< the stall has the signature of a known failure
    bool final_acquire_failed = false;
    bool known_final = false; ///< and the lock file has the signature of a known failure
    bool allow_known = false;
    double elapsed = 0;
    [[nodiscard]] bool ok() const {
        auto const unexplained_leftovers = allow_known ? leftovers - known_leftovers : leftovers;
        bool const bad_stall = stalled && !(allow_known && known_stall);
        bool const bad_final = final_acquire_failed && !(allow_known && known_final);
        return violations == 0 && lost_while_held == 0 && crashes == 0 && unexplained_leftovers == 0 &&
               !bad_stall && !bad_final;
    }
};

run_result run_supervised(run_config const& config, std::string const& self);

/// The lock directory of a run, relative to locks_root (or to work when that is empty).
inline std::filesystem::path lock_directory_name(run_config const& config) {
    if (config.locks_root.empty()) return "locks";
    return config.work.parent_path().filename().string() + "-" + config.work.filename().string() + "/locks";
}

inline std::filesystem::path lock_directory_of(run_config const& config) {
    return (config.locks_root.empty() ? config.work : config.locks_root) / lock_directory_name(config);
}

} // namespace torture
