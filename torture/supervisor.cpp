// The supervisor: spawns the workers (fork + exec, with the fault shim preloaded when asked), kills holders
// and waiters, freezes and thaws them, watches for a stall, and at the end proves that the lock can still be
// taken over and that nothing is left in the lock directory.
#include "shared_state.hpp"
#include "torture.hpp"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <fstream>
#include <iterator>
#include <memory>
#include <optional>
#include <random>
#include <sched.h>
#include <string>
#include <string_view>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

import openlock;

namespace torture {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

struct frozen_process {
    std::uint32_t slot;
    pid_t pid;
    std::int64_t thaw_at_ns;
};

std::string read_all(fs::path const& path) {
    std::ifstream in{path, std::ios::binary};
    return {std::istreambuf_iterator<char>{in}, {}};
}

std::string printable(std::string const& bytes) {
    std::string out;
    for (unsigned char const c : bytes) {
        if (c == '\n')
            out += "\\n";
        else if (c < 32 || c > 126)
            out += "\\x" + std::string{"0123456789abcdef"[c >> 4]} + "0123456789abcdef"[c & 15];
        else
            out += static_cast<char>(c);
    }
    return out;
}

char process_state(pid_t pid) {
    auto const stat = read_all("/proc/" + std::to_string(pid) + "/stat");
    auto const end = stat.rfind(')');
    return end == std::string::npos || end + 2 >= stat.size() ? '?' : stat[end + 2];
}

/// Every entry of the lock directory, with its content when it is a file: for the stall and leftover reports.
std::vector<std::string> describe_directory(fs::path const& directory) {
    std::vector<std::string> lines;
    std::error_code error;
    for (auto const& entry : fs::recursive_directory_iterator{directory, error}) {
        auto const relative = fs::relative(entry.path(), directory).string();
        if (entry.is_directory())
            lines.push_back(relative + "/");
        else
            lines.push_back(relative + " (" + std::to_string(entry.file_size(error)) +
                            " bytes): " + printable(read_all(entry.path())));
    }
    return lines;
}

class supervisor {
public:
    supervisor(run_config const& config, std::string self)
        : config_(config), self_(std::move(self)), random_(config.seed) {}

    run_result run() {
        fs::remove_all(config_.work);
        if (!config_.locks_root.empty()) fs::remove_all(lock_directory().parent_path());
        fs::create_directories(config_.work);
        fs::create_directories(lock_directory());
        shared_ = map_shared_state((config_.work / "shared").c_str(), true);
        if (shared_ == nullptr)
            throw std::system_error(errno, std::system_category(), "mapping shared state");
        shared_->hold_us.store(config_.hold_us);
        log_ =
            ::open((config_.work / "workers.log").c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
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
        for (int slot = 0; slot < max_slots; ++slot) {
            auto const& s = shared_->slots[slot];
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
            std::printf(
                "  LOST WHILE HELD: %llu release(s) found the lock file removed or replaced (seed %llu, "
                "method %s, faults %s): another process removed a live holder's lock file\n",
                static_cast<unsigned long long>(result_.lost_while_held),
                static_cast<unsigned long long>(config_.seed), config_.method.c_str(), faults_text().c_str());
        if (log_ >= 0) ::close(log_);
        return result_;
    }

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

    std::vector<std::string> worker_arguments(std::uint32_t slot, bool hold) {
        return {self_,
                hold ? "--hold" : "--worker",
                (config_.work / "shared").string(),
                std::to_string(slot),
                (hold ? lock_file() : lock_file_for(slot)).string(),
                config_.method,
                config_.calls,
                std::to_string(random_())};
    }

    std::vector<std::string> worker_environment(bool faults) const {
        std::vector<std::string> environment;
        for (char** entry = environ; *entry != nullptr; ++entry)
            if (std::strncmp(*entry, "FAULT_", 6) != 0 && std::strncmp(*entry, "LD_PRELOAD=", 11) != 0)
                environment.emplace_back(*entry);
        environment.push_back("OPENLOCK_TORTURE_TRUE_LOCK=" + lock_file().string());
        if (!faults || config_.faults.empty()) return environment;
        environment.push_back(std::string{"LD_PRELOAD="} + OPENLOCK_FAULT_SHIM);
        environment.push_back("FAULT_PCT=" + std::to_string(config_.fault_pct));
        environment.push_back("FAULT_MATCH=" + ("/" / lock_directory_name(config_)).string());
        for (auto const& kind : config_.faults) {
            if (kind == "link_eio") environment.push_back("FAULT_LINK_EIO=1");
            if (kind == "excl_eexist") environment.push_back("FAULT_EXCL_EEXIST=1");
            if (kind == "delay")
                environment.push_back("FAULT_DELAY_US=" + std::to_string(config_.fault_delay_us));
            if (kind == "enospc") environment.push_back("FAULT_ENOSPC=1");
            if (kind == "eacces") environment.push_back("FAULT_EACCES=1");
        }
        return environment;
    }

    void spawn(std::uint32_t slot, bool hold) {
        auto& s = shared_->slots[slot];
        s.generation.fetch_add(1); // generations start at 1; the new process reads its own
        s.kill_request.store(0);
        auto const arguments = worker_arguments(slot, hold);
        auto const environment = worker_environment(!hold);
        std::vector<char*> argv;
        std::vector<char*> envp;
        for (auto const& a : arguments)
            argv.push_back(const_cast<char*>(a.c_str()));
        argv.push_back(nullptr);
        for (auto const& e : environment)
            envp.push_back(const_cast<char*>(e.c_str()));
        envp.push_back(nullptr);
        bool const idle = !hold && config_.idle_worker && slot == 0;
        bool const throttled =
            !hold && throttle_ && slot >= 1 && slot <= static_cast<std::uint32_t>(config_.throttled_workers);
        int const join_fd = throttled ? throttle_->join_fd() : -1;
        pid_t const pid = ::fork();
        if (pid == 0) {
            ::prctl(PR_SET_PDEATHSIG, SIGKILL); // no worker outlives its supervisor
            if (idle) {
                sched_param none{};
                ::sched_setscheduler(0, SCHED_IDLE, &none); // inherited across exec
            }
            if (log_ >= 0) ::dup2(log_, STDERR_FILENO);
            // Joins the CPU-quota cgroup before exec: the worker runs throttled from its first instruction.
            if (join_fd >= 0 && ::write(join_fd, "0", 1) != 1) {
                std::fprintf(stderr, "worker %u: cannot join the CPU-quota cgroup: %s\n", slot,
                             std::strerror(errno));
                ::_exit(125);
            }
            ::execve(argv[0], argv.data(), envp.data());
            ::_exit(127);
        }
        if (pid < 0) throw std::system_error(errno, std::system_category(), "fork");
        s.pid.store(pid);
        if (throttled) ++result_.throttled;
    }

    int slot_of_pid(pid_t pid) const {
        for (int slot = 0; slot < max_slots; ++slot)
            if (shared_->slots[slot].pid.load() == pid) return slot;
        return -1;
    }

    void send_kill(std::uint32_t slot) {
        auto& s = shared_->slots[slot];
        pid_t const pid = s.pid.load();
        if (pid <= 0) return;
        auto const generation = s.generation.load();
        auto const at = generation % slot_state::kill_history;
        // The first kill of a process is the one that counts: a dead holder's successor compares against it.
        if (s.killed_generation[at].load() != generation) {
            s.kill_sent_ns[at].store(monotonic_ns());
            s.killed_generation[at].store(generation, std::memory_order_release);
        }
        ::kill(pid, SIGKILL);
        std::erase_if(frozen_, [&](frozen_process const& f) { return f.pid == pid; });
    }

    // Reaps whatever has died; a death we did not cause is a crash. Respawns unless stopping.
    void reap(bool respawn) {
        for (;;) {
            int status = 0;
            pid_t const pid = ::waitpid(-1, &status, WNOHANG);
            if (pid <= 0) return;
            int const slot = slot_of_pid(pid);
            if (slot < 0) continue;
            auto& s = shared_->slots[slot];
            bool const killed_by_us =
                WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL &&
                s.killed_generation[s.generation.load() % slot_state::kill_history].load() ==
                    s.generation.load();
            bool const finished_normally = WIFEXITED(status) && WEXITSTATUS(status) == 0 && stopping_;
            if (!killed_by_us && !finished_normally) {
                ++result_.crashes;
                std::printf("  CRASH: worker %d pid %d %s %d\n", slot, pid,
                            WIFSIGNALED(status) ? "died of signal" : "exited with",
                            WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
            }
            s.pid.store(0);
            s.holding.store(0);
            if (respawn && slot < config_.workers) spawn(static_cast<std::uint32_t>(slot), false);
        }
    }

    std::vector<std::uint32_t> live_slots(bool holders_only) const {
        std::vector<std::uint32_t> slots;
        for (int slot = 0; slot < config_.workers; ++slot) {
            auto const& s = shared_->slots[slot];
            if (s.pid.load() > 0 && (!holders_only || s.holding.load() != 0))
                slots.push_back(static_cast<std::uint32_t>(slot));
        }
        return slots;
    }

    // Half the blows aim at a holder (when one is inside), half at anyone.
    std::optional<std::uint32_t> pick_target() {
        auto candidates = live_slots(random_() % 2 == 0);
        if (candidates.empty()) candidates = live_slots(false);
        if (candidates.empty()) return std::nullopt;
        return candidates[random_() % candidates.size()];
    }

    std::int64_t next_after(double mean_ms) {
        std::exponential_distribution<double> pause{1.0 / mean_ms};
        return monotonic_ns() + static_cast<std::int64_t>(pause(random_) * 1e6);
    }

    std::uint64_t total_acquisitions() const {
        std::uint64_t total = 0;
        for (auto const& s : shared_->slots)
            total += s.acquisitions.load();
        return total;
    }

    void hammer(std::int64_t started) {
        std::int64_t next_kill = config_.kill_every_ms > 0 ? next_after(config_.kill_every_ms) : INT64_MAX;
        std::int64_t next_freeze =
            config_.freeze_every_ms > 0 ? next_after(config_.freeze_every_ms) : INT64_MAX;
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
                std::printf("  %.0f s: %llu acquisitions, %llu kills, %llu freezes, %llu violations\n",
                            elapsed, static_cast<unsigned long long>(total),
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

    static std::string seconds_text(std::int64_t ns) {
        char text[32];
        std::snprintf(text, sizeof text, "%.1f s", static_cast<double>(ns) / 1e9);
        return text;
    }

    // How long the lock file has been the same file with the same bytes while no worker says it holds the
    // lock. A holder is frozen for at most 0.3 s and a dead holder's file is taken over at once (its waiters
    // watch its pidfd), so a lock file that outlives orphan_limit_ns unheld belongs to nobody: a live
    // process that forgot it, or a stale file nobody takes over.
    std::int64_t orphan_age(std::int64_t now) {
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

    void report_stall(std::string const& why) {
        result_.stalled = true;
        std::printf("  STALL: %s (seed %llu, method %s, faults %s)\n", why.c_str(),
                    static_cast<unsigned long long>(config_.seed), config_.method.c_str(),
                    faults_text().c_str());
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
    std::string known_stall() const {
        std::error_code error;
        if (config_.method == "exclusive_create" && fs::is_regular_file(lock_file(), error) &&
            fs::file_size(lock_file(), error) == 0)
            return "an empty lock file (exclusive_create: created, never written; docs/protocol.md R2)";
        // (A release that failed once dropped the claim for good; it keeps the lock held now, and the workers
        // retry: that stall is no longer known, it is a failure.)
        return {};
    }

    // Asked to stop, then killed if they do not: the final holder (finish) is the one that dies holding.
    void stop_workers() {
        stopping_ = true;
        shared_->stop.store(1);
        for (auto const& f : frozen_)
            ::kill(f.pid, SIGCONT);
        frozen_.clear();
        auto const give_up = monotonic_ns() + 3'000'000'000;
        while (!live_slots(false).empty() && monotonic_ns() < give_up) {
            reap(false);
            for (auto const slot : live_slots(true)) {
                std::uint32_t waiting_to_die = 2;
                if (shared_->slots[slot].holding.compare_exchange_strong(waiting_to_die, 3)) send_kill(slot);
            }
            std::this_thread::sleep_for(1ms);
        }
        for (auto const slot : live_slots(false))
            send_kill(slot);
        for (auto const slot : live_slots(false)) {
            int status = 0;
            ::waitpid(shared_->slots[slot].pid.load(), &status, 0);
            shared_->slots[slot].pid.store(0);
        }
    }

    // One more holder that is killed while holding, then our own acquire must take the lock over and leave a
    // directory with nothing in it: no lock file, no claim files, no takeover guard or staging directory.
    void finish() {
        auto const hold = final_holder_slot();
        spawn(hold, true);
        auto& s = shared_->slots[hold];
        auto const give_up = monotonic_ns() + 25'000'000'000;
        while (s.holding.load() == 0 && monotonic_ns() < give_up) {
            int status = 0;
            if (::waitpid(s.pid.load(), &status, WNOHANG) > 0) {
                s.pid.store(0);
                break;
            }
            std::this_thread::sleep_for(1ms);
        }
        if (s.holding.load() == 0) {
            result_.final_acquire_failed = true;
            result_.known_final = !known_stall().empty();
            std::printf(
                "  LEAKED LOCK: a fresh process could not take the lock after all workers were killed\n");
            if (s.pid.load() > 0) send_kill(hold);
        } else {
            send_kill(hold);
        }
        if (s.pid.load() > 0) ::waitpid(s.pid.load(), nullptr, 0);
        s.pid.store(0);

        if (!result_.final_acquire_failed) {
            auto settings = openlock::get_defaults();
            settings.method = config_.method == "hard_link" ? openlock::claim_method::hard_link
                              : config_.method == "exclusive_create"
                                  ? openlock::claim_method::exclusive_create
                                  : openlock::claim_method::anonymous_link;
            openlock::file_lock lock{lock_file(), std::nullopt, settings};
            std::error_code error;
            lock.acquire(20s, error);
            if (error) {
                result_.final_acquire_failed = true;
                result_.known_final = !known_stall().empty();
                std::printf("  LEAKED LOCK: the final acquire after killing the last holder failed: %s\n",
                            error.message().c_str());
            } else {
                auto& own = shared_->slots[own_slot()];
                own.generation.store(1);
                own.acquisitions.fetch_add(1);
                critical_section(*shared_, own_slot(), 1, monotonic_ns());
                lock.release(error);
                if (error) std::printf("  final release failed: %s\n", error.message().c_str());
            }
        }
        auto const leftovers = describe_directory(lock_directory());
        count_leftovers();
        if (result_.final_acquire_failed || !leftovers.empty()) {
            if (result_.known_leftovers != 0)
                std::printf("  %zu of %zu leftovers are documented clutter (empty claim files or staging "
                            "directories, docs/protocol.md R1)\n",
                            result_.known_leftovers, result_.leftovers);
            std::printf("  %s in %s (seed %llu, method %s, faults %s):\n",
                        leftovers.empty() ? "directory" : "LEFTOVERS", lock_directory().c_str(),
                        static_cast<unsigned long long>(config_.seed), config_.method.c_str(),
                        faults_text().c_str());
            for (std::size_t i = 0; i < leftovers.size() && i < 20; ++i)
                std::printf("    %s\n", leftovers[i].c_str());
            if (leftovers.size() > 20) std::printf("    ... and %zu more\n", leftovers.size() - 20);
        }
    }

    static bool is_nonce(std::string_view text) {
        return text.size() == 32 && text.find_first_not_of("0123456789abcdef") == std::string_view::npos;
    }

    // Documented clutter (docs/protocol.md R1): an empty claim file, or a staging directory that is empty or
    // holds only its owner's empty file. Such names cannot be attributed to a process, so no sweep removes
    // them.
    static bool is_documented_clutter(fs::directory_entry const& entry) {
        std::error_code error;
        auto const name = entry.path().filename().string();
        constexpr std::string_view claim = "torture.lock.claim.";
        constexpr std::string_view staging = "torture.lock.takeover.";
        if (name.starts_with(claim) && is_nonce(std::string_view{name}.substr(claim.size())))
            return entry.is_regular_file(error) && entry.file_size(error) == 0;
        if (!name.starts_with(staging) || !is_nonce(std::string_view{name}.substr(staging.size())) ||
            !entry.is_directory(error))
            return false;
        std::vector<fs::directory_entry> inside{fs::directory_iterator{entry.path(), error}, {}};
        return inside.empty() ||
               (inside.size() == 1 && inside.front().path().filename() == name.substr(staging.size()) &&
                inside.front().is_regular_file(error) && inside.front().file_size(error) == 0);
    }

    void count_leftovers() {
        std::error_code error;
        for (auto const& entry : fs::directory_iterator{lock_directory(), error}) {
            ++result_.leftovers;
            bool const empty_lock_file = result_.known_final && entry.path() == lock_file();
            if (empty_lock_file || is_documented_clutter(entry)) ++result_.known_leftovers;
        }
    }

    // Every increment of the counter is either a completed critical section or one whose holder was killed
    // after writing it (README.md): anything else is a lost or a phantom update.
    void check_count() {
        std::uint64_t completed = 0;
        for (auto const& s : shared_->slots)
            completed += s.completed.load();
        std::uint64_t killed_after_write = 0;
        for (auto const& s : shared_->slots)
            killed_after_write += s.resolution.load() & 0xffff;
        auto const expected = completed + killed_after_write;
        auto const counter = shared_->counter.load();
        bool const last_unresolved = result_.stalled && shared_->occupant.load() != 0;
        if (counter == expected || (last_unresolved && counter == expected + 1)) return;
        ++result_.violations;
        std::printf("  VIOLATION: counter %llu, but %llu sections completed and %llu killed after writing\n",
                    static_cast<unsigned long long>(counter), static_cast<unsigned long long>(completed),
                    static_cast<unsigned long long>(killed_after_write));
    }

    void report_violation() {
        static char const* const kinds[] = {"none", "overlap: the previous occupant was alive",
                                            "our token was overwritten while inside",
                                            "the counter moved under a dead holder's section"};
        auto const mine = shared_->failure_token_mine.load();
        auto const other = shared_->failure_token_other.load();
        std::printf("  VIOLATION (%llu in all; seed %llu, method %s, faults %s): %s; holder slot %u gen %u "
                    "section %u, other slot %u gen %u section %u\n",
                    static_cast<unsigned long long>(shared_->violations.load()),
                    static_cast<unsigned long long>(config_.seed), config_.method.c_str(),
                    faults_text().c_str(), kinds[std::min<std::uint32_t>(shared_->first_failure.load(), 3)],
                    slot_of(mine), generation_of(mine), section_of(mine), slot_of(other),
                    generation_of(other), section_of(other));
    }

    std::string faults_text() const {
        if (config_.faults.empty()) return "none";
        std::string text;
        for (auto const& kind : config_.faults)
            text += (text.empty() ? "" : "+") + kind;
        return text + " at " + std::to_string(static_cast<int>(config_.fault_pct)) + "%";
    }

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

} // namespace

run_result run_supervised(run_config const& config, std::string const& self) {
    return supervisor{config, self}.run();
}

} // namespace torture
