// SPDX-License-Identifier: MIT
// Test support for openlock.etcd: a real one-member etcd on 127.0.0.1, started by the test that needs it and
// stopped by its pid at exit, and small process helpers (etcdctl, forked holders). No import: include freely.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace test {

/// etcd on a free port of 127.0.0.1 with its data in a fresh directory (on tmpfs when there is one), short
/// heartbeat and election times (so leases may be as short as a second), waited for until /health says true.
class etcd_server {
public:
    /// The server of this test process, started at the first call (a doctest failure, saying what to
    /// install, when etcd is missing or does not start), stopped by pid when the process exits.
    static etcd_server& shared();

    etcd_server();
    etcd_server(etcd_server const&) = delete;
    etcd_server& operator=(etcd_server const&) = delete;
    ~etcd_server();

    /// "127.0.0.1:<port>"
    [[nodiscard]] std::string endpoint() const;
    /// "etcd://127.0.0.1:<port>/<name>"
    [[nodiscard]] std::string url(std::string_view name) const;

    /// Stops the server (SIGTERM, then SIGKILL after 5 s); start() brings it back on the same ports and data,
    /// waiting for /health (an outage that clients must ride out).
    void stop();
    void start();

private:
    std::int64_t pid_ = 0;
    std::uint16_t port_ = 0;
    std::uint16_t peer_port_ = 0;
    std::filesystem::path data_;
};

/// Whether a program is on PATH.
bool have_program(std::string const& name);
/// A lock name no other test uses ("openlock-test/<random>").
std::string unique_lock_name();
/// A port of 127.0.0.1 that nothing listens on (just now).
std::uint16_t free_port();

/// A started process (posix_spawnp), its stdout and stderr in `output`.
struct spawned {
    std::int64_t pid = 0;
    std::filesystem::path output;
};
spawned spawn(std::vector<std::string> const& arguments);
/// Its exit status once it has ended within `limit`; none while it still runs (it is not reaped then).
std::optional<int> wait_exit(std::int64_t pid, std::chrono::milliseconds limit);
/// SIGKILL and reap.
void kill_and_reap(std::int64_t pid);

/// A socket on 127.0.0.1 that listens but never accepts or answers: a server that hangs.
class silent_server {
public:
    silent_server();
    silent_server(silent_server const&) = delete;
    silent_server& operator=(silent_server const&) = delete;
    ~silent_server();
    [[nodiscard]] std::uint16_t port() const { return port_; }

private:
    int socket_ = -1;
    std::uint16_t port_ = 0;
};

} // namespace test
