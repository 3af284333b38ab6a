// SPDX-License-Identifier: MIT
// Test support: scratch directories, helper processes and the CLI, shared by every test file.
#pragma once

// Boost 1.81 Process v2 with std::filesystem needs boost::optional and the boost type traits in scope first.
#include <boost/optional.hpp>
#include <boost/type_traits.hpp>

#include <boost/asio/io_context.hpp>
#include <boost/asio/readable_pipe.hpp>
#include <boost/process/v2/process.hpp>
#include <boost/process/v2/stdio.hpp>
#include <chrono>
#include <cstdint>
#include <doctest/doctest.h>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

// A failed CHECK on a list of names (names_in) prints the names, not "{?}".
template <>
struct doctest::StringMaker<std::vector<std::string>> {
    static doctest::String convert(std::vector<std::string> const& names);
};

namespace test {

namespace fs = std::filesystem;

/// A fresh directory for one test, removed with everything in it at the end.
class scratch_dir {
public:
    scratch_dir();
    scratch_dir(scratch_dir const&) = delete;
    scratch_dir& operator=(scratch_dir const&) = delete;
    ~scratch_dir();
    [[nodiscard]] fs::path const& path() const { return path_; }
    [[nodiscard]] fs::path operator/(fs::path const& name) const { return path_ / name; }

private:
    fs::path path_;
};

/// Whether `part` occurs in `text`.
inline bool contains(std::string const& text, std::string_view part) {
    return text.find(part) != std::string::npos;
}
/// Writes bytes to a file, replacing it.
void write_file(fs::path const& path, std::string const& bytes);
/// Reads a whole file; empty when absent.
std::string read_file(fs::path const& path);
/// A pid that names no process: a child that has exited and been reaped.
std::int64_t pid_of_a_reaped_child();
/// This process's id.
std::int64_t this_pid();
/// Whether this OS has the claim method (openlock::claim_method; a template so that this header needs no
/// import): Windows has no nameless files, so no claim_method::anonymous_link.
template <class ClaimMethod>
bool supported(ClaimMethod method) {
#ifdef _WIN32
    return method != ClaimMethod::anonymous_link;
#else
    (void)method;
    return true;
#endif
}
/// True under Wine, which keeps a deleted file's name (and refuses to rename over it) while any handle to it
/// is open, where Windows 10 NTFS removes the name at once (POSIX semantics).
bool under_wine();
/// The longest file name the directory's file system takes (NAME_MAX; UTF-16 units on Windows).
std::size_t name_max(fs::path const& directory);
/// Whether this process may create symlinks here (Windows: only with a privilege or in developer mode).
bool symlinks_work(fs::path const& directory);

/// Opens a file as a reader does (on Windows sharing read, write and delete) and closes it after `hold`, in
/// another thread: where a removed name stays until its last handle closes (Wine, FAT), it stays that long.
std::jthread read_for(fs::path const& file, std::chrono::milliseconds hold);

/// The names in a directory, sorted.
std::vector<std::string> names_in(fs::path const& directory);

/// A running process whose stdout (and stderr) we read; killed and reaped at destruction if still running.
class child {
public:
    child(fs::path const& program, std::vector<std::string> const& arguments);
    child(child const&) = delete;
    child& operator=(child const&) = delete;
    ~child();

    /// The next line of its stdout, without the newline; empty at end of output.
    std::string read_line();
    /// Waits for it to end; its exit status (128 + signal when killed; on Windows the exit code).
    int wait();
    /// SIGKILL; on Windows TerminateProcess with exit code killed_exit_code.
    void kill_hard();
    [[nodiscard]] int pid() const;

private:
    boost::asio::io_context context_;
    boost::asio::readable_pipe out_{context_};
    std::unique_ptr<boost::process::v2::process> process_;
    std::string buffered_;
    bool finished_ = false;
};

/// What child::wait() answers for a child that kill_hard() ended.
int killed_exit_code();

/// The helper process (test/support/child.cpp) with these arguments.
std::unique_ptr<child> start_helper(std::vector<std::string> const& arguments);

/// Result of running a program to completion.
struct run_result {
    int status = -1;
    std::string out;
    std::string err;
};
/// Runs the openlock CLI with these arguments and collects its output.
run_result run_cli(std::vector<std::string> const& arguments);

} // namespace test

/// Ends a test that cannot apply on this OS, saying why; ctest shows it as skipped (test/CMakeLists.txt).
#define OPENLOCK_SKIP(reason)                                                                                \
    do {                                                                                                     \
        MESSAGE("skipped: " << (reason));                                                                    \
        return;                                                                                              \
    } while (false)
