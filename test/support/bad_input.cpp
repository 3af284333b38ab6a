// SPDX-License-Identifier: MIT
#include "support/support.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <optional>
#include <string>
#include <system_error>
#include <vector>

#include "support/bad_input.hpp"
#include "support/records.hpp"
#include "support/timing.hpp"

import openlock;

namespace test {

std::vector<std::string> snapshot(fs::path const& directory) {
    std::vector<std::string> entries;
    for (auto const& entry : fs::recursive_directory_iterator{directory}) {
        auto const name = fs::relative(entry.path(), directory).string();
        auto const status = entry.symlink_status();
        if (fs::is_symlink(status))
            entries.push_back(name + " -> " + fs::read_symlink(entry.path()).string());
        else if (fs::is_regular_file(status))
            entries.push_back(name + " = " + read_file(entry.path()));
        else if (fs::is_directory(status))
            entries.push_back(name + "/");
        else
            entries.push_back(name + " (special)");
    }
    std::ranges::sort(entries);
    return entries;
}

void check_os_error(fs::path const& path, std::optional<std::errc> expected, openlock::claim_method method) {
    CAPTURE(static_cast<int>(method));
    openlock::file_lock lock{path, std::nullopt, quick(2, 20ms, method)};
    try {
        lock.acquire(2s);
        FAIL_CHECK("expected openlock::lock_error");
    } catch (openlock::lock_error const& e) {
        if (expected) CHECK(e.code() == *expected);
        CHECK(e.code().category() == std::system_category());
    }
    CHECK_THROWS_AS((void)lock.try_acquire(), openlock::lock_error);
    std::error_code error;
    CHECK_FALSE(lock.try_acquire(error));
    if (expected) CHECK(error == *expected);
    CHECK(error.category() == std::system_category());
    CHECK_FALSE(lock.owns_lock());
}

std::string a_real_record(fs::path const& directory) {
    return openlock::serialize_record(record_of_this_process(directory));
}

} // namespace test
