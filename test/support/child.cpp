// The helper process of the multi-process tests.
//   count LOCK COUNTER N [hard_link|anonymous_link|exclusive_create]  N times: acquire, check no one else is
//   inside, counter
//   += 1 hold LOCK                                         acquire, print "locked", then sleep until killed
//   leak LOCK                                         acquire, print "locked", exit(0) without releasing
//   try LOCK                                          print "acquired" or "busy"
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <fcntl.h>
#include <fstream>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <unistd.h>

import openlock;

namespace {

int count(char const* lock_path, std::string const& counter, long iterations, openlock::claim_method method) {
    auto settings = openlock::get_defaults();
    settings.method = method;
    openlock::file_lock lock{lock_path, std::nullopt, settings};
    auto const inside = counter + ".inside";
    for (long i = 0; i < iterations; ++i) {
        lock.acquire();
        int const marker = ::open(inside.c_str(), O_CREAT | O_EXCL | O_WRONLY, 0644);
        if (marker < 0) {
            std::printf("violation: another holder is inside (errno %d)\n", errno);
            return 2;
        }
        ::close(marker);
        long value = 0;
        {
            std::ifstream in{counter};
            in >> value;
        }
        {
            std::ofstream out{counter, std::ios::trunc};
            out << value + 1 << '\n';
        }
        ::unlink(inside.c_str());
        lock.release();
    }
    return 0;
}

[[noreturn]] void hold(char const* lock_path) {
    openlock::file_lock lock{lock_path};
    lock.acquire();
    std::printf("locked %d\n", static_cast<int>(::getpid()));
    std::fflush(stdout);
    for (;;)
        std::this_thread::sleep_for(std::chrono::hours{1});
}

} // namespace

int main(int argc, char** argv) {
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
    if (mode == "leak" && argc == 3) {
        auto* leaked = new openlock::file_lock{argv[2]};
        leaked->acquire();
        std::printf("locked\n");
        std::fflush(stdout);
        std::exit(0);
    }
    if (mode == "try" && argc == 3) {
        openlock::file_lock lock{argv[2]};
        bool const acquired = lock.try_acquire();
        std::printf(acquired ? "acquired\n" : "busy\n");
        return 0;
    }
    std::fprintf(stderr, "usage: openlock-test-child count|hold|leak|try ...\n");
    return 64;
}
