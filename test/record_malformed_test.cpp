// SPDX-License-Identifier: MIT
// Bytes that are not a whole record: empty, incomplete, malformed, too long or too large.
#include "support/support.hpp"

#include <doctest/doctest.h>

#include <cstddef>
#include <string>
#include <string_view>

#include "support/records.hpp"

import openlock;

using namespace std::chrono_literals;
using namespace std::string_literals;
using namespace std::string_view_literals;

namespace {

using test::full_record;
using test::status_of;
using test::visible;

// A v1 record with `extra_lines` lines of unknown keys after the known ones.
std::string record_with_extra_lines(int extra_lines) {
    std::string text = "7\nname\nversion=1\nnonce=n\n";
    for (int i = 0; i < extra_lines; ++i)
        text += "key" + std::to_string(i) + "=value\n";
    return text;
}

} // namespace

TEST_SUITE("malformed records") {

    TEST_CASE("no bytes is empty") {
        auto const parsed = openlock::parse_record("");
        CHECK(parsed.status == openlock::record_status::empty);
        CHECK_FALSE(parsed.problem.empty());
    }

    TEST_CASE("a record without its final newline is incomplete") {
        CHECK(status_of("1234") == openlock::record_status::incomplete);
        CHECK(status_of("1234\npython3") == openlock::record_status::incomplete);
        CHECK(status_of(full_record.substr(0, full_record.size() - 1)) ==
              openlock::record_status::incomplete);
        auto const parsed = openlock::parse_record("1234\npython3");
        CHECK_FALSE(parsed.problem.empty());
    }

    TEST_CASE("a pid line alone is incomplete: the name is missing") {
        CHECK(status_of("1234\n") == openlock::record_status::incomplete);
    }

    TEST_CASE("a v1 record without a nonce is incomplete") {
        auto const parsed = openlock::parse_record("12\nsh\nversion=1\nhost=h\n");
        CHECK(parsed.status == openlock::record_status::incomplete);
        CHECK_FALSE(parsed.problem.empty());
        CHECK(status_of("12\nsh\nversion=1\nnonce=\n") == openlock::record_status::incomplete);
    }

    TEST_CASE("a full record cut anywhere is empty or incomplete unless the cut leaves a whole record") {
        for (std::size_t length = 0; length < full_record.size(); ++length) {
            auto const prefix = std::string_view{full_record}.substr(0, length);
            INFO("length " << length << ": " << visible(prefix));
            auto const status = status_of(prefix);
            if (length == 0) {
                CHECK(status == openlock::record_status::empty);
            } else if (!prefix.ends_with('\n')) {
                CHECK(status == openlock::record_status::incomplete);
            } else if (prefix == "4242\n") {
                CHECK(status == openlock::record_status::incomplete); // no name line
            } else if (prefix == "4242\nworker\n") {
                CHECK(status == openlock::record_status::ok); // a whole version 0 record
            } else if (prefix.find("\nnonce=") == std::string_view::npos) {
                CHECK(status == openlock::record_status::incomplete); // version 1 without its nonce
            } else {
                CHECK(status == openlock::record_status::ok); // only the optional acquired line is missing
            }
        }
    }

    TEST_CASE("bytes that are not a lock record are malformed") {
        auto const malformed = [](std::string const& text) {
            INFO("input: " << visible(text));
            auto const parsed = openlock::parse_record(text);
            CHECK(parsed.status == openlock::record_status::malformed);
            CHECK_FALSE(parsed.problem.empty());
        };
        SUBCASE("pid 0") {
            malformed("0\nname\n");
        }
        SUBCASE("a negative pid") {
            malformed("-5\nname\n");
        }
        SUBCASE("a pid with letters") {
            malformed("12a\nname\n");
            malformed("abc\nname\n");
            malformed("0x10\nname\n");
        }
        SUBCASE("a pid with spaces or a sign") {
            malformed(" 12\nname\n");
            malformed("12 \nname\n");
            malformed("+12\nname\n");
        }
        SUBCASE("an empty pid line") {
            malformed("\nname\n");
        }
        SUBCASE("a pid above 4294967295") {
            malformed("4294967296\nname\n");
            malformed("99999999999999999999\nname\n");
            malformed("999999999999999999999999\nname\n");
        }
        SUBCASE("a line that is not key=value") {
            malformed("12\nsh\nversion=1\nnonce=n\njust words\n");
            malformed("12\nsh\nversion=1\n\nnonce=n\n");
        }
        SUBCASE("an invalid key") {
            malformed("12\nsh\nversion=1\nnonce=n\nHost=h\n");
            malformed("12\nsh\nversion=1\nnonce=n\nbad key=v\n");
            malformed("12\nsh\nversion=1\nnonce=n\n=v\n");
            malformed("12\nsh\nversion=1\nnonce=n\n" + std::string(65, 'k') + "=v\n");
        }
        SUBCASE("a repeated key") {
            malformed("12\nsh\nversion=1\nnonce=n\nhost=a\nhost=b\n");
            malformed("12\nsh\nversion=1\nnonce=n\nversion=1\n");
            malformed("12\nsh\nversion=1\nnonce=n\nextra=1\nextra=1\n");
        }
        SUBCASE("a bad start_time") {
            malformed("12\nsh\nversion=1\nnonce=n\nstart_time=\n");
            malformed("12\nsh\nversion=1\nnonce=n\nstart_time=-1\n");
            malformed("12\nsh\nversion=1\nnonce=n\nstart_time=12x\n");
            malformed("12\nsh\nversion=1\nnonce=n\nstart_time=99999999999999999999\n");
        }
        SUBCASE("a bad acquired time") {
            malformed("12\nsh\nversion=1\nnonce=n\nacquired=\n");
            malformed("12\nsh\nversion=1\nnonce=n\nacquired=yesterday\n");
            malformed("12\nsh\nversion=1\nnonce=n\nacquired=-1.000000000\n");
            malformed("12\nsh\nversion=1\nnonce=n\nacquired=1700000000.5\n");
            malformed("12\nsh\nversion=1\nnonce=n\nacquired=1700000000.\n");
            malformed("12\nsh\nversion=1\nnonce=n\nacquired=.123456789\n");
            malformed("12\nsh\nversion=1\nnonce=n\nacquired=1700000000.1234567890\n");
        }
        SUBCASE("NUL bytes anywhere") {
            malformed("\0"s);
            malformed("\0\n"s);
            malformed("12\0\nsh\n"s);
            malformed("12\nsh\0\n"s);
            malformed("12\nsh\nversion=1\nnonce=n\0\n"s);
            malformed("12\nsh\nversion=1\nnonce=n\n\0"s);
            for (std::size_t at = 0; at <= full_record.size(); ++at) {
                auto text = full_record;
                text.insert(at, 1, '\0');
                malformed(text);
            }
        }
        SUBCASE("version=0 or version=abc") {
            malformed("12\nsh\nversion=0\nnonce=n\n");
            malformed("12\nsh\nversion=abc\nnonce=n\n");
            malformed("12\nsh\nversion=\nnonce=n\n");
            malformed("12\nsh\nversion=-1\nnonce=n\n");
            malformed("12\nsh\nversion=99999999999\nnonce=n\n");
        }
        SUBCASE("fields without a version line") {
            malformed("12\nsh\nnonce=n\n");
            malformed("12\nsh\nhost=h\nnonce=n\n");
            malformed("12\nsh\nsomething=else\n");
        }
        SUBCASE("more than 64 lines") {
            malformed(record_with_extra_lines(61));
            malformed(record_with_extra_lines(200));
        }
    }

    TEST_CASE("a record of exactly 64 lines is accepted") {
        auto const text = record_with_extra_lines(60);
        auto const parsed = openlock::parse_record(text);
        REQUIRE(parsed.status == openlock::record_status::ok);
        CHECK(parsed.record.extra.size() == 60);
    }

    TEST_CASE("more bytes than max_record_size are too large whatever they hold") {
        CHECK(openlock::max_record_size == 4096);
        std::string valid = "7\n" + std::string(openlock::max_record_size - 3, 'n') + "\n";
        REQUIRE(valid.size() == openlock::max_record_size);
        valid.insert(2, 1, 'n');
        REQUIRE(valid.size() == openlock::max_record_size + 1);
        auto const parsed = openlock::parse_record(valid);
        CHECK(parsed.status == openlock::record_status::too_large);
        CHECK_FALSE(parsed.problem.empty());
        CHECK(status_of(std::string(openlock::max_record_size + 1, '\0')) ==
              openlock::record_status::too_large);
        CHECK(status_of(std::string(openlock::max_record_size + 1, '\n')) ==
              openlock::record_status::too_large);
        CHECK(status_of(std::string(1 << 20, 'x')) == openlock::record_status::too_large);
    }

    TEST_CASE("a record of exactly max_record_size bytes is judged by its content") {
        std::string const valid = "7\n" + std::string(openlock::max_record_size - 3, 'n') + "\n";
        REQUIRE(valid.size() == openlock::max_record_size);
        auto const parsed = openlock::parse_record(valid);
        REQUIRE(parsed.status == openlock::record_status::ok);
        CHECK(parsed.record.name.size() == openlock::max_record_size - 3);

        std::string const unterminated = "7\n" + std::string(openlock::max_record_size - 2, 'n');
        REQUIRE(unterminated.size() == openlock::max_record_size);
        CHECK(status_of(unterminated) == openlock::record_status::incomplete);

        std::string const bad_pid = "x\n" + std::string(openlock::max_record_size - 3, 'n') + "\n";
        REQUIRE(bad_pid.size() == openlock::max_record_size);
        CHECK(status_of(bad_pid) == openlock::record_status::malformed);
    }

} // TEST_SUITE
