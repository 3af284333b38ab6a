// SPDX-License-Identifier: MIT
// :client — etcd's v3 JSON gateway (POST /v3/...) over HTTP/1.1: one request at a time, each bounded in time,
// failing over between the URL's endpoints; and the watch of one key's deletion. Internal: nothing here is
// exported. Gateway facts this relies on (docs/etcd.md): keys and values are base64, 64-bit numbers are JSON
// strings, an absent field means zero/false/empty, and misspelled fields are ignored without a word.
module;
#include <boost/json/object.hpp>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

module openlock.etcd:client;

namespace openlock::etcd_detail {

using clock = std::chrono::steady_clock;
/// "No deadline": waits that long are forever.
inline constexpr clock::time_point forever = clock::time_point::max();

struct endpoint {
    std::string host;
    std::uint16_t port = 0;
};

/// What an etcd:// URL names: the servers (any of them will do) and the lock's name (the key prefix).
struct location {
    std::vector<endpoint> endpoints;
    std::string name;
};

/// Parses "etcd://host:port[,host:port...]/name"; false with `problem` set when it is not one.
[[nodiscard]] bool parse_url(std::string_view url, location& out, std::string& problem);

/// A failed step: the code (openlock::errc or an OS/Asio code), words for the exception, and the gRPC status
/// code etcd gave (5: not found, as for a lease that has expired; 0 when it gave none).
struct failure {
    std::error_code code;
    std::string detail;
    int grpc_code = 0;
};

[[nodiscard]] std::string base64_encode(std::string_view bytes);
/// False on text that is not base64.
[[nodiscard]] bool base64_decode(std::string_view text, std::string& bytes);
/// The first key after every key that starts with prefix (etcd's range_end of a prefix).
[[nodiscard]] std::string prefix_end(std::string_view prefix);

/// A 64-bit field of a gateway answer: a JSON string of digits (or, leniently, a number); absent is 0.
[[nodiscard]] std::int64_t int_field(boost::json::object const& object, std::string_view key);
/// A bytes field (key, value): base64 in the answer; absent is empty.
[[nodiscard]] std::string bytes_field(boost::json::object const& object, std::string_view key);
/// A bool field; absent is false (a failed txn has no "succeeded").
[[nodiscard]] bool bool_field(boost::json::object const& object, std::string_view key);
/// A nested object field; absent (or not an object) is an empty object, as the gateway's zero value is.
[[nodiscard]] boost::json::object const& object_field(boost::json::object const& object,
                                                      std::string_view key);

/// A connection to an etcd cluster through its JSON gateway. post() is safe to call from several threads (one
/// request runs at a time); each watch has a connection of its own.
class client {
public:
    /// request_timeout bounds each request on each endpoint; a deadline passed to a call bounds it further.
    client(std::vector<endpoint> endpoints, std::chrono::nanoseconds request_timeout);
    client(client const&) = delete;
    client& operator=(client const&) = delete;
    ~client();

    /// POSTs body to target ("/v3/kv/range") and returns the answer (a streamed answer's "result"
    /// unwrapped). Tries the current endpoint, then the others, until one answers; errc::unavailable when
    /// none did in time, errc::server_error when one refused the request (grpc_code says why).
    [[nodiscard]] std::optional<boost::json::object>
    post(std::string_view target, boost::json::object const& body, clock::time_point until, failure& error);

    enum class watch_result {
        deleted,   ///< the key was deleted (or the watch was cancelled by the server: look again)
        timed_out, ///< `until` came first
        failed,    ///< no endpoint would watch, or the stream broke (error says why): look again
    };
    /// Waits until `key` is deleted at or after revision from_revision (a deletion before the call, at
    /// from_revision or later, counts), or until `until`.
    [[nodiscard]] watch_result wait_for_deletion(std::string_view key, std::int64_t from_revision,
                                                 clock::time_point until, failure& error);

private:
    struct state;
    std::unique_ptr<state> state_;
};

} // namespace openlock::etcd_detail
