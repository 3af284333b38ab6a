// SPDX-License-Identifier: MIT
// The floors: a pipe wake-up; openlock's own handoff system calls, and the least handoff through a lock file,
// both without lock logic.
#include "common.hpp"

namespace handoff {
// ---- wake-up floor

// One process writes a byte into a pipe that another one is blocked reading; a pause between pings lets the
// reader fall asleep as a lock waiter does.
percentiles pipe_floor(int pings) {
    struct timing {
        std::atomic<std::int64_t> sent_at{0};
    };
    shared<timing> when;
    pings = std::max(pings, 1);
    shared<std::int64_t> samples{static_cast<std::size_t>(pings)};
    pipe_pair ping;
    pipe_pair pong;
    auto const reader = spawn([&] {
        ping.close_write();
        pong.close_read();
        for (int i = 0; i < pings; ++i) {
            if (!ping.receive()) return false;
            samples[static_cast<std::size_t>(i)] = monotonic_ns() - when->sent_at.load();
            pong.send();
        }
        return true;
    });
    ping.close_read();
    pong.close_write();
    for (int i = 0; i < pings; ++i) {
        sleep_ns(200'000);
        when->sent_at.store(monotonic_ns());
        ping.send();
        if (!pong.receive()) break;
    }
    reap({reader}, 10s);
    return percentiles_of(std::vector<std::int64_t>(&samples[0], &samples[0] + pings));
}

// The same handoff through a lock file, without lock logic, in one of two ways (floor_calls):
//   openlock  openlock's system calls: the releaser's statx, unlink and doorbell write, then the waiter's
//             wake-up from an exclusive epoll wait on the doorbell, its read of it and the link of a nameless
//             file made beforehand. What a release-to-next-holder handoff of this protocol cannot go below
//             here.
//   bare      the least any lock whose holders make and remove a lock file does: the releaser's unlink, the
//             waiter's wake-up by inotify (IN_DELETE) and its link of a file made beforehand. No check, no
//             doorbell: what no file lock's handoff can go below here.
percentiles file_floor(int pings, fs::path const& directory, floor_calls calls) {
    struct timing {
        std::atomic<std::int64_t> sent_at{0};
    };
    shared<timing> when;
    pings = std::max(pings, 1);
    shared<std::int64_t> samples{static_cast<std::size_t>(pings)};
    auto const lock = directory / "floor.lock";
    auto const bell = directory / "floor.bell";
    bool const bare = calls == floor_calls::bare;
    int doorbell = -1;
    if (!bare) {
        if (::mkfifo(bell.c_str(), 0600) != 0)
            throw std::system_error{errno, std::generic_category(), "mkfifo"};
        doorbell = ::open(bell.c_str(), O_RDWR | O_NONBLOCK | O_CLOEXEC);
        if (doorbell < 0) throw std::system_error{errno, std::generic_category(), "open"};
    }
    // The first release removes a lock file as every later one does (an unlink of nothing raises no event).
    if (std::ofstream made{lock}; !made) throw std::system_error{errno, std::generic_category(), "create"};
    pipe_pair pong;
    auto const waiter = spawn([&] {
        pong.close_read();
        // bare: the removal's own event; openlock: an exclusive epoll wait on the doorbell
        int const events = bare ? ::inotify_init1(IN_CLOEXEC) : ::epoll_create1(EPOLL_CLOEXEC);
        if (events < 0) return false;
        if (bare) {
            if (::inotify_add_watch(events, directory.c_str(), IN_DELETE) < 0) return false;
        } else {
            epoll_event listen{};
            listen.events = EPOLLIN | EPOLLEXCLUSIVE;
            listen.data.fd = doorbell;
            if (::epoll_ctl(events, EPOLL_CTL_ADD, doorbell, &listen) != 0) return false;
        }
        int linked =
            -1; // kept open while linked, as a holder's pin is, and closed after the releaser's unlink
        for (int i = 0; i < pings; ++i) {
            int const staged = ::open(directory.c_str(), O_TMPFILE | O_WRONLY | O_CLOEXEC, 0644);
            if (staged < 0 || ::write(staged, "0\n", 2) != 2) return false;
            if (linked >= 0) ::close(linked);
            pong.send(); // ready: the releaser may go
            alignas(inotify_event) char bytes[4096];
            if (bare) {
                if (::read(events, bytes, sizeof bytes) <= 0) return false; // blocks until the unlink
            } else {
                epoll_event ready{};
                while (::epoll_wait(events, &ready, 1, 10'000) <= 0) {
                }
                (void)!::read(doorbell, bytes, sizeof bytes);
            }
            if (::linkat(staged, "", AT_FDCWD, lock.c_str(), AT_EMPTY_PATH) != 0) return false;
            samples[static_cast<std::size_t>(i)] = monotonic_ns() - when->sent_at.load();
            linked = staged;
        }
        return true;
    });
    pong.close_write();
    for (int i = 0; i < pings; ++i) {
        if (!pong.receive()) break;
        sleep_ns(200'000);
        when->sent_at.store(monotonic_ns());
        if (bare) {
            ::unlink(lock.c_str());
        } else {
            struct stat seen{};
            ::stat(lock.c_str(), &seen);
            ::unlink(lock.c_str());
            char const byte = 1;
            (void)!::write(doorbell, &byte, 1);
        }
    }
    reap({waiter}, 10s);
    if (doorbell >= 0) ::close(doorbell);
    std::error_code ignored;
    fs::remove(lock, ignored);
    fs::remove(bell, ignored);
    return percentiles_of(std::vector<std::int64_t>(&samples[0], &samples[0] + pings));
}

} // namespace handoff
