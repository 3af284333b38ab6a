// SPDX-License-Identifier: MIT
// Contended handoff between processes (issue 6): openlock's blocking and asynchronous acquire next to the
// anchors of the same run, printed side by side, then the targets with PASS or MISS.
//
// Anchors: the wake-up floor (one process wakes another through a pipe, no lock at all); the protocol floor
// (openlock's own handoff system calls, statx + unlink + doorbell -> wake-up -> linkat, without any lock
// logic); the file floor (the least any file lock's handoff does: unlink -> inotify wake-up -> linkat); a raw
// O_EXCL lock that polls every 100 us (open(O_CREAT|O_EXCL) / unlink); flock(2), the kernel-blocking ideal.
//
// Contended rows: K processes loop acquire -> critical section -> release for --seconds. Three loop shapes:
//   free     the loop as written: a releaser may take the lock straight back (like any unfair lock), so many
//            acquisitions are not handoffs; latency is measured on the handoffs only
//   handoff  after release a process waits (futex, outside the lock) until another process has taken the
//            lock: every acquisition is a handoff, so acquisitions/s is the rate at which the lock moves
//   paced    the handoff loop with every hold lasting 200 us, the floors' spacing: the waiters are asleep at
//            each release, as the floors' readers are (the like-for-like latency comparison)
// Handoff latency: CLOCK_MONOTONIC just before the releaser's release() to just after the next holder's
// acquire() returned, through a shared mapping. CPU: each process's own over the run, and the CPU all K spent
// inside acquire per acquisition (what a herd of woken waiters costs). Every critical section checks an
// overlap detector and bumps a counter non-atomically; two holders at once print VIOLATION and make the exit
// status non-zero (--only=detector shows it firing on a lock that excludes nothing).
//
// Then: waiting processes parked behind a held lock (their CPU over 1 s, read from /proc/PID/schedstat),
// stale recovery after SIGKILL of the holder (the waiter is a separate process; the holder's parent reaps it
// at once), and 1,000 coroutine waiters on one io_context thread (memory, CPU, then all of them in turn).
// The openlock rows use the default options (--method= picks a claim method).
//
// Scratch files go to the working directory (run-handoff: the build tree, ext4 under /work) unless --dir or
// $OPENLOCK_BENCH_DIR names another directory.
#include "../file_system_name.hpp"
#include "common.hpp"

import openlock;

namespace handoff {
namespace {

// ---- options

struct settings {
    fs::path directory;
    std::chrono::duration<double> seconds{1.5};
    int stale_rounds = 20;
    int pings = 2000;
    int crowd = 1000;
    std::string only;  ///< comma-separated sections to run; empty: all
    std::string loops; ///< comma-separated contended loop shapes to run; empty: all
    std::string locks; ///< comma-separated locks of the contended rows (poll,flock,sync,async); empty: all
    std::vector<int> process_counts{2, 8};
    std::optional<openlock::claim_method> method;
    [[nodiscard]] bool runs(std::string_view section) const { return listed(only, section); }
    [[nodiscard]] bool runs(loop_shape shape) const { return listed(loops, name_of(shape)); }
    [[nodiscard]] bool runs(enum method m) const { return listed(locks, short_name_of(m)); }

private:
    static bool listed(std::string const& list, std::string_view name) {
        return list.empty() || ("," + list + ",").find("," + std::string{name} + ",") != std::string::npos;
    }
};

std::optional<openlock::claim_method> claim_method_named(std::string_view name) {
    using openlock::claim_method;
    if (name == "automatic") return claim_method::automatic;
    if (name == "hard_link") return claim_method::hard_link;
    if (name == "anonymous_link") return claim_method::anonymous_link;
    if (name == "exclusive_create") return claim_method::exclusive_create;
    return std::nullopt;
}

std::optional<settings> parse(int argc, char** argv) {
    settings chosen;
    char const* from_environment = std::getenv("OPENLOCK_BENCH_DIR");
    chosen.directory =
        from_environment && *from_environment ? fs::path{from_environment} : fs::current_path();
    for (int i = 1; i < argc; ++i) {
        std::string_view const arg{argv[i]};
        auto const value = std::string{arg.substr(arg.find('=') + 1)};
        if (arg.starts_with("--dir="))
            chosen.directory = value;
        else if (arg.starts_with("--seconds="))
            // NOLINTNEXTLINE(bugprone-branch-clone): clang-tidy 19 mistakes it for --method's body
            chosen.seconds = std::chrono::duration<double>{std::stod(value)};
        else if (arg.starts_with("--stale-rounds="))
            chosen.stale_rounds = std::stoi(value);
        else if (arg.starts_with("--pings="))
            chosen.pings = std::stoi(value);
        else if (arg.starts_with("--waiters="))
            chosen.crowd = std::stoi(value);
        else if (arg.starts_with("--only="))
            chosen.only = value;
        else if (arg.starts_with("--loops="))
            chosen.loops = value;
        else if (arg.starts_with("--locks="))
            chosen.locks = value;
        else if (arg.starts_with("--processes=")) {
            chosen.process_counts.clear();
            for (std::size_t at = 0; at < value.size();) {
                auto const comma = std::min(value.find(',', at), value.size());
                chosen.process_counts.push_back(std::stoi(value.substr(at, comma - at)));
                at = comma + 1;
            }
        } else if (arg.starts_with("--method=") && claim_method_named(value))
            chosen.method = claim_method_named(value);
        else {
            std::fprintf(stderr,
                         "usage: openlock-handoff [--dir=DIR] [--seconds=S per contended row (1.5)]\n"
                         "       [--stale-rounds=N (20)] [--pings=N (2000)] [--waiters=N (1000)]\n"
                         "       [--method=automatic|anonymous_link|hard_link|exclusive_create]\n"
                         "       [--only=floor,contended,parked,stale,crowd,detector]\n"
                         "       [--loops=free,handoff,paced] [--locks=poll,flock,sync,async]\n"
                         "       [--processes=2,8] (contended rows to run; all by default)\n"
                         "DIR defaults to $OPENLOCK_BENCH_DIR, else the working directory. The targets need\n"
                         "every section but detector (a lock that excludes nothing: VIOLATION and exit\n"
                         "status 1 expected).\n");
            return std::nullopt;
        }
    }
    return chosen;
}

char const* verdict(bool pass) {
    return pass ? "PASS" : "MISS";
}

} // namespace
} // namespace handoff

using namespace handoff;

int main(int argc, char** argv) {
    auto const chosen = parse(argc, argv);
    if (!chosen) return 2;
    if (chosen->method) {
        auto defaults = openlock::get_defaults(); // inherited by every process forked from here
        defaults.method = *chosen->method;
        openlock::set_defaults(defaults);
    }
    std::error_code error;
    fs::create_directories(chosen->directory, error);
    auto pattern = (chosen->directory / "openlock-handoff.XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) {
        std::fprintf(stderr, "openlock-handoff: cannot make a scratch directory in %s: %s\n",
                     chosen->directory.c_str(), std::strerror(errno));
        return 2;
    }
    fs::path const scratch{pattern};
    bool all_ok = true;
    int exit_status = 0;
    try {
        std::printf(
            "openlock-handoff: %s (%s), %.1f s per contended row, %ld cores online, claim method %s\n\n",
            scratch.c_str(), file_system_name(scratch).c_str(), chosen->seconds.count(),
            ::sysconf(_SC_NPROCESSORS_ONLN), chosen->method ? "chosen" : "automatic");
        std::fflush(stdout);
        method const methods[] = {method::poll_100us, method::flock_anchor, method::openlock_sync,
                                  method::openlock_async};

        if (chosen->runs("detector") && !chosen->only.empty()) {
            std::printf(
                "overlap detector: 2 processes and a lock that excludes nothing; VIOLATION expected\n");
            auto const row = run_contended(method::no_lock, 2, loop_shape::free, scratch, 200ms);
            all_ok = all_ok && row.ok;
        }

        std::optional<percentiles> floor;
        std::optional<percentiles> files_floor;
        std::optional<percentiles> bare_floor;
        if (chosen->runs("floor")) {
            floor = pipe_floor(chosen->pings);
            std::printf(
                "wake-up floor (pipe, %zu pings 200 us apart): p50 %.1f us, p90 %.1f us, p99 %.1f us\n",
                floor->count, floor->p50_us, floor->p90_us, floor->p99_us);
            files_floor = file_floor(chosen->pings, scratch, floor_calls::openlock);
            std::printf(
                "protocol floor (statx + unlink + doorbell write -> exclusive epoll wake-up -> read + "
                "linkat\n"
                "  of a nameless file made before, no lock logic, same spacing): p50 %.1f us, p90 %.1f us, "
                "p99 %.1f us\n",
                files_floor->p50_us, files_floor->p90_us, files_floor->p99_us);
            bare_floor = file_floor(chosen->pings, scratch, floor_calls::bare);
            std::printf("file floor (the least any file lock does: unlink -> inotify wake-up -> linkat of a "
                        "file made\n"
                        "  before, same spacing): p50 %.1f us, p90 %.1f us, p99 %.1f us\n\n",
                        bare_floor->p50_us, bare_floor->p90_us, bare_floor->p99_us);
        }

        std::vector<contended_row> rows;
        if (chosen->runs("contended")) {
            std::printf("contended: %-7s %-18s %2s %9s %9s %9s %9s %10s %11s %10s\n", "loop", "lock", "K",
                        "acq/s", "handoffs", "p50 us", "p99 us", "CPU%/proc", "acq CPU us", "sleeps/acq");
            std::printf("%s\n", std::string(112, '-').c_str());
            std::fflush(stdout);
            for (auto shape : {loop_shape::free, loop_shape::handoff, loop_shape::paced})
                for (int processes : chosen->process_counts)
                    for (auto m : methods) {
                        if (!chosen->runs(shape) || !chosen->runs(m)) continue;
                        auto const row = run_contended(m, processes, shape, scratch, chosen->seconds);
                        all_ok = all_ok && row.ok;
                        std::printf(
                            "           %-7s %-18s %2d %9.0f %8.0f%% %9.1f %9.1f %9.1f%% %11.1f %10.1f%s\n",
                            name_of(shape), name_of(m), processes, row.acquisitions_per_s,
                            100.0 * row.handoff_share, row.latency.p50_us, row.latency.p99_us,
                            row.process_cpu_percent, row.acquire_cpu_us, row.sleeps_per_acquisition,
                            row.ok ? "" : "  FAILED");
                        std::fflush(stdout);
                        rows.push_back(row);
                    }
            std::printf(
                "  free: the loop as written (a releaser may take the lock straight back); handoff: after\n"
                "  release a process waits until another one took the lock, so every acquisition is a "
                "handoff;\n"
                "  paced: the handoff loop with each hold lasting 200 us, the floor's spacing, so that the\n"
                "  waiters are asleep when the lock is released (the floor's case; in the free and handoff\n"
                "  loops the next holder is often still busy with its own last release, which is queueing)\n"
                "  handoffs: share of acquisitions taken from another process (latency is measured on "
                "those)\n"
                "  CPU%%/proc: each process's CPU over the run, %% of one core; acq CPU us: CPU spent "
                "inside\n"
                "  acquire by all K processes (the winner and every loser of each round) per "
                "acquisition\n"
                "  sleeps/acq: times any of the K processes blocked (voluntary context switches), per "
                "acquisition:\n"
                "  1 is one wake-up per handoff; K-1 is a herd (the handoff loop adds 1 for its futex "
                "wait)\n\n");
        }

        std::vector<std::pair<method, parked_result>> parked;
        if (chosen->runs("parked")) {
            std::printf("parked waiters (2 processes blocked behind a held lock, measured over 1 s after "
                        "settling):\n  CPU %% of one core of the busiest\n");
            for (auto m : methods) {
                auto const result = run_parked(m, 2, scratch, 1000ms);
                all_ok = all_ok && result.ok;
                std::printf("  %-18s %8.3f%%%s\n", name_of(m), result.worst_cpu_percent,
                            result.ok ? "" : "  FAILED");
                std::fflush(stdout);
                parked.emplace_back(m, result);
            }
            std::printf("\n");
        }

        std::vector<std::pair<method, stale_result>> stale;
        if (chosen->runs("stale")) {
            std::printf(
                "stale recovery (SIGKILL of the holder to the waiter's acquisition, %d rounds; flock is\n"
                "  released while the holder exits, before it is a zombie)\n",
                chosen->stale_rounds);
            for (auto m : {method::flock_anchor, method::openlock_sync, method::openlock_async}) {
                auto const result = run_stale(m, chosen->stale_rounds, scratch);
                all_ok = all_ok && result.ok;
                std::printf("  %-18s median %7.3f ms, p90 %7.3f ms, max %7.3f ms | kill->zombie %6.3f ms, "
                            "zombie->acquired %6.3f ms (medians)%s\n",
                            name_of(m), result.recovery.p50_us / 1000.0, result.recovery.p90_us / 1000.0,
                            result.recovery.max_us / 1000.0, result.dead.p50_us / 1000.0,
                            result.after_death.p50_us / 1000.0, result.ok ? "" : "  FAILED");
                std::fflush(stdout);
                stale.emplace_back(m, result);
            }
            auto const takeover = run_takeover(chosen->stale_rounds, scratch);
            std::printf(
                "  takeover alone (acquire() of a dead and reaped holder's lock, no wait): median %.3f ms, "
                "p90 %.3f ms\n",
                takeover.p50_us / 1000.0, takeover.p90_us / 1000.0);
            std::printf("\n");
        }

        std::optional<crowd_result> crowd;
        if (chosen->runs("crowd")) {
            crowd = run_crowd(chosen->crowd, scratch);
            all_ok = all_ok && crowd->ok;
            std::printf(
                "%d coroutine waiters on one io_context thread behind another process's lock:\n"
                "  RSS growth %lld KiB (%.2f KiB per waiter), CPU over 1 s of waiting %.3f%% of a core;\n"
                "  after release %d of %d acquired in turn in %.1f ms (%.1f us per handoff)%s\n",
                crowd->waiters, static_cast<long long>(crowd->resident_growth_kib),
                static_cast<double>(crowd->resident_growth_kib) / std::max(1, crowd->waiters),
                crowd->wait_cpu_percent, crowd->acquired, crowd->waiters, crowd->drain_ms,
                1000.0 * crowd->drain_ms / std::max(1, crowd->acquired), crowd->ok ? "" : "  FAILED");
        }

        bool const every_row = chosen->loops.empty() && chosen->locks.empty() &&
                               chosen->process_counts == std::vector<int>{2, 8};
        if (floor && every_row && !rows.empty() && !parked.empty() && !stale.empty() && crowd) {
            auto const row_of = [&](loop_shape shape, method m, int processes) -> contended_row const& {
                for (auto const& row : rows)
                    if (row.shape == shape && row.lock_kind == m && row.processes == processes) return row;
                return rows.front();
            };
            std::printf("\ntargets (issue 6, local file system)\n");
            for (auto shape : {loop_shape::free, loop_shape::handoff}) {
                auto const poll = row_of(shape, method::poll_100us, 8).acquisitions_per_s;
                for (auto m : {method::openlock_sync, method::openlock_async}) {
                    auto const mine = row_of(shape, m, 8).acquisitions_per_s;
                    std::printf(
                        "  K=8 throughput >= 100 us polling  %-7s %-15s     %9.0f vs %9.0f acq/s  %s\n",
                        name_of(shape), name_of(m), mine, poll, verdict(mine >= poll));
                }
            }
            for (auto shape : {loop_shape::paced, loop_shape::handoff, loop_shape::free})
                for (int processes : {2, 8})
                    for (auto m : {method::openlock_sync, method::openlock_async}) {
                        auto const p50 = row_of(shape, m, processes).latency.p50_us;
                        std::printf(
                            "  p50 handoff <= 2x pipe floor      %-7s %-15s K=%d %9.1f vs %9.1f us     %s\n",
                            name_of(shape), name_of(m), processes, p50, 2 * floor->p50_us,
                            verdict(p50 > 0 && p50 <= 2 * floor->p50_us));
                    }
            for (int processes : {2, 8})
                for (auto m : {method::openlock_sync, method::openlock_async}) {
                    auto const p50 = row_of(loop_shape::paced, m, processes).latency.p50_us;
                    std::printf("  (p50 next to the protocol floor    paced   %-15s K=%d %9.1f vs %9.1f us: "
                                "information)\n",
                                name_of(m), processes, p50, files_floor->p50_us);
                }
            std::printf(
                "  (2x pipe floor next to the file floor, the least any file lock's handoff takes: %.1f vs "
                "%.1f us: %s)\n",
                2 * floor->p50_us, bare_floor->p50_us,
                bare_floor->p50_us > 2 * floor->p50_us ? "out of reach of any file lock here"
                                                       : "within reach");
            for (auto const& [m, result] : parked)
                if (m == method::openlock_sync || m == method::openlock_async)
                    std::printf(
                        "  waiting process < 1%% of a core   parked  %-15s     %9.3f%%                  %s\n",
                        name_of(m), result.worst_cpu_percent, verdict(result.worst_cpu_percent < 1.0));
            std::printf(
                "  waiting process < 1%% of a core   async   %5d waiters       %9.3f%%                  %s\n",
                crowd->waiters, crowd->wait_cpu_percent, verdict(crowd->wait_cpu_percent < 1.0));
            for (auto const& [m, result] : stale)
                if (m != method::flock_anchor) {
                    auto const median_ms = result.recovery.p50_us / 1000.0;
                    std::printf(
                        "  stale recovery <= 5 ms median             %-15s     %9.3f ms                %s\n",
                        name_of(m), median_ms, verdict(result.recovery.count > 0 && median_ms <= 5.0));
                }
        }
    } catch (std::exception const& e) {
        std::fprintf(stderr, "openlock-handoff: %s\n", e.what());
        exit_status = 2;
    }
    std::error_code ignored;
    fs::remove_all(scratch, ignored);
    if (!all_ok) {
        std::printf("\nFAILED: a run reported a violation, an error or a hang (see above)\n");
        return 1;
    }
    return exit_status;
}
