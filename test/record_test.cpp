// The lock record format: parse_record and serialize_record are pure functions over untrusted bytes.
#include "support/support.hpp"

#include <doctest/doctest.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

import openlock;

using namespace std::chrono_literals;
using namespace std::string_literals;
using namespace std::string_view_literals;

namespace {

// A v1 record as this library writes it.
std::string const full_record = "4242\n"
                                "worker\n"
                                "version=1\n"
                                "host=build-7\n"
                                "boot_id=5c0b7d2e-boot\n"
                                "pid_ns=pid:[4026531836]\n"
                                "start_time=123456789\n"
                                "nonce=3f9a1c77e0b24d1e\n"
                                "acquired=1700000000.123456789\n";

// Bytes shown readably in failure messages.
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

// A v1 record with `extra_lines` lines of unknown keys after the known ones.
std::string record_with_extra_lines(int extra_lines) {
    std::string text = "7\nname\nversion=1\nnonce=n\n";
    for (int i = 0; i < extra_lines; ++i)
        text += "key" + std::to_string(i) + "=value\n";
    return text;
}

} // namespace

TEST_SUITE("records") {

    TEST_CASE("a full v1 record parses into its fields") {
        auto const parsed = openlock::parse_record(full_record);
        REQUIRE(parsed.status == openlock::record_status::ok);
        CHECK(parsed.problem.empty());
        auto const& record = parsed.record;
        CHECK(record.pid == 4242);
        CHECK(record.name == "worker");
        CHECK(record.version == 1);
        CHECK(record.host == "build-7");
        CHECK(record.boot_id == "5c0b7d2e-boot");
        CHECK(record.pid_namespace == "pid:[4026531836]");
        CHECK(record.start_time == std::optional<std::uint64_t>{123456789});
        CHECK(record.nonce == "3f9a1c77e0b24d1e");
        REQUIRE(record.acquired.has_value());
        CHECK(std::chrono::duration_cast<std::chrono::seconds>(record.acquired->time_since_epoch()).count() ==
              1700000000);
        CHECK(record.extra.empty());
    }

    TEST_CASE("a full v1 record is written back byte for byte and parses back to an equal record") {
        auto const parsed = openlock::parse_record(full_record);
        REQUIRE(parsed.status == openlock::record_status::ok);
        auto const text = openlock::serialize_record(parsed.record);
        CHECK(text == full_record);
        auto const again = openlock::parse_record(text);
        REQUIRE(again.status == openlock::record_status::ok);
        CHECK(again.record == parsed.record);
    }

    TEST_CASE("a record built in code round-trips through serialize and parse") {
        openlock::lock_record record;
        record.pid = 31337;
        record.name = "backup job";
        record.version = 1;
        record.host = "db-1.example.org";
        record.boot_id = "b00t";
        record.pid_namespace = "ns";
        record.start_time = 987654321;
        record.nonce = "abc123";
        record.acquired = std::chrono::system_clock::time_point{std::chrono::seconds{1'600'000'000}};
        record.extra = {{"owner", "alice"}, {"ttl", "60"}};
        auto const parsed = openlock::parse_record(openlock::serialize_record(record));
        REQUIRE(parsed.status == openlock::record_status::ok);
        CHECK(parsed.record == record);
    }

    TEST_CASE("a holder's doorbell is a positive number that round-trips, and absent means none") {
        auto const parsed = openlock::parse_record("12\nsh\nversion=1\nnonce=x\nbell=18446744073709551615\n");
        REQUIRE(parsed.status == openlock::record_status::ok);
        CHECK(parsed.record.bell == 18446744073709551615ull);
        auto const again = openlock::parse_record(openlock::serialize_record(parsed.record));
        REQUIRE(again.status == openlock::record_status::ok);
        CHECK(again.record == parsed.record);
        CHECK(openlock::parse_record("12\nsh\nversion=1\nnonce=x\n").record.bell == 0);
        CHECK(openlock::serialize_record(openlock::parse_record("12\nsh\nversion=1\nnonce=x\n").record)
                  .find("bell") == std::string::npos);
        for (auto const* bad : {"bell=0", "bell=-1", "bell=x", "bell=", "bell=18446744073709551616"}) {
            INFO(bad);
            CHECK(openlock::parse_record("12\nsh\nversion=1\nnonce=x\n"s + bad + "\n").status ==
                  openlock::record_status::malformed);
        }
    }

    TEST_CASE("a holder's process group and its leader's start time round-trip, and absent means none") {
        auto const parsed = openlock::parse_record(
            "12\nopenlock\nversion=1\nnonce=x\ngroup=4294967295\ngroup_start=18446744073709551615\n");
        REQUIRE(parsed.status == openlock::record_status::ok);
        CHECK(parsed.record.process_group == 4294967295);
        CHECK(parsed.record.group_start_time == 18446744073709551615ull);
        auto const again = openlock::parse_record(openlock::serialize_record(parsed.record));
        REQUIRE(again.status == openlock::record_status::ok);
        CHECK(again.record == parsed.record);
        CHECK(again.record.extra.empty());

        openlock::lock_record record;
        record.pid = 77;
        record.name = "openlock";
        record.version = 1;
        record.nonce = "n";
        record.process_group = 78;
        record.group_start_time = 123456;
        auto const text = openlock::serialize_record(record);
        CHECK(text.find("group=78\ngroup_start=123456\n") != std::string::npos);
        CHECK(openlock::parse_record(text).record == record);
        // A group without its leader's start time (a reader that could not see it) is still a group.
        record.group_start_time.reset();
        CHECK(openlock::parse_record(openlock::serialize_record(record)).record == record);

        auto const none = openlock::parse_record("12\nsh\nversion=1\nnonce=x\n");
        CHECK_FALSE(none.record.process_group.has_value());
        CHECK_FALSE(none.record.group_start_time.has_value());
        CHECK(openlock::serialize_record(none.record).find("group") == std::string::npos);
        for (auto const* bad :
             {"group=0", "group=-1", "group=x", "group=", "group=4294967296", "group_start=-1",
              "group_start=x", "group_start=", "group_start=18446744073709551616"}) {
            INFO(bad);
            CHECK(openlock::parse_record("12\nsh\nversion=1\nnonce=x\n"s + bad + "\n").status ==
                  openlock::record_status::malformed);
        }
    }

    TEST_CASE("optional fields that are absent stay absent through a round trip") {
        auto const parsed = openlock::parse_record("12\nsh\nversion=1\nnonce=x\n");
        REQUIRE(parsed.status == openlock::record_status::ok);
        CHECK_FALSE(parsed.record.start_time.has_value());
        CHECK_FALSE(parsed.record.acquired.has_value());
        CHECK(parsed.record.host.empty());
        auto const again = openlock::parse_record(openlock::serialize_record(parsed.record));
        REQUIRE(again.status == openlock::record_status::ok);
        CHECK(again.record == parsed.record);
    }

    TEST_CASE("unknown keys are kept in their order and written back after the known ones") {
        auto const parsed = openlock::parse_record("9\nnode\nzeta=last-letter\nversion=1\nnonce=n1\n"
                                                   "alpha=first-letter\nmid_key-2=x=y\nempty=\n");
        REQUIRE(parsed.status == openlock::record_status::ok);
        using pairs = std::vector<std::pair<std::string, std::string>>;
        CHECK(parsed.record.extra ==
              pairs{{"zeta", "last-letter"}, {"alpha", "first-letter"}, {"mid_key-2", "x=y"}, {"empty", ""}});
        auto const text = openlock::serialize_record(parsed.record);
        auto const zeta = text.find("zeta=last-letter\n");
        auto const alpha = text.find("alpha=first-letter\n");
        auto const mid = text.find("mid_key-2=x=y\n");
        auto const empty = text.find("empty=\n");
        REQUIRE(zeta != std::string::npos);
        REQUIRE(alpha != std::string::npos);
        REQUIRE(mid != std::string::npos);
        REQUIRE(empty != std::string::npos);
        CHECK(zeta < alpha);
        CHECK(alpha < mid);
        CHECK(mid < empty);
        CHECK(text.find("nonce=n1\n") < zeta);
        auto const again = openlock::parse_record(text);
        REQUIRE(again.status == openlock::record_status::ok);
        CHECK(again.record == parsed.record);
    }

    TEST_CASE("a bare pid and name record is version 0 (Python openlock)") {
        auto const parsed = openlock::parse_record("1234\npython3\n");
        REQUIRE(parsed.status == openlock::record_status::ok);
        CHECK(parsed.record.pid == 1234);
        CHECK(parsed.record.name == "python3");
        CHECK(parsed.record.version == 0);
        CHECK(parsed.record.nonce.empty());
        CHECK(parsed.record.extra.empty());
        CHECK(openlock::serialize_record(parsed.record) == "1234\npython3\n");
    }

    TEST_CASE("a version 0 record may have an empty name") {
        auto const parsed = openlock::parse_record("55\n\n");
        REQUIRE(parsed.status == openlock::record_status::ok);
        CHECK(parsed.record.pid == 55);
        CHECK(parsed.record.name.empty());
        CHECK(parsed.record.version == 0);
    }

    TEST_CASE("the first two lines are always the pid and the name even when they look like fields") {
        auto const parsed = openlock::parse_record("42\nhost=impostor\nversion=1\nnonce=n\n");
        REQUIRE(parsed.status == openlock::record_status::ok);
        CHECK(parsed.record.pid == 42);
        CHECK(parsed.record.name == "host=impostor");
        CHECK(parsed.record.host.empty());

        auto const v0 = openlock::parse_record("43\nversion=1\n");
        REQUIRE(v0.status == openlock::record_status::ok);
        CHECK(v0.record.name == "version=1");
        CHECK(v0.record.version == 0);

        CHECK(status_of("version=1\n42\nname\n") == openlock::record_status::malformed);
    }

    TEST_CASE("serialize replaces newlines and NULs in fields by question marks") {
        openlock::lock_record record;
        record.pid = 99;
        record.name = "evil\nname\0x"s;
        record.version = 1;
        record.host = "host\nversion=2"s;
        record.boot_id = "b\0\0t"s;
        record.pid_namespace = "ns\n";
        record.nonce = "no\nnce";
        record.extra = {{"note", "a\nb\0c"s}};
        auto const text = openlock::serialize_record(record);
        CHECK(text.find('\0') == std::string::npos);
        CHECK(text.find("evil?name?x\n") != std::string::npos);
        CHECK(text.find("host=host?version=2\n") != std::string::npos);
        CHECK(text.find("boot_id=b??t\n") != std::string::npos);
        CHECK(text.find("pid_ns=ns?\n") != std::string::npos);
        CHECK(text.find("nonce=no?nce\n") != std::string::npos);
        CHECK(text.find("note=a?b?c\n") != std::string::npos);
        auto const parsed = openlock::parse_record(text);
        REQUIRE(parsed.status == openlock::record_status::ok);
        CHECK(parsed.record.name == "evil?name?x");
        CHECK(parsed.record.host == "host?version=2");
        CHECK(parsed.record.version == 1);
        CHECK(parsed.record.extra == std::vector<std::pair<std::string, std::string>>{{"note", "a?b?c"}});
    }

    TEST_CASE("a version 0 record is written as just the pid and name lines") {
        openlock::lock_record record;
        record.pid = 8;
        record.name = "old\nstyle";
        record.host = "ignored";
        CHECK(openlock::serialize_record(record) == "8\nold?style\n");
    }

// The overflow below is undefined behaviour, which the asan preset's UBSan turns into an abort of the whole
// test process: there the case is skipped (the asan preset enables both sanitizers together).
#if defined(__has_feature)
#if __has_feature(address_sanitizer)
    constexpr bool sanitized = true;
#else
    constexpr bool sanitized = false;
#endif
#else
    constexpr bool sanitized = false;
#endif

    // Regression: acquisition times beyond what system_clock's int64 nanoseconds hold (year 2262) once
    // wrapped (UB) and serialized to a wrong or unparsable time. They are now rejected as malformed or kept
    // exactly.
    TEST_CASE("an acquisition time beyond what system_clock holds is rejected or kept exactly") {
        for (std::string const seconds :
             {"9223372037", "9999999999", "18446744074", "999999999999", "1000000000000"}) {
            for (std::string const fraction : {"", ".000000000", ".999999999"}) {
                auto const text = "12\nsh\nversion=1\nnonce=n\nacquired=" + seconds + fraction + "\n";
                INFO("input: " << visible(text));
                auto const parsed = openlock::parse_record(text);
                if (parsed.status != openlock::record_status::ok) {
                    CHECK(parsed.status == openlock::record_status::malformed);
                    continue;
                }
                REQUIRE(parsed.record.acquired.has_value());
                auto const since_epoch = parsed.record.acquired->time_since_epoch();
                CHECK(std::chrono::duration_cast<std::chrono::seconds>(since_epoch).count() ==
                      std::stoll(seconds));
                std::string serialized;
                CHECK_NOTHROW(serialized = openlock::serialize_record(parsed.record));
                CHECK(serialized == "12\nsh\nversion=1\nhost=\nboot_id=\npid_ns=\nnonce=n\nacquired=" +
                                        seconds + (fraction.empty() ? ".000000000" : fraction) + "\n");
                auto const again = openlock::parse_record(serialized);
                CHECK(again.status == openlock::record_status::ok);
                CHECK(again.record == parsed.record);
            }
        }
    }

    TEST_CASE("acquisition times up to the year 2262 are kept exactly") {
        for (std::string const time : {"0", "0.000000001", "1700000000.123456789", "9223372035.999999999"}) {
            auto const text = "12\nsh\nversion=1\nnonce=n\nacquired=" + time + "\n";
            INFO("input: " << visible(text));
            auto const parsed = openlock::parse_record(text);
            REQUIRE(parsed.status == openlock::record_status::ok);
            auto const again = openlock::parse_record(openlock::serialize_record(parsed.record));
            REQUIRE(again.status == openlock::record_status::ok);
            CHECK(again.record == parsed.record);
            auto const dot = time.find('.');
            CHECK(std::chrono::duration_cast<std::chrono::seconds>(parsed.record.acquired->time_since_epoch())
                      .count() == std::stoll(time.substr(0, dot)));
        }
    }

} // TEST_SUITE

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

TEST_SUITE("describe_holder") {

    TEST_CASE("describe_holder names pid then name then host") {
        openlock::lock_record record;
        record.pid = 123;
        CHECK(openlock::describe_holder(record) == "pid 123");
        record.name = "make";
        CHECK(openlock::describe_holder(record) == "pid 123 (make)");
        record.host = "h";
        CHECK(openlock::describe_holder(record) == "pid 123 (make) on host h");
        record.name.clear();
        CHECK(openlock::describe_holder(record) == "pid 123 on host h");
        record.process_group = 124;
        CHECK(openlock::describe_holder(record) == "pid 123 on host h with process group 124");
    }

    TEST_CASE("describe_holder escapes control characters and bytes that are not UTF-8") {
        openlock::lock_record record;
        record.pid = 9;
        record.name = "a\x1b[31mb\x7f\xc2\x9b\xc2\xa0\xe2\x82\xac\xf0\x9f\x94\x92";
        record.host = "\xff\xc0\xaf\xed\xa0\x80\xe2\x82";
        CHECK(openlock::describe_holder(record) ==
              "pid 9 (a\\x1b[31mb\\x7f\\xc2\\x9b\xc2\xa0\xe2\x82\xac\xf0\x9f\x94\x92) on host "
              "\\xff\\xc0\\xaf\\xed\\xa0\\x80\\xe2\\x82");
        CHECK(openlock::displayable("plain text, caf\xc3\xa9") == "plain text, caf\xc3\xa9");
        CHECK(openlock::displayable(std::string_view{"\0\t\n", 3}) == "\\x00\\x09\\x0a");
        CHECK(openlock::displayable("\xf4\x90\x80\x80") == "\\xf4\\x90\\x80\\x80"); // above U+10FFFF
    }

} // TEST_SUITE

TEST_SUITE("record fuzzing") {

    namespace {

    // Random bytes biased toward the characters that matter to the format.
    std::string random_bytes(std::mt19937& random) {
        static constexpr std::string_view alphabet = "\n\n\n\n\n=====0123456789012345678901234567890123456789"
                                                     "abcdefghijklmnopqrstuvwxyz_-. ABZ\x7f\xff";
        std::uniform_int_distribution<std::size_t> length_of{0, 300};
        std::uniform_int_distribution<std::size_t> pick{0, alphabet.size() - 1};
        std::uniform_int_distribution<int> percent{0, 99};
        std::string text;
        auto const length = length_of(random);
        for (std::size_t i = 0; i < length; ++i) {
            auto const roll = percent(random);
            if (roll == 0)
                text += '\0';
            else if (roll == 1)
                text += static_cast<char>(random() & 0xff);
            else
                text += alphabet[pick(random)];
        }
        return text;
    }

    // Lines of a plausible record, in random order and number: reaches the ok path often.
    std::string random_lines(std::mt19937& random) {
        static std::vector<std::string> const fields = {"version=1",
                                                        "version=2",
                                                        "version=0",
                                                        "version=",
                                                        "host=h",
                                                        "host=",
                                                        "boot_id=b",
                                                        "pid_ns=p",
                                                        "start_time=42",
                                                        "start_time=x",
                                                        "nonce=n",
                                                        "nonce=",
                                                        "acquired=5",
                                                        "acquired=1.000000001",
                                                        "acquired=1.5",
                                                        "extra=1",
                                                        "z=",
                                                        "x-y_z=a=b",
                                                        "Bad=1",
                                                        "no equals",
                                                        "",
                                                        "acquired=0",
                                                        "start_time=007",
                                                        "nonce=a b c",
                                                        "k=\xff"};
        std::uniform_int_distribution<std::size_t> pick{0, fields.size() - 1};
        std::uniform_int_distribution<int> count_of{0, 8};
        std::uniform_int_distribution<int> percent{0, 99};
        std::string text = percent(random) < 90 ? std::to_string(random() % 100000 + 1) : "0";
        text += "\nname\n";
        auto const count = count_of(random);
        for (int i = 0; i < count; ++i)
            text += fields[pick(random)] + "\n";
        if (percent(random) < 5) text.pop_back();
        return text;
    }

    // A valid record with a few random edits.
    std::string mutated_record(std::mt19937& random) {
        static constexpr std::string_view interesting = "\n=\0"
                                                        "9aZ_-."sv;
        std::string text = full_record;
        std::uniform_int_distribution<int> edits_of{1, 3};
        std::uniform_int_distribution<int> kind_of{0, 5};
        auto const edits = edits_of(random);
        for (int e = 0; e < edits; ++e) {
            std::uniform_int_distribution<std::size_t> at_of{0, text.empty() ? 0 : text.size() - 1};
            auto const at = at_of(random);
            auto const byte = random() % 3 == 0 ? static_cast<char>(random() & 0xff)
                                                : interesting[random() % interesting.size()];
            switch (kind_of(random)) {
            case 0:
                if (!text.empty()) text[at] = byte;
                break;
            case 1:
                text.insert(at, 1, byte);
                break;
            case 2:
                if (!text.empty()) text.erase(at, 1);
                break;
            case 3: // duplicate a line
            {
                auto const start = text.rfind('\n', at);
                auto const begin = start == std::string::npos ? 0 : start + 1;
                auto const end = text.find('\n', begin);
                if (end != std::string::npos) text.insert(begin, text.substr(begin, end - begin + 1));
                break;
            }
            case 4: // cut the tail
                text.resize(at);
                break;
            default: // a new unknown field
                text += "k" + std::to_string(random() % 50) + "=" + std::to_string(random()) + "\n";
                break;
            }
        }
        return text;
    }

    } // namespace

    TEST_CASE("parse never throws on random bytes and every accepted record round-trips") {
        std::mt19937 random{20240611};
        int accepted = 0;
        int checked = 0;
        int failures = 0;
        for (int i = 0; i < 20000 && failures < 5; ++i) {
            std::string input;
            switch (i % 3) {
            case 0:
                input = random_bytes(random);
                break;
            case 1:
                input = random_lines(random);
                break;
            default:
                input = mutated_record(random);
                break;
            }
            ++checked;
            openlock::parsed_record parsed;
            try {
                parsed = openlock::parse_record(input);
            } catch (...) {
                ++failures;
                FAIL_CHECK("parse_record threw on: " << visible(input));
                continue;
            }
            if (parsed.status != openlock::record_status::ok) {
                if (parsed.problem.empty()) {
                    ++failures;
                    FAIL_CHECK("a rejection without a problem for: " << visible(input));
                }
                continue;
            }
            ++accepted;
            std::string text;
            try {
                text = openlock::serialize_record(parsed.record);
            } catch (...) {
                ++failures;
                FAIL_CHECK("serialize_record threw for: " << visible(input));
                continue;
            }
            auto const again = openlock::parse_record(text);
            if (again.status != openlock::record_status::ok || !(again.record == parsed.record) ||
                openlock::serialize_record(again.record) != text) {
                ++failures;
                FAIL_CHECK("no round trip: " << visible(input) << " -> " << visible(text) << " ("
                                             << again.problem << ")");
            }
        }
        MESSAGE(checked << " inputs, " << accepted << " accepted");
        CHECK(failures == 0);
        CHECK(checked == 20000);
        CHECK(accepted > 1000); // the generators do reach the interesting path
    }

} // TEST_SUITE
