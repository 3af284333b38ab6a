// SPDX-License-Identifier: MIT
#include "cli.hpp"

#include <charconv>
#include <cmath>
#include <limits>
#include <string>

namespace openlock::cli {

double parse_seconds(std::string_view option, std::string_view text) {
    double seconds = 0;
    auto const [end, error] = std::from_chars(text.data(), text.data() + text.size(), seconds);
    bool const whole = end == text.data() + text.size();
    if (error == std::errc::result_out_of_range && whole && !text.starts_with("-")) {
        // Too small for a double (1e-400) is zero; too large (1e400) is beyond every limit, as the largest
        // is.
        auto const exponent = text.find_first_of("eE");
        bool const tiny = exponent != std::string_view::npos && text.substr(exponent + 1).starts_with("-");
        return tiny ? 0.0 : std::numeric_limits<double>::max();
    }
    if (error != std::errc{} || !whole || !std::isfinite(seconds) || seconds < 0)
        throw usage(std::string{option} + " takes a number of seconds, not '" + std::string{text} + "'");
    return seconds;
}

void complain(std::string const& message) {
    auto const line = "openlock: " + message + "\n";
    write_stderr(line);
}

} // namespace openlock::cli
