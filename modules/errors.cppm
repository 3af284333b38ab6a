// SPDX-License-Identifier: MIT
// :errors — the error vocabulary: library states as openlock::errc, OS failures as the OS's own codes.
module;
#include <cstdint>
#include <filesystem>
#include <optional>
#include <stdexcept>
#include <string>
#include <system_error>
#include <type_traits>

export module openlock:errors;

export namespace openlock {

/// Library states that are failures of a call (contention itself is a value, never one of these).
enum class errc {
    timeout = 1,       ///< the lock was not acquired within the timeout
    invalid_release,   ///< release() by an object that does not hold the lock
    invalid_lock_file, ///< the lock path holds something that is not a lock record we can read
    invalid_option,    ///< an option value out of range
    already_locked,    ///< acquire by the thread that already holds this object's lock
    not_locked,        ///< the lock this object held was removed or replaced behind its back
    slow_system,       ///< a takeover lasted longer than race_delay (thrown only with slow_system_exception)
    unavailable,       ///< no server of a lock service (etcd) answered within its time: nothing was decided
    server_error,      ///< a lock server refused a request or answered something that is not its protocol
};

/// The category of openlock::errc; its name is "openlock".
[[nodiscard]] std::error_category const& openlock_category() noexcept;

[[nodiscard]] inline std::error_code make_error_code(errc e) noexcept {
    return {static_cast<int>(e), openlock_category()};
}

/// Base of every exception the library throws: carries the lock path and the error code (the OS's, untouched,
/// or an openlock::errc).
class lock_error : public std::system_error {
public:
    lock_error(std::error_code code, std::filesystem::path path, std::string const& detail = {});
    /// The lock file (or helper file) the failing operation was about.
    [[nodiscard]] std::filesystem::path const& path() const noexcept { return path_; }

private:
    std::filesystem::path path_;
};

/// The lock was not acquired in time; names the holder when one could be read.
class timeout_error : public lock_error {
public:
    timeout_error(std::filesystem::path path, std::string holder_description);
    /// "pid 123 (name) on host h", or empty when the lock file vanished just as the timeout hit.
    [[nodiscard]] std::string const& holder() const noexcept { return holder_; }

private:
    std::string holder_;
};

/// release() by an object that does not hold the lock.
class invalid_release : public lock_error {
public:
    explicit invalid_release(std::filesystem::path path);
};

/// The lock path is a symlink, a directory, a FIFO, or holds content that is not a lock record.
class invalid_lock_file : public lock_error {
public:
    invalid_lock_file(std::filesystem::path path, std::string const& reason);
};

/// An option value out of range.
class invalid_option : public lock_error {
public:
    explicit invalid_option(std::string const& what_is_wrong);
};

/// The thread that holds this object's lock asked for it again: an error instead of a self-deadlock.
class already_locked : public lock_error {
public:
    explicit already_locked(std::filesystem::path path);
};

/// The lock this object held is gone or belongs to someone else (broken by an operator or expired).
class not_locked : public lock_error {
public:
    not_locked(std::filesystem::path path, std::string const& detail);
};

/// A takeover lasted longer than race_delay; thrown only when options.slow_system_exception is true.
class slow_system : public lock_error {
public:
    slow_system(std::filesystem::path path, std::string const& detail);
};

} // namespace openlock

export template <>
struct std::is_error_code_enum<openlock::errc> : std::true_type {};

namespace openlock::detail {

/// Marks a call whose failure changes nothing (cleanup of our own leftovers, a look whose answer is not
/// needed): `best_effort(sys::remove_file(directory, name));` says so where a discarded error code would look
/// forgotten.
inline void best_effort(std::error_code const& /*ignored*/) noexcept {}

} // namespace openlock::detail
