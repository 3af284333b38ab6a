// SPDX-License-Identifier: MIT
// Helpers shared by the Windows implementations of the :sys seam: handles, errors, paths, text.
// Included in the global module fragment of platform/windows/*.cpp only.
#pragma once

#include <windows.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <system_error>

namespace openlock::sys::win32 {

/// GetLastError() as a std::error_code of the system category (the Win32 code untouched).
inline std::error_code last_error() noexcept {
    return {static_cast<int>(::GetLastError()), std::system_category()};
}

inline std::error_code error_of(DWORD code) noexcept {
    return {static_cast<int>(code), std::system_category()};
}

/// The share mode of every handle the library opens to a file or directory: read, write and delete
/// (files.cpp says why).
inline constexpr DWORD share_all = FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE;

/// The 64-bit file index of GetFileInformationByHandle: with the volume serial number, a file's identity
/// (equal for two hard links of one file; ReFS's 128-bit index is cut to its low 64 bits).
inline std::uint64_t file_index(BY_HANDLE_FILE_INFORMATION const& info) noexcept {
    return (static_cast<std::uint64_t>(info.nFileIndexHigh) << 32) | info.nFileIndexLow;
}

/// Owns a HANDLE (INVALID_HANDLE_VALUE or null when empty) and closes it.
class unique_handle {
public:
    unique_handle() noexcept = default;
    explicit unique_handle(HANDLE handle) noexcept : handle_(handle) {}
    unique_handle(unique_handle&& other) noexcept : handle_(other.release()) {}
    unique_handle& operator=(unique_handle&& other) noexcept {
        if (this != &other) reset(other.release());
        return *this;
    }
    unique_handle(unique_handle const&) = delete;
    unique_handle& operator=(unique_handle const&) = delete;
    ~unique_handle() { reset(); }

    [[nodiscard]] HANDLE get() const noexcept { return handle_; }
    [[nodiscard]] bool valid() const noexcept {
        return handle_ != nullptr && handle_ != INVALID_HANDLE_VALUE;
    }
    HANDLE release() noexcept {
        HANDLE const handle = handle_;
        handle_ = nullptr;
        return handle;
    }
    void reset(HANDLE handle = nullptr) noexcept {
        if (valid()) ::CloseHandle(handle_);
        handle_ = handle;
    }

private:
    HANDLE handle_ = nullptr;
};

/// The `\\?\` form of a path: absolute, backslashes, no `.`/`..`, so that names longer than MAX_PATH work and
/// no component is taken for a DOS device (CON, NUL, ...) or loses trailing dots and spaces.
inline std::wstring long_path(std::filesystem::path const& path) {
    std::wstring text = path.native();
    if (text.starts_with(LR"(\\?\)")) return text;
    std::error_code ignored;
    auto absolute = std::filesystem::absolute(path, ignored);
    if (absolute.empty()) absolute = path;
    text = absolute.lexically_normal().native();
    for (auto& c : text)
        if (c == L'/') c = L'\\';
    if (text.starts_with(LR"(\\?\)") || text.starts_with(LR"(\\.\)")) return text;
    if (text.starts_with(LR"(\\)")) return LR"(\\?\UNC\)" + text.substr(2);
    return LR"(\\?\)" + text;
}

/// UTF-16 to UTF-8 (names and host names as they go into records and messages).
inline std::string to_utf8(std::wstring_view text) {
    if (text.empty()) return {};
    int const size = ::WideCharToMultiByte(CP_UTF8, 0, text.data(), static_cast<int>(text.size()), nullptr, 0,
                                           nullptr, nullptr);
    std::string out(static_cast<std::size_t>(size > 0 ? size : 0), '\0');
    if (size > 0)
        ::WideCharToMultiByte(CP_UTF8, 0, text.data(), static_cast<int>(text.size()), out.data(), size,
                              nullptr, nullptr);
    return out;
}

/// FILETIME ticks (100 ns since 1601) between 1601 and 1970.
inline constexpr std::int64_t filetime_unix_epoch = 116'444'736'000'000'000;

inline std::int64_t filetime_ticks(FILETIME const& time) noexcept {
    return static_cast<std::int64_t>((static_cast<std::uint64_t>(time.dwHighDateTime) << 32) |
                                     time.dwLowDateTime);
}

/// A file time as system_clock; saturating (FILETIME reaches year 30828, system_clock in ns year 2262).
inline std::chrono::system_clock::time_point as_time_point(std::int64_t ticks) noexcept {
    using duration = std::chrono::system_clock::duration;
    constexpr auto most_ticks =
        std::chrono::duration_cast<std::chrono::duration<std::int64_t, std::ratio<1, 10'000'000>>>(
            duration::max())
            .count() -
        1;
    auto const since_epoch = ticks - filetime_unix_epoch;
    if (since_epoch >= most_ticks) return std::chrono::system_clock::time_point::max();
    if (since_epoch <= -most_ticks) return std::chrono::system_clock::time_point::min();
    return std::chrono::system_clock::time_point{std::chrono::duration_cast<duration>(
        std::chrono::duration<std::int64_t, std::ratio<1, 10'000'000>>{since_epoch})};
}

inline FILETIME as_filetime(std::chrono::system_clock::time_point when) noexcept {
    auto const ticks =
        std::chrono::duration_cast<std::chrono::duration<std::int64_t, std::ratio<1, 10'000'000>>>(
            when.time_since_epoch())
            .count() +
        filetime_unix_epoch;
    auto const value = static_cast<std::uint64_t>(ticks < 0 ? 0 : ticks);
    return {static_cast<DWORD>(value & 0xffffffffu), static_cast<DWORD>(value >> 32)};
}

} // namespace openlock::sys::win32
