module;
#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <system_error>
#include <thread>

module openlock;
import :protocol;
import :sys;

namespace openlock {
namespace {

using clock = std::chrono::steady_clock;
using deadline = std::optional<clock::time_point>;

// Locks still held at normal exit are released by an atexit handler; the registry is never destroyed, so
// static file_lock objects may release in any order during exit.
class held_locks {
public:
    static held_locks& instance() {
        static held_locks* const registry = [] {
            auto* created = new held_locks;
            std::atexit([] { held_locks::instance().release_all(); });
            return created;
        }();
        return *registry;
    }

    std::uint64_t add(std::filesystem::path const& lock_file, detail::claim const& held) {
        std::lock_guard guard{mutex_};
        entries_.emplace(++last_id_, entry{lock_file, held});
        return last_id_;
    }

    void remove(std::uint64_t id) {
        std::lock_guard guard{mutex_};
        entries_.erase(id);
    }

private:
    struct entry {
        std::filesystem::path lock_file;
        detail::claim held;
    };

    void release_all() {
        std::lock_guard guard{mutex_};
        auto const me = sys::current_pid();
        for (auto const& [id, item] : entries_) {
            detail::failure ignored;
            if (item.held.owner_pid == me) detail::release_claim(item.lock_file, item.held, ignored);
        }
        entries_.clear();
    }

    std::mutex mutex_;
    std::map<std::uint64_t, entry> entries_;
    std::uint64_t last_id_ = 0;
};

bool expired(deadline const& until) {
    return until && clock::now() >= *until;
}

deadline deadline_after(file_lock::duration timeout) {
    auto const now = clock::now();
    if (timeout >= clock::time_point::max() - now) return std::nullopt;
    return now + timeout;
}

// Jittered exponential backoff from about a millisecond up to retry_period: the pause between two looks where
// no event can wake the waiter (network file systems), and the safety net where one can.
class backoff {
public:
    explicit backoff(std::chrono::nanoseconds longest) : longest_(longest) {}

    std::chrono::nanoseconds next(deadline const& until) {
        std::uniform_real_distribution<double> jitter{0.5, 1.0};
        auto pause = std::chrono::duration_cast<std::chrono::nanoseconds>(next_ * jitter(generator()));
        next_ = std::min(next_ * 2, longest_);
        return limited(pause, until);
    }

    std::chrono::nanoseconds longest(deadline const& until) const { return limited(longest_, until); }

    void restart() { next_ = std::min(first, longest_); }

private:
    static std::chrono::nanoseconds limited(std::chrono::nanoseconds pause, deadline const& until) {
        if (!until) return pause;
        return std::max(
            std::chrono::nanoseconds::zero(),
            std::min(pause, std::chrono::duration_cast<std::chrono::nanoseconds>(*until - clock::now())));
    }
    static constexpr std::chrono::nanoseconds first = std::chrono::milliseconds{1};
    static std::minstd_rand& generator() {
        thread_local std::minstd_rand engine{std::random_device{}()};
        return engine;
    }
    std::chrono::nanoseconds longest_;
    std::chrono::nanoseconds next_ = std::min(first, longest_);
};

} // namespace

struct file_lock::state {
    std::filesystem::path lock_file;
    std::optional<duration> timeout;
    options settings;

    // The in-process gate: one thread at a time acquires or holds through this object.
    std::mutex mutex;
    std::condition_variable gate_opened;
    bool busy = false;
    std::thread::id holder_thread;
    std::optional<detail::claim> held;
    std::uint64_t registration = 0;
    claim_method method = claim_method::automatic; // resolved at the first acquire

    bool owned_here() const { return held && held->owner_pid == sys::current_pid(); }

    bool enter_gate(deadline const& until, detail::failure& error) {
        std::unique_lock guard{mutex};
        if (busy && held && held->owner_pid != sys::current_pid()) {
            busy = false; // a child after fork(): the parent's lock is not ours to hold or release
            held.reset();
        }
        if (busy && holder_thread == std::this_thread::get_id()) {
            error = {errc::already_locked, lock_file, {}};
            return false;
        }
        auto const open = [this] { return !busy; };
        if (!until) {
            gate_opened.wait(guard, open);
        } else if (!gate_opened.wait_until(guard, *until, open)) {
            error = {errc::timeout, lock_file,
                     "another thread of this process (pid " + std::to_string(sys::current_pid()) + ")"};
            return false;
        }
        busy = true;
        holder_thread = std::this_thread::get_id();
        return true;
    }

    void leave_gate() {
        {
            std::lock_guard guard{mutex};
            busy = false;
            held.reset();
        }
        gate_opened.notify_one();
    }

    // The protocol loop of docs/protocol.md: claim; if taken, judge the holder; take over a stale lock under
    // the guard; otherwise wait and look again.
    bool acquire_file(deadline const& until, detail::failure& error) {
        if (method == claim_method::automatic) method = detail::resolve_method(lock_file, settings.method);
        sys::wake_sources wake{lock_file}; // before the first look: no release after it goes unnoticed
        backoff pause{settings.retry_period};
        int unreadable_reads = 0;
        std::optional<clock::time_point> guard_busy_since;
        bool slow_reported = false;
        std::string holder;
        for (;;) {
            detail::claim attempt;
            detail::observation seen;
            switch (detail::try_claim(lock_file, method, attempt, seen, error)) {
            case detail::claim_result::acquired: {
                std::lock_guard guard{mutex};
                held = attempt;
                registration = held_locks::instance().add(lock_file, attempt);
                return true;
            }
            case detail::claim_result::no_anonymous_files:
                method = claim_method::hard_link;
                continue;
            case detail::claim_result::no_hard_links:
                if (settings.method == claim_method::hard_link ||
                    settings.method == claim_method::anonymous_link) {
                    error = {std::make_error_code(std::errc::operation_not_supported), lock_file,
                             "this file system has no hard links (use claim_method::exclusive_create)"};
                    return false;
                }
                method = claim_method::exclusive_create;
                continue;
            case detail::claim_result::failed:
                return false;
            case detail::claim_result::taken:
                break;
            }

            if (seen.what == detail::observation::kind::absent) continue; // released in between: claim again
            if (seen.what == detail::observation::kind::invalid) {
                // Only bytes can be mid-write (exclusive_create); a symlink or directory never becomes a
                // record.
                if (!seen.content_problem || ++unreadable_reads >= settings.tries) {
                    error = {errc::invalid_lock_file, lock_file, seen.problem};
                    return false;
                }
                holder = "an unreadable lock file (" + seen.problem + ")";
                if (expired(until)) return timed_out(holder, error);
                std::this_thread::sleep_for(std::min<std::chrono::nanoseconds>(
                    settings.retry_period, until ? *until - clock::now() : settings.retry_period));
                continue;
            }
            unreadable_reads = 0;
            holder = describe_holder(seen.record);
            auto const verdict = detail::judge(seen.record);
            if (verdict == detail::verdict::live) wake.watch_holder(seen.record.pid);
            if (verdict == detail::verdict::stale) {
                auto const takeover = detail::remove_observed(lock_file, seen, false, settings, error);
                if (takeover.result == detail::takeover_result::failed) return false;
                if (takeover.result != detail::takeover_result::busy) {
                    guard_busy_since.reset();
                    pause.restart();
                    continue;
                }
                holder = takeover.guard_holder + " (taking over the stale lock of " + holder + ")";
                auto const now = clock::now();
                if (!guard_busy_since) guard_busy_since = now;
                if (!slow_reported && now - *guard_busy_since > settings.race_delay) {
                    slow_reported = true;
                    std::string detail =
                        "a takeover by " + takeover.guard_holder + " takes longer than race_delay";
                    if (settings.slow_system_exception) {
                        error = {errc::slow_system, lock_file, detail};
                        return false;
                    }
                    if (settings.on_diagnostic)
                        settings.on_diagnostic({diagnostic::kind::slow_system, lock_file, std::move(detail)});
                }
            }
            if (expired(until)) return timed_out(holder, error);
            // Where directory events arrive, they (and the holder's exit) wake us: the poll is only a safety
            // net.
            wake.wait_for(wake.watches_directory() ? pause.longest(until) : pause.next(until));
        }
    }

    bool timed_out(std::string const& holder, detail::failure& error) {
        error = {errc::timeout, lock_file, holder};
        return false;
    }

    bool acquire(deadline const& until, detail::failure& error) {
        if (!enter_gate(until, error)) return false;
        if (acquire_file(until, error)) return true;
        leave_gate();
        return false;
    }

    bool release(detail::failure& error) {
        std::optional<detail::claim> releasing;
        {
            std::lock_guard guard{mutex};
            if (!busy || !owned_here()) {
                error = {errc::invalid_release, lock_file, {}};
                return false;
            }
            releasing = held;
            held_locks::instance().remove(registration);
        }
        bool const released = detail::release_claim(lock_file, *releasing, error);
        leave_gate();
        return released;
    }
};

namespace {

void assign(std::error_code& out, detail::failure const& failure) noexcept {
    out = failure.code;
}

} // namespace

file_lock::file_lock(std::filesystem::path lock_file) : file_lock(std::move(lock_file), std::nullopt) {}

file_lock::file_lock(std::filesystem::path lock_file, std::optional<duration> timeout, options settings)
    : state_(std::make_unique<state>()) {
    validate(settings);
    if (lock_file.empty()) throw invalid_option("the lock file path is empty");
    if (!lock_file.has_filename())
        throw invalid_option("the lock file path names a directory: " + lock_file.string());
    if (timeout && *timeout < duration::zero()) timeout = duration::zero();
    state_->lock_file = std::move(lock_file);
    state_->timeout = timeout;
    state_->method = settings.method;
    state_->settings = std::move(settings);
}

file_lock::~file_lock() {
    std::error_code ignored;
    if (owns_lock()) release(ignored);
}

void file_lock::acquire() {
    if (state_->timeout) return acquire_for(*state_->timeout);
    detail::failure error;
    if (!state_->acquire(std::nullopt, error)) detail::raise(error);
}

void file_lock::acquire(std::error_code& error) noexcept {
    if (state_->timeout) return acquire_for(*state_->timeout, error);
    try {
        detail::failure failure;
        error = {};
        if (!state_->acquire(std::nullopt, failure)) assign(error, failure);
    } catch (std::system_error const& e) {
        error = e.code();
    } catch (...) {
        error = std::make_error_code(std::errc::not_enough_memory);
    }
}

void file_lock::acquire_for(duration timeout) {
    detail::failure error;
    if (!state_->acquire(deadline_after(timeout), error)) detail::raise(error);
}

void file_lock::acquire_for(duration timeout, std::error_code& error) noexcept {
    try {
        detail::failure failure;
        error = {};
        if (!state_->acquire(deadline_after(timeout), failure)) assign(error, failure);
    } catch (std::system_error const& e) {
        error = e.code();
    } catch (...) {
        error = std::make_error_code(std::errc::not_enough_memory);
    }
}

bool file_lock::try_acquire_for(duration timeout) {
    detail::failure error;
    if (state_->acquire(deadline_after(timeout), error)) return true;
    if (error.code == errc::timeout) return false;
    detail::raise(error);
}

bool file_lock::try_acquire() {
    return try_acquire_for(duration::zero());
}

bool file_lock::try_acquire(std::error_code& error) noexcept {
    acquire_for(duration::zero(), error);
    if (error == errc::timeout) {
        error = {};
        return false;
    }
    return !error;
}

void file_lock::release() {
    detail::failure error;
    if (!state_->release(error)) detail::raise(error);
}

void file_lock::release(std::error_code& error) noexcept {
    try {
        detail::failure failure;
        error = {};
        if (!state_->release(failure)) assign(error, failure);
    } catch (std::system_error const& e) {
        error = e.code();
    } catch (...) {
        error = std::make_error_code(std::errc::not_enough_memory);
    }
}

bool file_lock::locked() const {
    std::error_code error;
    bool const result = locked(error);
    if (error) throw lock_error(error, state_->lock_file, "cannot read the lock file");
    return result;
}

bool file_lock::locked(std::error_code& error) const noexcept {
    try {
        error = {};
        detail::observation seen;
        detail::failure failure;
        if (!detail::observe(state_->lock_file, seen, failure)) {
            error = failure.code;
            return false;
        }
        if (seen.what == detail::observation::kind::absent) return false;
        if (seen.what == detail::observation::kind::invalid) return true;
        return detail::judge(seen.record) != detail::verdict::stale;
    } catch (std::system_error const& e) {
        error = e.code();
    } catch (...) {
        error = std::make_error_code(std::errc::not_enough_memory);
    }
    return false;
}

bool file_lock::owns_lock() const noexcept {
    std::lock_guard guard{state_->mutex};
    return state_->owned_here();
}

std::optional<lock_record> file_lock::owner() const {
    detail::observation seen;
    detail::failure failure;
    if (!detail::observe(state_->lock_file, seen, failure)) detail::raise(failure);
    if (seen.what != detail::observation::kind::held || detail::judge(seen.record) == detail::verdict::stale)
        return std::nullopt;
    return seen.record;
}

std::optional<std::int64_t> file_lock::getpid() const {
    auto const holder = owner();
    if (!holder) return std::nullopt;
    return holder->pid;
}

std::filesystem::path const& file_lock::lock_file() const noexcept {
    return state_->lock_file;
}
std::optional<file_lock::duration> file_lock::timeout() const noexcept {
    return state_->timeout;
}
options const& file_lock::settings() const noexcept {
    return state_->settings;
}

} // namespace openlock
