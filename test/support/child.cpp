// SPDX-License-Identifier: MIT
// The helper process of the multi-process tests.
//   count LOCK COUNTER N [hard_link|anonymous_link|exclusive_create]
//                         N times: acquire, check no one else is inside, counter += 1
//   hold LOCK             acquire, print "locked", then sleep until killed
//   leak LOCK             acquire, print "locked", exit(0) without releasing
//   leak-lingering LOCK MS
//                         acquire (events only), print "acquired", after MS ms exit(0) without releasing;
//                         the exit lingers 4 s after the library's exit handler
//   try LOCK              print "acquired" or "busy"
//   queue LOCK MS         acquire (events only), print "acquired", hold MS ms
//   fence LOCK hard_link|exclusive_create
//                         acquire a fenced 200 ms lease, print its token, release
//   exit [STATUS]         exit at once (a pid that is gone afterwards)
//   echo ARGS...          print ARGS as echo(1) does (Windows has no echo program)
//   env NAME              print the environment variable NAME
//   sleep                 sleep until killed (a live process holding nothing)
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>

#ifdef _WIN32
#include <fcntl.h>
#include <io.h>
#include <windows.h>
#else
#include <fcntl.h>
#include <unistd.h>
#endif
#ifdef __linux__
#include <cstddef>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#endif

import openlock;

namespace {

// Creates a marker file that must not exist yet: the check that nobody else is inside the critical section.
// 0 on success, else the OS's error code.
int create_marker(std::string const& path) {
#ifdef _WIN32
    HANDLE const marker =
        ::CreateFileA(path.c_str(), GENERIC_WRITE, FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE,
                      nullptr, CREATE_NEW, FILE_ATTRIBUTE_NORMAL, nullptr);
    if (marker == INVALID_HANDLE_VALUE) return static_cast<int>(::GetLastError());
    ::CloseHandle(marker);
#else
    int const marker = ::open(path.c_str(), O_CREAT | O_EXCL | O_WRONLY, 0644);
    if (marker < 0) return errno;
    ::close(marker);
#endif
    return 0;
}

int count(char const* lock_path, std::string const& counter, long iterations, openlock::claim_method method) {
    auto settings = openlock::get_defaults();
    settings.method = method;
    openlock::file_lock lock{lock_path, std::nullopt, settings};
    auto const inside = counter + ".inside";
    for (long i = 0; i < iterations; ++i) {
        lock.acquire();
        if (int const error = create_marker(inside); error != 0) {
            std::printf("violation: another holder is inside (error %d)\n", error);
            return 2;
        }
        long value = 0;
        {
            std::ifstream in{counter};
            in >> value;
        }
        {
            std::ofstream out{counter, std::ios::trunc};
            out << value + 1 << '\n';
        }
        std::error_code ignored;
        std::filesystem::remove(inside, ignored);
        lock.release();
    }
    return 0;
}

[[noreturn]] void hold(char const* lock_path) {
    openlock::file_lock lock{lock_path};
    lock.acquire();
    std::printf("locked %d\n", static_cast<int>(lock.getpid().value_or(0)));
    std::fflush(stdout);
    for (;;)
        std::this_thread::sleep_for(std::chrono::hours{1});
}

} // namespace

int main(int argc, char** argv) {
#ifdef _WIN32
    ::_setmode(::_fileno(stdout), _O_BINARY); // "\n" stays "\n", as the tests read it
#endif
    std::string_view const mode = argc > 1 ? argv[1] : "";
    if (mode == "count" && argc >= 5) {
        auto method = openlock::claim_method::automatic;
        if (argc > 5 && std::string_view{argv[5]} == "exclusive_create")
            method = openlock::claim_method::exclusive_create;
        if (argc > 5 && std::string_view{argv[5]} == "hard_link") method = openlock::claim_method::hard_link;
        if (argc > 5 && std::string_view{argv[5]} == "anonymous_link")
            method = openlock::claim_method::anonymous_link;
        return count(argv[2], argv[3], std::atol(argv[4]), method);
    }
    if (mode == "hold" && argc == 3) hold(argv[2]);
#if defined(__linux__) && defined(SYS_epoll_pwait2)
    if (mode == "pwait2-refused" && argc == 3) {
        // As a seccomp filter that does not know epoll_pwait2 answers: EPERM. Then wait (events only) and
        // print the CPU time the wait took, in milliseconds.
        sock_filter filter[] = {
            BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
            BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_epoll_pwait2, 0, 1),
            BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA)),
            BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        };
        sock_fprog program{static_cast<unsigned short>(std::size(filter)), filter};
        if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
            ::prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &program) != 0)
            return 4;
        auto settings = openlock::get_defaults();
        settings.retry_period = std::chrono::seconds{20};
        openlock::file_lock lock{argv[2], std::chrono::seconds{10}, settings};
        std::printf("waiting\n");
        std::fflush(stdout);
        lock.acquire();
        rusage used{};
        ::getrusage(RUSAGE_SELF, &used);
        long const cpu_ms = (used.ru_utime.tv_sec + used.ru_stime.tv_sec) * 1000L +
                            (used.ru_utime.tv_usec + used.ru_stime.tv_usec) / 1000L;
        std::printf("acquired %ld\n", cpu_ms);
        lock.release();
        return 0;
    }
#endif
    if (mode == "queue" && argc == 4) {
        // Waits with events only (a 20 s safety net), holds for MS milliseconds, releases.
        auto settings = openlock::get_defaults();
        settings.retry_period = std::chrono::seconds{20};
        openlock::file_lock lock{argv[2], std::chrono::seconds{20}, settings};
        lock.acquire();
        std::printf("acquired\n");
        std::fflush(stdout);
        std::this_thread::sleep_for(std::chrono::milliseconds{std::atol(argv[3])});
        lock.release();
        return 0;
    }
    if (mode == "leak" && argc == 3) {
        auto* leaked = new openlock::file_lock{argv[2]};
        leaked->acquire();
        std::printf("locked\n");
        std::fflush(stdout);
        std::exit(0);
    }
    if (mode == "leak-lingering" && argc == 4) {
        // Registered before this process's first lock, so it runs after the library's exit handler.
        std::atexit([] { std::this_thread::sleep_for(std::chrono::seconds{4}); });
        auto settings = openlock::get_defaults();
        settings.retry_period = std::chrono::seconds{20};
        auto* leaked = new openlock::file_lock{argv[2], std::chrono::seconds{20}, settings};
        leaked->acquire();
        std::printf("acquired\n");
        std::fflush(stdout);
        std::this_thread::sleep_for(std::chrono::milliseconds{std::atol(argv[3])});
        std::exit(0);
    }
    if (mode == "fence" && argc == 4) {
        // The breaker of the fencing test where there is no fork(): a lease of 200 ms, no clock slop.
        auto settings = openlock::get_defaults();
        settings.retry_period = std::chrono::milliseconds{20};
        settings.lifetime = std::chrono::milliseconds{200};
        settings.clock_slop = std::chrono::nanoseconds{0};
        settings.fencing = true;
        settings.method = std::string_view{argv[3]} == "exclusive_create"
                              ? openlock::claim_method::exclusive_create
                              : openlock::claim_method::hard_link;
        openlock::file_lock other{argv[2], std::nullopt, settings};
        other.acquire(std::chrono::seconds{5});
        std::printf("%llu\n", static_cast<unsigned long long>(other.token()));
        other.release();
        return 0;
    }
    if (mode == "exit") return argc > 2 ? std::atoi(argv[2]) : 0;
    if (mode == "echo") { // echo(1) for systems without one
        for (int i = 2; i < argc; ++i)
            std::printf(i > 2 ? " %s" : "%s", argv[i]);
        std::printf("\n");
        return 0;
    }
    if (mode == "cat" && argc == 3) { // cat(1) for systems without one
        std::ifstream in{argv[2], std::ios::binary};
        std::string bytes{std::istreambuf_iterator<char>{in}, std::istreambuf_iterator<char>{}};
        std::fwrite(bytes.data(), 1, bytes.size(), stdout);
        return in || in.eof() ? 0 : 1;
    }
    if (mode == "env" && argc == 3) {
        char const* value = std::getenv(argv[2]);
        std::printf("%s\n", value == nullptr ? "" : value);
        return 0;
    }
    if (mode == "sleep")
        for (;;)
            std::this_thread::sleep_for(std::chrono::hours{1});
    if (mode == "try" && argc == 3) {
        openlock::file_lock lock{argv[2]};
        bool const acquired = lock.try_acquire();
        std::printf(acquired ? "acquired\n" : "busy\n");
        return 0;
    }
    std::fprintf(stderr, "usage: openlock-test-child count|hold|leak|try ...\n");
    return 64;
}
