// SPDX-License-Identifier: MIT
// openlock::etcd_lock against a real etcd (test/support/etcd.hpp starts one per test process on 127.0.0.1):
// the Mutex recipe's exclusion, FIFO hand-off and fencing tokens, leases that run out, servers that cannot be
// reached, and interop with `etcdctl lock`.
#include "support/etcd.hpp"
#include "support/support.hpp"

#include <doctest/doctest.h>

#include <csignal>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

import openlock.etcd;

using namespace std::chrono_literals;

namespace {

using steady = std::chrono::steady_clock;

double seconds_since(steady::time_point start) {
    return std::chrono::duration<double>(steady::now() - start).count();
}

/// Options with a lease of `lifetime` (etcd's shortest is a second) and keep-alive as asked.
openlock::options leased(std::chrono::seconds lifetime, bool keep_alive) {
    auto settings = openlock::get_defaults();
    settings.lifetime = lifetime;
    settings.keep_alive = keep_alive;
    return settings;
}

std::string etcdctl_endpoints() {
    return "--endpoints=" + test::etcd_server::shared().endpoint();
}

std::string read_all(std::filesystem::path const& path) {
    std::ifstream in{path};
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
}

static_assert(openlock::cross_process_lock<openlock::file_lock>);
static_assert(openlock::cross_process_lock<openlock::etcd_lock>);

/// Generic code over either lock: holds it once under std::unique_lock and says its token.
template <openlock::cross_process_lock Lock>
std::uint64_t token_of_one_hold(Lock& lock) {
    std::unique_lock const guard{lock};
    return lock.owns_lock() ? lock.token() : 0;
}

/// The keys under "<name>/" as etcdctl lists them.
std::vector<std::string> keys_under(std::string const& name) {
    REQUIRE_MESSAGE(test::have_program("etcdctl"),
                    "etcdctl is not installed (Debian: etcd-client; tools/bootstrap.sh)");
    auto const get =
        test::spawn({"etcdctl", etcdctl_endpoints(), "get", "--prefix", "--keys-only", name + "/"});
    REQUIRE(test::wait_exit(get.pid, 10s) == std::optional<int>{0});
    std::istringstream lines{read_all(get.output)};
    std::filesystem::remove(get.output);
    std::vector<std::string> keys;
    for (std::string line; std::getline(lines, line);)
        if (!line.empty()) keys.push_back(line);
    return keys;
}

} // namespace

TEST_SUITE("etcd lock") {

    TEST_CASE("acquire, hold and release: locked, owns_lock, owner, token, expiration, still_held") {
        auto const url = test::etcd_server::shared().url(test::unique_lock_name());
        openlock::etcd_lock lock{url, 5s};
        CHECK_FALSE(lock.locked());
        CHECK_FALSE(lock.owns_lock());
        CHECK(lock.token() == 0);
        CHECK_FALSE(lock.owner());
        CHECK_FALSE(lock.expiration());
        lock.acquire();
        CHECK(lock.owns_lock());
        CHECK(lock.locked());
        CHECK(lock.still_held());
        CHECK(lock.token() > 0);
        auto const holder = lock.owner();
        REQUIRE(holder);
        CHECK(holder->pid == ::getpid());
        auto const ends = lock.expiration();
        REQUIRE(ends);
        CHECK(*ends > std::chrono::system_clock::now());
        CHECK(*ends <= std::chrono::system_clock::now() + openlock::etcd_default_lifetime + 1s);
        lock.refresh();
        lock.release();
        CHECK_FALSE(lock.owns_lock());
        CHECK_FALSE(lock.locked());
        CHECK(lock.token() == 0);
        CHECK_THROWS_AS(lock.release(), openlock::invalid_release);
        std::error_code error;
        lock.release(error);
        CHECK(error == openlock::errc::invalid_release);
        CHECK_THROWS_AS(lock.refresh(), openlock::invalid_release);
    }

    TEST_CASE("try_acquire: contention between two leases is a value, and the loser leaves no key") {
        auto const name = test::unique_lock_name();
        auto const url = test::etcd_server::shared().url(name);
        openlock::etcd_lock first{url, 5s};
        openlock::etcd_lock second{url, 5s};
        CHECK(first.try_acquire());
        CHECK_FALSE(second.try_acquire());
        std::error_code error;
        CHECK_FALSE(second.try_acquire(error));
        CHECK_FALSE(error);
        CHECK_FALSE(second.owns_lock());
        auto start = steady::now();
        CHECK_THROWS_AS(second.acquire(300ms), openlock::timeout_error);
        CHECK(seconds_since(start) < 2.0);
        start = steady::now();
        second.acquire(200ms, error);
        CHECK(error == openlock::errc::timeout);
        CHECK(seconds_since(start) < 2.0);
        CHECK(keys_under(name).size() == 1); // the holder's alone
        first.release();
        CHECK(keys_under(name).empty());
        // Neither the failed tries nor the timed-out waits left a key: the lock is free.
        CHECK_FALSE(first.locked());
        CHECK(second.try_acquire());
        CHECK_FALSE(first.try_acquire());
        second.release();
    }

    TEST_CASE("a timeout names the holder") {
        auto const url = test::etcd_server::shared().url(test::unique_lock_name());
        openlock::etcd_lock holder{url};
        holder.acquire();
        openlock::etcd_lock waiter{url, 200ms};
        try {
            waiter.acquire();
            FAIL("acquired a held lock");
        } catch (openlock::timeout_error const& e) {
            CHECK(e.holder().find("pid " + std::to_string(::getpid())) != std::string::npos);
            CHECK(e.path() == url);
        }
    }

    TEST_CASE("generic code takes either lock: file_lock and etcd_lock are both a cross_process_lock") {
        test::scratch_dir dir;
        auto fenced = openlock::get_defaults();
        fenced.fencing = true;
        openlock::file_lock file{dir / "generic.lock", 5s, fenced};
        openlock::etcd_lock etcd{test::etcd_server::shared().url(test::unique_lock_name()), 5s};
        CHECK(token_of_one_hold(file) > 0);
        CHECK(token_of_one_hold(etcd) > 0);
        CHECK_FALSE(file.owns_lock());
        CHECK_FALSE(etcd.owns_lock());
    }

    TEST_CASE("tokens are create revisions: strictly increasing across acquisitions and objects") {
        auto const url = test::etcd_server::shared().url(test::unique_lock_name());
        openlock::etcd_lock a{url, 5s};
        openlock::etcd_lock b{url, 5s};
        std::uint64_t last = 0;
        for (int round = 0; round < 3; ++round) {
            for (auto* lock : {&a, &b}) {
                lock->acquire();
                CHECK(lock->token() > last);
                last = lock->token();
                lock->release();
            }
        }
    }

    TEST_CASE("uncontended acquire and release take a few loopback round trips") {
        auto const url = test::etcd_server::shared().url(test::unique_lock_name());
        openlock::etcd_lock lock{url, 5s};
        constexpr int rounds = 50;
        auto const start = steady::now();
        for (int round = 0; round < rounds; ++round) {
            lock.acquire();
            lock.release();
        }
        auto const each = seconds_since(start) / rounds;
        MESSAGE("uncontended acquire+release: " << each * 1000 << " ms (grant, txn, txn, revoke)");
        CHECK(each < 0.5);
    }

    TEST_CASE("waiters are woken in FIFO order by the holder's release, at once") {
        auto const url = test::etcd_server::shared().url(test::unique_lock_name());
        openlock::etcd_lock holder{url, 5s};
        holder.acquire();
        std::mutex order_mutex;
        std::vector<int> order;
        std::atomic<double> first_wake{0};
        std::atomic<steady::rep> released{0}; // steady::now() at the release, as a count (read by a thread)
        auto const wait = [&](int who, bool timed) {
            openlock::etcd_lock waiter{url, 20s};
            waiter.acquire();
            if (timed) first_wake = seconds_since(steady::time_point{steady::duration{released.load()}});
            {
                std::lock_guard const hold{order_mutex};
                order.push_back(who);
            }
            std::this_thread::sleep_for(100ms);
            waiter.release();
        };
        std::thread one{wait, 1, true};
        std::this_thread::sleep_for(300ms); // one queues before two
        std::thread two{wait, 2, false};
        std::this_thread::sleep_for(300ms);
        released = steady::now().time_since_epoch().count();
        holder.release();
        one.join();
        two.join();
        CHECK(order == std::vector<int>{1, 2});
        MESSAGE("release to the next holder: " << first_wake.load() * 1000 << " ms");
        CHECK(first_wake.load() < 0.5); // a watch event, not a poll
    }

    TEST_CASE("std::unique_lock and the timed calls drive an etcd_lock: a second acquire by the holding "
              "thread is already_locked") {
        auto const url = test::etcd_server::shared().url(test::unique_lock_name());
        openlock::etcd_lock lock{url, 2s};
        openlock::etcd_lock other{url, 2s};
        {
            std::unique_lock guard{lock};
            CHECK(lock.owns_lock());
            CHECK_FALSE(other.try_lock());
            CHECK_FALSE(other.try_lock_for(200ms));
            CHECK_FALSE(other.try_lock_until(steady::now() + 100ms));
            CHECK_THROWS_AS(lock.acquire(), openlock::already_locked);
        }
        CHECK_FALSE(lock.owns_lock());
        CHECK(other.try_lock_for(1s));
        other.unlock();
    }

    TEST_CASE("processes that count under the lock lose no update, and tokens only grow") {
        auto const url = test::etcd_server::shared().url(test::unique_lock_name());
        auto const counter =
            std::filesystem::temp_directory_path() / ("openlock-etcd-counter-" + std::to_string(::getpid()));
        {
            std::ofstream{counter} << "0 0\n";
        }
        constexpr int processes = 4;
        constexpr int rounds = 15;
        std::vector<pid_t> children;
        for (int p = 0; p < processes; ++p) {
            auto const child = ::fork();
            REQUIRE(child >= 0);
            if (child == 0) {
                // Read, pause, write: without exclusion two holders would lose an update. The file also keeps
                // the last holder's token, which the next one must exceed.
                int status = 0;
                try {
                    openlock::etcd_lock lock{url, 30s};
                    for (int round = 0; round < rounds && status == 0; ++round) {
                        std::lock_guard const hold{lock};
                        long long count = 0;
                        unsigned long long last_token = 0;
                        std::ifstream{counter} >> count >> last_token;
                        if (lock.token() <= last_token) status = 3;
                        std::this_thread::sleep_for(1ms);
                        std::ofstream{counter} << count + 1 << ' ' << lock.token() << '\n';
                    }
                } catch (...) {
                    status = 2;
                }
                ::_exit(status);
            }
            children.push_back(child);
        }
        for (auto const child : children)
            CHECK(test::wait_exit(child, 60s) == std::optional<int>{0});
        long long count = 0;
        std::ifstream{counter} >> count;
        CHECK(count == processes * rounds);
        std::filesystem::remove(counter);
    }

    TEST_CASE("a lease that is not kept alive runs out: a waiter gets in, the old holder learns it lost") {
        auto const url = test::etcd_server::shared().url(test::unique_lock_name());
        openlock::etcd_lock holder{url, 5s, leased(1s, false)};
        holder.acquire();
        openlock::etcd_lock waiter{url, 10s};
        auto const start = steady::now();
        waiter.acquire();
        auto const waited = seconds_since(start);
        MESSAGE("the 1 s lease freed the lock after " << waited << " s");
        CHECK(waited < 4.0);
        CHECK(waiter.owns_lock());
        CHECK_FALSE(holder.still_held());
        CHECK_THROWS_AS(holder.refresh(), openlock::not_locked);
        CHECK_THROWS_AS(holder.release(), openlock::not_locked);
        CHECK_FALSE(holder.owns_lock());
        CHECK(waiter.still_held());
        waiter.release();
    }

    TEST_CASE("keep-alive holds a short lease for as long as the lock is held") {
        auto const url = test::etcd_server::shared().url(test::unique_lock_name());
        openlock::etcd_lock holder{url, 5s, leased(1s, true)};
        holder.acquire();
        std::this_thread::sleep_for(3s);
        CHECK(holder.still_held());
        openlock::etcd_lock other{url};
        CHECK_FALSE(other.try_acquire());
        holder.release();
        CHECK(other.try_acquire());
        other.release();
    }

    TEST_CASE(
        "keep-alive sees a key deleted behind the holder's back: on_lost, still_held false, not_locked") {
        if (!test::have_program("etcdctl"))
            FAIL("etcdctl is not installed (Debian: etcd-client; tools/bootstrap.sh)");
        auto const name = test::unique_lock_name();
        std::atomic<int> lost{0};
        std::atomic<int> lost_reports{0};
        auto settings = leased(1s, true);
        settings.on_lost = [&](std::filesystem::path const&) { ++lost; };
        settings.on_diagnostic = [&](openlock::diagnostic const& what) {
            if (what.what == openlock::diagnostic::kind::lock_lost) ++lost_reports;
        };
        openlock::etcd_lock holder{test::etcd_server::shared().url(name), 5s, settings};
        holder.acquire();
        // A forced break: the key goes, the lease lives on (keep-alive alone would not notice).
        auto const del = test::spawn({"etcdctl", etcdctl_endpoints(), "del", "--prefix", name + "/"});
        CHECK(test::wait_exit(del.pid, 10s) == std::optional<int>{0});
        std::filesystem::remove(del.output);
        auto const until = steady::now() + 5s;
        while (lost.load() == 0 && steady::now() < until)
            std::this_thread::sleep_for(20ms);
        CHECK(lost.load() == 1);
        CHECK(lost_reports.load() == 1);
        CHECK_FALSE(holder.still_held());
        CHECK(holder.owns_lock()); // until release() says so
        CHECK_THROWS_AS(holder.release(), openlock::not_locked);
        CHECK_FALSE(holder.owns_lock());
    }

    TEST_CASE("a queued waiter and a holder ride out a server restart shorter than their leases") {
        auto& server = test::etcd_server::shared();
        auto const url = server.url(test::unique_lock_name());
        openlock::etcd_lock holder{url, 5s};
        holder.acquire();
        std::atomic<bool> acquired{false};
        std::error_code waiter_error;
        std::thread waiting{[&] {
            openlock::etcd_lock waiter{url, 30s, leased(3s, false)}; // renews every second while it waits
            waiter.acquire(waiter_error);
            acquired = waiter.owns_lock();
            if (acquired) waiter.release(waiter_error);
        }};
        std::this_thread::sleep_for(500ms);
        server.stop();
        std::this_thread::sleep_for(1500ms); // the waiter's renewal finds no server (connection refused)
        server.start();
        CHECK_FALSE(acquired.load());
        CHECK(holder.still_held()); // leases survive a restart (a new leader renews them in full)
        holder.release();
        waiting.join();
        CHECK(acquired.load());
        CHECK_FALSE(waiter_error);
    }

    TEST_CASE("a waiter keeps its place in the queue past its own lease's TTL") {
        auto const url = test::etcd_server::shared().url(test::unique_lock_name());
        openlock::etcd_lock holder{url, 5s};
        holder.acquire();
        std::mutex order_mutex;
        std::vector<int> order;
        auto const wait = [&](int who, openlock::options settings) {
            openlock::etcd_lock waiter{url, 20s, std::move(settings)};
            waiter.acquire();
            {
                std::lock_guard const hold{order_mutex};
                order.push_back(who);
            }
            waiter.release();
        };
        // The first waiter's lease is 1 s without keep-alive: only its own renewals while it waits keep its
        // key.
        std::thread first{wait, 1, leased(1s, false)};
        std::this_thread::sleep_for(2500ms);
        std::thread second{wait, 2, openlock::get_defaults()};
        std::this_thread::sleep_for(500ms);
        holder.release();
        first.join();
        second.join();
        CHECK(order == std::vector<int>{1, 2});
    }

    TEST_CASE("a crashed holder (SIGKILL) frees the lock when its lease runs out") {
        auto const url = test::etcd_server::shared().url(test::unique_lock_name());
        int ready[2];
        REQUIRE(::pipe(ready) == 0);
        auto const child = ::fork();
        REQUIRE(child >= 0);
        if (child == 0) {
            // The child holds with a 1 s lease kept alive, says so, and waits to be killed.
            ::close(ready[0]);
            try {
                openlock::etcd_lock lock{url, 5s, leased(1s, true)};
                lock.acquire();
                char const yes = 'y';
                (void)!::write(ready[1], &yes, 1);
                for (;;)
                    ::pause();
            } catch (...) {
                ::_exit(2); // the parent sees the pipe close without an answer and fails the test
            }
            ::_exit(1);
        }
        ::close(ready[1]);
        char answer = 0;
        REQUIRE(::read(ready[0], &answer, 1) == 1);
        ::close(ready[0]);
        openlock::etcd_lock waiter{url, 10s};
        CHECK_FALSE(waiter.try_acquire());
        auto const holder = waiter.owner();
        REQUIRE(holder);
        CHECK(holder->pid == child);
        std::this_thread::sleep_for(1500ms); // longer than the lease: keep-alive keeps it
        CHECK_FALSE(waiter.try_acquire());
        test::kill_and_reap(child);
        auto const start = steady::now();
        waiter.acquire();
        MESSAGE("a killed holder's 1 s lease freed the lock after " << seconds_since(start) << " s");
        CHECK(seconds_since(start) < 4.0);
        waiter.release();
    }

    TEST_CASE("a child after fork() holds nothing: its copy neither releases nor stops the parent's lock") {
        auto const url = test::etcd_server::shared().url(test::unique_lock_name());
        openlock::etcd_lock lock{url, 5s, leased(1s, true)};
        lock.acquire();
        auto const child = ::fork();
        REQUIRE(child >= 0);
        if (child == 0) {
            int status = lock.owns_lock() ? 1 : 0;
            if (lock.token() != 0) status = 2;
            std::error_code error;
            lock.release(error);
            if (error != openlock::errc::invalid_release) status = 3;
            lock.~etcd_lock(); // as the end of its scope in the child would (its keep-alive thread is not
                               // here)
            ::_exit(status);
        }
        auto const status = test::wait_exit(child, 10s);
        REQUIRE(status);
        CHECK(*status == 0);
        std::this_thread::sleep_for(1500ms); // past the 1 s lease: the parent's keep-alive still runs
        CHECK(lock.owns_lock());
        CHECK(lock.still_held());
        lock.release();
    }

    TEST_CASE(
        "a server that cannot be reached is a typed error within the timeout, never success or a hang") {
        auto const dead = "etcd://127.0.0.1:" + std::to_string(test::free_port()) + "/x";
        openlock::etcd_lock lock{dead, 2s};
        auto start = steady::now();
        try {
            lock.acquire();
            FAIL("acquired with no server");
        } catch (openlock::lock_error const& e) {
            CHECK(e.code() == openlock::errc::unavailable);
        }
        CHECK(seconds_since(start) < 2.0);
        std::error_code error;
        CHECK_FALSE(lock.try_acquire(error));
        CHECK(error == openlock::errc::unavailable);
        CHECK_FALSE(lock.locked(error));
        CHECK(error == openlock::errc::unavailable);
        CHECK_FALSE(lock.owns_lock());

        test::silent_server silent; // accepts connections (the kernel does) but never answers
        openlock::etcd_lock hung{"etcd://127.0.0.1:" + std::to_string(silent.port()) + "/x", 1s};
        start = steady::now();
        hung.acquire(error);
        CHECK(error == openlock::errc::unavailable);
        auto const waited = seconds_since(start);
        MESSAGE("a silent server failed the 1 s acquire after " << waited << " s");
        CHECK(waited < 1.5);
        CHECK_FALSE(hung.owns_lock());
    }

    TEST_CASE("several endpoints: a dead one is skipped for one that answers") {
        auto const name = test::unique_lock_name();
        auto const url = "etcd://127.0.0.1:" + std::to_string(test::free_port()) + "," +
                         test::etcd_server::shared().endpoint() + "/" + name;
        openlock::etcd_lock lock{url, 5s};
        lock.acquire();
        openlock::etcd_lock direct{test::etcd_server::shared().url(name)};
        CHECK_FALSE(direct.try_acquire());
        lock.release();
        CHECK(direct.try_acquire());
        direct.release();
    }

    TEST_CASE("a URL that is not etcd://host:port[,host:port]/name is invalid_option") {
        for (char const* url : {"", "http://127.0.0.1:2379/x", "etcd://127.0.0.1:2379",
                                "etcd://127.0.0.1:2379/", "etcd://127.0.0.1/x", "etcd://127.0.0.1:0/x",
                                "etcd://127.0.0.1:99999/x", "etcd://:2379/x", "etcd://127.0.0.1:2379,/x"}) {
            INFO(url);
            CHECK_THROWS_AS(openlock::etcd_lock{url}, openlock::invalid_option);
        }
        CHECK_NOTHROW(openlock::etcd_lock{"etcd://[::1]:2379,localhost:2380/a/b"});
    }

    TEST_CASE("names of any length and bytes are the key prefix that etcdctl sees") {
        if (!test::have_program("etcdctl"))
            FAIL("etcdctl is not installed (Debian: etcd-client; tools/bootstrap.sh)");
        // Lengths 1 to 4 after the common part give every base64 padding; UTF-8 and a space for the bytes.
        for (std::string const tail :
             {"a", "ab", "abc", "abcd", "n\u00e4me with space", "\xe5\x90\x8d/sub"}) {
            auto const name = test::unique_lock_name() + tail;
            INFO(name);
            openlock::etcd_lock lock{test::etcd_server::shared().url(name), 5s};
            lock.acquire();
            openlock::etcd_lock other{test::etcd_server::shared().url(name)};
            CHECK_FALSE(other.try_acquire());
            auto const get =
                test::spawn({"etcdctl", etcdctl_endpoints(), "get", "--prefix", "--keys-only", name + "/"});
            CHECK(test::wait_exit(get.pid, 10s) == std::optional<int>{0});
            auto const keys = read_all(get.output);
            std::filesystem::remove(get.output);
            REQUIRE(keys.starts_with(name + "/"));
            auto const lease_hex = keys.substr(name.size() + 1, keys.find('\n') - name.size() - 1);
            CHECK_FALSE(lease_hex.empty());
            CHECK(lease_hex.find_first_not_of("0123456789abcdef") == std::string::npos);
            lock.release();
            CHECK_FALSE(other.locked());
        }
    }

    TEST_CASE("etcdctl lock and etcd_lock exclude each other on one name") {
        if (!test::have_program("etcdctl"))
            FAIL("etcdctl is not installed (Debian: etcd-client; tools/bootstrap.sh)");
        auto const name = test::unique_lock_name();
        auto const url = test::etcd_server::shared().url(name);

        // etcdctl waits for our lock, and gets it when we release.
        openlock::etcd_lock lock{url, 10s};
        lock.acquire();
        auto const waiting =
            test::spawn({"etcdctl", etcdctl_endpoints(), "lock", name, "echo", "etcdctl-ran"});
        CHECK_FALSE(test::wait_exit(waiting.pid, 1s));
        lock.release();
        auto const status = test::wait_exit(waiting.pid, 10s);
        REQUIRE(status);
        CHECK(*status == 0);
        CHECK(read_all(waiting.output).find("etcdctl-ran") != std::string::npos);

        // We wait for etcdctl's lock (its key holds no record: owner() is none, locked() is true).
        auto const holding = test::spawn({"etcdctl", etcdctl_endpoints(), "lock", name, "sleep", "2"});
        auto const until = steady::now() + 10s;
        while (!lock.locked() && steady::now() < until)
            std::this_thread::sleep_for(20ms);
        CHECK(lock.locked());
        CHECK_FALSE(lock.owner());
        CHECK_FALSE(lock.try_acquire());
        auto const start = steady::now();
        lock.acquire();
        MESSAGE("etcdctl's hold ended after " << seconds_since(start) << " s");
        CHECK(test::wait_exit(holding.pid, 1s));
        lock.release();
        std::filesystem::remove(waiting.output);
        std::filesystem::remove(holding.output);
    }
}
