// SPDX-License-Identifier: MIT
// The supervisor: spawns the workers (fork + exec, with the fault shim preloaded when asked), kills holders
// and waiters, freezes and thaws them, watches for a stall, and at the end proves that the lock can still be
// taken over and that nothing is left in the lock directory. This file: the run itself, its blows and its
// liveness checks (supervisor.hpp lists the other parts).
#include "supervisor.hpp"

#include "report.hpp"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <fcntl.h>
#include <random>
#include <sys/stat.h>
#include <system_error>
#include <thread>
#include <unistd.h>

namespace torture {
namespace detail {

using namespace std::chrono_literals;

run_result supervisor::run() {
    fs::remove_all(config_.work);
    if (!config_.locks_root.empty()) fs::remove_all(lock_directory().parent_path());
    fs::create_directories(config_.work);
    fs::create_directories(lock_directory());
    shared_ = map_shared_state((config_.work / "shared").c_str(), true);
    if (shared_ == nullptr) throw std::system_error(errno, std::system_category(), "mapping shared state");
    shared_->hold_us.store(config_.hold_us);
    log_ = ::open((config_.work / "workers.log").c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (config_.throttled_workers > 0 && !config_.cgroup.parent.empty()) {
        std::string why_not;
        throttle_ = cpu_throttle::create(config_.cgroup,
                                         "openlock-torture-" + std::to_string(::getpid()) + "-" +
                                             config_.work.filename().string(),
                                         config_.quota, why_not);
        if (!throttle_) std::printf("  no CPU quota for this run: %s\n", why_not.c_str());
    }

    auto const started = monotonic_ns();
    for (int slot = 0; slot < config_.workers; ++slot)
        spawn(static_cast<std::uint32_t>(slot), false);
    hammer(started);
    stop_workers();
    finish();
    check_count();
    if (throttle_) {
        // Every process of the cgroup is dead and reaped now (stop_workers, finish).
        result_.throttled_periods = throttle_->throttled_periods();
        result_.throttled_seconds = throttle_->throttled_seconds();
        throttle_.reset();
    }

    result_.elapsed = static_cast<double>(monotonic_ns() - started) / 1e9;
    result_.allow_known = config_.allow_known;
    for (auto const& s : shared_->slots) {
        result_.acquisitions += s.acquisitions.load();
        result_.completed += s.completed.load();
        result_.errors += s.errors.load();
        result_.release_errors += s.release_errors.load();
        result_.lost_while_held += s.lost_while_held.load();
        result_.timeouts += s.timeouts.load();
    }
    result_.killed_inside = shared_->killed_after_write.load() + shared_->killed_before_write.load() +
                            shared_->killed_after_completion.load();
    result_.violations += shared_->violations.load();
    if (shared_->violations.load() != 0) report_violation();
    if (result_.lost_while_held != 0)
        std::printf("  LOST WHILE HELD: %llu release(s) found the lock file removed or replaced (seed %llu, "
                    "method %s, faults %s): another process removed a live holder's lock file\n",
                    static_cast<unsigned long long>(result_.lost_while_held),
                    static_cast<unsigned long long>(config_.seed), config_.method.c_str(),
                    faults_text().c_str());
    if (log_ >= 0) ::close(log_);
    return result_;
}

// Half the blows aim at a holder (when one is inside), half at anyone.
std::optional<std::uint32_t> supervisor::pick_target() {
    auto candidates = live_slots(random_() % 2 == 0);
    if (candidates.empty()) candidates = live_slots(false);
    if (candidates.empty()) return std::nullopt;
    return candidates[random_() % candidates.size()];
}

std::int64_t supervisor::next_after(double mean_ms) {
    std::exponential_distribution<double> pause{1.0 / mean_ms};
    return monotonic_ns() + static_cast<std::int64_t>(pause(random_) * 1e6);
}

std::uint64_t supervisor::total_acquisitions() const {
    std::uint64_t total = 0;
    for (auto const& s : shared_->slots)
        total += s.acquisitions.load();
    return total;
}

void supervisor::hammer(std::int64_t started) {
    std::int64_t next_kill = config_.kill_every_ms > 0 ? next_after(config_.kill_every_ms) : INT64_MAX;
    std::int64_t next_freeze = config_.freeze_every_ms > 0 ? next_after(config_.freeze_every_ms) : INT64_MAX;
    std::int64_t next_progress = started + 10'000'000'000;
    std::uint64_t seen = 0;
    std::int64_t last_progress = started;
    std::int64_t next_orphan_look = started;
    for (;;) {
        reap(true);
        auto const now = monotonic_ns();
        if (now >= next_kill) {
            if (auto const target = pick_target()) {
                if (config_.kill_waiters) {
                    if (shared_->slots[*target].holding.load() != 0) ++result_.holder_kills;
                    send_kill(*target);
                    ++result_.kills;
                } else {
                    shared_->slots[*target].kill_request.store(1); // killed below once it holds
                }
            }
            next_kill = next_after(config_.kill_every_ms);
        }
        for (auto const slot : live_slots(true)) {
            if (shared_->slots[slot].holding.load() != 2) continue;
            send_kill(slot);
            shared_->slots[slot].holding.store(3); // dying: not to be killed again
            ++result_.kills;
            ++result_.holder_kills;
        }
        if (now >= next_freeze) {
            if (auto const target = pick_target()) {
                pid_t const pid = shared_->slots[*target].pid.load();
                if (std::none_of(frozen_.begin(), frozen_.end(),
                                 [&](auto const& f) { return f.pid == pid; }) &&
                    ::kill(pid, SIGSTOP) == 0) {
                    frozen_.push_back(
                        {*target, pid,
                         now + 20'000'000 + static_cast<std::int64_t>(random_() % 280'000'000)});
                    ++result_.freezes;
                }
            }
            next_freeze = next_after(config_.freeze_every_ms);
        }
        std::erase_if(frozen_, [&](frozen_process const& f) {
            if (f.thaw_at_ns > now) return false;
            ::kill(f.pid, SIGCONT);
            return true;
        });

        auto const total = total_acquisitions();
        if (total != seen) {
            seen = total;
            last_progress = now;
        } else if (now - last_progress > static_cast<std::int64_t>(config_.stall_seconds * 1e9)) {
            report_stall("no acquisition for " + seconds_text(now - last_progress));
            return;
        }
        if (now >= next_orphan_look) {
            next_orphan_look = now + 50'000'000;
            if (auto const orphaned_for = orphan_age(now); orphaned_for > orphan_limit_ns) {
                report_stall("the same lock file, held by none of the workers, for " +
                             seconds_text(orphaned_for));
                return;
            }
        }
        auto const elapsed = static_cast<double>(now - started) / 1e9;
        if (config_.progress && now >= next_progress) {
            std::printf("  %.0f s: %llu acquisitions, %llu kills, %llu freezes, %llu violations\n", elapsed,
                        static_cast<unsigned long long>(total),
                        static_cast<unsigned long long>(result_.kills),
                        static_cast<unsigned long long>(result_.freezes),
                        static_cast<unsigned long long>(shared_->violations.load()));
            std::fflush(stdout);
            next_progress += 10'000'000'000;
        }
        bool const enough = elapsed >= config_.seconds && total >= config_.min_acquisitions &&
                            result_.kills >= config_.min_kills;
        if (enough || elapsed >= config_.max_seconds || shared_->violations.load() != 0) return;
        std::this_thread::sleep_for(1ms);
    }
}

std::string supervisor::seconds_text(std::int64_t ns) {
    char text[32];
    std::snprintf(text, sizeof text, "%.1f s", static_cast<double>(ns) / 1e9);
    return text;
}

// How long the lock file has been the same file with the same bytes while no worker says it holds the
// lock. A holder is frozen for at most 0.3 s and a dead holder's file is taken over at once (its waiters
// watch its pidfd), so a lock file that outlives orphan_limit_ns unheld belongs to nobody: a live
// process that forgot it, or a stale file nobody takes over.
std::int64_t supervisor::orphan_age(std::int64_t now) {
    struct stat status{};
    bool const present = ::lstat(lock_file().c_str(), &status) == 0;
    bool const someone_holds = !live_slots(true).empty();
    auto bytes = present ? read_all(lock_file()) : std::string{};
    if (!present || someone_holds || status.st_ino != orphan_inode_ || bytes != orphan_bytes_) {
        orphan_inode_ = present ? status.st_ino : 0;
        orphan_bytes_ = std::move(bytes);
        orphan_since_ = now;
        return 0;
    }
    return now - orphan_since_;
}

void supervisor::report_stall(std::string const& why) {
    result_.stalled = true;
    std::printf("  STALL: %s (seed %llu, method %s, faults %s)\n", why.c_str(),
                static_cast<unsigned long long>(config_.seed), config_.method.c_str(), faults_text().c_str());
    for (int slot = 0; slot < config_.workers; ++slot) {
        auto const& s = shared_->slots[slot];
        pid_t const pid = s.pid.load();
        std::printf(
            "    worker %d: pid %d state %c holding %u errors %llu release_errors %llu last error %lld\n",
            slot, pid, pid > 0 ? process_state(pid) : '-', s.holding.load(),
            static_cast<unsigned long long>(s.errors.load()),
            static_cast<unsigned long long>(s.release_errors.load()),
            static_cast<long long>(s.last_error_value.load()));
    }
    std::printf("    lock directory %s:\n", lock_directory().c_str());
    for (auto const& line : describe_directory(lock_directory()))
        std::printf("      %s\n", line.c_str());
    if (auto const known = known_stall(); !known.empty()) {
        result_.known_stall = true;
        std::printf("    KNOWN: %s\n", known.c_str());
    }
}

// The signatures of the stalls README.md lists under "Known failures".
std::string supervisor::known_stall() const {
    std::error_code error;
    if (config_.method == "exclusive_create" && fs::is_regular_file(lock_file(), error) &&
        fs::file_size(lock_file(), error) == 0)
        return "an empty lock file (exclusive_create: created, never written; docs/protocol.md R2)";
    // (A release that failed once dropped the claim for good; it keeps the lock held now, and the workers
    // retry: that stall is no longer known, it is a failure.)
    return {};
}

std::string supervisor::faults_text() const {
    if (config_.faults.empty()) return "none";
    std::string text;
    for (auto const& kind : config_.faults)
        text += (text.empty() ? "" : "+") + kind;
    return text + " at " + std::to_string(static_cast<int>(config_.fault_pct)) + "%";
}

} // namespace detail

run_result run_supervised(run_config const& config, std::string const& self) {
    return detail::supervisor{config, self}.run();
}

} // namespace torture
