// SPDX-License-Identifier: MIT
// The command of `openlock run`: started before the lock is taken, let go once it is held.
//
// Why POSIX does not use Boost.Process here:
// - Boost.Process v2 forks and execs, and only then registers the child with Asio (epoll): a failure there
//   (EMFILE under `ulimit -n`) threw after the command had started, and the caller released the lock while
//   the command ran on. Here every descriptor is made before the fork; after it, nothing fails but the exec,
//   which the child reports through a close-on-exec pipe before anything of the command ran.
// - The command's process group holds the lock too (docs/protocol.md, "Process groups"): the child is forked
//   first, moved into a group of its own (by both sides, as shells do, so that neither races the other), and
//   waits on a pipe; the lock is acquired naming that group, and only then does the child exec. So `kill -9`
//   of openlock leaves the lock held until the command's group has ended, as flock(1)'s lock stays with the
//   descriptor the command inherited.
// - A group of its own takes the command out of the terminal's foreground: it is handed the foreground while
//   it runs (tcsetpgrp, with SIGTTOU ignored, since we are then a background process that still writes to the
//   terminal) and we take it back after; a command stopped by the terminal (Ctrl+Z) stops us too, so that the
//   shell's job control sees the job stop, and continues when we are continued.
#include "cli.hpp"

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#ifdef _WIN32
// Boost 1.81 Process v2 with std::filesystem needs boost::optional and the boost type traits in scope first.
#include <boost/optional.hpp>
#include <boost/type_traits.hpp>

#include <boost/asio/io_context.hpp>
#include <boost/process/v2/process.hpp>
#include <filesystem>
#else
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <sys/stat.h>
#include <sys/wait.h>
#include <termios.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif
#include <thread>
#include <unistd.h>

extern char** environ;
#endif

namespace openlock::cli {

#ifdef _WIN32

struct held_command::impl {
    std::vector<std::string> command;
    std::filesystem::path program;
};

held_command::held_command(std::vector<std::string> const& command) : impl_(std::make_unique<impl>()) {
    impl_->command = command;
    impl_->program = find_program(command.front());
    if (impl_->program.empty() || !std::filesystem::exists(impl_->program))
        throw command_failure(command.front() + ": command not found", command_not_found);
    if (std::filesystem::is_directory(impl_->program))
        throw command_failure(command.front() + ": is a directory", not_executable);
}

held_command::~held_command() = default;

std::optional<std::int64_t> held_command::process_group() const {
    return std::nullopt; // no process groups: the record names openlock alone
}

void held_command::abandon() noexcept {}

int held_command::run(std::uint64_t token) {
    namespace bp = boost::process::v2;
    if (token != 0) set_environment("OPENLOCK_TOKEN", std::to_string(token)); // the child inherits it
    auto const& command = impl_->command;
    boost::asio::io_context context;
    std::vector<std::string> const arguments(command.begin() + 1, command.end());
    boost::system::error_code error;
    try {
        bp::process child{context, impl_->program, arguments};
        forward_signals_to_command(static_cast<int>(child.id()));
        child.wait(error);
        auto const status =
            native_exit_status(static_cast<int>(child.native_exit_code()), child.native_handle());
        command_ended();
        if (error) {
            complain(command.front() + ": " + error.message());
            return not_executable;
        }
        return exit_status_of(status);
    } catch (std::exception const& e) {
        // Windows starts the process last (CreateProcess): a failure means it never ran.
        command_ended();
        complain(command.front() + ": " + e.what());
        return not_executable;
    }
}

#else

namespace {

int retrying(auto call) {
    int result = -1;
    do
        result = call();
    while (result < 0 && errno == EINTR);
    return result;
}

// Reads exactly `size` bytes; false at end of file or on an error.
bool read_exactly(int fd, void* buffer, std::size_t size) {
    auto* bytes = static_cast<char*>(buffer);
    while (size > 0) {
        auto const got = ::read(fd, bytes, size);
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0) return false;
        bytes += got;
        size -= static_cast<std::size_t>(got);
    }
    return true;
}

void close_if_open(int& fd) {
    if (fd >= 0) ::close(fd);
    fd = -1;
}

constexpr std::string_view token_variable = "OPENLOCK_TOKEN=";

// The terminal the command gets the foreground of: stdin, when it is one and our group has its foreground.
bool owns_terminal_foreground() {
    return ::isatty(STDIN_FILENO) == 1 && ::tcgetpgrp(STDIN_FILENO) == ::getpgrp();
}

void give_foreground(pid_t group) {
    // A background process that changes the foreground gets SIGTTOU unless it ignores it.
    auto const previous = std::signal(SIGTTOU, SIG_IGN);
    ::tcsetpgrp(STDIN_FILENO, group);
    std::signal(SIGTTOU, previous);
}

} // namespace

struct held_command::impl {
    std::vector<std::string> command;
    std::string program;
    pid_t child = -1;      ///< also the command's process group
    int go = -1;           ///< our end of the pipe the child waits on before it execs
    int exec_failure = -1; ///< the child writes its exec errno here; end of file: the exec succeeded
    bool reaped = false;
    bool foreground_given = false;

    // The child: its own group, wait for the word, exec. Only async-signal-safe calls after fork().
    [[noreturn]] void be_the_child(int go_read, int failure_write, char** argv, char** token_environment,
                                   char* token_slot) {
        ::setpgid(0, 0);
        std::uint64_t token = 0;
        if (!read_exactly(go_read, &token, sizeof token)) ::_exit(0); // openlock gave up: nothing runs
        char** environment = environ;
        if (token != 0) {
            char digits[24];
            int count = 0;
            for (auto rest = token; rest != 0; rest /= 10)
                digits[count++] = static_cast<char>('0' + rest % 10);
            char* at = token_slot + token_variable.size();
            while (count > 0)
                *at++ = digits[--count];
            *at = '\0';
            environment = token_environment;
        }
        ::execve(program.c_str(), argv, environment);
        int const error = errno;
        [[maybe_unused]] auto const written = ::write(failure_write, &error, sizeof error);
        ::_exit(127);
    }

    void reap(int& status) {
        if (reaped) return;
        retrying([&] { return static_cast<int>(::waitpid(child, &status, 0)); });
        reaped = true;
    }

    // flock(1)'s lock stays while any process that inherited its descriptor lives; ours while the group has
    // a member. The command's background processes keep the lock until they end. As a subreaper (Linux) we
    // are their parent once the command has ended, and reap them as they end: an orphan's zombie would stay
    // in the group until init reaps it, which some inits do only now and then. Members that are not ours to
    // reap are polled for.
    void wait_for_empty_group() const {
        int status = 0;
        while (retrying([&] { return static_cast<int>(::waitpid(-child, &status, 0)); }) > 0) {
        }
        auto pause = std::chrono::milliseconds{5};
        while (!(::kill(-child, 0) != 0 && errno == ESRCH)) {
            while (::waitpid(-child, &status, WNOHANG) > 0) {
            }
            std::this_thread::sleep_for(pause);
            pause = std::min(pause * 2, std::chrono::milliseconds{200});
        }
    }
};

held_command::held_command(std::vector<std::string> const& command) : impl_(std::make_unique<impl>()) {
    auto& self = *impl_;
    self.command = command;
    auto const program = find_program(command.front());
    std::error_code ignored;
    auto const kind = std::filesystem::status(program, ignored).type();
    if (program.empty() || kind == std::filesystem::file_type::not_found ||
        kind == std::filesystem::file_type::none)
        throw command_failure(command.front() + ": command not found", command_not_found);
    if (kind == std::filesystem::file_type::directory)
        throw command_failure(command.front() + ": is a directory", not_executable);
    self.program = program.string();

    // An inherited SIGCHLD ignore would have the kernel reap the command, and waitpid lose its status.
    std::signal(SIGCHLD, SIG_DFL);
#ifdef __linux__
    // The command's orphans become our children, not init's: see wait_for_empty_group.
    ::prctl(PR_SET_CHILD_SUBREAPER, 1);
#endif
    // Everything the child needs is made before the fork: after it, it only reads, fills in and execs.
    std::vector<char*> argv;
    argv.reserve(self.command.size() + 1);
    for (auto const& argument : self.command)
        argv.push_back(const_cast<char*>(argument.c_str()));
    argv.push_back(nullptr);
    std::string token_entry{token_variable};
    token_entry.resize(token_variable.size() + 24, '\0');
    std::vector<char*> token_environment;
    for (char** entry = environ; *entry != nullptr; ++entry)
        if (std::strncmp(*entry, token_variable.data(), token_variable.size()) != 0)
            token_environment.push_back(*entry);
    token_environment.push_back(token_entry.data());
    token_environment.push_back(nullptr);

    int go_pipe[2];
    int failure_pipe[2];
    if (::pipe2(go_pipe, O_CLOEXEC) != 0)
        throw command_failure(command.front() + ": cannot start: " + std::strerror(errno), not_executable);
    if (::pipe2(failure_pipe, O_CLOEXEC) != 0) {
        auto const error = errno;
        ::close(go_pipe[0]);
        ::close(go_pipe[1]);
        throw command_failure(command.front() + ": cannot start: " + std::strerror(error), not_executable);
    }
    auto const child = ::fork();
    if (child == 0) {
        ::close(go_pipe[1]);
        ::close(failure_pipe[0]);
        self.be_the_child(go_pipe[0], failure_pipe[1], argv.data(), token_environment.data(),
                          token_entry.data());
    }
    auto const fork_error = errno;
    ::close(go_pipe[0]);
    ::close(failure_pipe[1]);
    if (child < 0) {
        ::close(go_pipe[1]);
        ::close(failure_pipe[0]);
        throw command_failure(command.front() + ": cannot start: " + std::strerror(fork_error),
                              not_executable);
    }
    self.child = child;
    self.go = go_pipe[1];
    self.exec_failure = failure_pipe[0];
    // Both sides: whichever runs first, the group exists before the lock names it. EACCES (the child has
    // exec'd) cannot happen: it waits for us.
    ::setpgid(child, child);
}

held_command::~held_command() {
    abandon();
}

std::optional<std::int64_t> held_command::process_group() const {
    return impl_->child;
}

void held_command::abandon() noexcept {
    auto& self = *impl_;
    if (self.child <= 0 || self.reaped) return;
    close_if_open(self.go); // a child still waiting sees end of file and exits without running anything
    ::kill(-self.child, SIGKILL);
    int status = 0;
    self.reap(status);
    self.wait_for_empty_group();
    close_if_open(self.exec_failure);
    if (self.foreground_given) give_foreground(::getpgrp());
}

int held_command::run(std::uint64_t token) {
    auto& self = *impl_;
    auto const& name = self.command.front();
    // From here on a failure of ours never ends with the lock released while the command may live: abandon()
    // (the destructor) kills its group and waits for it to end before the caller releases.
    if (owns_terminal_foreground()) {
        self.foreground_given = true;
        give_foreground(self.child);
    }
    // We may write to the terminal (a lost lease) while the command has its foreground.
    std::signal(SIGTTOU, SIG_IGN);
    forward_signals_to_command(-self.child);
    // A child that is gone already (killed by someone) has closed its end: EPIPE, not SIGPIPE.
    auto const previous_pipe_action = std::signal(SIGPIPE, SIG_IGN);
    auto const said = retrying([&] { return static_cast<int>(::write(self.go, &token, sizeof token)); });
    auto const go_error = errno;
    std::signal(SIGPIPE, previous_pipe_action);
    close_if_open(self.go);
    int exec_error = 0;
    bool const exec_failed = said == static_cast<int>(sizeof token) &&
                             read_exactly(self.exec_failure, &exec_error, sizeof exec_error);
    close_if_open(self.exec_failure);

    int status = 0;
    for (;;) {
        // Stops matter only where we handed over the terminal: anywhere else, whoever stopped the command
        // continues it, and we wait on.
        int const options = self.foreground_given ? WUNTRACED : 0;
        int const ended = retrying([&] { return static_cast<int>(::waitpid(self.child, &status, options)); });
        if (ended < 0) break; // ECHILD: someone else reaped it (cannot be: it is our child)
        if (!WIFSTOPPED(status)) break;
        // Stopped from the terminal (Ctrl+Z): stop too, so that the shell sees the job stop; when we are
        // continued (fg, bg), so is the command, in the foreground again if we are.
        give_foreground(::getpgrp());
        self.foreground_given = false;
        ::kill(::getpid(), SIGSTOP);
        if (owns_terminal_foreground()) {
            self.foreground_given = true;
            give_foreground(self.child);
        }
        ::kill(-self.child, SIGCONT);
    }
    self.reaped = true;
    if (self.foreground_given) {
        give_foreground(::getpgrp());
        self.foreground_given = false;
    }
    self.wait_for_empty_group();
    command_ended();
    if (said != static_cast<int>(sizeof token)) {
        complain(name + ": cannot start: " + std::strerror(go_error));
        return not_executable;
    }
    if (exec_failed) {
        if (exec_error == ENOENT) {
            complain(name + ": command not found");
            return command_not_found;
        }
        complain(name + ": " + std::strerror(exec_error));
        return not_executable;
    }
    return exit_status_of(status);
}

#endif

} // namespace openlock::cli
