// SPDX-License-Identifier: MIT
// What the CLI needs from the OS besides the lock: stderr, the environment, UTC time, and the command's
// status and signals. POSIX and Windows differ here, and only here.
#include "cli.hpp"

#include <csignal>
#include <ctime>
#include <string>
#include <string_view>

#ifdef _WIN32
#include <cstdio>
#include <cstdlib>
#include <cwchar>
#include <fcntl.h>
#include <io.h>
#include <windows.h>
#else
// Boost 1.81 Process v2 with std::filesystem needs boost::optional and the boost type traits in scope first.
#include <boost/optional.hpp>
#include <boost/type_traits.hpp>

#include <boost/process/v2/environment.hpp>
#include <cerrno>
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>
#endif

namespace openlock::cli {

void write_stderr(std::string_view text) {
#ifdef _WIN32
    [[maybe_unused]] auto const written = ::_write(2, text.data(), static_cast<unsigned>(text.size()));
#else
    [[maybe_unused]] auto const written = ::write(STDERR_FILENO, text.data(), text.size());
#endif
}

bool stderr_is_terminal() {
#ifdef _WIN32
    return ::_isatty(2) != 0;
#else
    return ::isatty(STDERR_FILENO) == 1;
#endif
}

void set_environment(char const* name, std::string const& value) {
#ifdef _WIN32
    ::_putenv_s(name, value.c_str());
#else
    ::setenv(name, value.c_str(), 1);
#endif
}

std::tm utc_parts(std::time_t seconds) {
    std::tm parts{};
#ifdef _WIN32
    ::gmtime_s(&parts, &seconds);
#else
    ::gmtime_r(&seconds, &parts);
#endif
    return parts;
}

namespace {
volatile std::sig_atomic_t command_target = 0;

#ifdef _WIN32
// Ctrl+C and Ctrl+Break reach every process of the console, the command included: we stay to release the
// lock after it ends. A handler routine, unlike SetConsoleCtrlHandler(nullptr, TRUE), is not inherited.
BOOL WINAPI stay_for_the_command(DWORD event) {
    return event == CTRL_C_EVENT || event == CTRL_BREAK_EVENT ? TRUE : FALSE;
}
#else
extern "C" void forward_signal(int signal_number) {
    auto const saved = errno;
    if (command_target != 0) ::kill(static_cast<pid_t>(command_target), signal_number);
    errno = saved;
}
#endif
} // namespace

void forward_signals_to_command(int target) {
    command_target = target;
#ifdef _WIN32
    ::SetConsoleCtrlHandler(stay_for_the_command, TRUE);
#else
    // The command runs in a process group of its own: a terminal's signals reach it directly when it has the
    // terminal's foreground, and only us otherwise (stdin not a terminal, signals sent to us). Either way it
    // gets them once, and we stay to release the lock when it ends.
    struct sigaction forward{};
    forward.sa_handler = forward_signal;
    sigemptyset(&forward.sa_mask);
    forward.sa_flags = SA_RESTART;
    for (int const signal_number : {SIGINT, SIGTERM, SIGHUP, SIGQUIT}) {
        // One ignored when we started (nohup, a background job of a non-interactive shell) stays ignored, as
        // the command inherited it: a shell does the same.
        struct sigaction before{};
        if (::sigaction(signal_number, nullptr, &before) == 0 && before.sa_handler == SIG_IGN) continue;
        ::sigaction(signal_number, &forward, nullptr);
    }
#endif
}

void command_ended() {
    command_target = 0;
}

void open_missing_standard_streams() {
#ifndef _WIN32
    for (int fd = 0; fd <= 2; ++fd) {
        if (::fcntl(fd, F_GETFD) != -1 || errno != EBADF) continue;
        // open() takes the lowest free number: this one, as the ones below it are open.
        int const opened = ::open("/dev/null", O_RDWR);
        if (opened > 2) ::close(opened); // cannot be: fd was free
    }
#endif
}

std::filesystem::path find_program(std::string const& name) {
#ifdef _WIN32
    // Boost 1.81's process/v2/environment.hpp does not compile for Windows: SearchPathW looks in the
    // directories of PATH (after the application's own and the current directory, as CreateProcess does).
    if (name.find_first_of("/\\") != std::string::npos) return name;
    std::filesystem::path const wanted{name};
    std::wstring found(32768, L'\0');
    wchar_t* file_part = nullptr;
    DWORD const length = ::SearchPathW(nullptr, wanted.c_str(), L".exe", static_cast<DWORD>(found.size()),
                                       found.data(), &file_part);
    if (length == 0 || length >= found.size()) return {};
    found.resize(length);
    return found;
#else
    if (name.find('/') != std::string::npos) return name;
    return boost::process::v2::environment::find_executable(name);
#endif
}

int native_exit_status(int boost_status, void* process_handle) {
#ifdef _WIN32
    DWORD code = 0;
    if (::GetExitCodeProcess(static_cast<HANDLE>(process_handle), &code)) return static_cast<int>(code);
#else
    (void)process_handle;
#endif
    return boost_status;
}

void use_binary_stdio() {
#ifdef _WIN32
    ::_setmode(::_fileno(stdout), _O_BINARY);
    ::_setmode(::_fileno(stderr), _O_BINARY);
#endif
}

int exit_status_of(int native_status) {
#ifdef _WIN32
    return native_status; // the process's exit code (TerminateProcess sets the one it was given)
#else
    if (WIFEXITED(native_status)) return WEXITSTATUS(native_status);
    if (WIFSIGNALED(native_status)) return 128 + WTERMSIG(native_status);
    return 1;
#endif
}

} // namespace openlock::cli
