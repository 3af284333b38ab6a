// SPDX-License-Identifier: MIT
// Windows file operations behind the :sys seam: files inside a directory (directories themselves:
// directories.cpp).
//
// Why these calls:
// - CreateFileW(CREATE_NEW) is the exclusive create: it fails with ERROR_FILE_EXISTS whatever occupies the
//   name, and FILE_FLAG_OPEN_REPARSE_POINT makes every open act on a symlink or junction itself, never on its
//   target. CreateHardLinkW is the claim (NTFS, ReFS, SMB to NTFS): atomic, it fails with
//   ERROR_ALREADY_EXISTS when the name is taken. FAT and exFAT have no hard links (ERROR_INVALID_FUNCTION /
//   ERROR_NOT_SUPPORTED): the caller falls back to the exclusive create.
// - Share modes: every handle opened here shares read, write and delete. Windows refuses to delete or rename
//   a file that someone has open without FILE_SHARE_DELETE, so a waiter reading a lock file would otherwise
//   keep its holder from releasing it, and a reader's handle would keep a stale lock from being broken.
// - Deletion: a name deleted the classic way (DeleteFileW) while another handle is open stays visible,
//   "delete pending", until the last handle closes: opening it fails with ERROR_ACCESS_DENIED (NT status
//   STATUS_DELETE_PENDING) and creating it too. Removal therefore opens the name itself (never a symlink's
//   target) and sets FILE_DISPOSITION_POSIX_SEMANTICS (Windows 10 1709+, NTFS), which removes the name at
//   once as unlink(2) does; where that is unsupported it falls back to the classic disposition. A name that
//   is delete pending is reported as absent by reads and as taken by creates, which is what it is about to
//   become and what it still is. Sharing violations from other programs (virus scanners, indexers that
//   open without FILE_SHARE_DELETE) are retried for a moment before they are reported.
// - Identity is the volume serial number plus the 64-bit file index of GetFileInformationByHandle (equal for
//   two hard links of one file). The file index of ReFS is 128 bits wide; its low 64 bits are used.
// - MoveFileExW(MOVEFILE_REPLACE_EXISTING) replaces the fencing token file atomically.
// - A pinned file (exclusive_create) keeps a handle with write access but no DELETE access while the lock is
//   held: a handle with DELETE access would conflict with every reader that does not share delete (fopen).
// - All names go through the `\\?\` form: no MAX_PATH limit, no DOS device names, UTF-16 names unchanged.
// - No FlushFileBuffers: a lock must survive its holder's crash, not the machine's (as on POSIX).
module;
#include "win32.hpp"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>

module openlock;
import :sys;

namespace openlock::sys {
namespace {

using win32::last_error;
using win32::long_path;
using win32::share_all;
using win32::unique_handle;

// STATUS_DELETE_PENDING behind an ERROR_ACCESS_DENIED of the last call (ntdll's RtlGetLastNtStatus).
bool last_call_met_delete_pending() noexcept {
    using get_status = LONG(WINAPI*)();
    static auto const function = [] {
        HMODULE const ntdll = ::GetModuleHandleW(L"ntdll.dll");
        return ntdll == nullptr ? get_status{}
                                : reinterpret_cast<get_status>(
                                      reinterpret_cast<void*>(::GetProcAddress(ntdll, "RtlGetLastNtStatus")));
    }();
    constexpr LONG status_delete_pending = static_cast<LONG>(0xC0000056);
    return function != nullptr && function() == status_delete_pending;
}

bool absent(DWORD code) noexcept {
    return code == ERROR_FILE_NOT_FOUND || code == ERROR_PATH_NOT_FOUND;
}

// CreateFileW on the name itself (FILE_FLAG_OPEN_REPARSE_POINT), retrying sharing violations for a moment.
HANDLE open_name(std::wstring const& name, DWORD access, DWORD disposition, DWORD flags) noexcept {
    for (int attempt = 0;; ++attempt) {
        HANDLE const handle = ::CreateFileW(name.c_str(), access, share_all, nullptr, disposition,
                                            flags | FILE_FLAG_OPEN_REPARSE_POINT, nullptr);
        if (handle != INVALID_HANDLE_VALUE || ::GetLastError() != ERROR_SHARING_VIOLATION || attempt == 20)
            return handle;
        ::Sleep(attempt < 5 ? 1 : 10);
    }
}

file_identity identity_of(BY_HANDLE_FILE_INFORMATION const& info) noexcept {
    return {info.dwVolumeSerialNumber, win32::file_index(info)};
}

std::error_code identify_handle(HANDLE handle, file_identity& out) noexcept {
    BY_HANDLE_FILE_INFORMATION info{};
    if (!::GetFileInformationByHandle(handle, &info)) return last_error();
    out = identity_of(info);
    return {};
}

std::error_code write_all(HANDLE handle, std::string_view content) noexcept {
    while (!content.empty()) {
        DWORD written = 0;
        auto const chunk = static_cast<DWORD>(std::min<std::size_t>(content.size(), 1u << 30));
        if (!::WriteFile(handle, content.data(), chunk, &written, nullptr)) return last_error();
        content.remove_prefix(written);
    }
    return {};
}

// FileDispositionInfoEx and its flags (Windows 10 1709+), spelled out: SDK headers gate them on versions.
constexpr auto file_disposition_info_ex = static_cast<FILE_INFO_BY_HANDLE_CLASS>(21);
struct file_disposition_info_ex_flags {
    DWORD flags;
};
constexpr DWORD disposition_delete = 0x1;
constexpr DWORD disposition_posix_semantics = 0x2;
constexpr DWORD disposition_ignore_readonly = 0x10;

// Deletes the file behind an open handle (opened with DELETE access): the name goes at once where POSIX
// semantics exist, else when the last handle closes.
std::error_code delete_by_handle(HANDLE handle) noexcept {
    file_disposition_info_ex_flags posix{disposition_delete | disposition_posix_semantics |
                                         disposition_ignore_readonly};
    if (::SetFileInformationByHandle(handle, file_disposition_info_ex, &posix, sizeof posix)) return {};
    auto const refused = ::GetLastError();
    if (refused != ERROR_INVALID_PARAMETER && refused != ERROR_NOT_SUPPORTED &&
        refused != ERROR_INVALID_FUNCTION && refused != ERROR_CALL_NOT_IMPLEMENTED)
        return win32::error_of(refused);
    FILE_DISPOSITION_INFO classic{TRUE};
    if (!::SetFileInformationByHandle(handle, FileDispositionInfo, &classic, sizeof classic))
        return last_error();
    return {};
}

// Creates `path` exclusively and writes content; on failure the new file is deleted through its own handle.
std::error_code create_new(std::filesystem::path const& path, std::string_view content,
                           file_identity& created, unique_handle& file) {
    auto const name = long_path(path);
    // No DELETE access: a handle with it conflicts with every reader that does not share delete (fopen, most
    // programs), and a pinned handle lives as long as the lock is held.
    file.reset(::CreateFileW(name.c_str(), GENERIC_WRITE | FILE_READ_ATTRIBUTES, share_all, nullptr,
                             CREATE_NEW, FILE_ATTRIBUTE_NORMAL | FILE_FLAG_OPEN_REPARSE_POINT, nullptr));
    if (!file.valid()) {
        auto const code = ::GetLastError();
        // The name is still taken by a file that is being deleted.
        if (code == ERROR_ACCESS_DENIED && last_call_met_delete_pending())
            return win32::error_of(ERROR_FILE_EXISTS);
        return win32::error_of(code);
    }
    auto error = write_all(file.get(), content);
    if (!error) error = identify_handle(file.get(), created);
    if (error) {
        // Ours, and incomplete: deleted through a second handle to the same file, never by name.
        unique_handle deleting{::ReOpenFile(file.get(), DELETE, share_all, 0)};
        if (deleting.valid()) delete_by_handle(deleting.get());
        file.reset();
    }
    return error;
}

entry_kind kind_of(HANDLE handle, DWORD attributes, DWORD reparse_tag) noexcept {
    if ((attributes & FILE_ATTRIBUTE_REPARSE_POINT) != 0)
        return IsReparseTagNameSurrogate(reparse_tag) ? entry_kind::symlink : entry_kind::other;
    if ((attributes & FILE_ATTRIBUTE_DIRECTORY) != 0) return entry_kind::directory;
    return ::GetFileType(handle) == FILE_TYPE_DISK ? entry_kind::regular : entry_kind::other;
}

std::int64_t nanoseconds_since_epoch(LARGE_INTEGER const& ticks) noexcept {
    return (ticks.QuadPart - win32::filetime_unix_epoch) * 100;
}

std::chrono::system_clock::time_point as_time_point(LARGE_INTEGER const& ticks) noexcept {
    return win32::as_time_point(ticks.QuadPart);
}

} // namespace

std::error_code create_exclusive(directory const& at, std::string_view name, std::string_view content,
                                 file_identity& created) {
    unique_handle file;
    return create_new(at / name, content, created, file);
}

std::error_code create_exclusive_pinned(directory const& at, std::string_view name, std::string_view content,
                                        file_identity& created, pinned_file& handle) {
    unique_handle file;
    if (auto const error = create_new(at / name, content, created, file)) return error;
    handle = std::shared_ptr<void>{file.release(), [](void* opened) { ::CloseHandle(opened); }};
    return {};
}

// Windows has no nameless files that can be given a name later: the caller falls back to a claim file.
std::error_code create_anonymous(directory const&, std::string_view, file_identity&, pinned_file&) {
    return std::make_error_code(std::errc::operation_not_supported);
}

std::error_code link_anonymous(pinned_file const&, directory const&, std::string_view) {
    return std::make_error_code(std::errc::operation_not_supported);
}

std::error_code set_modified(pinned_file const& handle, std::chrono::system_clock::time_point when) {
    auto const time = win32::as_filetime(when);
    if (!::SetFileTime(static_cast<HANDLE>(handle.get()), nullptr, nullptr, &time)) return last_error();
    return {};
}

std::error_code set_modified(directory const& at, std::string_view name,
                             std::chrono::system_clock::time_point when) {
    unique_handle file{open_name(long_path(at / name), FILE_WRITE_ATTRIBUTES, OPEN_EXISTING, 0)};
    if (!file.valid()) return last_error();
    auto const time = win32::as_filetime(when);
    if (!::SetFileTime(file.get(), nullptr, nullptr, &time)) return last_error();
    return {};
}

std::error_code make_link(directory const& at, std::string_view existing, std::string_view new_name) {
    if (::CreateHardLinkW(long_path(at / new_name).c_str(), long_path(at / existing).c_str(), nullptr))
        return {};
    auto const code = ::GetLastError();
    if (code == ERROR_ACCESS_DENIED && last_call_met_delete_pending())
        return win32::error_of(ERROR_ALREADY_EXISTS);
    return win32::error_of(code);
}

std::error_code remove_file(directory const& at, std::string_view name) {
    unique_handle file{open_name(long_path(at / name), DELETE | FILE_READ_ATTRIBUTES, OPEN_EXISTING, 0)};
    if (!file.valid()) {
        auto const code = ::GetLastError();
        if (code == ERROR_ACCESS_DENIED && last_call_met_delete_pending())
            return win32::error_of(ERROR_FILE_NOT_FOUND); // somebody removed it already
        return win32::error_of(code);
    }
    FILE_ATTRIBUTE_TAG_INFO info{};
    if (!::GetFileInformationByHandleEx(file.get(), FileAttributeTagInfo, &info, sizeof info))
        return last_error();
    if ((info.FileAttributes & FILE_ATTRIBUTE_DIRECTORY) != 0)
        return win32::error_of(ERROR_ACCESS_DENIED); // what DeleteFileW says of a directory
    return delete_by_handle(file.get());
}

std::error_code identify(directory const& at, std::string_view name, file_identity& out) {
    unique_handle file{
        open_name(long_path(at / name), FILE_READ_ATTRIBUTES, OPEN_EXISTING, FILE_FLAG_BACKUP_SEMANTICS)};
    if (!file.valid()) {
        auto const code = ::GetLastError();
        if (code == ERROR_ACCESS_DENIED && last_call_met_delete_pending())
            return win32::error_of(ERROR_FILE_NOT_FOUND); // going away: no longer anybody's file
        return win32::error_of(code);
    }
    return identify_handle(file.get(), out);
}

// Files have no numeric owner here (file_content::owner stays -1).
std::string user_name(std::int64_t) {
    return {};
}

std::error_code read_file(directory const& at, std::string_view name, std::size_t limit, file_content& out,
                          fresh_time_rule needs_fresh_time) {
    out = {};
    // FILE_FLAG_BACKUP_SEMANTICS opens a directory too (to say that a directory is there); reading a symlink
    // or a directory never happens: the kind is decided from the handle first.
    unique_handle file{
        open_name(long_path(at / name), GENERIC_READ, OPEN_EXISTING, FILE_FLAG_BACKUP_SEMANTICS)};
    if (!file.valid()) {
        auto const code = ::GetLastError();
        if (absent(code)) return {};
        if (code == ERROR_ACCESS_DENIED && last_call_met_delete_pending()) return {}; // going away
        return win32::error_of(code);
    }
    FILE_ATTRIBUTE_TAG_INFO tag{};
    BY_HANDLE_FILE_INFORMATION info{};
    FILE_BASIC_INFO times{};
    if (!::GetFileInformationByHandleEx(file.get(), FileAttributeTagInfo, &tag, sizeof tag) ||
        !::GetFileInformationByHandle(file.get(), &info) ||
        !::GetFileInformationByHandleEx(file.get(), FileBasicInfo, &times, sizeof times))
        return last_error();
    out.kind = kind_of(file.get(), tag.FileAttributes, tag.ReparseTag);
    out.identity = identity_of(info);
    out.changed = nanoseconds_since_epoch(times.ChangeTime);
    out.modified = as_time_point(times.LastWriteTime);
    if (out.kind != entry_kind::regular) return {};

    out.bytes.resize(limit + 1);
    std::size_t filled = 0;
    while (filled < out.bytes.size()) {
        DWORD got = 0;
        auto const want = static_cast<DWORD>(std::min<std::size_t>(out.bytes.size() - filled, 1u << 30));
        if (!::ReadFile(file.get(), out.bytes.data() + filled, want, &got, nullptr)) return last_error();
        if (got == 0) break;
        filled += got;
    }
    out.bytes.resize(filled);
    // A lease's time after the content (a lease refresh sets it after writing nothing else).
    if (needs_fresh_time == nullptr || !needs_fresh_time(out.bytes)) return {};
    FILE_BASIC_INFO after{};
    bool const fresh = ::GetFileInformationByHandleEx(file.get(), FileBasicInfo, &after, sizeof after);
    out.modified = as_time_point((fresh ? after : times).LastWriteTime);
    return {};
}

std::error_code replace_file(directory const& at, std::string_view from, std::string_view to) {
    auto const source = long_path(at / from);
    auto const target = long_path(at / to);
    for (int attempt = 0;; ++attempt) {
        if (::MoveFileExW(source.c_str(), target.c_str(), MOVEFILE_REPLACE_EXISTING)) return {};
        auto const code = ::GetLastError();
        // A reader holding the old file open (even sharing delete) can refuse the replacement for a moment.
        if ((code != ERROR_ACCESS_DENIED && code != ERROR_SHARING_VIOLATION) || attempt == 20)
            return win32::error_of(code);
        ::Sleep(attempt < 5 ? 1 : 10);
    }
}

// POSIX delete semantics (Windows 10 1709, NTFS) remove the name at once, but FAT, older systems and Wine
// keep it until the last handle closes: a handle kept after release would keep the lock looking held.
bool removed_name_vanishes_while_open() noexcept {
    return false;
}

bool means_no_hard_links(std::error_code const& error) noexcept {
    if (error.category() != std::system_category()) return false;
    auto const code = static_cast<DWORD>(error.value());
    return code == ERROR_INVALID_FUNCTION || code == ERROR_NOT_SUPPORTED ||
           code == ERROR_CALL_NOT_IMPLEMENTED;
}

} // namespace openlock::sys
