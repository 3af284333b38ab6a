// SPDX-License-Identifier: MIT
// The Mutex recipe on the JSON gateway (docs/etcd.md): a lease, then the key "<name>/<lease hex>" created in
// a transaction on create_revision == 0; the lowest create_revision under "<name>/" holds the lock; a waiter
// watches only its predecessor's deletion, and after every wake-up reads its own key again before it claims.
// Not /v3/lock/lock: in etcd 3.4 it can grant the lock to a waiter whose lease expired (etcd issue 11456).
module;
#include <algorithm>
#include <boost/json/array.hpp>
#include <boost/json/object.hpp>
#include <boost/json/value.hpp>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <mutex>
#include <optional>
#include <stop_token>
#include <string>
#include <system_error>
#include <thread>

module openlock.etcd;
import openlock;
import :client;
import :lock_impl;

namespace openlock {
namespace {

using etcd_detail::clock;
using etcd_detail::failure;
using etcd_detail::holder_key;
namespace json = boost::json;

/// How long clean-up after a failed or timed-out acquire may take: it is not worth a long wait, since the
/// lease it revokes runs out by itself within its TTL.
constexpr std::chrono::seconds cleanup_time{1};
/// The pause before a waiter looks again after its watch broke (the server is then likely failing over).
constexpr std::chrono::milliseconds watch_retry_pause{100};
/// The pause between a queued waiter's tries while no server answers.
constexpr std::chrono::milliseconds outage_pause{200};

std::string hex(std::int64_t lease) {
    char text[17];
    std::snprintf(text, sizeof text, "%llx", static_cast<unsigned long long>(lease));
    return text;
}

json::object range_of(json::object request) {
    return {{"request_range", std::move(request)}};
}

/// The first key of the lock (lowest create_revision): the holder.
json::object first_of(std::string const& prefix) {
    return {{"key", etcd_detail::base64_encode(prefix)},
            {"range_end", etcd_detail::base64_encode(etcd_detail::prefix_end(prefix))},
            {"sort_order", "ASCEND"},
            {"sort_target", "CREATE"},
            {"limit", "1"}};
}

/// The key just before ours: the highest create_revision below our own.
json::object predecessor_of(std::string const& prefix, std::int64_t revision) {
    return {{"key", etcd_detail::base64_encode(prefix)},
            {"range_end", etcd_detail::base64_encode(etcd_detail::prefix_end(prefix))},
            {"sort_order", "DESCEND"},
            {"sort_target", "CREATE"},
            {"max_create_revision", std::to_string(revision - 1)},
            {"limit", "1"}};
}

std::optional<holder_key> first_kv(json::object const& range_response) {
    auto const* kvs = range_response.if_contains("kvs");
    if (kvs == nullptr || !kvs->is_array() || kvs->get_array().empty() || !kvs->get_array()[0].is_object())
        return std::nullopt;
    auto const& kv = kvs->get_array()[0].get_object();
    return holder_key{etcd_detail::bytes_field(kv, "key"), etcd_detail::bytes_field(kv, "value"),
                      etcd_detail::int_field(kv, "create_revision"), etcd_detail::int_field(kv, "lease")};
}

/// responses[index].response_range of a transaction's answer (an empty object when absent).
json::object const& range_answer(json::object const& txn, std::size_t index) {
    auto const* responses = txn.if_contains("responses");
    static json::object const empty;
    if (responses == nullptr || !responses->is_array() || responses->get_array().size() <= index ||
        !responses->get_array()[index].is_object())
        return empty;
    return etcd_detail::object_field(responses->get_array()[index].get_object(), "response_range");
}

std::string describe(std::optional<holder_key> const& holder) {
    if (!holder) return {};
    auto const parsed = parse_record(holder->value);
    if (parsed.status == record_status::ok) return describe_holder(parsed.record);
    return "key " + displayable(holder->key) + " (revision " + std::to_string(holder->create_revision) + ")";
}

} // namespace

bool etcd_lock::impl::acquire(clock::time_point until, bool once, failure& error) {
    if (!enter_gate(until, error)) return false;
    std::int64_t my_lease = 0;
    // Clean-up after a failure or a timeout, bounded by `by` (default: cleanup_time from now).
    auto const give_up = [&](clock::time_point by = {}) {
        failure ignored;
        if (by == clock::time_point{}) by = clock::now() + cleanup_time;
        if (my_lease != 0) revoke(my_lease, by, ignored);
        leave_gate();
        return false;
    };
    for (;;) {
        // A lease of our own, then our key under it; the transaction also reads the first key, so that an
        // uncontended acquire is these two round trips.
        auto const grant =
            client.post("/v3/lease/grant", {{"TTL", std::to_string(ttl.count())}}, until, error);
        if (!grant) return give_up();
        my_lease = etcd_detail::int_field(*grant, "ID");
        auto renewed_at = clock::now();
        auto const lease_ttl =
            std::chrono::seconds{std::max<std::int64_t>(1, etcd_detail::int_field(*grant, "TTL"))};
        std::string const my_key = prefix + hex(my_lease);
        auto record = this_process_record();
        record.lifetime = lease_ttl;
        auto const key64 = etcd_detail::base64_encode(my_key);
        json::object txn{
            {"compare",
             json::array{json::object{
                 {"key", key64}, {"target", "CREATE"}, {"result", "EQUAL"}, {"create_revision", "0"}}}},
            {"success",
             json::array{json::object{{"request_put", json::object{{"key", key64},
                                                                   {"value", etcd_detail::base64_encode(
                                                                                 serialize_record(record))},
                                                                   {"lease", std::to_string(my_lease)}}}},
                         range_of(first_of(prefix))}},
            {"failure", json::array{range_of({{"key", key64}}), range_of(first_of(prefix))}}};
        auto const claimed = client.post("/v3/kv/txn", txn, until, error);
        if (!claimed) return give_up();
        std::int64_t my_revision = 0;
        if (etcd_detail::bool_field(*claimed, "succeeded")) {
            my_revision = etcd_detail::int_field(etcd_detail::object_field(*claimed, "header"), "revision");
        } else if (auto const mine = first_kv(range_answer(*claimed, 0))) {
            my_revision = mine->create_revision; // a retried request whose first try did create it
        }
        auto holder = first_kv(range_answer(*claimed, 1));
        bool lease_lost = false;
        // At the deadline: name the holder (the first key, which our predecessor need not be) and leave.
        // Naming it and revoking our lease share one clean-up bound: a hung server costs no more.
        auto const timed_out = [&] {
            auto const cleanup_until = clock::now() + cleanup_time;
            failure ignored;
            auto const first = first_key(ignored, cleanup_until);
            error = {make_error_code(errc::timeout), describe(first ? first : holder), 0};
            return give_up(cleanup_until);
        };
        // A queued waiter rides out an outage shorter than its lease (after which its key is gone anyway):
        // true to look again after a pause, false to fail with the error (first contact, above, fails at
        // once).
        std::optional<clock::time_point> unreachable_since;
        auto const ride_out = [&] {
            auto const now = clock::now();
            if (error.code != errc::unavailable || now >= until) return false;
            if (!unreachable_since) unreachable_since = now;
            if (now - *unreachable_since >= lease_ttl) return false;
            std::this_thread::sleep_for(std::min<clock::duration>(outage_pause, until - now));
            return true;
        };
        while (!lease_lost) {
            if (my_revision != 0 && holder && holder->create_revision == my_revision) {
                std::lock_guard const hold{mutex};
                held = true;
                owner_pid = etcd_detail::current_pid();
                lost = false;
                lease = my_lease;
                key = my_key;
                revision = my_revision;
                granted = lease_ttl;
                lease_end = renewed_at + lease_ttl;
                if (keep_alive_held) start_keeper();
                return true;
            }
            if (once) {
                error = {};
                give_up();
                return false;
            }
            // Look: our own key (still there?) and our predecessor, at one revision.
            json::object look{{"compare", json::array{}},
                              {"success", json::array{range_of({{"key", key64}}),
                                                      range_of(predecessor_of(prefix, my_revision))}}};
            auto const seen = client.post("/v3/kv/txn", look, until, error);
            if (!seen) {
                if (clock::now() >= until) return timed_out();
                if (ride_out()) continue;
                return give_up();
            }
            unreachable_since.reset();
            auto const mine = first_kv(range_answer(*seen, 0));
            if (!mine || mine->create_revision != my_revision) {
                lease_lost = true; // our lease ran out or our key was deleted: queue again
                break;
            }
            auto const predecessor = first_kv(range_answer(*seen, 1));
            if (!predecessor) {
                holder = mine; // nobody before us: ours
                continue;
            }
            holder = predecessor;
            // Wait for its deletion, waking in time to renew our own lease (a waiter keeps its place).
            auto const renew_at = renewed_at + lease_ttl / 3;
            auto const wake_at = std::min(until, renew_at);
            auto const from =
                etcd_detail::int_field(etcd_detail::object_field(*seen, "header"), "revision") + 1;
            failure watch_error;
            auto const woke = client.wait_for_deletion(predecessor->key, from, wake_at, watch_error);
            if (woke == etcd_detail::client::watch_result::failed)
                std::this_thread::sleep_for(
                    std::min<clock::duration>(watch_retry_pause, until - clock::now()));
            if (clock::now() >= until) return timed_out();
            if (clock::now() >= renew_at) {
                auto const asked = clock::now();
                auto const left = renew(my_lease, until, error);
                if (!left) {
                    if (clock::now() >= until) return timed_out();
                    if (ride_out()) continue;
                    return give_up();
                }
                if (*left <= 0) lease_lost = true;
                renewed_at = asked;
            }
        }
        // Our place in the queue is gone: revoke what is left of it and take a new one.
        failure ignored;
        revoke(my_lease, clock::now() + cleanup_time, ignored);
        my_lease = 0;
    }
}

bool etcd_lock::impl::release(failure& error) {
    auto hold = lock_if_held(error);
    if (!hold) return false;
    auto const my_key = key;
    auto const my_lease = lease;
    auto const my_revision = revision;
    hold.unlock();
    stop_keeper();
    auto const until = clock::now() + etcd_detail::request_timeout;
    // Delete our key only if it is still the one we created; then revoke the lease (which would delete it
    // too, but could not tell us that it was already gone).
    auto const key64 = etcd_detail::base64_encode(my_key);
    json::object txn{
        {"compare", json::array{json::object{{"key", key64},
                                             {"target", "CREATE"},
                                             {"result", "EQUAL"},
                                             {"create_revision", std::to_string(my_revision)}}}},
        {"success", json::array{json::object{{"request_delete_range", json::object{{"key", key64}}}}}}};
    auto const deleted = client.post("/v3/kv/txn", txn, until, error);
    if (!deleted) return false; // still held: release() may be called again
    bool const was_ours = etcd_detail::bool_field(*deleted, "succeeded");
    failure ignored;
    revoke(my_lease, until, ignored);
    hold.lock();
    held = false;
    owner_pid = 0;
    lease = 0;
    key.clear();
    revision = 0;
    hold.unlock();
    leave_gate();
    if (!was_ours) {
        error = {make_error_code(errc::not_locked),
                 "the key " + my_key + " was gone: its lease ran out or it was deleted", 0};
        return false;
    }
    return true;
}

std::optional<holder_key> etcd_lock::impl::first_key(failure& error, clock::time_point until) const {
    if (until == clock::time_point{}) until = clock::now() + etcd_detail::request_timeout;
    auto const answer = client.post("/v3/kv/range", first_of(prefix), until, error);
    if (!answer) return std::nullopt;
    return first_kv(*answer);
}

bool etcd_lock::impl::key_is_ours(failure& error) const {
    if (!held_by_this_process()) return false;
    std::unique_lock hold{mutex};
    if (!held_here()) return false;
    auto const my_key = key;
    auto const my_revision = revision;
    hold.unlock();
    auto const answer = client.post("/v3/kv/range", {{"key", etcd_detail::base64_encode(my_key)}},
                                    clock::now() + etcd_detail::request_timeout, error);
    if (!answer) return false;
    auto const mine = first_kv(*answer);
    return mine && mine->create_revision == my_revision;
}

bool etcd_lock::impl::revoke(std::int64_t id, clock::time_point until, failure& error) {
    if (client.post("/v3/lease/revoke", {{"ID", std::to_string(id)}}, until, error)) return true;
    constexpr int grpc_not_found = 5; // "requested lease not found": it ran out already
    return error.grpc_code == grpc_not_found;
}

std::optional<std::int64_t> etcd_lock::impl::renew(std::int64_t id, clock::time_point until, failure& error) {
    auto const answer = client.post("/v3/lease/keepalive", {{"ID", std::to_string(id)}}, until, error);
    if (!answer) return std::nullopt;
    // The gateway answers a keep-alive of a lease that is gone with 200 and no TTL: TTL 0 means lost.
    return etcd_detail::int_field(*answer, "TTL");
}

} // namespace openlock
