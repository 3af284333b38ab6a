// SPDX-License-Identifier: MIT
// The acquisition loop (docs/protocol.md 6.1): one acquire's steps, claim, judge, take over or wait,
// driven by acquire_blocking (file_lock.cpp) and acquire_async (async.cpp); with its deadlines and backoff.
module;
#include <algorithm>
#include <atomic>
#include <boost/asio/any_io_executor.hpp>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <gsl/gsl>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

module openlock;
import :lock_object;
import :protocol;
import :sys;

namespace openlock::detail {

acquisition::acquisition(file_lock::impl& lock, deadline until)
    : lock_(lock), until_(until), backoff_(lock.settings.retry_period) {
    if (!lock_.local) lock_.local = is_local(lock_.lock_file); // one statfs per object, not per acquire
    if (lock_.method == claim_method::automatic)
        lock_.method = lock_.settings.format == lock_format::flufl
                           ? claim_method::hard_link
                           : resolve_method(lock_.settings.method, *lock_.local);
    // This process has waited on this path before, so the watch exists: forget what it queued since, and look
    // before the first claim. That look follows the watch, so a wait may follow it at once (no second look
    // after arming), and a lock that is held costs a read, not a claim attempt that fails.
    auto& gate = *lock_.gate;
    gate.retired.reset();
    if (gate.wake && gate.wake_pid == sys::current_pid()) {
        gate.wake->drain();
        armed_ = true;
        look_before_claiming_ = true;
    }
}

acquisition::next acquisition::step(failure& error) {
    auto const& settings = lock_.settings;
    auto const& lock_file = lock_.lock_file;
    for (;;) {
        claim attempt;
        observation seen;
        // After a wait (or arming the watch) most wake-ups find the lock still held, by a new holder in a
        // herd: a read answers that for a fraction of what a claim attempt costs, so claim only when it is
        // free.
        bool free_to_claim = true;
        if (look_before_claiming_) {
            look_before_claiming_ = false;
            if (!observe(lock_file, seen, error)) return next::failed;
            free_to_claim = seen.what == observation::kind::absent;
        }
        if (free_to_claim) {
            claim_terms terms{lock_.lifetime(), std::nullopt,
                              settings.format,  effective_flufl_separator(settings),
                              lock_.doorbell(), settings.process_group};
            std::uint64_t last_token = 0;
            if (settings.fencing) {
                if (!read_last_token(lock_file, last_token, error)) return next::failed;
                terms.token = last_token + 1;
            }
            switch (try_claim(lock_file, lock_.method, *lock_.local, terms, attempt, seen, error,
                              &lock_.gate->staged)) {
            case claim_result::acquired:
                if (terms.token) {
                    // Another acquisition may have taken and released the lock between our read of the last
                    // token and our claim, with the same token: ours must be new now, or we give it back.
                    if (!read_last_token(lock_file, last_token, error)) {
                        give_back(attempt);
                        return next::failed;
                    }
                    if (last_token >= *terms.token) {
                        give_back(attempt);
                        continue;
                    }
                }
                lock_.hold(attempt);
                return next::acquired;
            case claim_result::no_anonymous_files:
                if (settings.method == claim_method::anonymous_link) { // asked for: no claim file, ever
                    error = {std::make_error_code(std::errc::operation_not_supported), lock_file,
                             "this file system has no nameless files (use claim_method::hard_link)"};
                    return next::failed;
                }
                lock_.method = claim_method::hard_link;
                continue;
            case claim_result::no_hard_links:
                if (settings.method == claim_method::hard_link ||
                    settings.method == claim_method::anonymous_link ||
                    settings.format == lock_format::flufl) {
                    error = {std::make_error_code(std::errc::operation_not_supported), lock_file,
                             "this file system has no hard links (use claim_method::exclusive_create)"};
                    return next::failed;
                }
                lock_.method = claim_method::exclusive_create;
                continue;
            case claim_result::failed:
                return next::failed;
            case claim_result::taken:
                break;
            }

            if (seen.what == observation::kind::absent) continue; // released in between: claim again
            if (!armed_) {
                // First contention: start watching (or forget what was queued before) and look once more, so
                // that every change after that look wakes the wait that may follow.
                auto& gate = *lock_.gate;
                if (!gate.wake || gate.wake_pid != sys::current_pid()) {
                    gate.wake = std::make_unique<sys::wake_sources>(lock_file, guard_path(lock_file),
                                                                    settings.format == lock_format::openlock
                                                                        ? sys::doorbell_use::listen
                                                                        : sys::doorbell_use::none);
                    gate.wake_pid = sys::current_pid();
                } else {
                    gate.wake->drain();
                }
                armed_ = true;
                look_before_claiming_ = true;
                continue;
            }
        }
        if (seen.what == observation::kind::invalid) {
            // Only bytes can be mid-write (exclusive_create); a symlink or directory never becomes a record.
            // tries counts looks at one unchanged file: each new holder's file (exclusive_create shows each
            // one empty for a moment) starts the count again.
            if (seen.identity != unreadable_identity_ || seen.changed != unreadable_changed_ ||
                seen.bytes != unreadable_bytes_)
                unreadable_reads_ = 0;
            unreadable_identity_ = seen.identity;
            unreadable_changed_ = seen.changed;
            unreadable_bytes_ = seen.bytes;
            if (!seen.content_problem || ++unreadable_reads_ >= settings.tries) {
                error = {errc::invalid_lock_file, lock_file, seen.problem};
                return next::failed;
            }
            holder_ = "an unreadable lock file (" + seen.problem + ")";
            error = {errc::timeout, lock_file, holder_};
            // Looks at a half-written file are retry_period apart in real time (no event may shorten the
            // pause: a queued event of an earlier holder would make two looks at one file a microsecond
            // apart).
            return wait(settings.retry_period, pause_end::in_full);
        }
        unreadable_reads_ = 0;
        if (seen.what == observation::kind::unreadable) {
            // Held by someone whose record we may not read: nothing to judge, nothing to take over. Wait as
            // for a holder of another host; its removal is a directory event.
            holder_ = seen.problem;
            error = {errc::timeout, lock_file, holder_};
            return wait(armed_ && wake().watches_directory() ? settings.retry_period : backoff_.next());
        }
        holder_ = describe_holder(seen.record);
        auto const judged = judge(seen, settings);
        if (judged == verdict::live) wake().watch_holder(seen.record.pid);
        // A live holder that rings our doorbell when it releases, and whose exit we watch, needs no directory
        // events: every other waiter would wake at its release too (docs/protocol.md 8.6). A lease may end
        // by a breaker, who rings nothing.
        bool const rings = judged == verdict::live && seen.record.bell != 0 &&
                           seen.record.bell == wake().doorbell() && wake().watches_holder() &&
                           !seen.record.lifetime;
        if (wake().set_directory_events(rings ? sys::directory_events::off : sys::directory_events::on)) {
            look_before_claiming_ = true; // what changed while they were off went unseen
            continue;
        }
        if (breakable(judged)) {
            auto const takeover = take_over(lock_file, seen, takeover_mode::breakable_only, settings, error);
            if (takeover.result == takeover_result::failed) return next::failed;
            if (takeover.result != takeover_result::busy) {
                guard_busy_since_.reset();
                backoff_.restart();
                continue;
            }
            holder_ = takeover.guard_holder + " (taking over the stale lock of " + holder_ + ")";
            auto const now = clock::now();
            if (!guard_busy_since_) guard_busy_since_ = now;
            if (!slow_reported_ && now - *guard_busy_since_ > settings.race_delay) {
                slow_reported_ = true;
                std::string detail =
                    "a takeover by " + takeover.guard_holder + " takes longer than race_delay";
                if (settings.slow_system_exception) {
                    error = {errc::slow_system, lock_file, detail};
                    return next::failed;
                }
                if (settings.on_diagnostic)
                    settings.on_diagnostic({diagnostic::kind::slow_system, lock_file, std::move(detail)});
            }
        }
        error = {errc::timeout, lock_file, holder_};
        // Where directory events arrive, or the holder rings our doorbell, they (and the holder's exit) end
        // the wait: the pause is a safety net.
        return wait(rings || wake().watches_directory() ? settings.retry_period : backoff_.next());
    }
}

void acquisition::woken_by_event() {
    // The link costs what the look (a statx) costs, and when the lock is free it is all that remains: the
    // handoff is one system call shorter. When it is taken, the claim reads the lock file as the look would
    // have, so a waiter that lost pays one failed link more.
    if (look_before_claiming_ && staged_claim_ready(lock_.gate->staged)) look_before_claiming_ = false;
}

acquisition::next acquisition::wait(std::chrono::nanoseconds pause, pause_end end) {
    if (expired(until_)) return next::failed;
    pause_ = capped_to_deadline(pause, until_);
    look_before_claiming_ = true;
    events_may_end_pause_ = end == pause_end::at_an_event;
    if (lock_.may_stage()) stage_claim(lock_.lock_file, lock_.gate->staged, lock_.doorbell());
    return next::wait;
}

// A claim that must not stand (its fencing token is not new): removed as a release removes it, rung as a
// release rings (its record named our doorbell, and waiters may rely on that).
void acquisition::give_back(claim const& attempt) {
    failure ignored;
    if (!release_claim(lock_.lock_file, attempt, ignored)) remember_orphan(attempt.nonce);
    if (lock_.gate->wake && lock_.gate->wake_pid == sys::current_pid()) lock_.gate->wake->ring();
}

deadline deadline_after(std::chrono::nanoseconds timeout) {
    auto const now = clock::now();
    if (timeout >= clock::time_point::max() - now) return std::nullopt;
    return now + timeout;
}

bool expired(deadline const& until) {
    return until && clock::now() >= *until;
}

std::chrono::nanoseconds capped_to_deadline(std::chrono::nanoseconds pause, deadline const& until) {
    if (!until) return pause;
    auto const left = std::chrono::duration_cast<std::chrono::nanoseconds>(*until - clock::now());
    return std::max(std::chrono::nanoseconds::zero(), std::min(pause, left));
}

namespace {
constexpr std::chrono::nanoseconds first_pause = std::chrono::milliseconds{1};
}

backoff::backoff(std::chrono::nanoseconds longest)
    : longest_(longest), next_(std::min(first_pause, longest)) {}

std::chrono::nanoseconds backoff::next() {
    // One engine per thread, seeded once: std::random_device costs more than a whole uncontended acquire.
    thread_local std::minstd_rand random{std::random_device{}()};
    std::uniform_real_distribution<double> jitter{0.5, 1.0};
    auto const pause = std::chrono::duration_cast<std::chrono::nanoseconds>(next_ * jitter(random));
    next_ = std::min(next_ * 2, longest_);
    return pause;
}

void backoff::restart() {
    next_ = std::min(first_pause, longest_);
}

} // namespace openlock::detail
