// SPDX-License-Identifier: MIT
// The error vocabulary at work: the "openlock" error category, the exception types, and throw_failure,
// which turns a failed step's code into the exception that matches it (modules/errors.cppm).
module;
#include <filesystem>
#include <string>
#include <system_error>

module openlock;
import :protocol;

namespace openlock {
namespace {

class category final : public std::error_category {
public:
    [[nodiscard]] char const* name() const noexcept override { return "openlock"; }
    [[nodiscard]] std::string message(int value) const override {
        switch (static_cast<errc>(value)) {
        case errc::timeout:
            return "timed out waiting for the lock";
        case errc::invalid_release:
            return "release of a lock this object does not hold";
        case errc::invalid_lock_file:
            return "not a valid lock file";
        case errc::invalid_option:
            return "invalid option";
        case errc::already_locked:
            return "this thread already holds the lock";
        case errc::not_locked:
            return "the lock is no longer held by this object";
        case errc::slow_system:
            return "slow system: a takeover took longer than race_delay";
        case errc::unavailable:
            return "no lock server could be reached";
        case errc::server_error:
            return "the lock server refused the request or answered unexpectedly";
        }
        return "unknown openlock error";
    }
};

std::string join(std::filesystem::path const& path, std::string const& detail) {
    std::string text = path.empty() ? std::string{} : path.string();
    if (!detail.empty()) text += text.empty() ? detail : ": " + detail;
    return text;
}

} // namespace

std::error_category const& openlock_category() noexcept {
    static category const instance;
    return instance;
}

lock_error::lock_error(std::error_code code, std::filesystem::path path, std::string const& detail)
    : std::system_error(code, join(path, detail)), path_(std::move(path)) {}

timeout_error::timeout_error(std::filesystem::path path, std::string holder_description)
    : lock_error(errc::timeout, std::move(path),
                 holder_description.empty() ? std::string{} : "held by " + holder_description)
    , holder_(std::move(holder_description)) {}

invalid_release::invalid_release(std::filesystem::path path)
    : lock_error(errc::invalid_release, std::move(path)) {}

invalid_lock_file::invalid_lock_file(std::filesystem::path path, std::string const& reason)
    : lock_error(errc::invalid_lock_file, std::move(path), reason) {}

invalid_option::invalid_option(std::string const& what_is_wrong)
    : lock_error(errc::invalid_option, {}, what_is_wrong) {}

already_locked::already_locked(std::filesystem::path path)
    : lock_error(errc::already_locked, std::move(path)) {}

not_locked::not_locked(std::filesystem::path path, std::string const& detail)
    : lock_error(errc::not_locked, std::move(path), detail) {}

slow_system::slow_system(std::filesystem::path path, std::string const& detail)
    : lock_error(errc::slow_system, std::move(path), detail) {}

namespace detail {

[[noreturn]] void throw_failure(failure const& what) {
    if (what.code.category() == openlock_category()) {
        switch (static_cast<errc>(what.code.value())) {
        case errc::timeout:
            throw timeout_error(what.path, what.detail);
        case errc::invalid_release:
            throw invalid_release(what.path);
        case errc::invalid_lock_file:
            throw invalid_lock_file(what.path, what.detail);
        case errc::invalid_option:
            throw invalid_option(what.detail);
        case errc::already_locked:
            throw already_locked(what.path);
        case errc::not_locked:
            throw not_locked(what.path, what.detail);
        case errc::slow_system:
            throw slow_system(what.path, what.detail);
        case errc::unavailable:
        case errc::server_error:
            break; // no type of their own: lock_error with the code
        }
    }
    throw lock_error(what.code, what.path, what.detail);
}

} // namespace detail
} // namespace openlock
