// SPDX-License-Identifier: MIT
// Windows directory operations behind the :sys seam: opening, making, renaming, removing and listing
// directories (files inside them: files.cpp).
//
// Why these calls:
// - A directory is opened with FILE_FLAG_BACKUP_SEMANTICS (what opening a directory takes) and, below the
//   lock's directory, FILE_FLAG_OPEN_REPARSE_POINT: a symlink or junction at the name is refused, never
//   followed. The handle keeps the directory's identity for the checks; names inside it are still reached by
//   path (Win32 has no openat): see the residual window in docs/security.md.
// - CreateDirectoryW/MoveFileExW/RemoveDirectoryW are the conditional operations the takeover guard is built
//   from. MoveFileExW of a directory never replaces anything, so an empty directory at the target (a guard
//   whose owner crashed while removing it) is removed first, which is what rename(2) would have done in one
//   step. While another process has a handle inside the directories (listing the guard, reading its owner's
//   record) the rename fails with a sharing violation: retried for a moment, then a directory standing at the
//   target is a guard that is taken (Wine under load met this; before, the takeover failed with an error).
// - FindFirstFileExW(FindExInfoBasic, FIND_FIRST_EX_LARGE_FETCH) lists names without their short names.
// - All names go through the `\\?\` form: no MAX_PATH limit, no DOS device names, UTF-16 names unchanged.
module;
#include "win32.hpp"

#include <filesystem>
#include <gsl/gsl>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

module openlock;
import :sys;

namespace openlock::sys {
namespace {

using win32::last_error;
using win32::long_path;
using win32::share_all;
using win32::unique_handle;

// Whether a reparse point (symlink, junction) at the path itself is followed or refused.
enum class reparse_point { follow, refuse };

std::error_code open_directory_handle(std::filesystem::path const& path, reparse_point at_name,
                                      directory& out) {
    bool const follow = at_name == reparse_point::follow;
    unique_handle opened{
        ::CreateFileW(long_path(path).c_str(), FILE_READ_ATTRIBUTES, share_all, nullptr, OPEN_EXISTING,
                      FILE_FLAG_BACKUP_SEMANTICS | (follow ? 0 : FILE_FLAG_OPEN_REPARSE_POINT), nullptr)};
    if (!opened.valid()) return last_error();
    FILE_ATTRIBUTE_TAG_INFO tag{};
    BY_HANDLE_FILE_INFORMATION info{};
    if (!::GetFileInformationByHandleEx(opened.get(), FileAttributeTagInfo, &tag, sizeof tag) ||
        !::GetFileInformationByHandle(opened.get(), &info))
        return last_error();
    if ((tag.FileAttributes & FILE_ATTRIBUTE_DIRECTORY) == 0 ||
        (!follow && (tag.FileAttributes & FILE_ATTRIBUTE_REPARSE_POINT) != 0))
        return std::make_error_code(std::errc::not_a_directory);
    out.handle = std::shared_ptr<void>{opened.release(), [](void* held) { ::CloseHandle(held); }};
    out.path = path;
    out.identity = {info.dwVolumeSerialNumber, win32::file_index(info)};
    return {};
}

} // namespace

std::error_code open_directory(std::filesystem::path const& path, directory& out) {
    return open_directory_handle(path.empty() ? std::filesystem::path{"."} : path, reparse_point::follow,
                                 out);
}

std::error_code open_subdirectory(directory const& parent, std::string_view name, directory& out) {
    return open_directory_handle(parent / name, reparse_point::refuse, out);
}

std::error_code make_directory(directory const& at, std::string_view name) {
    if (!::CreateDirectoryW(long_path(at / name).c_str(), nullptr)) return last_error();
    return {};
}

std::error_code rename_directory(directory const& at, std::string_view from, std::string_view to) {
    auto const source = long_path(at / from);
    auto const target = long_path(at / to);
    DWORD code = 0;
    for (int attempt = 0;; ++attempt) {
        if (::MoveFileExW(source.c_str(), target.c_str(), 0)) return {};
        code = ::GetLastError();
        // A process listing the guard or reading its owner's record has a handle inside it for a moment.
        if (code != ERROR_SHARING_VIOLATION || attempt == 20) break;
        ::Sleep(attempt < 5 ? 1 : 10);
    }
    if (code == ERROR_SHARING_VIOLATION) {
        // Still in use: a directory standing at the target is a guard somebody holds (or is reading).
        DWORD const standing = ::GetFileAttributesW(target.c_str());
        bool const directory = standing != INVALID_FILE_ATTRIBUTES &&
                               (standing & FILE_ATTRIBUTE_DIRECTORY) != 0 &&
                               (standing & FILE_ATTRIBUTE_REPARSE_POINT) == 0;
        return win32::error_of(directory ? ERROR_DIR_NOT_EMPTY : code);
    }
    if (code != ERROR_ALREADY_EXISTS && code != ERROR_FILE_EXISTS && code != ERROR_ACCESS_DENIED)
        return win32::error_of(code);
    // rename(2) replaces an empty directory. RemoveDirectoryW removes only an empty one, so a guard that
    // somebody renamed into place meanwhile (never empty) stays, and our rename fails as it should.
    DWORD const attributes = ::GetFileAttributesW(target.c_str());
    if (attributes == INVALID_FILE_ATTRIBUTES || (attributes & FILE_ATTRIBUTE_DIRECTORY) == 0 ||
        (attributes & FILE_ATTRIBUTE_REPARSE_POINT) != 0)
        return win32::error_of(code);
    if (!::RemoveDirectoryW(target.c_str())) {
        auto const removal = ::GetLastError();
        return win32::error_of(removal == ERROR_DIR_NOT_EMPTY ? ERROR_DIR_NOT_EMPTY : code);
    }
    if (::MoveFileExW(source.c_str(), target.c_str(), 0)) return {};
    return last_error();
}

std::error_code remove_directory(directory const& at, std::string_view name) {
    if (!::RemoveDirectoryW(long_path(at / name).c_str())) return last_error();
    return {};
}

std::error_code list_directory(directory const& at, std::vector<std::string>& names) {
    names.clear();
    auto const pattern = long_path(at.path) + L"\\*";
    WIN32_FIND_DATAW found{};
    HANDLE const search = ::FindFirstFileExW(pattern.c_str(), FindExInfoBasic, &found, FindExSearchNameMatch,
                                             nullptr, FIND_FIRST_EX_LARGE_FETCH);
    if (search == INVALID_HANDLE_VALUE) {
        auto const code = ::GetLastError();
        return code == ERROR_FILE_NOT_FOUND ? std::error_code{} : win32::error_of(code); // empty
    }
    auto const close_search = gsl::finally([search] { ::FindClose(search); });
    do {
        std::wstring_view const name{found.cFileName};
        // The same narrow form as path::string(), which the callers use to build these names again.
        if (name != L"." && name != L"..") names.push_back(name_text(std::filesystem::path{name}));
    } while (::FindNextFileW(search, &found));
    auto const code = ::GetLastError();
    return code == ERROR_NO_MORE_FILES ? std::error_code{} : win32::error_of(code);
}

} // namespace openlock::sys
