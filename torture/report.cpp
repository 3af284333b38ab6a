// SPDX-License-Identifier: MIT
#include "report.hpp"

#include <fstream>
#include <iterator>
#include <system_error>

namespace torture::detail {

namespace fs = std::filesystem;

std::string read_all(fs::path const& path) {
    std::ifstream in{path, std::ios::binary};
    return {std::istreambuf_iterator<char>{in}, {}};
}

std::string printable(std::string const& bytes) {
    std::string out;
    for (unsigned char const c : bytes) {
        if (c == '\n')
            out += "\\n";
        else if (c < 32 || c > 126)
            out += "\\x" + std::string{"0123456789abcdef"[c >> 4]} + "0123456789abcdef"[c & 15];
        else
            out += static_cast<char>(c);
    }
    return out;
}

char process_state(pid_t pid) {
    auto const stat = read_all("/proc/" + std::to_string(pid) + "/stat");
    auto const end = stat.rfind(')');
    return end == std::string::npos || end + 2 >= stat.size() ? '?' : stat[end + 2];
}

std::vector<std::string> describe_directory(fs::path const& directory) {
    std::vector<std::string> lines;
    std::error_code error;
    for (auto const& entry : fs::recursive_directory_iterator{directory, error}) {
        auto const relative = fs::relative(entry.path(), directory).string();
        if (entry.is_directory())
            lines.push_back(relative + "/");
        else
            lines.push_back(relative + " (" + std::to_string(entry.file_size(error)) +
                            " bytes): " + printable(read_all(entry.path())));
    }
    return lines;
}

} // namespace torture::detail
