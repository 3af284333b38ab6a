// SPDX-License-Identifier: MIT
// openlock-torture: K processes hammer one lock while a supervisor kills, freezes and slows them, optionally
// with faults injected into their system calls. Exit status 0 only when no run found a violation, a stall, a
// lock that could not be taken over, or anything left in the lock directory. See torture/README.md.
#include "torture.hpp"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <string_view>
#include <unistd.h>
#include <vector>

namespace {

namespace fs = std::filesystem;
using torture::run_config;

constexpr char const* usage = R"(usage: openlock-torture [--ci | --long] [options]
  --ci                  every claim method with kills and freezes, then each fault kind per method (< 3 min)
  --long                one method until --acquisitions and --kills are both reached (progress every 10 s)
  --method M            anonymous_link, hard_link, exclusive_create or all (default: all with --ci)
  --workers K           worker processes (6)
  --seconds S           hammering per run (20; --ci: 20 per method)
  --fault-seconds S     per fault run in --ci (5; kills every 500 ms there)
  --acquisitions N      --long: at least N acquisitions (1000000)
  --kills M             --long: at least M SIGKILLs (1000)
  --max-seconds S       never run longer than this (3600)
  --faults LIST|each    comma list of link_eio, excl_eexist, delay, enospc, eacces; "each": one run per kind
  --fault-pct P         probability of a fault per matching call, percent (5)
  --kill-every-ms X     mean pause between SIGKILLs (40; --long 100; 0 = none)
  --freeze-every-ms X   mean pause between SIGSTOPs (150; 0 = none)
  --no-idle             do not run worker 0 under SCHED_IDLE
  --throttle N          run workers 1..N in a cgroup with a CPU quota (1; 0 = none); cgroup v2 cpu.max, or
                        cpu.cfs_quota_us where the cpu controller is on a v1 hierarchy; skipped with a message
                        where neither can be made
  --cpu-max "Q P"       that quota: Q microseconds of CPU in every P ("5000 100000": 5 % of one CPU)
  --allow-known         report the known failures of README.md as KNOWN instead of failing (default with --ci)
  --strict              fail on known failures too (overrides the --ci default)
  --hold-us N           sleep N microseconds inside the critical section (default: a spin of about 1 us)
  --calls LIST          comma list of acquire, try, timed (all three)
  --stall-seconds S     no acquisition for this long is a failure (10)
  --seed N              random seed (1)
  --work DIR            scratch directory (/tmp/openlock-torture-PID); kept when a run fails
  --locks DIR           make the lock directories under DIR instead (another file system)
  --mounts A,B          with --locks: A, B, ... show DIR through different clients (bindfs, sshfs);
                        worker k uses mount k % n, the supervisor DIR itself
)";

std::vector<std::string> split(std::string const& list) {
    std::vector<std::string> items;
    std::size_t start = 0;
    while (start <= list.size()) {
        auto const end = std::min(list.find(',', start), list.size());
        if (end > start) items.push_back(list.substr(start, end - start));
        start = end + 1;
    }
    return items;
}

std::vector<std::string> const all_methods{"anonymous_link", "hard_link", "exclusive_create"};
std::vector<std::string> const all_faults{"link_eio", "excl_eexist", "delay", "enospc", "eacces"};

bool applies(std::string const& fault, std::string const& method) {
    return !(fault == "link_eio" && method == "exclusive_create"); // no link() to fail
}

std::string describe(run_config const& run) {
    std::string text = run.method;
    for (auto const& fault : run.faults)
        text += (fault == run.faults.front() ? " faults " : "+") + fault;
    return text;
}

std::string verdict(torture::run_result const& result) {
    if (!result.ok()) return "FAIL";
    std::string known;
    if (result.stalled) known = "KNOWN stall";
    if (result.final_acquire_failed) known += (known.empty() ? "KNOWN " : ", ") + std::string{"leaked lock"};
    if (result.known_leftovers != 0)
        known += (known.empty() ? "KNOWN " : ", ") + std::to_string(result.known_leftovers) + " clutter";
    return known.empty() ? "ok" : "ok (" + known + ")";
}

int run_worker_mode(int argc, char** argv, bool hold) {
    if (argc != 8) {
        std::fputs("openlock-torture: internal worker mode needs 6 arguments\n", stderr);
        return 64;
    }
    torture::worker_config config;
    config.shared_file = argv[2];
    config.slot = static_cast<std::uint32_t>(std::stoul(argv[3]));
    config.lock_file = argv[4];
    config.method = argv[5];
    config.calls = argv[6];
    config.seed = std::stoull(argv[7]);
    config.hold = hold;
    return torture::run_worker(config);
}

} // namespace

int main(int argc, char** argv) {
    std::string_view const first = argc > 1 ? argv[1] : "";
    if (first == "--worker" || first == "--hold") return run_worker_mode(argc, argv, first == "--hold");

    bool ci = false;
    bool strict = false;
    bool allow_known = false;
    bool long_mode = false;
    std::string method;
    std::string faults;
    double seconds = -1;
    double fault_seconds = 5;
    double kill_every = -1;
    run_config base;
    base.min_acquisitions = 0;
    std::uint64_t acquisitions = 1'000'000;
    std::uint64_t kills = 1'000;
    fs::path work = "/tmp/openlock-torture-" + std::to_string(::getpid());
    for (int i = 1; i < argc; ++i) {
        std::string_view const option = argv[i];
        auto const value = [&]() -> std::string {
            if (i + 1 >= argc) {
                std::fprintf(stderr, "openlock-torture: %s needs a value\n%s", argv[i], usage);
                std::exit(64);
            }
            return argv[++i];
        };
        if (option == "--help") {
            std::fputs(usage, stdout);
            return 0;
        }
        if (option == "--ci")
            ci = true;
        else if (option == "--long")
            long_mode = true;
        else if (option == "--method")
            method = value();
        else if (option == "--workers")
            base.workers = std::stoi(value());
        else if (option == "--seconds")
            seconds = std::stod(value());
        else if (option == "--fault-seconds")
            fault_seconds = std::stod(value());
        else if (option == "--acquisitions")
            acquisitions = std::stoull(value());
        else if (option == "--kills")
            kills = std::stoull(value());
        else if (option == "--max-seconds")
            base.max_seconds = std::stod(value());
        else if (option == "--faults")
            faults = value();
        else if (option == "--fault-pct")
            base.fault_pct = std::stod(value());
        else if (option == "--kill-every-ms")
            kill_every = std::stod(value());
        else if (option == "--freeze-every-ms")
            base.freeze_every_ms = std::stod(value());
        else if (option == "--no-idle")
            base.idle_worker = false;
        else if (option == "--throttle")
            base.throttled_workers = std::stoi(value());
        else if (option == "--cpu-max") {
            if (!torture::parse_cpu_quota(value(), base.quota)) {
                std::fputs("openlock-torture: --cpu-max wants \"QUOTA PERIOD\" in microseconds, period "
                           "1000..1000000, "
                           "quota at least 1000\n",
                           stderr);
                return 64;
            }
        } else if (option == "--strict")
            strict = true;
        else if (option == "--allow-known")
            allow_known = true;
        else if (option == "--calls")
            base.calls = value();
        else if (option == "--stall-seconds")
            base.stall_seconds = std::stod(value());
        else if (option == "--seed")
            base.seed = std::stoull(value());
        else if (option == "--hold-us")
            base.hold_us = static_cast<std::uint32_t>(std::stoul(value()));
        else if (option == "--locks")
            base.locks_root = value();
        else if (option == "--mounts")
            for (auto const& mount : split(value()))
                base.mounts.emplace_back(mount);
        else if (option == "--work")
            work = value();
        else {
            std::fprintf(stderr, "openlock-torture: unknown option %s\n%s", argv[i], usage);
            return 64;
        }
    }
    if (base.workers < 1 || base.workers > 30) {
        std::fputs("openlock-torture: --workers must be 1..30\n", stderr);
        return 64;
    }
    if (base.throttled_workers < 0 || base.throttled_workers >= base.workers)
        base.throttled_workers = std::max(0, std::min(base.throttled_workers, base.workers - 1));
    base.kill_every_ms = kill_every >= 0 ? kill_every : long_mode ? 100 : 40;
    base.allow_known = allow_known || (ci && !strict);

    std::vector<std::string> const methods =
        method.empty()    ? (long_mode ? std::vector<std::string>{"anonymous_link"} : all_methods)
        : method == "all" ? all_methods
                          : std::vector<std::string>{method};
    std::vector<run_config> runs;
    auto add = [&](std::string const& m, std::vector<std::string> fault_list, double run_seconds) {
        auto run = base;
        run.method = m;
        run.faults = std::move(fault_list);
        run.seconds = run_seconds;
        run.seed = base.seed + runs.size();
        run.work = work / ("run-" + std::to_string(runs.size()));
        // A waiter killed between its O_EXCL create and its write leaves an empty lock file that nobody may
        // remove (docs/protocol.md R2): with known failures allowed, exclusive_create only loses holders.
        if (run.allow_known && m == "exclusive_create") run.kill_waiters = false;
        runs.push_back(std::move(run));
    };
    if (ci) {
        // The self-test: workers that sometimes enter without the lock; this run passes only if it is caught.
        add("anonymous_link", {}, 3);
        runs.back().calls = "acquire,try,timed,unlocked";
    }
    if (long_mode) {
        base.min_acquisitions = acquisitions;
        base.min_kills = kills;
        base.progress = true;
        for (auto const& m : methods)
            add(m, faults.empty() || faults == "none" ? std::vector<std::string>{} : split(faults),
                seconds >= 0 ? seconds : 0);
    } else {
        bool const fault_runs_only = !faults.empty() && faults != "none" && !ci;
        if (!fault_runs_only)
            for (auto const& m : methods)
                add(m, {}, seconds >= 0 ? seconds : 20);
        auto const kinds = faults.empty() || faults == "each" ? all_faults : split(faults);
        if (ci || faults == "each") {
            for (auto const& m : methods)
                for (auto const& kind : kinds)
                    if (applies(kind, m)) {
                        add(m, {kind}, fault_seconds);
                        // Rare kills, so that a lock orphaned by a live worker shows as one instead of being
                        // healed by its owner's death a moment later.
                        if (kill_every < 0) runs.back().kill_every_ms = 500;
                    }
        } else if (fault_runs_only) {
            for (auto const& m : methods)
                add(m, kinds, seconds >= 0 ? seconds : 20);
        }
    }

    char self[4096];
    auto const length = ::readlink("/proc/self/exe", self, sizeof self - 1);
    if (length <= 0) {
        std::perror("openlock-torture: /proc/self/exe");
        return 70;
    }
    self[length] = '\0';

    std::printf("openlock-torture: %zu run(s), %d workers, seed %llu, scratch %s\n", runs.size(),
                base.workers, static_cast<unsigned long long>(base.seed), work.c_str());
    if (base.throttled_workers > 0) {
        auto const site = torture::find_cgroup_site(base.quota);
        for (auto& run : runs)
            run.cgroup = site;
        if (site.parent.empty())
            std::printf("CPU quota: SKIPPED, workers run without one (%s)\n", site.describe().c_str());
        else
            std::printf("CPU quota: worker%s 1%s in a cgroup with %lld us of CPU per %lld us: %s\n",
                        base.throttled_workers > 1 ? "s" : "",
                        base.throttled_workers > 1 ? ("-" + std::to_string(base.throttled_workers)).c_str()
                                                   : "",
                        static_cast<long long>(base.quota.quota_us),
                        static_cast<long long>(base.quota.period_us), site.describe().c_str());
    } else {
        std::printf("CPU quota: none (--throttle 0)\n");
    }
    std::fflush(stdout);
    torture::run_result total;
    int failed = 0;
    for (auto const& run : runs) {
        auto result = torture::run_supervised(run, self);
        bool const self_test = run.calls.find("unlocked") != std::string::npos;
        if (self_test) {
            std::printf("self-test (workers sometimes enter without the lock): %s\n",
                        result.violations != 0 ? "caught, as it must be" : "NOT CAUGHT");
            if (result.violations == 0)
                ++failed;
            else
                fs::remove_all(run.work);
            continue;
        }
        std::printf(
            "%-34s %9llu acquisitions %8.0f/s  kills %5llu (holders %llu, inside %llu)  freezes %4llu  "
            "throttled %llu (%llu periods, %.1f s)  violations %llu  errors %llu  leftovers %zu  %5.1f s  "
            "%s\n",
            describe(run).c_str(), static_cast<unsigned long long>(result.acquisitions),
            static_cast<double>(result.acquisitions) / result.elapsed,
            static_cast<unsigned long long>(result.kills),
            static_cast<unsigned long long>(result.holder_kills),
            static_cast<unsigned long long>(result.killed_inside),
            static_cast<unsigned long long>(result.freezes),
            static_cast<unsigned long long>(result.throttled),
            static_cast<unsigned long long>(result.throttled_periods), result.throttled_seconds,
            static_cast<unsigned long long>(result.violations),
            static_cast<unsigned long long>(result.errors) + result.release_errors, result.leftovers,
            result.elapsed, verdict(result).c_str());
        std::fflush(stdout);
        total.acquisitions += result.acquisitions;
        total.kills += result.kills;
        total.holder_kills += result.holder_kills;
        total.killed_inside += result.killed_inside;
        total.freezes += result.freezes;
        total.throttled += result.throttled;
        total.throttled_periods += result.throttled_periods;
        total.throttled_seconds += result.throttled_seconds;
        total.violations += result.violations;
        total.errors += result.errors + result.release_errors;
        total.elapsed += result.elapsed;
        if (result.ok()) {
            fs::remove_all(run.work);
            if (!run.locks_root.empty()) fs::remove_all(torture::lock_directory_of(run).parent_path());
        } else
            ++failed;
    }
    std::printf(
        "total: acquisitions %llu, kills %llu (holders %llu, inside a critical section %llu), freezes "
        "%llu, throttled processes %llu (throttled in %llu periods, %.1f s), violations %llu, errors %llu, "
        "failed runs %d, elapsed %.1f s, %.0f acquisitions/s\n",
        static_cast<unsigned long long>(total.acquisitions), static_cast<unsigned long long>(total.kills),
        static_cast<unsigned long long>(total.holder_kills),
        static_cast<unsigned long long>(total.killed_inside), static_cast<unsigned long long>(total.freezes),
        static_cast<unsigned long long>(total.throttled),
        static_cast<unsigned long long>(total.throttled_periods), total.throttled_seconds,
        static_cast<unsigned long long>(total.violations), static_cast<unsigned long long>(total.errors),
        failed, total.elapsed, static_cast<double>(total.acquisitions) / total.elapsed);
    if (failed == 0) fs::remove(work);
    return failed == 0 ? 0 : 1;
}
