// SPDX-License-Identifier: MIT
#include "support/support.hpp"

#include <doctest/doctest.h>

#include <filesystem>
#include <string>
#include <string_view>
#include <utility>

#include "support/records.hpp"

import openlock;

namespace test {

std::string const full_record = "4242\n"
                                "worker\n"
                                "version=1\n"
                                "host=build-7\n"
                                "boot_id=5c0b7d2e-boot\n"
                                "pid_ns=pid:[4026531836]\n"
                                "start_time=123456789\n"
                                "nonce=3f9a1c77e0b24d1e\n"
                                "acquired=1700000000.123456789\n";

std::string visible(std::string_view bytes) {
    std::string out;
    for (char const c : bytes) {
        auto const byte = static_cast<unsigned char>(c);
        if (c == '\n') {
            out += "\\n";
        } else if (byte < 0x20 || byte >= 0x7f) {
            static constexpr char hex[] = "0123456789abcdef";
            out += "\\x";
            out += hex[byte >> 4];
            out += hex[byte & 0xf];
        } else {
            out += c;
        }
    }
    return out;
}

openlock::record_status status_of(std::string_view text) {
    return openlock::parse_record(text).status;
}

openlock::lock_record record_of_this_process(fs::path const& directory) {
    auto const probe = directory / "probe.lock";
    openlock::file_lock lock{probe};
    lock.acquire();
    auto const parsed = openlock::parse_record(read_file(probe));
    lock.release();
    REQUIRE(parsed.status == openlock::record_status::ok);
    REQUIRE(parsed.record.pid == this_pid());
    REQUIRE(parsed.record.start_time.has_value());
    return parsed.record;
}

openlock::lock_record dead_record(fs::path const& directory, std::string nonce) {
    auto record = record_of_this_process(directory);
    record.pid = pid_of_a_reaped_child();
    record.nonce = std::move(nonce);
    return record;
}

openlock::lock_record other_host_record() {
    openlock::lock_record record;
    record.pid = 4242;
    record.name = "worker";
    record.version = 1;
    record.host = "some-other-host";
    record.nonce = nonce_a;
    return record;
}

std::string write_record(fs::path const& path, openlock::lock_record const& record) {
    auto const bytes = openlock::serialize_record(record);
    write_file(path, bytes);
    return bytes;
}

void replace_file(fs::path const& path, std::string const& bytes) {
    auto const staged = path.string() + ".replacement";
    write_file(staged, bytes);
    fs::rename(staged, path);
}

std::string replace_with_another_holder(fs::path const& path) {
    auto record = openlock::parse_record(read_file(path)).record;
    record.nonce = nonce_b;
    auto const bytes = openlock::serialize_record(record);
    replace_file(path, bytes);
    return bytes;
}

} // namespace test
