#include "cli.hpp"

#include <charconv>
#include <cmath>
#include <string>

namespace openlock::cli {

double parse_seconds(std::string_view option, std::string_view text) {
    double seconds = 0;
    auto const [end, error] = std::from_chars(text.data(), text.data() + text.size(), seconds);
    if (error != std::errc{} || end != text.data() + text.size() || !std::isfinite(seconds) || seconds < 0)
        throw usage(std::string{option} + " takes a number of seconds, not '" + std::string{text} + "'");
    return seconds;
}

void complain(std::string const& message) {
    auto const line = "openlock: " + message + "\n";
    write_stderr(line);
}

} // namespace openlock::cli
