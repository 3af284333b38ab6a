// SPDX-License-Identifier: MIT
#include "cpu_throttle.hpp"

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <csignal>
#include <cstring>
#include <fcntl.h>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string_view>
#include <sys/stat.h>
#include <system_error>
#include <thread>
#include <unistd.h>
#include <vector>

namespace torture {
namespace {

namespace fs = std::filesystem;

std::string read_text(fs::path const& path) {
    std::ifstream in{path};
    return {std::istreambuf_iterator<char>{in}, {}};
}

// Writes the whole text with one write(2), as cgroup files want; the errno on failure, else 0.
int write_text(fs::path const& path, std::string const& text) {
    int const fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
    if (fd < 0) return errno;
    auto const written = ::write(fd, text.data(), text.size());
    int const error = written == static_cast<ssize_t>(text.size()) ? 0 : written < 0 ? errno : EIO;
    ::close(fd);
    return error;
}

bool has_word(std::string const& list, std::string_view word, char separator) {
    std::size_t start = 0;
    while (start <= list.size()) {
        auto end = list.find(separator, start);
        if (end == std::string::npos) end = list.size();
        auto item = std::string_view{list}.substr(start, end - start);
        while (!item.empty() && (item.back() == '\n' || item.back() == ' '))
            item.remove_suffix(1);
        if (item == word) return true;
        start = end + 1;
    }
    return false;
}

struct cgroup_mount {
    fs::path point;
    int version;
};

// cgroup2 mounts, and v1 mounts whose super options name the cpu controller, from /proc/self/mountinfo.
std::vector<cgroup_mount> cgroup_mounts() {
    std::vector<cgroup_mount> mounts;
    std::ifstream in{"/proc/self/mountinfo"};
    for (std::string line; std::getline(in, line);) {
        auto const dash = line.find(" - ");
        if (dash == std::string::npos) continue;
        std::istringstream before{line.substr(0, dash)};
        std::string id, parent, device, root, point;
        before >> id >> parent >> device >> root >> point;
        std::istringstream after{line.substr(dash + 3)};
        std::string type, source, options;
        after >> type >> source >> options;
        int const version = type == "cgroup2" ? 2 : type == "cgroup" && has_word(options, "cpu", ',') ? 1 : 0;
        // A mount point mounted over (a bind of itself, say) is listed again: the last one is what shows.
        std::erase_if(mounts, [&](cgroup_mount const& m) { return m.point == point; });
        if (version != 0) mounts.push_back({point, version});
    }
    return mounts;
}

std::string errno_text(int error) {
    return std::strerror(error);
}

// Makes the cgroup and sets its quota; the reason on failure (and nothing left behind).
std::string make_cgroup(fs::path const& path, int version, cpu_quota quota) {
    if (::mkdir(path.c_str(), 0755) != 0) return "mkdir " + path.string() + ": " + errno_text(errno);
    int error = 0;
    std::string file;
    if (version == 2) {
        file = "cpu.max";
        error =
            write_text(path / file, std::to_string(quota.quota_us) + " " + std::to_string(quota.period_us));
    } else {
        file = "cpu.cfs_period_us";
        error = write_text(path / file, std::to_string(quota.period_us));
        if (error == 0) {
            file = "cpu.cfs_quota_us";
            error = write_text(path / file, std::to_string(quota.quota_us));
        }
    }
    if (error == 0) return {};
    ::rmdir(path.c_str());
    return "writing " + (path / file).string() + ": " + errno_text(error);
}

// Cgroups of earlier runs whose supervisor was killed before it could remove them ("openlock-torture-PID-..."
// or "openlock-torture-probe-PID", PID gone). rmdir(2) of a cgroup removes nothing but the group, and fails
// while it still has processes or children, so a live run's group can never go.
void remove_abandoned(fs::path const& parent) {
    std::error_code error;
    for (auto const& entry : fs::directory_iterator{parent, error}) {
        auto name = entry.path().filename().string();
        constexpr std::string_view prefix = "openlock-torture-";
        if (!name.starts_with(prefix)) continue;
        name.erase(0, prefix.size());
        if (name.starts_with("probe-")) name.erase(0, 6);
        pid_t pid = 0;
        auto const [end, parsed] = std::from_chars(name.data(), name.data() + name.size(), pid);
        if (parsed != std::errc{} || pid <= 0 || (end != name.data() + name.size() && *end != '-')) continue;
        if (::kill(pid, 0) != 0 && errno == ESRCH) ::rmdir(entry.path().c_str());
    }
}

} // namespace

bool parse_cpu_quota(std::string const& text, cpu_quota& quota) {
    std::istringstream in{text};
    cpu_quota parsed;
    std::string rest;
    if (!(in >> parsed.quota_us >> parsed.period_us) || (in >> rest)) return false;
    // The kernel's limits: a period of 1 ms to 1 s, a quota of at least 1 ms.
    if (parsed.period_us < 1000 || parsed.period_us > 1'000'000 || parsed.quota_us < 1000) return false;
    quota = parsed;
    return true;
}

std::string cgroup_site::describe() const {
    if (parent.empty()) return "no cgroup CPU quota: " + why_not;
    std::string text = version == 2 ? "cgroup v2 cpu.max under " + parent.string()
                                    : "cgroup v1 cpu.cfs_quota_us under " + parent.string();
    if (!why_not.empty()) text += " (" + why_not + ")";
    return text;
}

cgroup_site find_cgroup_site(cpu_quota quota) {
    auto const mounts = cgroup_mounts();
    std::string reasons;
    auto const note = [&](std::string const& reason) { reasons += (reasons.empty() ? "" : "; ") + reason; };
    auto const trial = [&](cgroup_mount const& mount) -> bool {
        auto const probe = mount.point / ("openlock-torture-probe-" + std::to_string(::getpid()));
        auto const why = make_cgroup(probe, mount.version, quota);
        if (!why.empty()) {
            note(why);
            return false;
        }
        ::rmdir(probe.c_str());
        return true;
    };
    for (int const version : {2, 1}) {
        for (auto const& mount : mounts) {
            if (mount.version != version) continue;
            if (version == 2) {
                auto const controllers = read_text(mount.point / "cgroup.controllers");
                if (!has_word(controllers, "cpu", ' ')) {
                    auto listed = controllers;
                    while (!listed.empty() && listed.back() == '\n')
                        listed.pop_back();
                    note("cgroup v2 at " + mount.point.string() +
                         " has no cpu controller (it offers: " + (listed.empty() ? "none" : listed) + ")");
                    continue;
                }
                // A child gets cpu.max only when its parent hands the controller down.
                if (!has_word(read_text(mount.point / "cgroup.subtree_control"), "cpu", ' ')) {
                    if (int const error = write_text(mount.point / "cgroup.subtree_control", "+cpu")) {
                        note("cgroup v2 at " + mount.point.string() + ": cannot enable +cpu in " +
                             "cgroup.subtree_control: " + errno_text(error));
                        continue;
                    }
                }
            }
            if (trial(mount)) {
                remove_abandoned(mount.point);
                return {mount.point, version, reasons};
            }
        }
    }
    if (mounts.empty()) note("no cgroup2 mount and no cgroup v1 hierarchy with the cpu controller");
    return {{}, 0, reasons};
}

std::unique_ptr<cpu_throttle> cpu_throttle::create(cgroup_site const& site, std::string const& name,
                                                   cpu_quota quota, std::string& why_not) {
    if (site.parent.empty()) {
        why_not = site.why_not;
        return nullptr;
    }
    auto const path = site.parent / name;
    if (why_not = make_cgroup(path, site.version, quota); !why_not.empty()) return nullptr;
    int const fd = ::open((path / "cgroup.procs").c_str(), O_WRONLY | O_CLOEXEC);
    if (fd < 0) {
        why_not = "opening " + (path / "cgroup.procs").string() + ": " + errno_text(errno);
        ::rmdir(path.c_str());
        return nullptr;
    }
    return std::unique_ptr<cpu_throttle>{new cpu_throttle{path, site.version, fd}};
}

cpu_throttle::~cpu_throttle() {
    ::close(join_fd_);
    // Its processes are dead and reaped; the kernel may take a moment to see the group empty.
    for (int attempt = 0; attempt < 100; ++attempt) {
        if (::rmdir(path_.c_str()) == 0 || errno != EBUSY) return;
        std::this_thread::sleep_for(std::chrono::milliseconds{10});
    }
}

std::uint64_t cpu_throttle::stat_field(std::string const& key) const {
    std::istringstream in{read_text(path_ / "cpu.stat")};
    std::string name;
    std::uint64_t value = 0;
    while (in >> name >> value)
        if (name == key) return value;
    return 0;
}

std::uint64_t cpu_throttle::throttled_periods() const {
    return stat_field("nr_throttled");
}

double cpu_throttle::throttled_seconds() const {
    // v2 counts microseconds, v1 nanoseconds.
    return version_ == 2 ? static_cast<double>(stat_field("throttled_usec")) / 1e6
                         : static_cast<double>(stat_field("throttled_time")) / 1e9;
}

} // namespace torture
