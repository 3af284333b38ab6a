// SPDX-License-Identifier: MIT
// The object's gate (threads sharing one etcd_lock take turns) and the lease while held: the keep-alive
// thread (one POST /v3/lease/keepalive per renewal: the gateway cannot stream keep-alives), refresh(), and
// what happens when the lease or the key turns out to be gone.
module;
#include <boost/json/object.hpp>
#include <boost/json/value.hpp>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <optional>
#include <stop_token>
#include <string>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>
#ifdef _WIN32
#include <process.h>
#else
#include <unistd.h>
#endif

module openlock.etcd;
import openlock;
import :client;
import :lock_impl;

namespace openlock {

namespace etcd_detail {

std::int64_t current_pid() noexcept {
#ifdef _WIN32
    return _getpid();
#else
    return ::getpid();
#endif
}

namespace {

/// Keeps a keep-alive thread object copied into a child by fork(): its thread does not exist here, so it can
/// be neither joined nor detached (a pthread call on a thread of the parent; ThreadSanitizer aborts on it),
/// and destroying it joinable would end the process. Reachable from a static pointer, so no leak checker
/// counts it.
void keep_forever(std::jthread orphan) {
    static std::mutex mutex;
    static auto* const orphans = new std::vector<std::jthread>;
    std::lock_guard const hold{mutex};
    orphans->push_back(std::move(orphan));
}

} // namespace

} // namespace etcd_detail

using etcd_detail::clock;
using etcd_detail::failure;

bool etcd_lock::impl::enter_gate(clock::time_point until, failure& error) {
    std::unique_lock hold{gate_mutex};
    if (busy && holder_thread == std::this_thread::get_id()) {
        error = {make_error_code(errc::already_locked), {}, 0};
        return false;
    }
    while (busy) {
        if (until == etcd_detail::forever) {
            gate_opened.wait(hold);
        } else if (gate_opened.wait_until(hold, until) == std::cv_status::timeout && busy) {
            error = {make_error_code(errc::timeout), "another thread of this process holds this lock object",
                     0};
            return false;
        }
    }
    busy = true;
    holder_thread = std::this_thread::get_id();
    return true;
}

void etcd_lock::impl::leave_gate() {
    {
        std::lock_guard const hold{gate_mutex};
        busy = false;
        holder_thread = {};
    }
    gate_opened.notify_one();
}

etcd_lock::impl::~impl() {
    if (keeper.joinable() && keeper_pid != etcd_detail::current_pid())
        etcd_detail::keep_forever(std::move(keeper)); // a fork()ed copy: no thread here
}

void etcd_lock::impl::start_keeper() {
    // Called with `mutex` held, just after the lock was taken: the new thread waits for it.
    if (keeper.joinable()) // only after fork(): a live keeper is always stopped on release
        etcd_detail::keep_forever(std::move(keeper));
    keeper_pid = etcd_detail::current_pid();
    keeper = std::jthread{[this](std::stop_token const& stop) { keep_alive(stop); }};
}

void etcd_lock::impl::stop_keeper() {
    if (!keeper.joinable() || keeper_pid != etcd_detail::current_pid()) return;
    keeper.request_stop();
    keeper_wakeup.notify_all();
    if (keeper.get_id() == std::this_thread::get_id())
        keeper.detach(); // release() from on_lost: the loop ends by itself
    else
        keeper.join();
}

void etcd_lock::impl::keep_alive(std::stop_token const& stop) {
    std::unique_lock hold{mutex};
    // A third of the TTL between renewals leaves two more tries before the lease runs out; a failed try is
    // repeated sooner.
    auto const period = std::chrono::duration_cast<clock::duration>(granted) / 3;
    auto next = clock::now() + period;
    while (!stop.stop_requested()) {
        keeper_wakeup.wait_until(hold, stop, next, [] { return false; });
        if (stop.stop_requested() || !held) return;
        auto const id = lease;
        auto const my_revision = revision;
        auto const end = lease_end;
        hold.unlock();
        auto const asked = clock::now();
        failure error;
        auto const left =
            renew(id, asked + std::min<clock::duration>(period, etcd_detail::request_timeout), error);
        bool ours = left && *left > 0;
        if (ours) {
            failure ignored;
            // The key too: a forced break deletes it while the lease lives on.
            ours = key_is_ours(ignored) || ignored.code;
        }
        hold.lock();
        if (stop.stop_requested() || !held || lease != id || revision != my_revision) return;
        if (left && *left > 0 && ours) {
            lease_end = asked + std::chrono::seconds{*left};
            next = asked + period;
            continue;
        }
        if (!left && clock::now() < end) {
            next = clock::now() + period / 4; // no answer: try again soon, while the lease still runs
            continue;
        }
        lost = true;
        hold.unlock();
        report_lost(!left ? "no server renewed the lease before it ran out: " + error.detail
                          : "the lease ran out or the key was deleted");
        return;
    }
}

void etcd_lock::impl::report_lost(std::string const& why) {
    // Each callback on its own: one that throws does not keep the other from being told.
    if (settings.on_diagnostic)
        etcd_detail::call_guarded(
            [&] { settings.on_diagnostic(diagnostic{diagnostic::kind::lock_lost, url, why}); });
    if (settings.on_lost) etcd_detail::call_guarded([&] { settings.on_lost(url); });
}

std::unique_lock<std::mutex> etcd_lock::impl::lock_if_held(failure& error) {
    if (held_by_this_process()) { // first: a child after fork() must not touch `mutex`
        std::unique_lock hold{mutex};
        if (held_here()) return hold;
    }
    error = {make_error_code(errc::invalid_release), {}, 0};
    return {};
}

bool etcd_lock::impl::refresh(failure& error) {
    auto hold = lock_if_held(error);
    if (!hold) return false;
    auto const id = lease;
    hold.unlock();
    auto const asked = clock::now();
    auto const left = renew(id, asked + etcd_detail::request_timeout, error);
    if (!left) return false;
    bool const ours = *left > 0 && key_is_ours(error);
    if (error.code) return false;
    hold.lock();
    if (!ours) {
        lost = true;
        error = {make_error_code(errc::not_locked), "the lease ran out or the key was deleted", 0};
        return false;
    }
    lease_end = asked + std::chrono::seconds{*left};
    return true;
}

} // namespace openlock
