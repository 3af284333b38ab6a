// SPDX-License-Identifier: MIT
// The hostile second user of test/multiuser/run.sh: an adversary that owns (or may rename entries of) the
// lock's directory and swaps the library's helper names for symbolic links at the moment a victim reads them.
//
//   openlock-swapper swap DIR STEM TARGET SECONDS [CHANCE]
//       Watches DIR with inotify. Helper names of the lock whose stem is STEM are: STEM.takeover (the guard),
//       STEM.takeover.<32 hex> (staging directories), STEM.claim.<32 hex> (claim files), STEM.token and
//       STEM.token.<32 hex> (fencing tokens). Every such directory is watched too. The moment somebody opens
//       a file that already stood inside one of those directories (the victim reading a guard owner's record,
//       just before it unlinks that record by path), or opens one of those files in DIR, the entry is
//       exchanged with renameat2(RENAME_EXCHANGE) for a symbolic link to TARGET (a directory of the victim's;
//       for a file entry, TARGET/<its 32 hex digits>), and exchanged back 3 ms later. The victim that then
//       unlinks "STEM.takeover/<nonce>" unlinks TARGET/<nonce>. Repeats for SECONDS, then prints "swaps N"
//       and exits 0.
//   openlock-swapper kill DIR NAME PID SECONDS
//       The crash of a guard holder: SIGKILL to PID the moment NAME appears in DIR (created or renamed into
//       place). Prints "killed" (exit 0) or "not seen" (exit 1) after SECONDS.
#include <sys/inotify.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#include <dirent.h>

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <map>
#include <poll.h>
#include <set>
#include <string>
#include <string_view>
#include <unistd.h>

namespace {

constexpr unsigned exchange = 1U << 1; // RENAME_EXCHANGE

int rename_exchange(int dir, std::string const& a, std::string const& b) {
    return static_cast<int>(::syscall(SYS_renameat2, dir, a.c_str(), dir, b.c_str(), exchange));
}

bool is_nonce(std::string_view text) {
    return text.size() == 32 && text.find_first_not_of("0123456789abcdef") == std::string_view::npos;
}

// "" if NAME is not a helper name of STEM, else the nonce part ("guard" for STEM.takeover, "token" for
// STEM.token).
std::string helper_nonce(std::string_view name, std::string const& stem) {
    if (!name.starts_with(stem)) return {};
    auto const rest = name.substr(stem.size());
    if (rest == ".takeover") return "guard";
    if (rest == ".token") return "token";
    for (std::string_view prefix : {".takeover.", ".claim.", ".token."})
        if (rest.starts_with(prefix) && is_nonce(rest.substr(prefix.size())))
            return std::string{rest.substr(prefix.size())};
    return {};
}

volatile std::sig_atomic_t stopping = 0;

// SIGTERM ends the watch early; the summary is still printed.
void stop_on_term() {
    struct sigaction action{};
    action.sa_handler = [](int) { stopping = 1; };
    ::sigaction(SIGTERM, &action, nullptr);
}

double now() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

int swap_mode(char const* dir_path, std::string const& stem, std::string const& target, double seconds,
              double chance) {
    std::srand(static_cast<unsigned>(::getpid()));
    int const dir = ::open(dir_path, O_RDONLY | O_DIRECTORY);
    int const watcher = ::inotify_init1(IN_CLOEXEC);
    if (dir < 0 || watcher < 0) {
        std::perror("swapper");
        return 2;
    }
    int const top = ::inotify_add_watch(watcher, dir_path, IN_CREATE | IN_MOVED_TO | IN_OPEN | IN_ONLYDIR);
    std::map<int, std::string> watched;                  // watch descriptor -> helper directory's name in DIR
    std::map<int, std::set<std::string>> created_inside; // names created in a watched directory since watched
    // Only our own entries are swapped: the victim's own staging directories and claim files are left alone.
    auto ours = [&](std::string const& name, bool directory) {
        struct stat st{};
        return ::fstatat(dir, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 && st.st_uid == ::geteuid() &&
               (directory ? S_ISDIR(st.st_mode) : S_ISREG(st.st_mode));
    };
    auto watch = [&](std::string const& name) {
        if (!ours(name, true)) return;
        int const wd = ::inotify_add_watch(watcher, (std::string{dir_path} + "/" + name).c_str(),
                                           IN_OPEN | IN_CREATE | IN_MOVED_TO | IN_CLOSE_WRITE | IN_ONLYDIR |
                                               IN_DONT_FOLLOW);
        if (wd < 0) return;
        if (!watched.contains(wd)) created_inside[wd].clear();
        watched[wd] = name;
    };
    if (DIR* listing = ::fdopendir(::dup(dir))) {
        while (dirent* entry = ::readdir(listing))
            if (!helper_nonce(entry->d_name, stem).empty()) watch(entry->d_name);
        ::closedir(listing);
    }
    long swaps = 0, serial = 0;
    // Exchanges NAME (an entry of DIR) with a fresh symbolic link to LINK_TARGET, and back 3 ms later.
    auto swap = [&](std::string const& name, std::string const& link_target) {
        if (chance < 1.0 && std::rand() >= chance * RAND_MAX) return; // let this read through untouched
        auto const link = "zz-swap." + std::to_string(::getpid()) + "." + std::to_string(++serial);
        if (::symlinkat(link_target.c_str(), dir, link.c_str()) != 0) return;
        if (rename_exchange(dir, name, link) == 0) {
            ++swaps;
            ::usleep(3000);
            rename_exchange(dir, name, link); // fails if the victim renamed or removed NAME meanwhile
        }
        ::unlinkat(dir, link.c_str(), 0); // the link, wherever the exchanges left it (never follows it)
    };
    std::printf("watching\n");
    std::fflush(stdout);
    double const end = now() + seconds;
    alignas(inotify_event) char buffer[64 * 1024];
    while (now() < end && !stopping) {
        pollfd ready{watcher, POLLIN, 0};
        if (::poll(&ready, 1, 50) <= 0) continue;
        ssize_t const got = ::read(watcher, buffer, sizeof buffer);
        for (ssize_t at = 0; at < got;) {
            auto const* event = reinterpret_cast<inotify_event const*>(buffer + at);
            at += static_cast<ssize_t>(sizeof(inotify_event) + event->len);
            std::string const name = event->len ? event->name : "";
            if (event->wd == top) {
                if (name.empty() || helper_nonce(name, stem).empty()) continue;
                if (event->mask & IN_ISDIR) {
                    if (event->mask & (IN_CREATE | IN_MOVED_TO)) watch(name);
                } else if ((event->mask & IN_OPEN) && ours(name, false)) {
                    auto const nonce = helper_nonce(name, stem);
                    swap(name, target + "/" + (is_nonce(nonce) ? nonce : std::string{"bait-" + nonce}));
                }
                continue;
            }
            auto const found = watched.find(event->wd);
            if (found == watched.end() || name.empty() || (event->mask & IN_ISDIR)) continue;
            if (event->mask & (IN_CREATE | IN_MOVED_TO)) {
                created_inside[event->wd].insert(name); // the maker writing its own record: not a reader
            } else if (event->mask & IN_CLOSE_WRITE) {
                created_inside[event->wd].erase(name); // written: whoever opens it next reads it
            } else if ((event->mask & IN_OPEN) && !created_inside[event->wd].contains(name)) {
                swap(found->second, target);
            }
        }
    }
    std::printf("swaps %ld\n", swaps);
    return 0;
}

int kill_mode(char const* dir_path, std::string const& name, pid_t victim, double seconds) {
    int const watcher = ::inotify_init1(IN_CLOEXEC);
    if (watcher < 0 || ::inotify_add_watch(watcher, dir_path, IN_CREATE | IN_MOVED_TO | IN_ONLYDIR) < 0) {
        std::perror("swapper");
        return 2;
    }
    std::printf("watching\n");
    std::fflush(stdout);
    double const end = now() + seconds;
    alignas(inotify_event) char buffer[64 * 1024];
    while (now() < end && !stopping) {
        pollfd ready{watcher, POLLIN, 0};
        if (::poll(&ready, 1, 50) <= 0) continue;
        ssize_t const got = ::read(watcher, buffer, sizeof buffer);
        for (ssize_t at = 0; at < got;) {
            auto const* event = reinterpret_cast<inotify_event const*>(buffer + at);
            at += static_cast<ssize_t>(sizeof(inotify_event) + event->len);
            if (event->len && name == event->name) {
                ::kill(victim, SIGKILL);
                std::printf("killed\n");
                return 0;
            }
        }
    }
    std::printf("not seen\n");
    return 1;
}

} // namespace

int main(int argc, char** argv) {
    stop_on_term();
    std::string_view const mode = argc > 1 ? argv[1] : "";
    if (mode == "swap" && (argc == 6 || argc == 7))
        return swap_mode(argv[2], argv[3], argv[4], std::atof(argv[5]), argc == 7 ? std::atof(argv[6]) : 1.0);
    if (mode == "kill" && argc == 6)
        return kill_mode(argv[2], argv[3], static_cast<pid_t>(std::atol(argv[4])), std::atof(argv[5]));
    std::fprintf(
        stderr,
        "usage: openlock-swapper swap DIR STEM TARGET SECONDS [CHANCE] | kill DIR NAME PID SECONDS\n");
    return 64;
}
