// SPDX-License-Identifier: MIT
// libFuzzer target: the CLI's `--timeout SEC` parser on untrusted text. It accepts finite non-negative
// numbers and throws cli::usage for everything else; any other exception escaping is a crash.
#include "cli.hpp"

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(std::uint8_t const* data, std::size_t size) {
    std::string_view const text{reinterpret_cast<char const*>(data), size};
    try {
        double const seconds = openlock::cli::parse_seconds("--timeout", text);
        if (!std::isfinite(seconds) || seconds < 0) std::abort();
    } catch (openlock::cli::usage const&) {
    }
    return 0;
}
