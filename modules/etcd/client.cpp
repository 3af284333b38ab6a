// SPDX-License-Identifier: MIT
// :client at work: HTTP/1.1 requests to the JSON gateway with Boost.Beast, and the watch of a key's deletion.
// Every step runs as an asynchronous operation on a private io_context, so that a deadline
// (beast::tcp_stream's expiry) bounds connect, write and read alike: a server that accepts but never answers
// costs the request's time, never a hang.
module;
#include <algorithm>
#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>
#include <boost/json/array.hpp>
#include <boost/json/object.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

module openlock.etcd;
import openlock;
import :client;

namespace openlock::etcd_detail {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using error_code = boost::system::error_code;

/// One HTTP connection and the io_context its operations run on (one thread at a time).
struct connection {
    asio::io_context io;
    beast::tcp_stream stream{io};
    beast::flat_buffer buffer;
    bool open = false;

    void close() {
        stream.close(); // errors ignored: the socket is done with either way
        buffer.clear();
        open = false;
    }
};

/// Starts one asynchronous operation and runs the io_context until its handler has run.
template <class Start>
error_code run(asio::io_context& io, Start&& start) {
    error_code result = asio::error::would_block;
    std::forward<Start>(start)([&result](error_code e, auto&&...) { result = e; });
    io.restart();
    io.run();
    return result;
}

std::string describe(endpoint const& to, std::string_view what) {
    return to.host + ":" + std::to_string(to.port) + ": " + std::string{what};
}

/// Connects within `time`; names are resolved under the same bound (a timer cancels a slow resolver).
error_code open(connection& c, endpoint const& to, clock::duration time) {
    c.close();
    error_code code;
    tcp::resolver::results_type found;
    auto const address = asio::ip::make_address(to.host, code);
    if (!code) {
        found = tcp::resolver::results_type::create(tcp::endpoint{address, to.port}, to.host,
                                                    std::to_string(to.port));
    } else {
        tcp::resolver resolver{c.io};
        asio::steady_timer timer{c.io, time};
        timer.async_wait([&resolver](error_code e) {
            if (!e) resolver.cancel();
        });
        code = asio::error::would_block;
        resolver.async_resolve(to.host, std::to_string(to.port),
                               [&](error_code e, tcp::resolver::results_type results) {
                                   code = e;
                                   found = std::move(results);
                                   timer.cancel();
                               });
        c.io.restart();
        c.io.run();
        if (code) return code;
    }
    c.stream.expires_after(time);
    code = run(c.io, [&](auto handler) { c.stream.async_connect(found, std::move(handler)); });
    if (code) return code;
    // Every request is a small write followed by a read: Nagle would add a delayed-ACK wait to each.
    if (c.stream.socket().set_option(tcp::no_delay{true}, code)) {
        // Nagle stays: slower, not wrong.
    }
    c.open = true;
    return {};
}

http::request<http::string_body> make_request(endpoint const& to, std::string_view target, std::string body) {
    http::request<http::string_body> request{http::verb::post, target, 11};
    request.set(http::field::host, to.host + ":" + std::to_string(to.port));
    request.set(http::field::content_type, "application/json");
    request.keep_alive(true);
    request.body() = std::move(body);
    request.prepare_payload();
    return request;
}

/// The gateway's answer as an object: a streamed answer ("{"result":{...}}\n") unwrapped.
std::optional<boost::json::object> parse_answer(std::string_view text) {
    error_code code;
    auto value = boost::json::parse(text, code);
    if (code || !value.is_object()) return std::nullopt;
    auto& object = value.get_object();
    if (auto* result = object.if_contains("result"); result != nullptr && result->is_object())
        return std::move(result->get_object());
    return std::move(object);
}

enum class verdict { nothing_yet, deleted, broken };

/// What one message of the watch stream says.
verdict judge_message(std::string_view line) {
    error_code code;
    auto const value = boost::json::parse(line, code);
    if (code || !value.is_object()) return verdict::broken;
    auto const& message = value.get_object();
    if (message.contains("error")) return verdict::broken;
    auto const& result = object_field(message, "result");
    // A watch the server cancelled (compacted revision, ...) says nothing about the key: look again.
    if (auto const* cancelled = result.if_contains("canceled");
        cancelled != nullptr && cancelled->is_bool() && cancelled->get_bool())
        return verdict::deleted;
    if (auto const* events = result.if_contains("events"); events != nullptr && events->is_array()) {
        for (auto const& event : events->get_array()) {
            // The event type's zero value, PUT, is absent from the JSON: only an explicit DELETE counts.
            if (!event.is_object()) continue;
            auto const* type = event.get_object().if_contains("type");
            if (type != nullptr && type->is_string() && type->get_string() == "DELETE")
                return verdict::deleted;
        }
    }
    return verdict::nothing_yet;
}

/// gRPC's Unavailable (no leader, shutting down): another member may serve the request.
constexpr int grpc_unavailable = 14;

} // namespace

struct client::state {
    std::vector<endpoint> endpoints;
    clock::duration request_timeout;
    std::mutex mutex; ///< one request at a time on `unary`
    connection unary;
    std::size_t current = 0; ///< the endpoint that answered last
};

client::client(std::vector<endpoint> endpoints, std::chrono::nanoseconds request_timeout)
    : state_(std::make_unique<state>()) {
    state_->endpoints = std::move(endpoints);
    state_->request_timeout = std::chrono::duration_cast<clock::duration>(request_timeout);
}

client::~client() = default;

std::optional<boost::json::object> client::post(std::string_view target, boost::json::object const& body,
                                                clock::time_point until, failure& error) {
    std::lock_guard const hold{state_->mutex};
    auto& s = *state_;
    auto& c = s.unary;
    std::string const text = boost::json::serialize(body);
    std::string problems;
    // A kept-alive connection may have been closed by the server meanwhile: it gets one retry of its own.
    auto attempts = s.endpoints.size() + (c.open ? 1 : 0);
    for (; attempts > 0; --attempts) {
        auto const now = clock::now();
        if (now >= until) break;
        auto const time = std::min(until - now, s.request_timeout);
        auto const& to = s.endpoints[s.current];
        bool const reused = c.open;
        error_code code;
        if (!c.open) code = open(c, to, time);
        http::response<http::string_body> response;
        if (!code) {
            auto request = make_request(to, target, text);
            c.stream.expires_after(time);
            code = run(c.io, [&](auto handler) { http::async_write(c.stream, request, std::move(handler)); });
            if (!code)
                code = run(c.io, [&](auto handler) {
                    http::async_read(c.stream, c.buffer, response, std::move(handler));
                });
        }
        if (code) {
            c.close();
            problems = describe(to, code.message());
            if (!reused) s.current = (s.current + 1) % s.endpoints.size();
            continue;
        }
        if (!response.keep_alive()) c.close();
        auto answer = parse_answer(response.body());
        if (response.result() == http::status::ok && answer && !answer->contains("error")) return answer;
        // An error answer. A unary call's: {"error": "...", "message": "...", "code": <gRPC status>}; a
        // streamed call's (keepalive) comes in a 200 answer as {"error": {"grpc_code": ..., "message": ...}}.
        int grpc = 0;
        std::string message = response.body().substr(0, 200);
        if (answer) {
            auto const* nested = answer->if_contains("error");
            auto const& source = nested != nullptr && nested->is_object() ? nested->get_object() : *answer;
            grpc = static_cast<int>(source.contains("grpc_code") ? int_field(source, "grpc_code")
                                                                 : int_field(source, "code"));
            if (auto const* m = source.if_contains("message"); m != nullptr && m->is_string())
                message = std::string{m->get_string()};
        }
        if (grpc == grpc_unavailable || response.result() == http::status::service_unavailable) {
            problems = describe(to, message);
            c.close();
            s.current = (s.current + 1) % s.endpoints.size();
            continue;
        }
        error = {make_error_code(errc::server_error), describe(to, std::string{target} + ": " + message),
                 grpc};
        return std::nullopt;
    }
    error = {make_error_code(errc::unavailable), problems.empty() ? "no time left for a request" : problems,
             0};
    return std::nullopt;
}

client::watch_result client::wait_for_deletion(std::string_view key, std::int64_t from_revision,
                                               clock::time_point until, failure& error) {
    std::vector<endpoint> endpoints;
    std::size_t first = 0;
    clock::duration request_timeout{};
    {
        // The endpoints are fixed after construction; `current` changes under the mutex.
        std::lock_guard const hold{state_->mutex};
        endpoints = state_->endpoints;
        first = state_->current;
        request_timeout = state_->request_timeout;
    }
    boost::json::object create{{"key", base64_encode(key)},
                               {"start_revision", std::to_string(from_revision)},
                               {"filters", boost::json::array{"NOPUT"}}};
    std::string const body =
        boost::json::serialize(boost::json::object{{"create_request", std::move(create)}});

    connection c;
    std::optional<http::response_parser<http::string_body>> parser;
    std::string problems;
    bool started = false;
    for (std::size_t i = 0; i < endpoints.size() && !started; ++i) {
        auto const& to = endpoints[(first + i) % endpoints.size()];
        auto const now = clock::now();
        if (now >= until) return watch_result::timed_out;
        auto const time = std::min(until - now, request_timeout);
        auto code = open(c, to, time);
        auto request = make_request(to, "/v3/watch", body);
        parser.emplace();
        parser->body_limit(boost::none);
        if (!code)
            code = run(c.io, [&](auto handler) { http::async_write(c.stream, request, std::move(handler)); });
        if (!code)
            code = run(c.io, [&](auto handler) {
                http::async_read_header(c.stream, c.buffer, *parser, std::move(handler));
            });
        if (!code && parser->get().result() == http::status::ok) {
            started = true;
            break;
        }
        problems = describe(to, code ? code.message()
                                     : "watch refused: " + std::to_string(parser->get().result_int()));
        c.close();
    }
    if (!started) {
        error = {make_error_code(errc::unavailable), problems, 0};
        return watch_result::failed;
    }
    // Messages arrive as chunks of one body: read some, judge every complete line, until DELETE or `until`.
    std::size_t judged = 0;
    for (;;) {
        auto const& text = parser->get().body();
        for (auto end = text.find('\n', judged); end != std::string::npos; end = text.find('\n', judged)) {
            auto const seen = judge_message(std::string_view{text}.substr(judged, end - judged));
            judged = end + 1;
            if (seen == verdict::deleted) return watch_result::deleted;
            if (seen == verdict::broken) {
                error = {make_error_code(errc::server_error), "watch: " + text.substr(0, 200), 0};
                return watch_result::failed;
            }
        }
        if (parser->is_done()) {
            error = {make_error_code(errc::unavailable), "the watch stream ended", 0};
            return watch_result::failed;
        }
        if (until == forever) {
            c.stream.expires_never();
        } else {
            c.stream.expires_at(until);
        }
        auto const code = run(c.io, [&](auto handler) {
            http::async_read_some(c.stream, c.buffer, *parser, std::move(handler));
        });
        if (code == beast::error::timeout || (code && clock::now() >= until)) return watch_result::timed_out;
        if (code) {
            error = {make_error_code(errc::unavailable), "watch: " + code.message(), 0};
            return watch_result::failed;
        }
    }
}

} // namespace openlock::etcd_detail
