// SPDX-License-Identifier: MIT
// Slowing workers down with a CPU quota: a cgroup v2 child with cpu.max, or, where the cpu controller is
// bound to a cgroup v1 hierarchy instead (this VM: /sys/fs/cgroup/unified offers only hugetlb), a v1 cgroup
// with cpu.cfs_quota_us, which is the same CFS bandwidth control. Where neither can be made, the driver says
// why and runs without it.
#pragma once
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>

namespace torture {

/// Runtime `quota_us` in every `period_us` (cpu.max "5000 100000": 5 % of one CPU).
struct cpu_quota {
    std::int64_t quota_us = 5000;
    std::int64_t period_us = 100000;
};

/// Parses "QUOTA PERIOD" (microseconds, as cpu.max writes them); false on anything else.
bool parse_cpu_quota(std::string const& text, cpu_quota& quota);

/// Where a throttled cgroup can be made on this machine.
struct cgroup_site {
    std::filesystem::path parent; ///< empty: none (see `why_not`)
    int version = 0;              ///< 2 (cpu.max) or 1 (cpu.cfs_quota_us)
    std::string why_not;          ///< why there is none, or why v2 was passed over for v1
    [[nodiscard]] std::string describe() const;
};

/// Looks for a writable cgroup with the cpu controller: cgroup2 mounts first (enabling +cpu in the root's
/// cgroup.subtree_control when needed), then a v1 hierarchy mounted with the cpu controller. A trial cgroup
/// is made, given the quota and removed, so a site returned is one that works.
cgroup_site find_cgroup_site(cpu_quota quota);

/// One cgroup with a CPU quota, removed at destruction (its processes must have died by then).
class cpu_throttle {
public:
    /// Makes `name` under the site with this quota; null with `why_not` set when that fails.
    static std::unique_ptr<cpu_throttle> create(cgroup_site const& site, std::string const& name,
                                                cpu_quota quota, std::string& why_not);
    cpu_throttle(cpu_throttle const&) = delete;
    cpu_throttle& operator=(cpu_throttle const&) = delete;
    ~cpu_throttle();

    /// cgroup.procs, open for writing (close-on-exec): a forked child joins by writing "0" to it.
    [[nodiscard]] int join_fd() const { return join_fd_; }
    [[nodiscard]] std::filesystem::path const& path() const { return path_; }
    /// From cpu.stat: how many periods the group was throttled in, and for how long in all.
    [[nodiscard]] std::uint64_t throttled_periods() const;
    [[nodiscard]] double throttled_seconds() const;

private:
    cpu_throttle(std::filesystem::path path, int version, int join_fd)
        : path_(std::move(path)), version_(version), join_fd_(join_fd) {}
    [[nodiscard]] std::uint64_t stat_field(std::string const& key) const;

    std::filesystem::path path_;
    int version_;
    int join_fd_;
};

} // namespace torture
