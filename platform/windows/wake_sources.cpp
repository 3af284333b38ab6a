// SPDX-License-Identifier: MIT
// Event-driven waiting behind the :sys seam (Windows).
//
// Why these calls: ReadDirectoryChangesW, overlapped, reports the names that change in the lock's directory,
// so a waiter wakes when the lock file or the takeover guard comes or goes, and not for the claim files of
// other waiters (FindFirstChangeNotificationW would wake every waiter for every claim file, each waking the
// others again). It is started before the waiter's first look, so a release after that look is always
// reported. A holder on this machine is watched through its process handle (OpenProcess(SYNCHRONIZE)), which
// is signalled the moment it exits. Network drives (GetDriveTypeW == DRIVE_REMOTE, UNC paths) report only
// this machine's changes reliably: there (file_systems.cpp) the waiter polls with backoff, as on NFS. Polling
// stays the safety net everywhere (a buffer overflow, a directory that cannot be watched).
// Asynchronous waits look at the same two handles every 20 ms between timer waits (see async_wait_for).
module;
#include "win32.hpp"

#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/system/system_error.hpp>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <gsl/gsl>
#include <memory>
#include <string>
#include <string_view>

module openlock;
import :sys;

namespace openlock::sys {
namespace {

using win32::unique_handle;

constexpr DWORD watched_changes =
    FILE_NOTIFY_CHANGE_FILE_NAME | FILE_NOTIFY_CHANGE_DIR_NAME | FILE_NOTIFY_CHANGE_LAST_WRITE;

bool same_name(std::wstring_view a, std::wstring_view b) noexcept {
    // File names compare without case on Windows file systems.
    return !a.empty() && ::CompareStringOrdinal(a.data(), static_cast<int>(a.size()), b.data(),
                                                static_cast<int>(b.size()), TRUE) == CSTR_EQUAL;
}

// Milliseconds for WaitForMultipleObjects, rounded up (never a busy loop) and below INFINITE.
DWORD wait_milliseconds(std::chrono::nanoseconds left) noexcept {
    auto const ms = std::chrono::ceil<std::chrono::milliseconds>(left).count();
    return static_cast<DWORD>(std::clamp<std::int64_t>(ms, 0, INFINITE - 1));
}

} // namespace

struct wake_sources::impl {
    unique_handle directory; ///< the watched directory, opened for overlapped ReadDirectoryChangesW
    unique_handle changed;   ///< manual-reset event of the pending read
    unique_handle holder;    ///< the watched holder's process (SYNCHRONIZE)
    OVERLAPPED pending{};
    bool reading = false;
    std::int64_t holder_pid = 0;
    std::wstring lock_name;
    std::wstring guard_name;
    alignas(DWORD) std::array<std::byte, 16384> buffer{};

    ~impl() { stop(); }

    void stop() {
        if (reading) {
            ::CancelIoEx(directory.get(), &pending);
            DWORD ignored = 0;
            ::GetOverlappedResult(directory.get(), &pending, &ignored, TRUE);
            reading = false;
        }
        directory.reset(); // polling from now on
    }

    // Starts the next read of changes; false (and polling from then on) when it cannot.
    bool start_reading() {
        pending = {};
        pending.hEvent = changed.get();
        reading = ::ReadDirectoryChangesW(directory.get(), buffer.data(), static_cast<DWORD>(buffer.size()),
                                          FALSE, watched_changes, nullptr, &pending, nullptr) != FALSE;
        if (!reading) stop();
        return reading;
    }

    // Takes what has arrived, without waiting; true when it concerns the lock or its guard (or was lost).
    bool relevant_events() {
        bool relevant = false;
        while (reading && ::WaitForSingleObject(changed.get(), 0) == WAIT_OBJECT_0) {
            DWORD length = 0;
            if (!::GetOverlappedResult(directory.get(), &pending, &length, FALSE)) {
                reading = false;
                stop(); // the directory went away or cannot be read: sleep-polling from now on
                return true;
            }
            if (length == 0) relevant = true; // the buffer overflowed: anything may have changed
            for (std::size_t at = 0; length != 0 && at < length;) {
                auto const* info = reinterpret_cast<FILE_NOTIFY_INFORMATION const*>(buffer.data() + at);
                std::wstring_view const name{info->FileName, info->FileNameLength / sizeof(wchar_t)};
                if (same_name(name, lock_name) || same_name(name, guard_name)) relevant = true;
                if (info->NextEntryOffset == 0) break;
                at += info->NextEntryOffset;
            }
            if (!start_reading()) return true;
        }
        return relevant;
    }
};

// No doorbell on Windows: a waiter is woken by the directory change (a named pipe or event could carry one,
// docs/protocol.md 8.6), so directory events always stay on.
wake_sources::wake_sources(std::filesystem::path const& lock_file, std::filesystem::path const& guard,
                           doorbell_use /*bell_use*/)
    : impl_(std::make_unique<impl>()) {
    auto directory = lock_file.parent_path();
    if (directory.empty()) directory = ".";
    impl_->lock_name = lock_file.filename().native();
    impl_->guard_name = guard.filename().native();
    if (is_network_file_system(directory)) return;
    impl_->changed.reset(::CreateEventW(nullptr, TRUE, FALSE, nullptr));
    impl_->directory.reset(::CreateFileW(win32::long_path(directory).c_str(), FILE_LIST_DIRECTORY,
                                         FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE, nullptr,
                                         OPEN_EXISTING, FILE_FLAG_BACKUP_SEMANTICS | FILE_FLAG_OVERLAPPED,
                                         nullptr));
    if (!impl_->changed.valid() || !impl_->directory.valid()) {
        impl_->directory.reset(); // no such directory, or no rights: poll
        return;
    }
    impl_->start_reading();
}

wake_sources::~wake_sources() = default;

std::uint64_t wake_sources::doorbell() const noexcept {
    return 0;
}

void wake_sources::ring() noexcept {}

void ring_doorbell(std::filesystem::path const&, std::uint64_t) noexcept {}

bool wake_sources::watches_holder() const noexcept {
    return impl_->holder.valid();
}

bool wake_sources::set_directory_events(directory_events /*setting*/) {
    return false; // always on: there is no doorbell to rely on instead
}

void wake_sources::watch_holder(std::int64_t pid) {
    if (pid == impl_->holder_pid && impl_->holder.valid()) return;
    impl_->holder.reset();
    impl_->holder_pid = pid;
    if (pid > 0 && pid <= UINT32_MAX)
        impl_->holder.reset(::OpenProcess(SYNCHRONIZE, FALSE, static_cast<DWORD>(pid)));
}

bool wake_sources::watches_directory() const noexcept {
    return impl_->reading;
}

void wake_sources::drain() {
    impl_->relevant_events();
}

bool wake_sources::wait_for(std::chrono::nanoseconds timeout) {
    using clock = std::chrono::steady_clock;
    auto const until = clock::now() + timeout;
    for (;;) {
        auto const left = until - clock::now();
        if (left <= clock::duration::zero()) return false;
        std::array<HANDLE, 2> watched{};
        DWORD count = 0;
        if (impl_->reading) watched[count++] = impl_->changed.get();
        if (impl_->holder.valid()) watched[count++] = impl_->holder.get();
        if (count == 0) {
            ::Sleep(wait_milliseconds(left));
            return false;
        }
        auto const ready = ::WaitForMultipleObjects(count, watched.data(), FALSE, wait_milliseconds(left));
        if (ready == WAIT_TIMEOUT) return false;
        if (ready == WAIT_FAILED) {
            ::Sleep(wait_milliseconds(left)); // nothing left to wait on reliably: a plain sleep
            return false;
        }
        HANDLE const woke = watched[ready - WAIT_OBJECT_0];
        if (woke == impl_->holder.get()) {
            impl_->holder.reset(); // it exited: judge the lock again
            impl_->holder_pid = 0;
            return true;
        }
        if (impl_->relevant_events()) return true;
    }
}

boost::asio::awaitable<bool> wake_sources::async_wait_for(std::chrono::nanoseconds timeout) {
    namespace asio = boost::asio;
    using clock = std::chrono::steady_clock;
    // The same two handles as wait_for, looked at every 20 ms between timer waits: no thread is blocked, and
    // a cancellation ends the timer wait. Asio's windows::object_handle would wait without polling, but under
    // Wine 8 cancelling its pending wait (a parallel group whose timer fired first) never completes and
    // stalls the io_context; 20 ms is nothing next to a takeover.
    constexpr auto poll = std::chrono::milliseconds{20};
    auto const until = clock::now() + timeout;
    asio::steady_timer timer{co_await asio::this_coro::executor};
    for (;;) {
        if (impl_->holder.valid() && ::WaitForSingleObject(impl_->holder.get(), 0) == WAIT_OBJECT_0) {
            impl_->holder.reset(); // it exited: judge the lock again
            impl_->holder_pid = 0;
            co_return true;
        }
        if (impl_->relevant_events()) co_return true;
        auto const left = until - clock::now();
        if (left <= clock::duration::zero()) co_return false;
        timer.expires_after(std::min<clock::duration>(left, poll));
        co_await timer.async_wait(asio::use_awaitable); // throws operation_aborted when cancelled
    }
}

} // namespace openlock::sys
