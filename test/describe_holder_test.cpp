// SPDX-License-Identifier: MIT
// describe_holder: a record told to a person, safely.
#include "support/support.hpp"

#include <doctest/doctest.h>

#include <string_view>

#include "support/records.hpp"

import openlock;

using namespace std::chrono_literals;
using namespace std::string_literals;
using namespace std::string_view_literals;

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
