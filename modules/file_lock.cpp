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
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

module openlock;
import :lock_state;
import :protocol;
import :sys;

namespace openlock {
namespace detail {

deadline deadline_after(std::chrono::nanoseconds timeout) {
    auto const now = clock::now();
    if (timeout >= clock::time_point::max() - now) return std::nullopt;
    return now + timeout;
}

bool expired(deadline const& until) {
    return until && clock::now() >= *until;
}

std::chrono::nanoseconds limited(std::chrono::nanoseconds pause, deadline const& until) {
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

// The registry is never destroyed, so static file_lock objects may release in any order during exit.
held_locks& held_locks::instance() {
    static held_locks* const registry = [] {
        auto* created = new held_locks;
        std::atexit([] { held_locks::instance().release_all(); });
        return created;
    }();
    return *registry;
}

std::uint64_t held_locks::add(std::filesystem::path const& lock_file, claim const& held) {
    std::lock_guard guard{mutex_};
    entries_.emplace_back(++last_id_, entry{lock_file, held});
    return last_id_;
}

void held_locks::remove(std::uint64_t id) {
    std::lock_guard guard{mutex_};
    std::erase_if(entries_, [id](auto const& item) { return item.first == id; });
}

namespace {
std::atomic<bool> exiting{false};
}

bool process_exiting() noexcept {
    return exiting.load();
}

void held_locks::release_all() {
    exiting.store(true);
    std::lock_guard guard{mutex_};
    auto const me = sys::current_pid();
    for (auto const& [id, item] : entries_) {
        failure ignored;
        // Waiters that rely on our ring (docs/protocol.md 8.6) would otherwise sleep until this process is
        // gone, which is later than this by whatever runs after us at exit.
        if (item.held.owner_pid == me && release_claim(item.lock_file, item.held, ignored) &&
            item.held.bell != 0)
            sys::ring_doorbell(item.lock_file, item.held.bell);
    }
    entries_.clear();
}

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

acquisition::next acquisition::wait(std::chrono::nanoseconds pause, bool events_may_end_it) {
    if (expired(until_)) return next::failed;
    pause_ = limited(pause, until_);
    look_before_claiming_ = true;
    events_may_end_pause_ = events_may_end_it;
    if (lock_.may_stage()) stage_claim(lock_.lock_file, lock_.gate->staged, lock_.doorbell());
    return next::wait;
}

void acquisition::woken_by_event() {
    // The link costs what the look (a statx) costs, and when the lock is free it is all that remains: the
    // handoff is one system call shorter. When it is taken, the claim reads the lock file as the look would
    // have, so a waiter that lost pays one failed link more.
    if (look_before_claiming_ && staged_claim_ready(lock_.gate->staged)) look_before_claiming_ = false;
}

// A claim that must not stand (its fencing token is not new): removed as a release removes it, rung as a
// release rings (its record named our doorbell, and waiters may rely on that).
void acquisition::give_back(claim const& attempt) {
    failure ignored;
    if (!release_claim(lock_.lock_file, attempt, ignored)) remember_orphan(attempt.nonce);
    if (lock_.gate->wake && lock_.gate->wake_pid == sys::current_pid()) lock_.gate->wake->ring();
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
                                                                    settings.format == lock_format::openlock);
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
            return wait(settings.retry_period, false);
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
        if (wake().want_directory_events(!rings)) {
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

} // namespace detail

bool file_lock::impl::owned_here() const {
    return held && held->owner_pid == sys::current_pid();
}

namespace detail {

std::shared_ptr<path_gate> gate_for(std::filesystem::path const& lock_file) {
    static std::mutex registry_mutex;
    static auto* const registry = new std::vector<std::pair<std::filesystem::path, std::weak_ptr<path_gate>>>;
    std::error_code ignored;
    auto key = std::filesystem::absolute(lock_file, ignored).lexically_normal();
    std::lock_guard guard{registry_mutex};
    std::erase_if(*registry, [](auto const& entry) { return entry.second.expired(); });
    for (auto const& [path, gate] : *registry)
        if (path == key) return gate.lock();
    auto gate = std::make_shared<path_gate>();
    registry->emplace_back(std::move(key), gate);
    return gate;
}

namespace {

// A gate copied into a child by fork() belongs to the parent's threads: the child starts with it open.
void forget_parent(path_gate& gate) {
    if (gate.busy && gate.owner_pid != sys::current_pid()) {
        gate.busy = false;
        gate.async_waiters.clear();
    }
}

void occupy(path_gate& gate, std::thread::id thread, void const* object) {
    gate.busy = true;
    gate.holder_thread = thread;
    gate.holder_object = object;
    gate.owner_pid = sys::current_pid();
}

} // namespace
} // namespace detail

bool file_lock::impl::enter_gate(detail::deadline const& until, detail::failure& error) {
    std::unique_lock guard{gate->mutex};
    detail::forget_parent(*gate);
    if (gate->busy && gate->holder_thread == std::this_thread::get_id() && gate->holder_object == this) {
        error = {errc::already_locked, lock_file, {}};
        return false;
    }
    auto const open = [this] { return !gate->busy; };
    if (!until) {
        gate->opened.wait(guard, open);
    } else if (!gate->opened.wait_until(guard, *until, open)) {
        error = {errc::timeout, lock_file,
                 "another thread or lock object of this process (pid " + std::to_string(sys::current_pid()) +
                     ")"};
        return false;
    }
    detail::occupy(*gate, std::this_thread::get_id(), this);
    return true;
}

bool file_lock::impl::try_enter_gate(std::function<void()> wake, std::uint64_t& ticket) {
    std::lock_guard guard{gate->mutex};
    detail::forget_parent(*gate);
    if (!gate->busy) {
        detail::occupy(*gate, {}, this);
        return true;
    }
    ticket = ++gate->last_ticket;
    gate->async_waiters.emplace_back(ticket, std::move(wake));
    return false;
}

void file_lock::impl::forget_gate_waiter(std::uint64_t ticket) {
    std::function<void()> next;
    {
        std::lock_guard guard{gate->mutex};
        auto const removed = std::erase_if(gate->async_waiters,
                                           [ticket](auto const& waiter) { return waiter.first == ticket; });
        // Not registered any more: we were woken and give up without entering. Pass the wake-up on.
        if (removed == 0 && !gate->busy && !gate->async_waiters.empty()) {
            next = std::move(gate->async_waiters.front().second);
            gate->async_waiters.erase(gate->async_waiters.begin());
        }
    }
    if (next) next();
}

void file_lock::impl::leave_gate() {
    {
        std::lock_guard guard{mutex};
        held.reset();
    }
    std::function<void()> next;
    {
        std::lock_guard guard{gate->mutex};
        gate->busy = false;
        gate->holder_thread = {};
        gate->holder_object = nullptr;
        if (!gate->async_waiters.empty()) { // wake one, first come first served; see forget_gate_waiter
            next = std::move(gate->async_waiters.front().second);
            gate->async_waiters.erase(gate->async_waiters.begin());
        }
    }
    gate->opened.notify_one();
    if (next) next();
}

void file_lock::impl::hold(detail::claim const& claimed) {
    std::lock_guard guard{mutex};
    held = claimed;
    lost = false;
    if (claimed.lifetime)
        lease_end = claimed.acquired +
                    std::chrono::duration_cast<std::chrono::system_clock::duration>(*claimed.lifetime);
    registration = detail::held_locks::instance().add(lock_file, claimed);
    if (settings.keep_alive && claimed.lifetime) start_keeper();
}

std::uint64_t file_lock::impl::doorbell() const {
    return gate->wake && gate->wake_pid == sys::current_pid() ? gate->wake->doorbell() : 0;
}

bool file_lock::impl::may_stage() {
    return !settings.fencing && local && detail::stageable(method, *local, {lifetime(), std::nullopt});
}

bool file_lock::impl::release(detail::failure& error) {
    std::optional<detail::claim> releasing;
    {
        std::lock_guard guard{mutex};
        if (!owned_here()) {
            error = {errc::invalid_release, lock_file, {}};
            return false;
        }
        releasing = held;
        detail::held_locks::instance().remove(registration);
    }
    stop_keeper();
    bool const released = detail::release_claim(lock_file, *releasing, error);
    if (!released && error.code != errc::not_locked) {
        // The file could not be removed (or checked): it is still ours, and so is the duty to remove it. Keep
        // holding, so that release() can be tried again and the exit handler tries at the end.
        std::lock_guard guard{mutex};
        registration = detail::held_locks::instance().add(lock_file, *releasing);
        if (settings.keep_alive && releasing->lifetime) start_keeper();
        return false;
    }
    // Our record named the doorbell: its listeners rely on this ring (docs/protocol.md 8.6).
    bool const contended = gate->wake && gate->wake_pid == sys::current_pid();
    if (contended) gate->wake->ring();
    // Behind a contended release the descriptor that pinned the removed inode is closed by the next acquire
    // on this path (or with its last object): the close frees the inode, file system work that would
    // otherwise delay the woken waiter (below). Nothing needs the pin once the name is gone (the inode proved
    // ownership only while held, docs/protocol.md 4.4), so an uncontended release, where nobody waits to be
    // delayed, closes it now with the claim: a released object keeps no descriptor. So does a release where a
    // removed name stays until the last handle closes (Windows).
    if (contended && sys::removed_name_vanishes_while_open()) gate->retired = std::move(releasing->pin);
    if (contended) {
        // The waiter just woken tends to be queued on this CPU (the scheduler expects the waker to block
        // soon): let it run first, then stage our next claim (so that taking the lock straight back is one
        // link, as for a woken waiter). Measured in bench/handoff (docs/protocol.md 8.5).
        std::this_thread::yield();
        if (!abandoned && may_stage()) detail::stage_claim(lock_file, gate->staged, doorbell());
    }
    leave_gate();
    return released;
}

namespace {

bool acquire_blocking(file_lock::impl& lock, detail::deadline const& until, detail::failure& error) {
    if (!lock.enter_gate(until, error)) return false;
    // Every way out but success leaves the gate, exceptions (bad_alloc, a failing getrandom) included.
    bool acquired = false;
    auto const leave = gsl::finally([&] {
        if (!acquired) lock.leave_gate();
    });
    detail::acquisition attempt{lock, until};
    for (;;) {
        switch (attempt.step(error)) {
        case detail::acquisition::next::acquired:
            acquired = true;
            return true;
        case detail::acquisition::next::failed:
            return false;
        case detail::acquisition::next::wait:
            if (attempt.events_may_end_pause()) {
                if (attempt.wake().wait_for(attempt.pause())) attempt.woken_by_event();
            } else
                std::this_thread::sleep_for(attempt.pause());
            break;
        }
    }
}

} // namespace

file_lock::file_lock(std::filesystem::path lock_file) : file_lock(std::move(lock_file), std::nullopt) {}

file_lock::file_lock(std::filesystem::path lock_file, std::optional<duration> timeout, options settings)
    : impl_(std::make_shared<impl>()) {
    validate(settings);
    if (lock_file.empty()) throw invalid_option("the lock file path is empty");
    if (!lock_file.has_filename())
        throw invalid_option("the lock file path names a directory: " + lock_file.string());
    if (timeout && *timeout < duration::zero()) timeout = duration::zero();
    impl_->gate = detail::gate_for(lock_file);
    impl_->lock_file = std::move(lock_file);
    impl_->timeout = timeout;
    impl_->method = settings.method;
    impl_->lease = effective_lifetime(settings);
    impl_->settings = std::move(settings);
}

file_lock::~file_lock() {
    std::vector<std::pair<std::uint64_t, std::function<void()>>> waiting;
    {
        std::lock_guard guard{impl_->mutex};
        impl_->abandoned = true;
    }
    {
        std::lock_guard guard{impl_->gate->mutex};
        waiting.swap(impl_->gate->async_waiters); // our pending asynchronous acquires notice `abandoned`
    }
    for (auto& [ticket, wake] : waiting)
        wake();
    std::error_code ignored;
    if (owns_lock()) release(ignored);
}

void file_lock::acquire() {
    if (impl_->timeout) return acquire_for(*impl_->timeout);
    detail::failure error;
    if (!acquire_blocking(*impl_, std::nullopt, error)) detail::throw_failure(error);
}

void file_lock::acquire(std::error_code& error) noexcept {
    if (impl_->timeout) return acquire_for(*impl_->timeout, error);
    detail::into_error_code(
        error, [&](detail::failure& failure) { return acquire_blocking(*impl_, std::nullopt, failure); });
}

void file_lock::acquire_for(duration timeout) {
    detail::failure error;
    if (!acquire_blocking(*impl_, detail::deadline_after(timeout), error)) detail::throw_failure(error);
}

void file_lock::acquire_for(duration timeout, std::error_code& error) noexcept {
    detail::into_error_code(error, [&](detail::failure& failure) {
        return acquire_blocking(*impl_, detail::deadline_after(timeout), failure);
    });
}

bool file_lock::try_acquire_for(duration timeout) {
    detail::failure error;
    if (acquire_blocking(*impl_, detail::deadline_after(timeout), error)) return true;
    if (error.code == errc::timeout) return false;
    detail::throw_failure(error);
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
    if (!impl_->release(error)) detail::throw_failure(error);
}

void file_lock::release(std::error_code& error) noexcept {
    detail::into_error_code(error, [&](detail::failure& failure) { return impl_->release(failure); });
}

bool file_lock::locked() const {
    std::error_code error;
    bool const result = locked(error);
    if (error) throw lock_error(error, impl_->lock_file, "cannot read the lock file");
    return result;
}

bool file_lock::locked(std::error_code& error) const noexcept {
    bool result = false;
    detail::into_error_code(error, [&](detail::failure& failure) {
        detail::observation seen;
        if (!detail::observe(impl_->lock_file, seen, failure)) return false;
        result = seen.what == detail::observation::kind::invalid ||
                 seen.what == detail::observation::kind::unreadable ||
                 (seen.what == detail::observation::kind::held &&
                  !detail::breakable(detail::judge(seen, impl_->settings)));
        return true;
    });
    return result;
}

bool file_lock::owns_lock() const noexcept {
    std::lock_guard guard{impl_->mutex};
    return impl_->owned_here();
}

std::optional<lock_record> file_lock::owner() const {
    detail::observation seen;
    detail::failure failure;
    if (!detail::observe(impl_->lock_file, seen, failure)) detail::throw_failure(failure);
    if (seen.what != detail::observation::kind::held ||
        detail::breakable(detail::judge(seen, impl_->settings)))
        return std::nullopt;
    return seen.record;
}

std::optional<std::int64_t> file_lock::getpid() const {
    auto const holder = owner();
    if (!holder) return std::nullopt;
    return holder->pid;
}

std::filesystem::path const& file_lock::lock_file() const noexcept {
    return impl_->lock_file;
}
std::optional<file_lock::duration> file_lock::timeout() const noexcept {
    return impl_->timeout;
}
options const& file_lock::settings() const noexcept {
    return impl_->settings;
}

void file_lock::set_executor(boost::asio::any_io_executor executor) {
    std::lock_guard guard{impl_->mutex};
    impl_->executor = std::move(executor);
}

boost::asio::any_io_executor file_lock::get_executor() const {
    std::lock_guard guard{impl_->mutex};
    return impl_->executor;
}

} // namespace openlock
