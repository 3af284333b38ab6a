// SPDX-License-Identifier: MIT
// What a process spends on locks, bounded (docs/reliability.md, "Resources"): a released lock object keeps no
// descriptor, one inotify instance (and one epoll set) serves every waiter of a process, and doorbell FIFOs
// go away with their last listener. Linux only: the counts are read from /proc/self/fd and
// /tmp/openlock-<uid>.
#include "support/support.hpp"

#include <doctest/doctest.h>

#include <atomic>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>
#ifdef __linux__
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#endif

#include "support/timing.hpp"

import openlock;

namespace asio = boost::asio;
using namespace std::chrono_literals;
using boost::system::error_code;

#ifdef __linux__
namespace {

namespace fs = std::filesystem;

// This process's open descriptors, and how many of them are inotify instances.
struct descriptor_count {
    int all = 0;
    int inotify = 0;
};

descriptor_count open_descriptors() {
    descriptor_count count;
    for (auto const& entry : fs::directory_iterator{"/proc/self/fd"}) {
        ++count.all;
        std::error_code error;
        if (fs::read_symlink(entry.path(), error).string() == "anon_inode:inotify") ++count.inotify;
    }
    return count;
}

// This process's pidfds that refer to process `pid` (/proc/self/fdinfo shows a pidfd's "Pid:").
int pidfds_of(int pid) {
    int count = 0;
    for (auto const& entry : fs::directory_iterator{"/proc/self/fd"}) {
        std::error_code error;
        if (fs::read_symlink(entry.path(), error).string() != "anon_inode:[pidfd]") continue;
        std::ifstream info{"/proc/self/fdinfo/" + entry.path().filename().string()};
        std::string line;
        while (std::getline(info, line))
            if (line == "Pid:\t" + std::to_string(pid)) ++count;
    }
    return count;
}

// The doorbell FIFOs of locks in `directory` (docs/protocol.md 8.6: named after the directory's device and
// inode).
int doorbells_of(fs::path const& directory) {
    struct stat place{};
    REQUIRE(::stat(directory.c_str(), &place) == 0);
    char prefix[64];
    std::snprintf(prefix, sizeof prefix, "%llx-%llx-", static_cast<unsigned long long>(place.st_dev),
                  static_cast<unsigned long long>(place.st_ino));
    fs::path const bells = "/tmp/openlock-" + std::to_string(::geteuid());
    int count = 0;
    std::error_code error;
    for (auto const& entry : fs::directory_iterator{bells, error})
        if (entry.path().filename().string().starts_with(prefix)) ++count;
    return count;
}

// `count` spellings of `directory` (symlinks to it): lock objects on them have gates of their own (the gate
// is per spelling, docs/protocol.md 9.1) but contend for the same files, as other processes' objects do.
std::vector<fs::path> spellings_of(fs::path const& directory, fs::path const& links, int count) {
    std::vector<fs::path> spelled;
    for (int i = 0; i < count; ++i) {
        auto const link = links / ("d" + std::to_string(i));
        fs::create_directory_symlink(directory, link);
        spelled.push_back(link);
    }
    return spelled;
}

using test::events_only;

} // namespace

TEST_SUITE("resources") {

    TEST_CASE("1,000 released lock objects hold no extra descriptor") {
        for (auto const method :
             {openlock::claim_method::anonymous_link, openlock::claim_method::exclusive_create,
              openlock::claim_method::hard_link}) {
            CAPTURE(static_cast<int>(method));
            test::scratch_dir dir;
            auto settings = openlock::get_defaults();
            settings.method = method;
            std::vector<std::unique_ptr<openlock::file_lock>> released;
            auto const before = open_descriptors().all;
            for (int i = 0; i < 1000; ++i) {
                released.push_back(std::make_unique<openlock::file_lock>(dir / ("lock" + std::to_string(i)),
                                                                         std::nullopt, settings));
                released.back()->acquire();
                released.back()->release();
            }
            CHECK(open_descriptors().all - before < 5);
        }
    }

    TEST_CASE("A contended path keeps at most three descriptors while its objects live, none after") {
        test::scratch_dir dir;
        test::scratch_dir links;
        auto const other_spelling = spellings_of(dir.path(), links.path(), 1).front();
        auto contend = [&](std::string const& name, int& kept_while_alive) {
            auto const before = open_descriptors().all;
            {
                openlock::file_lock holder{dir / name};
                holder.acquire();
                openlock::file_lock waiter{other_spelling / name};
                CHECK_FALSE(waiter.try_lock_for(20ms)); // waits: wake sources, doorbell, a staged claim
                holder.release();
                waiter.acquire();
                waiter.release(); // contended: the pin is left for the next acquire, a claim staged again
                kept_while_alive = open_descriptors().all - before;
            }
            return open_descriptors().all - before;
        };
        int warm_up = 0;
        contend("first.lock", warm_up); // the process's watcher (epoll set, inotify instance, eventfd) stays
        int kept = 0;
        CHECK(contend("second.lock", kept) == 0);
        MESSAGE("descriptors kept by a released contended path: " << kept);
        CHECK(kept <= 3);
    }

    TEST_CASE("500 contended lock objects in one process use one inotify instance") {
        test::scratch_dir dir;
        test::scratch_dir links;
        auto const lock_path = dir / "contended.lock";
        auto holder = test::start_helper({"hold", lock_path.string()});
        REQUIRE(holder->read_line().starts_with("locked"));
        auto const inotify_before = open_descriptors().inotify;

        std::vector<std::unique_ptr<openlock::file_lock>> waiters;
        for (auto const& spelling : spellings_of(dir.path(), links.path(), 500))
            waiters.push_back(std::make_unique<openlock::file_lock>(spelling / "contended.lock", std::nullopt,
                                                                    events_only()));
        asio::io_context io;
        int timed_out = 0;
        std::string other;
        for (auto& waiter : waiters)
            asio::co_spawn(
                io,
                [&, lock = waiter.get()]() -> asio::awaitable<void> {
                    error_code error;
                    co_await lock->async_acquire(1500ms, asio::redirect_error(asio::use_awaitable, error));
                    if (error == asio::error::timed_out)
                        ++timed_out;
                    else
                        other = error.message();
                },
                asio::detached);
        std::thread runner{[&] { io.run(); }};
        std::this_thread::sleep_for(1s); // every waiter has looked, found the lock held, and waits
        auto const inotify_waiting = open_descriptors().inotify;
        runner.join();
        CHECK(timed_out == 500);
        CHECK(other == "");
        CHECK(inotify_waiting - inotify_before <= 1);
        holder->kill_hard();
    }

    TEST_CASE("A holder judged and watched by several waiters of a process costs one pidfd") {
        test::scratch_dir dir;
        test::scratch_dir links;
        auto holder = test::start_helper({"hold", (dir / "judged.lock").string()});
        REQUIRE(holder->read_line().starts_with("locked"));
        auto const before = pidfds_of(holder->pid()); // the test's own (Boost.Process may wait through one)
        std::vector<std::unique_ptr<openlock::file_lock>> waiters;
        for (auto const& spelling : spellings_of(dir.path(), links.path(), 3)) {
            waiters.push_back(
                std::make_unique<openlock::file_lock>(spelling / "judged.lock", std::nullopt, events_only()));
            CHECK_FALSE(
                waiters.back()->try_lock_for(50ms)); // judged live (kept), then watched while it waited
        }
        CHECK(pidfds_of(holder->pid()) - before == 1);
        holder->kill_hard();
    }

    TEST_CASE("Blocking and asynchronous waiters of one process all wake through the shared watcher") {
        test::scratch_dir dir;
        test::scratch_dir links;
        auto const lock_path = dir / "handed.lock";
        auto holder = test::start_helper({"hold", lock_path.string()});
        REQUIRE(holder->read_line().starts_with("locked"));
        auto const spellings = spellings_of(dir.path(), links.path(), 24);

        // Half wait in threads, half as coroutines on one io_context; each takes the lock once and releases
        // it.
        std::atomic<int> acquired{0};
        std::vector<std::jthread> threads;
        threads.reserve(12);
        for (int i = 0; i < 12; ++i)
            threads.emplace_back([&, i] {
                openlock::file_lock lock{spellings[static_cast<std::size_t>(i)] / "handed.lock", std::nullopt,
                                         events_only()};
                if (lock.try_lock_for(10s)) {
                    ++acquired;
                    lock.release();
                }
            });
        asio::io_context io;
        std::vector<std::unique_ptr<openlock::file_lock>> coroutines;
        for (int i = 12; i < 24; ++i) {
            coroutines.push_back(std::make_unique<openlock::file_lock>(
                spellings[static_cast<std::size_t>(i)] / "handed.lock", std::nullopt, events_only()));
            asio::co_spawn(
                io,
                [&acquired, lock = coroutines.back().get()]() -> asio::awaitable<void> {
                    error_code error;
                    co_await lock->async_acquire(10s, asio::redirect_error(asio::use_awaitable, error));
                    if (error) co_return;
                    ++acquired;
                    lock->release();
                },
                asio::detached);
        }
        std::thread runner{[&] { io.run(); }};
        std::this_thread::sleep_for(500ms); // all of them wait
        auto const started = std::chrono::steady_clock::now();
        holder
            ->kill_hard(); // its pidfd wakes the first; each release wakes the next (20 s polls never would)
        threads.clear();
        runner.join();
        CHECK(acquired.load() == 24);
        CHECK(std::chrono::steady_clock::now() - started < 9s);
    }

    TEST_CASE("Doorbell FIFOs stay bounded after 3,000 contended paths") {
        test::scratch_dir dir;
        test::scratch_dir links;
        auto const other_spelling = spellings_of(dir.path(), links.path(), 1).front();
        auto const before = doorbells_of(dir.path()); // a reused inode may name FIFOs that earlier runs left
        for (int i = 0; i < 3000; ++i) {
            auto const name = "lock" + std::to_string(i);
            openlock::file_lock holder{dir / name};
            holder.acquire();
            openlock::file_lock waiter{other_spelling / name};
            CHECK_FALSE(waiter.try_acquire()); // contended: it sets up its wake sources and doorbell
        }
        CHECK(doorbells_of(dir.path()) - before <= 1);
    }

    TEST_CASE("No descriptor of a waiter or its judgement lands on 0, 1 or 2") {
        test::scratch_dir dir;
        test::scratch_dir links;
        auto const other_spelling = spellings_of(dir.path(), links.path(), 1).front();
        auto holder = test::start_helper({"hold", (dir / "streams.lock").string()});
        REQUIRE(holder->read_line().starts_with("locked"));
        // A child started with its standard streams closed (`cmd <&- >&- 2>&-`) waits on a lock of another
        // process and on one of its own: the watcher, the doorbell, the holder's pidfd and the /proc reads of
        // the judgement all open descriptors then.
        pid_t const child = ::fork();
        REQUIRE(child >= 0);
        if (child == 0) {
            ::close(0);
            ::close(1);
            ::close(2);
            int failures = 0;
            {
                // hard_link: no claim file is kept open (the claim files' descriptors are another unit's).
                auto settings = events_only();
                settings.method = openlock::claim_method::hard_link;
                openlock::file_lock waiter{dir / "streams.lock", std::nullopt, settings};
                failures += waiter.try_lock_for(50ms) ? 1 : 0;
                openlock::file_lock mine{dir / "own.lock", std::nullopt, settings};
                mine.acquire();
                openlock::file_lock second{other_spelling / "own.lock", std::nullopt, settings};
                failures += second.try_lock_for(50ms) ? 1 : 0;
                for (int standard = 0; standard <= 2; ++standard)
                    if (::fcntl(standard, F_GETFD) != -1) failures += 10;
            }
            ::_exit(failures);
        }
        int status = 0;
        REQUIRE(::waitpid(child, &status, 0) == child);
        REQUIRE(WIFEXITED(status));
        CHECK(WEXITSTATUS(status) == 0);
        holder->kill_hard();
    }

    TEST_CASE("A doorbell FIFO that another process listens on is not removed") {
        test::scratch_dir dir;
        test::scratch_dir links;
        auto const lock_path = dir / "shared.lock";
        auto const before = doorbells_of(dir.path()); // a reused inode may name FIFOs that earlier runs left
        openlock::file_lock holder{lock_path};
        holder.acquire();
        auto other = test::start_helper({"queue", lock_path.string(), "0"}); // waits behind us: listens
        // It listens once it waits (slow under sanitizers: up to 10 s).
        for (int tries = 0; tries < 1000 && doorbells_of(dir.path()) - before == 0; ++tries)
            std::this_thread::sleep_for(10ms);
        REQUIRE(doorbells_of(dir.path()) - before == 1);
        {
            openlock::file_lock waiter{spellings_of(dir.path(), links.path(), 1).front() / "shared.lock"};
            CHECK_FALSE(waiter.try_acquire()); // listens on the same doorbell, then leaves it
        }
        CHECK(doorbells_of(dir.path()) - before == 1); // the other process still listens
        holder.release();
        CHECK(other->read_line() == "acquired");
        CHECK(other->wait() == 0);
    }

} // TEST_SUITE
#endif
