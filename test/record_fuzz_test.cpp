// SPDX-License-Identifier: MIT
// parse_record over random and mutated bytes: it never throws, and what it accepts round-trips.
#include "support/support.hpp"

#include <doctest/doctest.h>

#include <cstddef>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "support/records.hpp"

import openlock;

using namespace std::chrono_literals;
using namespace std::string_literals;
using namespace std::string_view_literals;

namespace {

using test::full_record;
using test::visible;

} // namespace

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
