// SPDX-License-Identifier: MIT
// etcd_lock's public members: each fallible call in its throwing form and its error_code form, both over the
// impl's steps (recipe.cpp, keeper.cpp).
module;
#include <boost/json/object.hpp>
#include <boost/json/value.hpp>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <stop_token>
#include <string>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

module openlock.etcd;
import openlock;
import :client;
import :lock_impl;

namespace openlock {
namespace {

using etcd_detail::clock;
using etcd_detail::failure;
using etcd_detail::request_timeout;

clock::time_point deadline_after(std::optional<std::chrono::nanoseconds> timeout) {
    if (!timeout) return etcd_detail::forever;
    auto const now = clock::now();
    if (*timeout >= etcd_detail::forever - now) return etcd_detail::forever;
    return now + std::chrono::duration_cast<clock::duration>(*timeout);
}

etcd_detail::location parse_or_throw(std::string const& url) {
    etcd_detail::location where;
    std::string problem;
    if (!etcd_detail::parse_url(url, where, problem)) throw invalid_option(url + ": " + problem);
    return where;
}

/// Runs a step for an error_code overload: its failure's code, or the code of what it threw.
template <class Step>
void into_error_code(std::error_code& error, Step&& step) noexcept {
    try {
        failure failed;
        error = {};
        if (!step(failed)) error = failed.code;
    } catch (std::system_error const& e) {
        error = e.code();
    } catch (...) {
        error = std::make_error_code(std::errc::not_enough_memory);
    }
}

/// True for an object that a child got from fork(): a thread of the parent (keep-alive) held or waited on its
/// mutex, condition variable and connection, and none of them may even be destroyed here (destroying a
/// condition variable that had a waiter blocks forever in glibc).
bool copied_by_fork(etcd_lock::impl const& lock) noexcept {
    auto const here = etcd_detail::current_pid();
    auto const owner = lock.owner_pid.load();
    return (lock.keeper_pid != 0 && lock.keeper_pid != here) || (owner != 0 && owner != here);
}

/// Keeps such an object for the rest of the process, reachable (so that no leak checker counts it).
void keep_forever(std::unique_ptr<etcd_lock::impl> orphan) {
    static std::mutex mutex;
    static auto* const orphans = new std::vector<std::unique_ptr<etcd_lock::impl>>;
    std::lock_guard const hold{mutex};
    orphans->push_back(std::move(orphan));
}

} // namespace

namespace etcd_detail {

void throw_failure(failure const& what, std::string const& url) {
    if (what.code.category() == openlock_category()) {
        switch (static_cast<errc>(what.code.value())) {
        case errc::timeout:
            throw timeout_error(url, what.detail);
        case errc::invalid_release:
            throw invalid_release(url);
        case errc::invalid_option:
            throw invalid_option(what.detail);
        case errc::already_locked:
            throw already_locked(url);
        case errc::not_locked:
            throw not_locked(url, what.detail);
        default:
            break;
        }
    }
    throw lock_error(what.code, url, what.detail);
}

} // namespace etcd_detail

etcd_lock::impl::impl(std::string url_, std::optional<duration> timeout_, options settings_)
    : url(std::move(url_))
    , where(parse_or_throw(url))
    , prefix(where.name + "/")
    , timeout(timeout_)
    , settings(std::move(settings_))
    , ttl(settings.lifetime
              ? std::max(std::chrono::seconds{1}, std::chrono::ceil<std::chrono::seconds>(*settings.lifetime))
              : etcd_default_lifetime)
    , keep_alive_held(settings.keep_alive || !settings.lifetime)
    , client(where.endpoints, request_timeout) {
    validate(settings);
}

etcd_lock::etcd_lock(std::string url) : etcd_lock(std::move(url), std::nullopt) {}

etcd_lock::etcd_lock(std::string url, std::optional<duration> timeout, options settings)
    : impl_(std::make_unique<impl>(std::move(url), timeout, std::move(settings))) {}

etcd_lock::~etcd_lock() {
    if (!impl_) return;
    if (copied_by_fork(*impl_)) {
        keep_forever(std::move(impl_));
        return;
    }
    std::error_code ignored; // the noexcept form: a destructor reports nothing (release() does)
    if (owns_lock()) release(ignored);
}

void etcd_lock::acquire() {
    failure error;
    if (!impl_->acquire(deadline_after(impl_->timeout), false, error))
        etcd_detail::throw_failure(error, url());
}

void etcd_lock::acquire(std::error_code& error) noexcept {
    into_error_code(error, [&](failure& failed) {
        return impl_->acquire(deadline_after(impl_->timeout), false, failed);
    });
}

void etcd_lock::acquire_for(duration timeout) {
    failure error;
    bool const once = timeout <= duration::zero();
    if (!impl_->acquire(deadline_after(timeout), once, error)) {
        if (once && !error.code) error = {make_error_code(errc::timeout), {}, 0};
        etcd_detail::throw_failure(error, url());
    }
}

void etcd_lock::acquire_for(duration timeout, std::error_code& error) noexcept {
    into_error_code(error, [&](failure& failed) {
        bool const once = timeout <= duration::zero();
        if (impl_->acquire(deadline_after(timeout), once, failed)) return true;
        if (once && !failed.code) failed.code = make_error_code(errc::timeout);
        return false;
    });
}

bool etcd_lock::try_acquire() {
    failure error;
    if (impl_->acquire(clock::now() + request_timeout, true, error)) return true;
    if (error.code) etcd_detail::throw_failure(error, url());
    return false;
}

bool etcd_lock::try_acquire(std::error_code& error) noexcept {
    bool acquired = false;
    into_error_code(error, [&](failure& failed) {
        acquired = impl_->acquire(clock::now() + request_timeout, true, failed);
        return acquired || !failed.code;
    });
    return acquired;
}

bool etcd_lock::try_acquire_for(duration timeout) {
    failure error;
    bool const once = timeout <= duration::zero();
    if (impl_->acquire(once ? clock::now() + request_timeout : deadline_after(timeout), once, error))
        return true;
    if (!error.code || error.code == errc::timeout) return false;
    etcd_detail::throw_failure(error, url());
}

void etcd_lock::release() {
    failure error;
    if (!impl_->release(error)) etcd_detail::throw_failure(error, url());
}

void etcd_lock::release(std::error_code& error) noexcept {
    into_error_code(error, [&](failure& failed) { return impl_->release(failed); });
}

void etcd_lock::unlock() noexcept {
    failure error;
    bool released = false;
    try {
        released = impl_->release(error);
    } catch (std::system_error const& e) {
        error = {e.code(), e.what(), 0};
    } catch (...) {
        error = {std::make_error_code(std::errc::not_enough_memory), {}, 0};
    }
    if (released || !impl_->settings.on_diagnostic) return;
    auto const kind =
        error.code == errc::not_locked ? diagnostic::kind::lock_lost : diagnostic::kind::release_failed;
    etcd_detail::call_guarded([&] {
        impl_->settings.on_diagnostic(diagnostic{kind, url(), error.code.message() + ": " + error.detail});
    });
}

bool etcd_lock::locked() const {
    failure error;
    auto const first = impl_->first_key(error);
    if (error.code) etcd_detail::throw_failure(error, url());
    return first.has_value();
}

bool etcd_lock::locked(std::error_code& error) const noexcept {
    bool result = false;
    into_error_code(error, [&](failure& failed) {
        result = impl_->first_key(failed).has_value();
        return !failed.code;
    });
    return result;
}

bool etcd_lock::owns_lock() const noexcept {
    if (!impl_->held_by_this_process()) return false;
    std::lock_guard const hold{impl_->mutex};
    return impl_->held_here();
}

std::optional<lock_record> etcd_lock::owner() const {
    failure error;
    auto const first = impl_->first_key(error);
    if (error.code) etcd_detail::throw_failure(error, url());
    if (!first) return std::nullopt;
    auto parsed = parse_record(first->value);
    if (parsed.status != record_status::ok) return std::nullopt;
    return std::move(parsed.record);
}

std::uint64_t etcd_lock::token() const noexcept {
    if (!impl_->held_by_this_process()) return 0;
    std::lock_guard const hold{impl_->mutex};
    return impl_->held_here() ? static_cast<std::uint64_t>(impl_->revision) : 0;
}

void etcd_lock::refresh() {
    failure error;
    if (!impl_->refresh(error)) etcd_detail::throw_failure(error, url());
}

void etcd_lock::refresh(std::error_code& error) noexcept {
    into_error_code(error, [&](failure& failed) { return impl_->refresh(failed); });
}

std::optional<std::chrono::system_clock::time_point> etcd_lock::expiration() const {
    failure error;
    auto const first = impl_->first_key(error);
    if (error.code) etcd_detail::throw_failure(error, url());
    if (!first) return std::nullopt;
    auto const asked = std::chrono::system_clock::now();
    auto const answer = impl_->client.post("/v3/lease/timetolive", {{"ID", std::to_string(first->lease)}},
                                           clock::now() + request_timeout, error);
    if (!answer) etcd_detail::throw_failure(error, url());
    auto const left = etcd_detail::int_field(*answer, "TTL");
    if (left < 0) return std::nullopt; // the lease ran out between the two requests: its key is gone
    return asked + std::chrono::seconds{left};
}

bool etcd_lock::still_held() const {
    failure error;
    bool const ours = impl_->key_is_ours(error);
    if (error.code) etcd_detail::throw_failure(error, url());
    return ours;
}

bool etcd_lock::still_held(std::error_code& error) const noexcept {
    bool ours = false;
    into_error_code(error, [&](failure& failed) {
        ours = impl_->key_is_ours(failed);
        return !failed.code;
    });
    return ours;
}

std::string const& etcd_lock::url() const noexcept {
    return impl_->url;
}
std::optional<etcd_lock::duration> etcd_lock::timeout() const noexcept {
    return impl_->timeout;
}
options const& etcd_lock::settings() const noexcept {
    return impl_->settings;
}

} // namespace openlock
