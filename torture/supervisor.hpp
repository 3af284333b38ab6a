// SPDX-License-Identifier: MIT
// The supervisor of one run, split by concern: supervisor.cpp (the run: blows, freezes, liveness checks and
// their reports), processes.cpp (spawning, killing, reaping and stopping the workers), final_check.cpp (the
// last takeover, the leftovers, the exact count); report.hpp (what the reports print about a process or a
// directory).
#pragma once
#include "cpu_throttle.hpp"
#include "shared_state.hpp"
#include "torture.hpp"

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <sys/types.h>
#include <vector>

namespace torture::detail {

namespace fs = std::filesystem;

struct frozen_process {
    std::uint32_t slot;
    pid_t pid;
    std::int64_t thaw_at_ns;
};

class supervisor {
public:
    supervisor(run_config const& config, std::string self)
        : config_(config), self_(std::move(self)), random_(config.seed) {}

    run_result run();

private:
    fs::path lock_directory() const { return lock_directory_of(config_); }
    // A worker's view of the lock file: through its own mount when there are several clients.
    fs::path lock_file_for(std::uint32_t slot) const {
        if (config_.mounts.empty()) return lock_file();
        return config_.mounts[slot % config_.mounts.size()] / lock_directory_name(config_) / "torture.lock";
    }
    fs::path lock_file() const { return lock_directory() / "torture.lock"; }
    std::uint32_t final_holder_slot() const { return static_cast<std::uint32_t>(config_.workers); }
    std::uint32_t own_slot() const { return static_cast<std::uint32_t>(config_.workers) + 1; }

    // The run (supervisor.cpp): blows, liveness checks, diagnostics.

    void hammer(std::int64_t started);

    // Half the blows aim at a holder (when one is inside), half at anyone.
    std::optional<std::uint32_t> pick_target();
    std::int64_t next_after(double mean_ms);
    std::uint64_t total_acquisitions() const;
    static std::string seconds_text(std::int64_t ns);

    // How long the lock file has been the same file with the same bytes while no worker says it holds the
    // lock. A holder is frozen for at most 0.3 s and a dead holder's file is taken over at once (its waiters
    // watch its pidfd), so a lock file that outlives orphan_limit_ns unheld belongs to nobody: a live
    // process that forgot it, or a stale file nobody takes over.
    std::int64_t orphan_age(std::int64_t now);
    void report_stall(std::string const& why);

    // The signatures of the stalls README.md lists under "Known failures".
    std::string known_stall() const;
    std::string faults_text() const;

    // The workers (processes.cpp): spawn, kill, reap, stop.

    std::vector<std::string> worker_arguments(std::uint32_t slot, bool hold);
    std::vector<std::string> worker_environment(bool faults) const;
    void spawn(std::uint32_t slot, bool hold);
    int slot_of_pid(pid_t pid) const;
    void send_kill(std::uint32_t slot);

    // Reaps whatever has died; a death we did not cause is a crash. Respawns unless stopping.
    void reap(bool respawn);
    std::vector<std::uint32_t> live_slots(bool holders_only) const;

    // Asked to stop, then killed if they do not: the final holder (finish) is the one that dies holding.
    void stop_workers();

    // The end of a run (final_check.cpp): the last takeover, leftovers, the count.

    // One more holder that is killed while holding, then our own acquire must take the lock over and leave a
    // directory with nothing in it: no lock file, no claim files, no takeover guard or staging directory.
    void finish();
    static bool is_nonce(std::string_view text);

    // Documented clutter (docs/protocol.md R1): an empty claim file, or a staging directory that is empty or
    // holds only its owner's empty file. Such names cannot be attributed to a process, so no sweep removes
    // them.
    static bool is_documented_clutter(fs::directory_entry const& entry);
    void count_leftovers();

    // Every increment of the counter is either a completed critical section or one whose holder was killed
    // after writing it (README.md): anything else is a lost or a phantom update.
    void check_count();
    void report_violation();

    run_config config_;
    std::string self_;
    std::mt19937_64 random_;
    shared_state* shared_ = nullptr;
    int log_ = -1;
    bool stopping_ = false;
    std::vector<frozen_process> frozen_;
    std::unique_ptr<cpu_throttle> throttle_;
    run_result result_;
    static constexpr std::int64_t orphan_limit_ns = 3'000'000'000;
    ino_t orphan_inode_ = 0;
    std::string orphan_bytes_;
    std::int64_t orphan_since_ = 0;
};

} // namespace torture::detail
