// SPDX-License-Identifier: MIT
// openlock: run a command under a cross-process lock, look at a lock, or break a stale one.
#include "cli.hpp"

#include <cstdio>
#include <exception>
#include <span>
#include <string_view>

namespace {

constexpr std::string_view usage_text =
    R"(usage: openlock run [--timeout SEC] [--lifetime SEC] [--format openlock|flufl] [--verbose]
                    LOCKFILE -- COMMAND [ARGS...]
       openlock status [--json] LOCKFILE
       openlock break [--force] LOCKFILE
       openlock --help | --version

run     acquire LOCKFILE (waiting at most SEC seconds; default forever), run COMMAND, release.
        Exits with COMMAND's status; 75 on timeout (stderr names the holder), 127 when COMMAND is not found,
        126 when it cannot be executed, 74 when the lock could not be released after it (LOCKFILE left behind).
        COMMAND runs in a process group of its own that holds the lock too (POSIX): the lock stays held while
        openlock or any process of that group lives, so killing openlock does not free it; run releases once
        the group is empty.
        While waiting, a terminal (or --verbose) shows who holds the lock and for how long we have waited.
        --lifetime: take a lease of SEC seconds (at least 0.1), refreshed while COMMAND runs (NFS, other hosts: anyone may
        break it once it has run out); a lost lease is reported on stderr at once. COMMAND gets the
        acquisition's fencing token in OPENLOCK_TOKEN (greater than every earlier one; kept in LOCKFILE.token).
        --format flufl: lock files as Python's flufl.lock writes them, so both exclude each other (always a
        lease, kept alive; flufl's 15 s unless --lifetime; no fencing token).
status  unlocked, held, expired, stale or invalid, and the holder's pid, name, host, lease end (--json: one
        JSON object).
break   remove LOCKFILE if its holder is provably gone or its lease ran out; --force also removes a live holder's
        lock (with a warning), and a takeover guard that a process not alive here left over a minute ago.

Exit statuses of openlock itself: 64 bad arguments, 65 LOCKFILE is not a lock file, 73 the lock file cannot be
created, read or removed, 74 run could not release the lock, 75 timeout, 1 break refused.
)";

} // namespace

int main(int argc, char** argv) {
    using namespace openlock::cli;
    open_missing_standard_streams(); // first: before anything of ours opens a file
    use_binary_stdio();
    std::span<char* const> const arguments{argv, static_cast<std::size_t>(argc)};
    try {
        if (arguments.size() < 2) throw usage("no command given (try --help)");
        std::string_view const command = arguments[1];
        auto const rest = arguments.subspan(2);
        if (command == "--help" || command == "-h" || command == "help") {
            std::fwrite(usage_text.data(), 1, usage_text.size(), stdout);
            return success;
        }
        if (command == "--version") {
            std::puts("openlock " OPENLOCK_VERSION);
            return success;
        }
        if (command == "run") return run_command(rest);
        if (command == "status") return status_command(rest);
        if (command == "break") return break_command(rest);
        throw usage("unknown command '" + std::string{command} + "' (try --help)");
    } catch (usage const& e) {
        complain(e.what());
        return usage_error;
    } catch (std::exception const& e) {
        complain(e.what());
        return cannot_lock;
    }
}
