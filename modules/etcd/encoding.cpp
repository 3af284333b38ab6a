// SPDX-License-Identifier: MIT
// The small pure parts of :client: the etcd:// URL, base64, prefix ranges and the gateway's field encoding.
module;
#include <boost/json/object.hpp>
#include <boost/json/value.hpp>
#include <charconv>
#include <cstdint>
#include <string>
#include <string_view>

module openlock.etcd;
import :client;

namespace openlock::etcd_detail {
namespace {

constexpr std::string_view alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

bool parse_endpoint(std::string_view text, endpoint& out, std::string& problem) {
    // "[v6]:port" or "host:port": the port is after the last colon, and a bracketed host keeps its colons.
    auto const colon = text.rfind(':');
    if (colon == std::string_view::npos || colon == 0 || colon + 1 == text.size()) {
        problem = "an endpoint needs host:port: '" + std::string{text} + "'";
        return false;
    }
    auto host = text.substr(0, colon);
    if (host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
    auto const digits = text.substr(colon + 1);
    unsigned port = 0;
    auto const [end, code] = std::from_chars(digits.data(), digits.data() + digits.size(), port);
    if (code != std::errc{} || end != digits.data() + digits.size() || port == 0 || port > 65535 ||
        host.empty()) {
        problem = "bad port or host in '" + std::string{text} + "'";
        return false;
    }
    out = {std::string{host}, static_cast<std::uint16_t>(port)};
    return true;
}

} // namespace

bool parse_url(std::string_view url, location& out, std::string& problem) {
    constexpr std::string_view scheme = "etcd://";
    if (!url.starts_with(scheme)) {
        problem = "an etcd lock's URL starts with etcd://";
        return false;
    }
    auto rest = url.substr(scheme.size());
    auto const slash = rest.find('/');
    if (slash == std::string_view::npos || slash + 1 == rest.size()) {
        problem = "an etcd lock's URL names the lock after the endpoints: etcd://host:port/name";
        return false;
    }
    out = {};
    // The name is the key prefix as given (it may contain '/'): etcdctl lock NAME uses "NAME/<lease hex>".
    out.name = std::string{rest.substr(slash + 1)};
    auto hosts = rest.substr(0, slash);
    for (;;) {
        auto const comma = hosts.find(',');
        endpoint one;
        if (!parse_endpoint(hosts.substr(0, comma), one, problem)) return false;
        out.endpoints.push_back(std::move(one));
        if (comma == std::string_view::npos) return true;
        hosts = hosts.substr(comma + 1);
    }
}

std::string base64_encode(std::string_view bytes) {
    std::string text;
    text.reserve((bytes.size() + 2) / 3 * 4);
    std::size_t i = 0;
    for (; i + 2 < bytes.size(); i += 3) {
        auto const n = static_cast<unsigned>(static_cast<unsigned char>(bytes[i])) << 16U |
                       static_cast<unsigned>(static_cast<unsigned char>(bytes[i + 1])) << 8U |
                       static_cast<unsigned>(static_cast<unsigned char>(bytes[i + 2]));
        for (unsigned shift : {18U, 12U, 6U, 0U})
            text += alphabet[(n >> shift) & 63U];
    }
    if (auto const left = bytes.size() - i; left > 0) {
        unsigned n = static_cast<unsigned>(static_cast<unsigned char>(bytes[i])) << 16U;
        if (left == 2) n |= static_cast<unsigned>(static_cast<unsigned char>(bytes[i + 1])) << 8U;
        text += alphabet[(n >> 18U) & 63U];
        text += alphabet[(n >> 12U) & 63U];
        text += left == 2 ? alphabet[(n >> 6U) & 63U] : '=';
        text += '=';
    }
    return text;
}

bool base64_decode(std::string_view text, std::string& bytes) {
    bytes.clear();
    unsigned bits = 0;
    int count = 0;
    std::size_t padding = 0;
    for (char const c : text) {
        if (c == '=') {
            ++padding;
            continue;
        }
        if (padding > 0) return false; // data after padding
        auto const value = alphabet.find(c);
        if (value == std::string_view::npos) return false;
        bits = (bits << 6U) | static_cast<unsigned>(value);
        count += 6;
        if (count >= 8) {
            count -= 8;
            bytes += static_cast<char>((bits >> static_cast<unsigned>(count)) & 0xFFU);
        }
    }
    return padding <= 2;
}

std::string prefix_end(std::string_view prefix) {
    std::string end{prefix};
    while (!end.empty()) {
        auto& last = reinterpret_cast<unsigned char&>(end.back());
        if (last < 0xFF) {
            ++last;
            return end;
        }
        end.pop_back();
    }
    return std::string(1, '\0'); // etcd's "every key" range end
}

std::int64_t int_field(boost::json::object const& object, std::string_view key) {
    auto const* found = object.if_contains(key);
    if (found == nullptr) return 0;
    if (auto const* text = found->if_string()) {
        std::int64_t value = 0;
        auto const [end, code] = std::from_chars(text->data(), text->data() + text->size(), value);
        return code == std::errc{} && end == text->data() + text->size() ? value : 0;
    }
    if (auto const* number = found->if_int64()) return *number;
    if (auto const* number = found->if_uint64()) return static_cast<std::int64_t>(*number);
    return 0;
}

std::string bytes_field(boost::json::object const& object, std::string_view key) {
    std::string bytes;
    if (auto const* found = object.if_contains(key); found != nullptr && found->is_string())
        if (!base64_decode(found->get_string(), bytes)) bytes.clear();
    return bytes;
}

bool bool_field(boost::json::object const& object, std::string_view key) {
    auto const* found = object.if_contains(key);
    return found != nullptr && found->is_bool() && found->get_bool();
}

boost::json::object const& object_field(boost::json::object const& object, std::string_view key) {
    static boost::json::object const empty;
    auto const* found = object.if_contains(key);
    return found != nullptr && found->is_object() ? found->get_object() : empty;
}

} // namespace openlock::etcd_detail
