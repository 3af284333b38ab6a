// SPDX-License-Identifier: MIT
// Windows process identity behind the :sys seam.
//
// Why these calls:
// - Windows reuses process ids soon and often (small multiples of 4), so a pid is never an identity alone:
//   the creation time from GetProcessTimes (100 ns ticks since 1601, wall-clock based and fixed at creation)
//   is the start_time, and a process with the recorded pid but another creation time is another process.
// - OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION) works on other users' processes too (not on protected
//   ones). ERROR_INVALID_PARAMETER means "no such process": gone. Any other refusal is "unknown", never gone.
//   A process that has exited but whose object is kept alive by someone's handle answers GetExitCodeProcess
//   with its exit code instead of STILL_ACTIVE, and a signalled wait: gone.
// - The name is the file name of QueryFullProcessImageNameW (the executable, which a process cannot rename).
// - host: GetComputerNameExW(ComputerNameDnsHostname), as uname's nodename on Linux.
// - boot id: the BootId counter that Windows 8+ increments at every boot (registry, PrefetchParameters),
//   prefixed by the kernel's boot time; where there is no counter (Wine), the kernel's boot time alone
//   (NtQuerySystemInformation(SystemTimeOfDayInformation): one value for every process, unlike a boot time
//   computed from GetTickCount64, whose rounding could differ between two processes). A clock change moves
//   that boot time: locks of the earlier setting then read as another boot's, "unknown", which is safe.
// - pid namespace: Windows has one process id space per machine; the field stays empty.
// - BCryptGenRandom with the system-preferred RNG for nonces.
module;
#include "win32.hpp"

#include <bcrypt.h>
#include <winternl.h>

#include <array>
#include <cstdint>
#include <gsl/gsl>
#include <iterator>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>

module openlock;
import :sys;

namespace openlock::sys {
namespace {

using win32::unique_handle;

std::string image_name(HANDLE process) {
    wchar_t path[32768];
    DWORD size = static_cast<DWORD>(std::size(path));
    if (!::QueryFullProcessImageNameW(process, 0, path, &size)) return {};
    std::wstring_view full{path, size};
    auto const separator = full.find_last_of(L"\\/");
    return win32::to_utf8(separator == std::wstring_view::npos ? full : full.substr(separator + 1));
}

std::optional<std::uint64_t> creation_time(HANDLE process) {
    FILETIME created{};
    FILETIME exited{};
    FILETIME kernel{};
    FILETIME user{};
    if (!::GetProcessTimes(process, &created, &exited, &kernel, &user)) return std::nullopt;
    return static_cast<std::uint64_t>(win32::filetime_ticks(created));
}

std::string host_name() {
    wchar_t name[256];
    DWORD size = static_cast<DWORD>(std::size(name));
    if (!::GetComputerNameExW(ComputerNameDnsHostname, name, &size)) return {};
    return win32::to_utf8({name, size});
}

std::optional<std::uint64_t> boot_counter() {
    DWORD value = 0;
    DWORD size = sizeof value;
    if (::RegGetValueW(
            HKEY_LOCAL_MACHINE,
            LR"(SYSTEM\CurrentControlSet\Control\Session Manager\Memory Management\PrefetchParameters)",
            L"BootId", RRF_RT_REG_DWORD, nullptr, &value, &size) != ERROR_SUCCESS)
        return std::nullopt;
    return value;
}

// SYSTEM_TIMEOFDAY_INFORMATION (class 3 of NtQuerySystemInformation), not declared by the SDK headers.
struct time_of_day_information {
    LARGE_INTEGER boot_time;
    LARGE_INTEGER current_time;
    LARGE_INTEGER time_zone_bias;
    ULONG time_zone_id;
    ULONG reserved;
    ULONGLONG boot_time_bias;
    ULONGLONG sleep_time_bias;
};

std::optional<std::int64_t> kernel_boot_time() {
    using query = LONG(WINAPI*)(int, void*, ULONG, ULONG*);
    HMODULE const ntdll = ::GetModuleHandleW(L"ntdll.dll");
    if (ntdll == nullptr) return std::nullopt;
    auto const function =
        reinterpret_cast<query>(reinterpret_cast<void*>(::GetProcAddress(ntdll, "NtQuerySystemInformation")));
    time_of_day_information info{};
    ULONG length = 0;
    if (function == nullptr || function(3, &info, sizeof info, &length) < 0 || info.boot_time.QuadPart == 0)
        return std::nullopt;
    return info.boot_time.QuadPart;
}

std::string boot_id() {
    std::string id;
    if (auto const counter = boot_counter()) id = "bootid-" + std::to_string(*counter) + "-";
    if (auto const booted = kernel_boot_time()) return id + "booted-" + std::to_string(*booted);
    return id;
}

process_identity compute_identity() {
    process_identity identity;
    identity.pid = ::GetCurrentProcessId();
    identity.host = host_name();
    identity.boot_id = boot_id();
    identity.name = image_name(::GetCurrentProcess());
    identity.start_time = creation_time(::GetCurrentProcess());
    return identity;
}

} // namespace

std::int64_t current_pid() noexcept {
    return ::GetCurrentProcessId();
}

process_identity current_process() {
    static std::mutex cache_mutex;
    static std::optional<process_identity> cache;
    std::lock_guard guard{cache_mutex};
    if (!cache) cache = compute_identity(); // no fork() on Windows: the pid never changes under us
    return *cache;
}

process_state local_process_state(std::int64_t pid, std::optional<std::uint64_t> start_time,
                                  std::string_view name) {
    if (pid <= 0 || pid > UINT32_MAX) return process_state::gone; // no such pid can exist here
    auto const native = gsl::narrow<DWORD>(pid);
    unique_handle process{::OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION | SYNCHRONIZE, FALSE, native)};
    if (!process.valid() && ::GetLastError() == ERROR_ACCESS_DENIED)
        process.reset(::OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, FALSE, native));
    if (!process.valid())
        return ::GetLastError() == ERROR_INVALID_PARAMETER ? process_state::gone : process_state::unknown;
    DWORD exit_code = 0;
    if (::GetExitCodeProcess(process.get(), &exit_code) && exit_code != STILL_ACTIVE)
        return process_state::gone;
    // A process may exit with 259 (STILL_ACTIVE) itself: its handle is signalled then.
    if (::WaitForSingleObject(process.get(), 0) == WAIT_OBJECT_0) return process_state::gone;
    auto const created = creation_time(process.get());
    if (start_time && created && *created != *start_time) return process_state::gone;
    auto const running = image_name(process.get());
    if (!running.empty() && !name.empty() && running != name) return process_state::gone;
    return process_state::alive;
}

std::optional<std::uint64_t> local_process_start_time(std::int64_t pid) {
    if (pid <= 0 || pid > UINT32_MAX) return std::nullopt;
    unique_handle process{::OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, FALSE, gsl::narrow<DWORD>(pid))};
    if (!process.valid()) return std::nullopt;
    return creation_time(process.get());
}

// Windows has no process groups (a job object is not one a record could name): a group never holds a lock.
process_state local_process_group_state(std::int64_t, std::optional<std::uint64_t>) {
    return process_state::gone;
}

std::array<unsigned char, 16> random_128_bits() {
    std::array<unsigned char, 16> bytes{};
    auto const status = ::BCryptGenRandom(nullptr, bytes.data(), static_cast<ULONG>(bytes.size()),
                                          BCRYPT_USE_SYSTEM_PREFERRED_RNG);
    if (status < 0)
        throw std::system_error(static_cast<int>(::RtlNtStatusToDosError(status)), std::system_category(),
                                "BCryptGenRandom");
    return bytes;
}

} // namespace openlock::sys
