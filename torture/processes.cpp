// SPDX-License-Identifier: MIT
// The supervisor's workers: fork + exec with their environment (the fault shim, the CPU-quota cgroup,
// SCHED_IDLE), SIGKILL with the kill history the critical section checks against, reaping and respawning,
// and stopping them at the end of a run.
#include "supervisor.hpp"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <sched.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <system_error>
#include <thread>
#include <unistd.h>

namespace torture::detail {

using namespace std::chrono_literals;

std::vector<std::string> supervisor::worker_arguments(std::uint32_t slot, bool hold) {
    return {self_,
            hold ? "--hold" : "--worker",
            (config_.work / "shared").string(),
            std::to_string(slot),
            (hold ? lock_file() : lock_file_for(slot)).string(),
            config_.method,
            config_.calls,
            std::to_string(random_())};
}

std::vector<std::string> supervisor::worker_environment(bool faults) const {
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
        if (kind == "link_eio") environment.emplace_back("FAULT_LINK_EIO=1");
        if (kind == "excl_eexist") environment.emplace_back("FAULT_EXCL_EEXIST=1");
        if (kind == "delay")
            environment.push_back("FAULT_DELAY_US=" + std::to_string(config_.fault_delay_us));
        if (kind == "enospc") environment.emplace_back("FAULT_ENOSPC=1");
        if (kind == "eacces") environment.emplace_back("FAULT_EACCES=1");
    }
    return environment;
}

void supervisor::spawn(std::uint32_t slot, bool hold) {
    auto& s = shared_->slots[slot];
    s.generation.fetch_add(1); // generations start at 1; the new process reads its own
    s.kill_request.store(0);
    auto const arguments = worker_arguments(slot, hold);
    auto const environment = worker_environment(!hold);
    std::vector<char*> argv;
    std::vector<char*> envp;
    argv.reserve(arguments.size() + 1);
    envp.reserve(environment.size() + 1);
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

int supervisor::slot_of_pid(pid_t pid) const {
    for (int slot = 0; slot < max_slots; ++slot)
        if (shared_->slots[slot].pid.load() == pid) return slot;
    return -1;
}

void supervisor::send_kill(std::uint32_t slot) {
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
void supervisor::reap(bool respawn) {
    for (;;) {
        int status = 0;
        pid_t const pid = ::waitpid(-1, &status, WNOHANG);
        if (pid <= 0) return;
        int const slot = slot_of_pid(pid);
        if (slot < 0) continue;
        auto& s = shared_->slots[slot];
        bool const killed_by_us =
            WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL &&
            s.killed_generation[s.generation.load() % slot_state::kill_history].load() == s.generation.load();
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

std::vector<std::uint32_t> supervisor::live_slots(bool holders_only) const {
    std::vector<std::uint32_t> slots;
    for (int slot = 0; slot < config_.workers; ++slot) {
        auto const& s = shared_->slots[slot];
        if (s.pid.load() > 0 && (!holders_only || s.holding.load() != 0))
            slots.push_back(static_cast<std::uint32_t>(slot));
    }
    return slots;
}

// Asked to stop, then killed if they do not: the final holder (finish) is the one that dies holding.
void supervisor::stop_workers() {
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

} // namespace torture::detail
