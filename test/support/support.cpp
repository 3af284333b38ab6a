// SPDX-License-Identifier: MIT
#include "support/support.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <boost/asio/read.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/streambuf.hpp>
#include <boost/process/v2/execute.hpp>
#include <csignal>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <random>
#include <sstream>
#ifdef _WIN32
#include <windows.h>
#else
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>
#endif

namespace test {

scratch_dir::scratch_dir() {
    fs::path const base = OPENLOCK_TEST_SCRATCH;
    fs::create_directories(base);
    std::random_device seed;
    for (;;) {
        auto candidate = base / ("t" + std::to_string(seed()));
        if (fs::create_directory(candidate)) {
            path_ = candidate;
            return;
        }
    }
}

scratch_dir::~scratch_dir() {
    std::error_code ignored;
    fs::remove_all(path_, ignored);
}

void write_file(fs::path const& path, std::string const& bytes) {
    std::ofstream out{path, std::ios::binary | std::ios::trunc};
    out << bytes;
}

std::string read_file(fs::path const& path) {
    std::ifstream in{path, std::ios::binary};
    return {std::istreambuf_iterator<char>{in}, std::istreambuf_iterator<char>{}};
}

#ifdef _WIN32
// No process object remains once the child has ended and its handle is closed (Windows may give the id to
// the next process at once: callers accept that, as on Linux).
std::int64_t pid_of_a_reaped_child() {
    std::int64_t pid = 0;
    {
        child ended{OPENLOCK_TEST_CHILD, {"exit"}};
        pid = ended.pid();
        REQUIRE(ended.wait() == 0);
    }
    return pid;
}

std::int64_t this_pid() {
    return ::GetCurrentProcessId();
}

bool under_wine() {
    HMODULE const ntdll = ::GetModuleHandleW(L"ntdll.dll");
    return ntdll != nullptr && ::GetProcAddress(ntdll, "wine_get_version") != nullptr;
}

std::size_t name_max(fs::path const& directory) {
    auto root = fs::absolute(directory).root_path().native();
    DWORD longest = 0;
    REQUIRE(::GetVolumeInformationW(root.c_str(), nullptr, 0, nullptr, &longest, nullptr, nullptr, 0));
    return longest;
}

std::jthread read_for(fs::path const& file, std::chrono::milliseconds hold) {
    HANDLE const opened =
        ::CreateFileW(file.c_str(), GENERIC_READ, FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE,
                      nullptr, OPEN_EXISTING, FILE_ATTRIBUTE_NORMAL, nullptr);
    REQUIRE(opened != INVALID_HANDLE_VALUE);
    return std::jthread{[opened, hold] {
        std::this_thread::sleep_for(hold);
        ::CloseHandle(opened);
    }};
}

bool symlinks_work(fs::path const& directory) {
    std::error_code error;
    fs::create_symlink(directory / "symlink-probe-target", directory / "symlink-probe", error);
    fs::remove(directory / "symlink-probe");
    return !error;
}
#else
std::int64_t pid_of_a_reaped_child() {
    pid_t const pid = ::fork();
    if (pid == 0) ::_exit(0);
    REQUIRE(pid > 0);
    int status = 0;
    REQUIRE(::waitpid(pid, &status, 0) == pid);
    return pid;
}

std::int64_t this_pid() {
    return ::getpid();
}

bool under_wine() {
    return false;
}

std::size_t name_max(fs::path const& directory) {
    auto const longest = ::pathconf(directory.c_str(), _PC_NAME_MAX);
    REQUIRE(longest > 0);
    return static_cast<std::size_t>(longest);
}

bool symlinks_work(fs::path const&) {
    return true;
}

std::jthread read_for(fs::path const& file, std::chrono::milliseconds hold) {
    int const opened = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
    REQUIRE(opened >= 0);
    return std::jthread{[opened, hold] {
        std::this_thread::sleep_for(hold);
        ::close(opened);
    }};
}
#endif

} // namespace test

doctest::String
doctest::StringMaker<std::vector<std::string>>::convert(std::vector<std::string> const& names) {
    std::string listed = "{";
    for (auto const& name : names)
        listed += (listed.size() > 1 ? ", \"" : "\"") + name + "\"";
    listed += "}";
    return listed.c_str();
}

namespace test {

std::vector<std::string> names_in(fs::path const& directory) {
    std::vector<std::string> names;
    for (auto const& entry : fs::directory_iterator{directory})
        names.push_back(entry.path().filename().string());
    std::sort(names.begin(), names.end());
    return names;
}

namespace bp = boost::process::v2;

#ifdef _WIN32
// Boost 1.81's native_exit_code() can still say STILL_ACTIVE (259) after wait(error_code&) on Windows, when
// the exit was seen by the wait itself: the process handle knows the real code.
int exit_code_of(bp::process& ended) {
    DWORD code = 0;
    REQUIRE(::GetExitCodeProcess(ended.native_handle(), &code));
    return static_cast<int>(code);
}
#endif

child::child(fs::path const& program, std::vector<std::string> const& arguments)
    : process_(std::make_unique<bp::process>(context_, program, arguments, bp::process_stdio{{}, out_, {}})) {
}

child::~child() {
    if (finished_) return;
    boost::system::error_code ignored;
    process_->terminate(ignored);
    process_->wait(ignored);
}

std::string child::read_line() {
    boost::system::error_code error;
    auto const length = boost::asio::read_until(out_, boost::asio::dynamic_buffer(buffered_), '\n', error);
    if (error && length == 0) return {};
    auto line = buffered_.substr(0, length == 0 ? buffered_.size() : length - 1);
    buffered_.erase(0, length);
    return line;
}

int child::wait() {
    boost::system::error_code error;
    process_->wait(error);
    finished_ = true;
    auto const status = process_->native_exit_code();
#ifdef _WIN32
    (void)status;
    return exit_code_of(*process_);
#else
    if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
    return WEXITSTATUS(status);
#endif
}

#ifdef _WIN32
int killed_exit_code() {
    return 128 + 9; // what kill_hard() makes it exit with: the shell's status for SIGKILL
}

void child::kill_hard() {
    ::TerminateProcess(process_->native_handle(), static_cast<UINT>(killed_exit_code()));
}
#else
int killed_exit_code() {
    return 128 + SIGKILL;
}

void child::kill_hard() {
    ::kill(process_->id(), SIGKILL);
}
#endif

int child::pid() const {
    return process_->id();
}

std::unique_ptr<child> start_helper(std::vector<std::string> const& arguments) {
    return std::make_unique<child>(OPENLOCK_TEST_CHILD, arguments);
}

run_result run_cli(std::vector<std::string> const& arguments) {
    boost::asio::io_context context;
    boost::asio::readable_pipe out{context};
    boost::asio::readable_pipe err{context};
    bp::process process{context, OPENLOCK_CLI, arguments, bp::process_stdio{{}, out, err}};
    run_result result;
    // Small outputs: read stdout to its end, then stderr (neither fills a pipe buffer in these tests).
    boost::system::error_code error;
    boost::asio::read(out, boost::asio::dynamic_buffer(result.out), error);
    boost::asio::read(err, boost::asio::dynamic_buffer(result.err), error);
    process.wait(error);
    auto const status = process.native_exit_code();
#ifdef _WIN32
    (void)status;
    result.status = exit_code_of(process);
#else
    result.status = WIFSIGNALED(status) ? 128 + WTERMSIG(status) : WEXITSTATUS(status);
#endif
    return result;
}

} // namespace test
