// SPDX-License-Identifier: MIT
// test/support/etcd.hpp at work (POSIX: the etcd suite runs on Linux).
#include "support/etcd.hpp"

#include <doctest/doctest.h>

#include <arpa/inet.h>
#include <csignal>
#include <fcntl.h>
#include <netinet/in.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <random>
#include <sstream>
#include <thread>

extern char** environ;

namespace test {
namespace {

namespace fs = std::filesystem;

/// Binds 127.0.0.1:port (0: any), optionally listening; the socket, or -1.
int bound_socket(std::uint16_t port, bool listening) {
    int const s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0) return -1;
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(port);
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::bind(s, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 ||
        (listening && ::listen(s, 1) != 0)) {
        ::close(s);
        return -1;
    }
    return s;
}

std::uint16_t port_of(int s) {
    sockaddr_in address{};
    socklen_t size = sizeof address;
    ::getsockname(s, reinterpret_cast<sockaddr*>(&address), &size);
    return ntohs(address.sin_port);
}

/// GET http://127.0.0.1:port/path with a plain socket; the whole answer, empty when nothing answered.
std::string http_get(std::uint16_t port, std::string const& path) {
    int const s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0) return {};
    timeval limit{1, 0};
    ::setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(port);
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    std::string answer;
    if (::connect(s, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0) {
        std::string const request = "GET " + path + " HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
        if (::write(s, request.data(), request.size()) == static_cast<ssize_t>(request.size())) {
            char buffer[4096];
            for (ssize_t n; (n = ::read(s, buffer, sizeof buffer)) > 0;)
                answer.append(buffer, static_cast<std::size_t>(n));
        }
    }
    ::close(s);
    return answer;
}

std::string read_all(fs::path const& path) {
    std::ifstream in{path};
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
}

} // namespace

bool have_program(std::string const& name) {
    char const* path = std::getenv("PATH");
    std::stringstream directories{path != nullptr ? path : "/usr/bin:/bin"};
    for (std::string directory; std::getline(directories, directory, ':');)
        if (::access((fs::path{directory} / name).c_str(), X_OK) == 0) return true;
    return false;
}

std::string unique_lock_name() {
    std::random_device seed;
    return "openlock-test/" + std::to_string(seed()) + std::to_string(seed());
}

std::uint16_t free_port() {
    int const s = bound_socket(0, false);
    REQUIRE(s >= 0);
    auto const port = port_of(s);
    ::close(s);
    return port;
}

spawned spawn(std::vector<std::string> const& arguments) {
    static int counter = 0;
    spawned result;
    result.output = fs::temp_directory_path() / ("openlock-test-" + std::to_string(::getpid()) + "-" +
                                                 std::to_string(++counter) + ".out");
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 1, result.output.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    posix_spawn_file_actions_adddup2(&actions, 1, 2);
    std::vector<char*> argv;
    argv.reserve(arguments.size() + 1);
    for (auto const& argument : arguments)
        argv.push_back(const_cast<char*>(argument.c_str()));
    argv.push_back(nullptr);
    pid_t pid = 0;
    int const code = ::posix_spawnp(&pid, argv[0], &actions, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    INFO("posix_spawnp " << arguments.front());
    REQUIRE(code == 0);
    result.pid = pid;
    return result;
}

std::optional<int> wait_exit(std::int64_t pid, std::chrono::milliseconds limit) {
    auto const until = std::chrono::steady_clock::now() + limit;
    for (;;) {
        int status = 0;
        auto const done = ::waitpid(static_cast<pid_t>(pid), &status, WNOHANG);
        if (done == pid) return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        if (done < 0 || std::chrono::steady_clock::now() >= until) return std::nullopt;
        std::this_thread::sleep_for(std::chrono::milliseconds{10});
    }
}

void kill_and_reap(std::int64_t pid) {
    ::kill(static_cast<pid_t>(pid), SIGKILL);
    int status = 0;
    ::waitpid(static_cast<pid_t>(pid), &status, 0);
}

etcd_server& etcd_server::shared() {
    static std::unique_ptr<etcd_server> const server = std::make_unique<etcd_server>();
    return *server;
}

etcd_server::etcd_server() {
    if (!have_program("etcd"))
        FAIL("etcd is not installed: the etcd suite needs a real server (Debian: etcd-server; "
             "tools/bootstrap.sh installs it)");
    fs::path const base = fs::is_directory("/dev/shm") ? fs::path{"/dev/shm"} : fs::temp_directory_path();
    std::random_device seed;
    data_ = base / ("openlock-etcd-" + std::to_string(::getpid()) + "-" + std::to_string(seed()));
    fs::create_directories(data_);
    // Two free ports, picked while both are bound so that they differ.
    int const a = bound_socket(0, false);
    int const b = bound_socket(0, false);
    REQUIRE((a >= 0 && b >= 0));
    port_ = port_of(a);
    peer_port_ = port_of(b);
    ::close(a);
    ::close(b);
    start();
}

void etcd_server::start() {
    auto const client_url = "http://127.0.0.1:" + std::to_string(port_);
    auto const peer_url = "http://127.0.0.1:" + std::to_string(peer_port_);
    // Short heartbeat and election: etcd's shortest lease is 1.5 elections (rounded up to a second), so that
    // lease-expiry tests take seconds, not the default's.
    auto const started = spawn({"etcd",
                                "--name",
                                "openlock-test",
                                "--data-dir",
                                (data_ / "data").string(),
                                "--listen-client-urls",
                                client_url,
                                "--advertise-client-urls",
                                client_url,
                                "--listen-peer-urls",
                                peer_url,
                                "--initial-advertise-peer-urls",
                                peer_url,
                                "--initial-cluster",
                                "openlock-test=" + peer_url,
                                "--heartbeat-interval",
                                "10",
                                "--election-timeout",
                                "100",
                                "--log-level",
                                "error",
                                "--logger",
                                "zap"});
    pid_ = started.pid;
    auto const until = std::chrono::steady_clock::now() + std::chrono::seconds{20};
    while (http_get(port_, "/health").find("\"health\":\"true\"") == std::string::npos) {
        if (wait_exit(pid_, std::chrono::milliseconds{50}) || std::chrono::steady_clock::now() >= until) {
            auto const log = read_all(started.output);
            kill_and_reap(pid_);
            pid_ = 0;
            FAIL("etcd did not start on 127.0.0.1:" << port_ << ": " << log);
        }
    }
    std::error_code ignored;
    fs::remove(started.output, ignored);
}

void etcd_server::stop() {
    if (pid_ <= 0) return;
    ::kill(static_cast<pid_t>(pid_), SIGTERM);
    if (!wait_exit(pid_, std::chrono::seconds{5})) kill_and_reap(pid_);
    pid_ = 0;
}

etcd_server::~etcd_server() {
    stop();
    std::error_code ignored;
    fs::remove_all(data_, ignored);
}

std::string etcd_server::endpoint() const {
    return "127.0.0.1:" + std::to_string(port_);
}

std::string etcd_server::url(std::string_view name) const {
    return "etcd://" + endpoint() + "/" + std::string{name};
}

silent_server::silent_server() : socket_(bound_socket(0, true)) {
    REQUIRE(socket_ >= 0);
    port_ = port_of(socket_);
}

silent_server::~silent_server() {
    ::close(socket_);
}

} // namespace test
