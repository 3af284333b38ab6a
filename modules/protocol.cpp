module;
#include <algorithm>
#include <array>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <vector>

module openlock;
import :protocol;
import :sys;

namespace openlock::detail {
namespace {

namespace fs = std::filesystem;

// A nonce: 128 random bits as 32 lowercase hex digits (docs/protocol.md 3).
std::string random_nonce() {
    static constexpr char digits[] = "0123456789abcdef";
    auto const bytes = sys::random_128_bits();
    std::string text(2 * bytes.size(), '0');
    for (std::size_t i = 0; i < bytes.size(); ++i) {
        text[2 * i] = digits[bytes[i] >> 4];
        text[2 * i + 1] = digits[bytes[i] & 0xf];
    }
    return text;
}

// The stem of helper names: the lock's file name, or for a name too long to take the longest suffix
// (".takeover." + 32-hex nonce, 42 bytes) within NAME_MAX, a prefix of it plus a hash of all of it.
std::string helper_stem(fs::path const& lock_file) {
    constexpr std::size_t longest_plain = 255 - 42;
    auto const name = lock_file.filename().string();
    if (name.size() <= longest_plain) return name;
    std::uint64_t hash = 14695981039346656037ull; // FNV-1a
    for (unsigned char const c : name)
        hash = (hash ^ c) * 1099511628211ull;
    static constexpr char digits[] = "0123456789abcdef";
    std::string tail(17, '~');
    for (int i = 16; i >= 1; --i, hash >>= 4)
        tail[static_cast<std::size_t>(i)] = digits[hash & 0xf];
    return name.substr(0, longest_plain - tail.size()) + tail;
}

// The lock's directory, resolved by path on every call: for the hot steps on the lock file itself (a look, a
// claim, a release), which name nothing below a name in the directory (docs/protocol.md 2.4).
sys::directory by_path(fs::path const& lock_file) {
    return sys::at_path(lock_file.parent_path());
}

// The lock's directory opened once, for the steps that list it or reach into a directory inside it (the
// guard, staging directories, the sweep, the token).
bool open_lock_directory(fs::path const& lock_file, sys::directory& out, failure& error) {
    if (auto const code = sys::open_directory(lock_file.parent_path(), out)) {
        error = {code, lock_file.parent_path(), "cannot open the lock's directory"};
        return false;
    }
    return true;
}

std::string name_of(fs::path const& lock_file) {
    return lock_file.filename().string();
}

// Whether something (anything) stands at the lock path now.
bool name_taken(fs::path const& lock_file) {
    sys::file_identity ignored;
    return !sys::identify(by_path(lock_file), name_of(lock_file), ignored);
}

std::string helper_name(fs::path const& lock_file, std::string const& suffix) {
    return helper_stem(lock_file) + suffix;
}

// A second link to our claim file, under a fresh name of our own (the sweep knows its shape): when it works,
// the file system has hard links, whatever the link to the lock path answered.
bool hard_links_work(fs::path const& lock_file, std::string const& claim_name) {
    auto const directory = by_path(lock_file);
    auto const probe = helper_name(lock_file, ".claim." + random_nonce());
    auto const code = sys::make_link(directory, claim_name, probe);
    if (!code) sys::remove_file(directory, probe);
    return !sys::means_no_hard_links(code);
}

bool is(std::error_code const& code, std::errc value) {
    return code == std::make_error_condition(value);
}

// Another user's file in a sticky directory (/tmp), or in a directory we may not write: removing or replacing
// it is refused, and waiting will not change that.
bool refused_by_permissions(std::error_code const& code) {
    return is(code, std::errc::operation_not_permitted) || is(code, std::errc::permission_denied);
}

// Whose file it is, as an operator knows them: "alice (user id 1001)".
std::string describe_owner(std::int64_t owner_id) {
    if (owner_id < 0) return "another user";
    auto const name = sys::user_name(owner_id);
    auto const id = "user id " + std::to_string(owner_id);
    return name.empty() ? id : name + " (" + id + ")";
}

// What to tell an operator whose removal, replacement or read of another user's file was refused: a sticky
// directory (/tmp) lets only a name's owner remove or replace it, and an older version's files may lack read
// access.
std::string permission_remedy(std::int64_t owner_id) {
    return "it belongs to " + describe_owner(owner_id) +
           ", and this directory does not let this user remove, replace or read it (a sticky directory such "
           "as "
           "/tmp lets only a file's owner remove it): share locks between users in a setgid group directory "
           "(chmod 2775, one group for all of them) instead";
}

void report(options const& settings, diagnostic::kind what, fs::path const& path, std::string detail) {
    if (settings.on_diagnostic) settings.on_diagnostic(diagnostic{what, path, std::move(detail)});
}

std::string describe_type(sys::entry_kind kind) {
    switch (kind) {
    case sys::entry_kind::symlink:
        return "the lock path is a symbolic link (never followed)";
    case sys::entry_kind::directory:
        return "the lock path is a directory";
    case sys::entry_kind::other:
        return "the lock path is not a regular file (FIFO, socket or device)";
    default:
        return {};
    }
}

// Whether a record file of ours (a claim file, a guard's owner file) was written by a process that is
// provably gone; with a lease's rules too, a claim file of another host's holder whose lease ran out (its
// time is the lease's end: refresh touches the same inode), so that crashed holders elsewhere leave none
// behind.
enum class writer_rules { holder_only, with_lease };

bool left_by_dead_process(sys::file_content const& content, options const& settings, writer_rules rules) {
    if (content.kind != sys::entry_kind::regular) return false;
    auto const parsed = parse_record(content.bytes);
    if (parsed.status != record_status::ok) return false;
    auto const holder = judge(parsed.record);
    if (holder == verdict::stale) return true;
    // A live local holder keeps its claim file even past its lease: the file pins the inode that its release
    // compares (a freed inode number may come back as the next holder's lock file).
    return rules == writer_rules::with_lease && holder != verdict::live &&
           judge(parsed.record, content.modified, settings.clock_slop) == verdict::expired;
}

bool is_nonce(std::string_view text) {
    return text.size() == 32 && text.find_first_not_of("0123456789abcdef") == std::string_view::npos;
}

// Removes `name` from `at` if it is still the file that was read (`seen`), never another one swapped in.
std::error_code remove_if_unchanged(sys::directory const& at, std::string const& name,
                                    sys::file_identity const& seen) {
    sys::file_identity now;
    if (auto const code = sys::identify(at, name, now)) return code;
    if (now != seen) return std::make_error_code(std::errc::device_or_resource_busy);
    return sys::remove_file(at, name);
}

// rmdir of a guard (or staged guard) directory whose one file was just removed, if the name still holds that
// directory. Where a removed name stays until the last handle to it closes (Windows without POSIX delete
// semantics: Wine, FAT, SMB), a process reading that record at the moment (a waiter naming the guard's
// holder, a sweep) keeps the name listed, and rmdir fails: it is tried again while that name is all the
// directory holds (or nothing: it went just now), for a moment. An empty directory left after that takes no
// one's place: the next guard replaces it, and a staged one is swept once abandoned. Refused for want of
// permission, it is not tried again.
void remove_emptied_directory(sys::directory const& parent, std::string const& name,
                              sys::directory const& emptied, std::string const& removed_name) {
    auto const give_up = std::chrono::steady_clock::now() + std::chrono::milliseconds{250};
    for (;;) {
        sys::file_identity standing;
        if (sys::identify(parent, name, standing) || standing != emptied.identity) return; // not ours now
        auto const refused = sys::remove_directory(parent, name);
        if (!refused || is(refused, std::errc::no_such_file_or_directory) ||
            refused_by_permissions(refused) || std::chrono::steady_clock::now() > give_up)
            return;
        std::vector<std::string> names;
        if (sys::list_directory(emptied, names) || names.size() > 1 ||
            (names.size() == 1 && names.front() != removed_name))
            return; // another guard was renamed into place: not ours
        std::this_thread::sleep_for(std::chrono::milliseconds{1});
    }
}

// A guard-like directory (the guard, or a staging directory) opened without following a symlink, and the one
// owner file it holds, read through that descriptor: what is judged is what is removed.
struct guard_directory {
    sys::directory opened;
    std::string owner_name;
    sys::file_content owner;
};

enum class opened_guard { one_owner, other, unreadable };

opened_guard open_guard_directory(sys::directory const& parent, std::string const& name,
                                  guard_directory& out) {
    if (sys::open_subdirectory(parent, name, out.opened)) return opened_guard::other;
    std::vector<std::string> names;
    if (sys::list_directory(out.opened, names) || names.size() != 1 || !is_nonce(names.front()))
        return opened_guard::other;
    out.owner_name = names.front();
    auto const code = sys::read_file(out.opened, out.owner_name, max_record_size, out.owner);
    if (code) return refused_by_permissions(code) ? opened_guard::unreadable : opened_guard::other;
    return out.owner.kind == sys::entry_kind::regular ? opened_guard::one_owner : opened_guard::other;
}

// What removing a guard-like directory came to.
enum class guard_removal { removed, kept, refused };

// Removes the owner file judged (exactly that file, through the opened directory) and then the emptied
// directory. refused: another user's, in a directory that does not let us remove it.
guard_removal remove_guard_directory(sys::directory const& parent, std::string const& name,
                                     guard_directory const& judged, failure* refusal = nullptr) {
    auto const code = remove_if_unchanged(judged.opened, judged.owner_name, judged.owner.identity);
    if (code && !is(code, std::errc::no_such_file_or_directory)) {
        if (!refused_by_permissions(code)) return guard_removal::kept;
        if (refusal)
            *refusal = {code, parent / name,
                        "cannot remove a dead process's takeover guard: " +
                            permission_remedy(judged.owner.owner)};
        return guard_removal::refused;
    }
    remove_emptied_directory(parent, name, judged.opened, judged.owner_name);
    return guard_removal::removed;
}

// Removes a guard-like directory whose single owner file was written by a dead process; exact removals only.
guard_removal remove_dead_owner_directory(sys::directory const& parent, std::string const& name,
                                          options const& settings, failure* refusal = nullptr) {
    guard_directory guard;
    if (open_guard_directory(parent, name, guard) != opened_guard::one_owner ||
        !left_by_dead_process(guard.owner, settings, writer_rules::holder_only))
        return guard_removal::kept;
    return remove_guard_directory(parent, name, guard, refusal);
}

// A guard is held for the few system calls of one takeover. One that has stood this long, owned by a process
// that cannot be judged here (another host, boot or pid namespace: R6), was left by a crash: a forced break
// (an operator who has checked) removes it. Exact removals only, as for a dead owner's guard.
constexpr auto stuck_guard_age = std::chrono::seconds{60};

guard_removal remove_stuck_guard(sys::directory const& parent, std::string const& name,
                                 options const& settings, failure* refusal) {
    guard_directory guard;
    if (open_guard_directory(parent, name, guard) != opened_guard::one_owner) return guard_removal::kept;
    auto const parsed = parse_record(guard.owner.bytes);
    if (parsed.status == record_status::ok && judge(parsed.record) == verdict::live)
        return guard_removal::kept;
    if (std::chrono::system_clock::now() - guard.owner.modified < stuck_guard_age + settings.clock_slop)
        return guard_removal::kept;
    return remove_guard_directory(parent, name, guard, refusal);
}

// A process killed between creating a helper file (or directory) and writing its record leaves it empty, with
// no owner to judge. Nothing of ours stays empty for long: after this much time it is abandoned.
constexpr auto abandoned_after = std::chrono::minutes{1};

bool older_than(std::chrono::system_clock::time_point modified, std::chrono::minutes age) {
    return std::chrono::system_clock::now() - modified > age;
}

bool remove_abandoned_empty_directory(sys::directory const& parent, std::string const& name) {
    sys::directory opened;
    std::vector<std::string> names;
    sys::file_content status;
    if (sys::open_subdirectory(parent, name, opened) || sys::list_directory(opened, names) || !names.empty())
        return false;
    if (sys::read_file(parent, name, 0, status) || status.kind != sys::entry_kind::directory ||
        status.identity != opened.identity || !older_than(status.modified, abandoned_after))
        return false;
    return !sys::remove_directory(parent, name); // rmdir: only if empty
}

// Under the guard: claim files and half-made guard directories of dead processes next to this lock, each
// judged and removed through the lock's directory descriptor (docs/protocol.md 2.4).
void sweep_leftovers(sys::directory const& directory, fs::path const& lock_file, options const& settings) {
    auto const stem = helper_stem(lock_file);
    auto const claim_prefix = stem + ".claim.";
    auto const guard_prefix = stem + ".takeover.";
    std::vector<std::string> names;
    if (sys::list_directory(directory, names)) return;
    // Only names this library makes (prefix + a 32-hex-digit nonce) are candidates; contents decide.
    for (auto const& name : names) {
        bool removed = false;
        if (name.starts_with(claim_prefix) && is_nonce(std::string_view{name}.substr(claim_prefix.size()))) {
            sys::file_content content;
            if (sys::read_file(directory, name, max_record_size, content)) continue;
            bool const abandoned = content.kind == sys::entry_kind::regular && content.bytes.empty() &&
                                   older_than(content.modified, abandoned_after);
            removed = (left_by_dead_process(content, settings, writer_rules::with_lease) || abandoned) &&
                      !remove_if_unchanged(directory, name, content.identity);
        } else if (name.starts_with(guard_prefix) &&
                   is_nonce(std::string_view{name}.substr(guard_prefix.size()))) {
            removed = remove_dead_owner_directory(directory, name, settings) == guard_removal::removed ||
                      remove_abandoned_empty_directory(directory, name);
        }
        if (removed)
            report(settings, diagnostic::kind::leftover_removed, directory / name,
                   "left by a process that is gone");
    }
}

std::chrono::system_clock::time_point lease_end(std::chrono::system_clock::time_point from,
                                                std::chrono::nanoseconds lifetime) {
    return from + std::chrono::duration_cast<std::chrono::system_clock::duration>(lifetime);
}

// flufl.lock's claim name, "<lock path><sep><host><sep><pid><sep><random>", with the lock path absolute: a
// flufl.lock process that breaks our lock removes the claim file by the path it reads, from its own
// directory.
bool name_flufl_claim(fs::path const& lock_file, claim_terms const& terms, claim& out, failure& error) {
    std::error_code code;
    auto const absolute = fs::absolute(lock_file, code).lexically_normal();
    if (code) {
        error = {code, lock_file, "cannot make the lock path absolute"};
        return false;
    }
    auto const host = sys::current_process().host;
    auto const separator = terms.flufl_separator;
    if (host.empty() || host.find(separator) != std::string::npos ||
        absolute.string().find(separator) != std::string::npos) {
        error = {errc::invalid_option, lock_file,
                 std::string{"the flufl.lock separator '"} + separator +
                     "' occurs in the lock path or the host name"};
        return false;
    }
    // flufl.lock's random part is a decimal number below 2^63; ours takes 60 bits of the fresh nonce.
    std::uint64_t random = 0;
    std::from_chars(out.nonce.data(), out.nonce.data() + 15, random, 16);
    out.nonce = std::to_string(random);
    out.claim_file = absolute.string() + separator + host + separator + std::to_string(out.owner_pid) +
                     separator + out.nonce;
    return true;
}

// After removing a broken flufl.lock lock file: its holder's claim file, found by the name the lock file held
// (in the lock's directory whatever path the holder used) and removed only when it holds that same name.
void remove_flufl_claim(sys::directory const& directory, fs::path const& lock_file,
                        observation const& removed) {
    auto const named = fs::path{removed.record.claim_file}.filename().string();
    auto const prefix = name_of(lock_file);
    if (!named.starts_with(prefix) || named.size() == prefix.size()) return;
    sys::file_content content;
    if (!sys::read_file(directory, named, max_record_size, content) &&
        content.kind == sys::entry_kind::regular && content.bytes == removed.bytes)
        remove_if_unchanged(directory, named, content.identity);
}

constexpr int guard_removal_attempts = 10;

std::mutex leaked_guards_mutex;
std::vector<std::string>& leaked_guards() {
    static auto* const nonces = new std::vector<std::string>; // never destroyed: guards are released at exit
    return *nonces;
}

void remember_leaked_guard(std::string const& nonce) {
    std::lock_guard guard{leaked_guards_mutex};
    leaked_guards().push_back(nonce);
}

// A guard directory whose one owner file carries the nonce of a guard of ours that is already released (its
// removal failed): ours to remove, as nobody holds it.
bool remove_own_leaked_guard(sys::directory const& directory, std::string const& guard_name) {
    guard_directory guard;
    if (open_guard_directory(directory, guard_name, guard) == opened_guard::other) return false;
    std::lock_guard lock{leaked_guards_mutex};
    auto& nonces = leaked_guards();
    auto const ours = std::find(nonces.begin(), nonces.end(), guard.owner_name);
    if (ours == nonces.end()) return false;
    auto const removed = remove_if_unchanged(guard.opened, guard.owner_name, guard.owner.identity);
    if (removed && !is(removed, std::errc::no_such_file_or_directory)) return false;
    remove_emptied_directory(directory, guard_name, guard.opened, guard.owner_name);
    nonces.erase(ours);
    return true;
}

// The takeover guard (docs/protocol.md 7): a directory "<lock>.takeover" holding its owner's record, made
// under a fresh staging name and renamed into place. Every step inside it goes through the lock's opened
// directory and a descriptor of the guard opened without following a symlink.
class takeover_guard {
public:
    takeover_guard(sys::directory const& directory, fs::path const& lock_file)
        : directory_(directory)
        , lock_file_(lock_file)
        , guard_name_(helper_name(lock_file, ".takeover"))
        , nonce_(random_nonce())
        , staging_name_(helper_name(lock_file, ".takeover." + nonce_)) {}

    takeover_guard(takeover_guard const&) = delete;
    takeover_guard& operator=(takeover_guard const&) = delete;

    ~takeover_guard() {
        if (!held_) return;
        // A guard left standing by a live process blocks every takeover until that process exits: a failed
        // removal (EACCES, EIO) is retried, and if it still fails, remembered, so that this process removes
        // its own leftover at its next attempt (try_hold) instead of waiting for it as if someone held it.
        sys::directory guard;
        std::error_code failed = sys::open_subdirectory(directory_, guard_name_, guard);
        for (int attempt = 0; !failed && attempt < guard_removal_attempts; ++attempt) {
            failed = remove_if_unchanged(guard, nonce_, owner_identity_);
            if (!failed || is(failed, std::errc::no_such_file_or_directory)) break;
            std::this_thread::sleep_for(std::chrono::milliseconds{1});
        }
        if (failed && !is(failed, std::errc::no_such_file_or_directory))
            remember_leaked_guard(nonce_);
        else if (guard.is_open())
            remove_emptied_directory(directory_, guard_name_, guard, nonce_);
    }

    // Makes a directory holding our record and renames it into place: rename fails while another guard (a
    // non-empty directory) is there, so at most one process holds the guard.
    enum class outcome { held, busy, failed };
    // With force (a forced break), a guard stuck for over stuck_guard_age is removed too.
    outcome try_hold(options const& settings, std::string& holder, failure& error, bool force = false) {
        for (int attempt = 0; attempt < 2; ++attempt) {
            if (attempt > 0) {
                // A fresh name: where a removed name stays while someone has it open (Windows without POSIX
                // delete semantics), the first staging directory may still be there, delete pending.
                nonce_ = random_nonce();
                staging_name_ = helper_name(lock_file_, ".takeover." + nonce_);
            }
            if (auto const code = stage(); code) {
                error = {code, directory_ / staging_name_, "cannot prepare the takeover guard"};
                return outcome::failed;
            }
            auto const code = sys::rename_directory(directory_, staging_name_, guard_name_);
            if (!code) {
                held_ = true;
                staging_ = {}; // the guard now; released through a descriptor opened by its name
                return outcome::held;
            }
            unstage();
            // sshfs answers EPERM where POSIX says ENOTEMPTY: a guard directory standing there means "taken".
            sys::directory standing;
            bool const taken = is(code, std::errc::directory_not_empty) || is(code, std::errc::file_exists) ||
                               (is(code, std::errc::operation_not_permitted) &&
                                !sys::open_subdirectory(directory_, guard_name_, standing));
            if (!taken) {
                error = {code, directory_ / guard_name_, "cannot take the takeover guard"};
                return outcome::failed;
            }
            if (remove_own_leaked_guard(directory_, guard_name_)) continue;
            failure refusal;
            auto removal = remove_dead_owner_directory(directory_, guard_name_, settings, &refusal);
            char const* removed_what = "takeover guard of a process that is gone";
            if (removal == guard_removal::kept && force) {
                removal = remove_stuck_guard(directory_, guard_name_, settings, &refusal);
                removed_what =
                    "takeover guard that stood for over a minute, its owner not alive here (forced break)";
            }
            if (removal == guard_removal::refused) {
                error = refusal;
                return outcome::failed;
            }
            if (removal == guard_removal::kept) {
                holder = describe_guard_holder();
                return outcome::busy;
            }
            report(settings, diagnostic::kind::leftover_removed, directory_ / guard_name_, removed_what);
        }
        holder = describe_guard_holder();
        return outcome::busy;
    }

private:
    // Names made here carry our fresh nonce: on failure, whatever stands there is ours to remove.
    std::error_code stage() {
        if (auto const code = sys::make_directory(directory_, staging_name_)) {
            sys::remove_directory(directory_, staging_name_);
            return code;
        }
        auto code = sys::open_subdirectory(directory_, staging_name_, staging_);
        if (!code)
            code = sys::create_exclusive(staging_, nonce_, serialize_record(make_record(nonce_)),
                                         owner_identity_);
        if (code) unstage();
        return code;
    }

    void unstage() {
        if (!staging_.is_open()) {
            sys::remove_directory(directory_, staging_name_); // empty, or not ours to empty
            return;
        }
        remove_if_unchanged(staging_, nonce_, owner_identity_);
        remove_emptied_directory(directory_, staging_name_, staging_, nonce_);
        staging_ = {};
    }

    std::string describe_guard_holder() const {
        guard_directory guard;
        switch (open_guard_directory(directory_, guard_name_, guard)) {
        case opened_guard::other:
            return "another process";
        case opened_guard::unreadable:
            return "a process of " + describe_owner(guard.owner.owner) + " (its record is not readable)";
        case opened_guard::one_owner:
            break;
        }
        auto const parsed = parse_record(guard.owner.bytes);
        return parsed.status == record_status::ok ? describe_holder(parsed.record) : "another process";
    }

    sys::directory const& directory_;
    fs::path lock_file_;
    std::string guard_name_;
    std::string nonce_;
    std::string staging_name_;
    sys::directory staging_;
    sys::file_identity owner_identity_;
    bool held_ = false;
};

std::mutex orphans_mutex;
std::vector<std::string>& orphans() {
    static auto* const nonces = new std::vector<std::string>;
    return *nonces;
}

} // namespace

void remember_orphan(std::string const& nonce) {
    std::lock_guard guard{orphans_mutex};
    orphans().push_back(nonce);
}

namespace {

bool is_orphaned(std::string const& nonce) {
    std::lock_guard guard{orphans_mutex};
    return std::find(orphans().begin(), orphans().end(), nonce) != orphans().end();
}

// Under the guard: no other process writes the token file now, so a staged copy left there is a crash's.
void remove_token_leftovers(sys::directory const& directory, fs::path const& lock_file) {
    auto const prefix = helper_stem(lock_file) + ".token.";
    std::vector<std::string> names;
    if (sys::list_directory(directory, names)) return;
    for (auto const& name : names)
        if (name.starts_with(prefix) && is_nonce(std::string_view{name}.substr(prefix.size())))
            sys::remove_file(directory, name);
}

bool read_last_token(sys::directory const& directory, fs::path const& lock_file, std::uint64_t& last,
                     failure& error) {
    auto const name = helper_name(lock_file, ".token");
    sys::file_content content;
    if (auto const code = sys::read_file(directory, name, 64, content)) {
        error = {code, directory / name,
                 refused_by_permissions(code)
                     ? "cannot read the fencing token: " + permission_remedy(content.owner)
                     : std::string{"cannot read the fencing token"}};
        return false;
    }
    last = 0;
    if (content.kind == sys::entry_kind::absent) return true;
    std::string_view digits = content.bytes;
    if (digits.ends_with('\n')) digits.remove_suffix(1);
    auto const [end, code] = std::from_chars(digits.data(), digits.data() + digits.size(), last);
    // The largest value has no successor: a file that says so was not written by us.
    if (content.kind != sys::entry_kind::regular || digits.empty() || code != std::errc{} ||
        end != digits.data() + digits.size() || last == std::numeric_limits<std::uint64_t>::max()) {
        error = {errc::invalid_lock_file, directory / name, "the fencing token file does not hold a number"};
        return false;
    }
    return true;
}

// Under the guard: records `token` as the last one unless a later one is recorded already.
bool raise_last_token(sys::directory const& directory, fs::path const& lock_file, std::uint64_t token,
                      failure& error) {
    std::uint64_t last = 0;
    if (!read_last_token(directory, lock_file, last, error)) return false;
    if (last >= token) return true;
    remove_token_leftovers(directory, lock_file);
    auto const staged = helper_name(lock_file, ".token." + random_nonce());
    auto const name = helper_name(lock_file, ".token");
    sys::file_identity ignored;
    if (auto const code = sys::create_exclusive(directory, staged, std::to_string(token) + "\n", ignored)) {
        error = {code, directory / staged, "cannot write the fencing token"};
        return false;
    }
    if (auto const code = sys::replace_file(directory, staged, name)) {
        sys::remove_file(directory, staged);
        sys::file_content standing;
        sys::read_file(directory, name, 0, standing);
        error = {code, directory / name,
                 refused_by_permissions(code)
                     ? "cannot record the fencing token: " + permission_remedy(standing.owner)
                     : std::string{"cannot record the fencing token"}};
        return false;
    }
    return true;
}

} // namespace

fs::path token_path(fs::path const& lock_file) {
    return lock_file.parent_path() / helper_name(lock_file, ".token");
}

bool read_last_token(fs::path const& lock_file, std::uint64_t& last, failure& error) {
    return read_last_token(by_path(lock_file), lock_file, last, error);
}

fs::path guard_path(fs::path const& lock_file) {
    return lock_file.parent_path() / helper_name(lock_file, ".takeover");
}

[[noreturn]] void raise(failure const& what) {
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
        }
    }
    throw lock_error(what.code, what.path, what.detail);
}

verdict judge(lock_record const& record) {
    auto const me = sys::current_process();
    if (record.format == lock_format::flufl) {
        // A flufl.lock record names no start time, boot or pid namespace: its pid proves nothing (reused, or
        // another container's). As flufl.lock itself does, only its lease decides; our own orphans excepted.
        bool const orphan = record.host == me.host && record.pid == me.pid && is_orphaned(record.nonce);
        return orphan ? verdict::stale : verdict::unknown;
    }
    if (record.version != 1) return verdict::unknown;
    if (record.host != me.host || record.boot_id != me.boot_id || record.pid_namespace != me.pid_namespace)
        return verdict::unknown;
    if (record.pid == me.pid && is_orphaned(record.nonce)) return verdict::stale; // ours, and nobody holds it
    auto const as_verdict = [](sys::process_state state) {
        switch (state) {
        case sys::process_state::alive:
            return verdict::live;
        case sys::process_state::gone:
            return verdict::stale;
        case sys::process_state::unknown:
            return verdict::unknown;
        }
        return verdict::unknown;
    };
    auto const holder = as_verdict(sys::local_process_state(record.pid, record.start_time, record.name));
    // The holder's group holds the lock too (docs/protocol.md, "Process groups"): its command may outlive it.
    if (holder != verdict::stale || !record.process_group) return holder;
    return as_verdict(sys::local_process_group_state(*record.process_group, record.group_start_time));
}

std::optional<std::chrono::system_clock::time_point>
lease_expiry(lock_record const& record, std::chrono::system_clock::time_point modified) {
    if (record.format == lock_format::flufl) return modified; // flufl.lock's lease end is the file time
    if (!record.lifetime) return std::nullopt;
    if (!record.acquired) return modified;
    // Saturating: a record may say anything, and an overflow would look like a lease that ended long ago.
    using duration = std::chrono::system_clock::duration;
    auto const lifetime = std::chrono::duration_cast<duration>(*record.lifetime);
    auto const latest = std::chrono::system_clock::time_point::max();
    auto const first_end = *record.acquired > latest - lifetime ? latest : *record.acquired + lifetime;
    return std::max(first_end, modified);
}

verdict judge(lock_record const& record, std::chrono::system_clock::time_point modified,
              std::chrono::nanoseconds clock_slop) {
    auto const holder = judge(record);
    auto const expiry = lease_expiry(record, modified);
    if (holder == verdict::stale || !expiry) return holder;
    auto const slop = std::chrono::duration_cast<std::chrono::system_clock::duration>(clock_slop);
    auto const now = std::chrono::system_clock::now();
    return *expiry < now - slop ? verdict::expired : holder;
}

verdict judge(observation const& seen, options const& settings) {
    return judge(seen.record, seen.modified, settings.clock_slop);
}

bool observe(fs::path const& lock_file, observation& out, failure& error) {
    out = {};
    sys::file_content content;
    auto const code = sys::read_file(by_path(lock_file), name_of(lock_file), max_record_size, content);
    out.identity = content.identity;
    out.changed = content.changed;
    out.modified = content.modified;
    out.owner = content.owner;
    if (code && refused_by_permissions(code) && content.kind == sys::entry_kind::regular) {
        // Another user's record that we may not read (written under a umask 077 by a version that did not
        // give it its directory's access): somebody holds the lock, we cannot say who or judge them.
        out.what = observation::kind::unreadable;
        out.problem = "a lock file of " + describe_owner(content.owner) + " that this user may not read";
        return true;
    }
    if (code) {
        error = {code, lock_file, "cannot read the lock file"};
        return false;
    }
    if (content.kind == sys::entry_kind::absent) return true;
    if (content.kind != sys::entry_kind::regular) {
        out.what = observation::kind::invalid;
        out.problem = describe_type(content.kind);
        return true;
    }
    auto parsed = parse_record(content.bytes);
    out.bytes = std::move(content.bytes);
    if (parsed.status != record_status::ok) {
        out.what = observation::kind::invalid;
        out.content_problem = true;
        out.problem = std::move(parsed.problem);
        return true;
    }
    out.what = observation::kind::held;
    out.record = std::move(parsed.record);
    return true;
}

lock_record make_record(std::string nonce, claim_terms const& terms) {
    auto const me = sys::current_process();
    lock_record record;
    record.pid = me.pid;
    record.name = me.name;
    record.version = 1;
    record.host = me.host;
    record.boot_id = me.boot_id;
    record.pid_namespace = me.pid_namespace;
    record.start_time = me.start_time;
    record.nonce = std::move(nonce);
    record.acquired = std::chrono::system_clock::now();
    record.lifetime = terms.lifetime;
    record.token = terms.token;
    if (terms.format == lock_format::openlock) record.bell = terms.bell;
    if (terms.process_group && terms.format == lock_format::openlock) {
        record.process_group = terms.process_group;
        record.group_start_time = sys::local_process_start_time(*terms.process_group);
    }
    return record;
}

bool stageable(claim_method method, bool local, claim_terms const& terms) {
    // A staged record names no process group: a lock that one holds too makes its claim when it claims.
    return method == claim_method::anonymous_link && local && !terms.lifetime && !terms.token &&
           !terms.process_group;
}

namespace {

bool younger_than(staged_claim const& staged, std::chrono::steady_clock::duration age) {
    return staged.pin && staged.owner_pid == sys::current_pid() &&
           std::chrono::steady_clock::now() - staged.made < age;
}

// A nameless file holding a fresh record (fresh nonce, acquired now), not linked anywhere yet.
std::error_code make_anonymous_claim(fs::path const& lock_file, claim_terms const& terms, staged_claim& out) {
    out = {};
    out.nonce = random_nonce();
    auto const record = make_record(out.nonce, terms);
    out.acquired = *record.acquired;
    out.bell = record.bell;
    out.made = std::chrono::steady_clock::now();
    out.owner_pid = sys::current_pid();
    // A new lease needs no file time: its first end is in the record (acquired + lifetime), and the file's
    // own modification time (now) is earlier.
    auto const code =
        sys::create_anonymous(by_path(lock_file), serialize_record(record), out.identity, out.pin);
    if (code) out = {};
    return code;
}

} // namespace

bool staged_claim_ready(staged_claim const& staged) {
    return younger_than(staged, staged_claim_max_age);
}

void stage_claim(fs::path const& lock_file, staged_claim& staged, std::uint64_t bell) noexcept {
    if (younger_than(staged, staged_claim_max_age / 2)) return;
    try {
        claim_terms terms;
        terms.bell = bell;
        make_anonymous_claim(lock_file, terms, staged); // best effort: the claim reports what fails
    } catch (...) {
        staged = {}; // getrandom failing, no memory: the claim meets (and reports) it again
    }
}

claim_result try_claim(fs::path const& lock_file, claim_method method, bool local, claim_terms const& terms,
                       claim& out, observation& seen, failure& error, staged_claim* staged) {
    out = {};
    // A kept descriptor or a kept claim name pins the inode: on a local file system the lock file having that
    // inode proves it is ours. FUSE and network file systems may number inodes per name (sshfs).
    out.identity_is_proof = local;
    out.owner_pid = sys::current_pid();
    std::chrono::steady_clock::time_point staged_made;
    out.lifetime = terms.lifetime;
    out.token = terms.token;
    if (staged && !stageable(method, local, terms)) staged = nullptr;
    auto const directory = by_path(lock_file);
    auto const lock_name = name_of(lock_file);

    std::error_code code;
    if (method == claim_method::anonymous_link) {
        // Linking a staged file changes nothing in the protocol: its record is as fresh a record as any (a
        // new nonce that no other attempt used or will use, our identity), only written earlier.
        staged_claim file;
        if (staged && younger_than(*staged, staged_claim_max_age)) {
            file = std::move(*staged);
        } else if (auto const creation = make_anonymous_claim(lock_file, terms, file)) {
            if (is(creation, std::errc::operation_not_supported)) return claim_result::no_anonymous_files;
            error = {creation, lock_file, "cannot create the lock record"};
            return claim_result::failed;
        }
        if (staged) *staged = {}; // an old one is closed (it was never linked: nothing remains)
        out.nonce = std::move(file.nonce);
        out.identity = file.identity;
        out.pin = std::move(file.pin);
        out.acquired = file.acquired;
        out.bell = file.bell;
        staged_made = file.made;
        code = sys::link_anonymous(out.pin, directory, lock_name);
        if (!code) return claim_result::acquired;
        if (sys::means_no_hard_links(code) && !name_taken(lock_file)) return claim_result::no_hard_links;
    } else {
        out.nonce = random_nonce();
        std::string text;
        if (terms.format == lock_format::flufl) {
            if (!name_flufl_claim(lock_file, terms, out, error)) return claim_result::failed;
            text = out.claim_file.string();
            out.acquired = std::chrono::system_clock::now();
        } else {
            auto const record = make_record(out.nonce, terms);
            out.acquired = *record.acquired;
            out.bell = record.bell;
            text = serialize_record(record);
        }
        if (method == claim_method::exclusive_create) {
            code = sys::create_exclusive_pinned(directory, lock_name, text, out.identity, out.pin);
            if (!code) return claim_result::acquired;
        } else {
            if (out.claim_file.empty())
                out.claim_file = lock_file.parent_path() / helper_name(lock_file, ".claim." + out.nonce);
            auto const claim_name = out.claim_file.filename().string();
            auto creation = sys::create_exclusive(directory, claim_name, text, out.identity);
            // flufl.lock reads a lease's end from the file time only: it must be set before the link shows
            // it.
            if (!creation && terms.format == lock_format::flufl)
                creation = sys::set_modified(directory, claim_name, lease_end(out.acquired, *terms.lifetime));
            if (creation) {
                // The name carries our fresh nonce: whatever stands there now (a file made although the call
                // failed, EEXIST after an NFS retransmission) is ours to remove.
                sys::remove_file(directory, claim_name);
                error = {creation, out.claim_file, "cannot create the claim file"};
                return claim_result::failed;
            }
            code = sys::make_link(directory, claim_name, lock_name);
            if (!code) return claim_result::acquired;
            if (sys::means_no_hard_links(code)) {
                // sshfs answers a link that lost the race to another client with EPERM (the SFTP server's
                // generic failure), not EEXIST. A link to a second name of our own tells that from a file
                // system without hard links.
                if (!hard_links_work(lock_file, claim_name)) {
                    sys::remove_file(directory, claim_name);
                    return claim_result::no_hard_links;
                }
                code = std::make_error_code(std::errc::file_exists);
            }
        }
    }
    // The same EPERM from an O_EXCL create (exclusive_create on sshfs) with the name taken means "taken".
    if (method == claim_method::exclusive_create && sys::means_no_hard_links(code) && name_taken(lock_file))
        code = std::make_error_code(std::errc::file_exists);
    // EEXIST, or an unclear answer (EIO; an NFS retransmission of a request that did succeed): the lock is
    // ours exactly when the lock file holds our nonce. Reading it (not stat) revalidates NFS client caches.
    failure unreadable;
    bool const readable = observe(lock_file, seen, unreadable);
    if (readable && seen.what == observation::kind::held && seen.record.nonce == out.nonce)
        return claim_result::acquired;
    if (!out.claim_file.empty()) sys::remove_file(directory, out.claim_file.filename().string());
    if (staged && readable && is(code, std::errc::file_exists)) {
        // Taken, and EEXIST is certain (local): our file got no name, nobody has seen its nonce. It is kept
        // for the next attempt. Any other answer may hide a link that worked: that nonce is an orphan
        // (below), and its file is closed.
        staged->nonce = out.nonce;
        staged->identity = out.identity;
        staged->pin = std::move(out.pin);
        staged->acquired = out.acquired;
        staged->made = staged_made;
        staged->owner_pid = out.owner_pid;
    }
    out.pin.reset();
    // The link may have succeeded although neither its answer nor a re-read says so: should our record show
    // up later, it is an orphan of ours that the next look removes (judge() calls it stale), not a holder.
    if (!is(code, std::errc::file_exists) || !readable) remember_orphan(out.nonce);
    if (is(code, std::errc::file_exists)) {
        if (!readable) {
            error = unreadable;
            return claim_result::failed;
        }
        return claim_result::taken;
    }
    error = {code, lock_file,
             method == claim_method::exclusive_create ? "cannot create the lock file"
                                                      : "cannot link the claim file to the lock file"};
    return claim_result::failed;
}

claim_method resolve_method(claim_method requested, bool local) {
    if (requested != claim_method::automatic) return requested;
    return local ? claim_method::anonymous_link : claim_method::hard_link;
}

bool is_local(fs::path const& lock_file) {
    return !sys::is_network_file_system(by_path(lock_file).path);
}

bool still_ours(fs::path const& lock_file, claim const& held, failure& error) {
    // Our inode at the lock path proves it while the inode is pinned: by our nameless or created file's
    // descriptor, or by our claim file's name while that stands. A break may remove the claim file too
    // (flufl.lock's, or a sweep of a holder it cannot judge, past its lease), and a freed inode number may
    // come back as the next holder's lock file. Without a pin (that, or sshfs, which numbers inodes per name)
    // the content decides: only our acquisition wrote our nonce.
    std::error_code code;
    if (held.identity_is_proof) {
        sys::file_identity now_there;
        code = sys::identify(by_path(lock_file), name_of(lock_file), now_there);
        if (!code && now_there != held.identity) return false;
        if (!code) {
            // The claim file looked at after the lock file: standing now with our inode, it stood all along
            // (only we make that name), so the inode seen at the lock path was ours.
            sys::file_identity claim_there;
            if (held.claim_file.empty() ||
                (!sys::identify(by_path(lock_file), held.claim_file.filename().string(), claim_there) &&
                 claim_there == held.identity))
                return true;
        }
    }
    bool ours = false;
    if (!code) {
        observation now;
        failure unreadable;
        if (!observe(lock_file, now, unreadable)) code = unreadable.code;
        ours = !code && now.what == observation::kind::held && now.record.nonce == held.nonce;
    }
    if (code && !is(code, std::errc::no_such_file_or_directory))
        error = {code, lock_file, "cannot check the lock file"};
    return ours;
}

bool release_claim(fs::path const& lock_file, claim const& held, failure& error) {
    // A fenced lock records its token as the last one before its file goes, under the guard: a release that
    // checked "ours", then stalled while the lock was broken and taken again, would otherwise record an older
    // token over a newer one.
    // A leased lock's holder is alive while a breaker may remove it (its lease ran out): without the guard,
    // our check and our unlink could straddle the breaker's removal and a new holder's claim.
    sys::directory directory = by_path(lock_file); // outlives the guard, which refers to it
    std::optional<takeover_guard> guard;
    if (held.token || held.lifetime) {
        if (!open_lock_directory(lock_file, directory, error)) return false;
        guard.emplace(directory, lock_file);
        auto outcome = takeover_guard::outcome::busy;
        std::string guard_holder;
        for (int attempt = 0; attempt < 200 && outcome == takeover_guard::outcome::busy; ++attempt) {
            if (attempt > 0) std::this_thread::sleep_for(std::chrono::milliseconds{5});
            outcome = guard->try_hold(options{}, guard_holder, error);
        }
        if (outcome == takeover_guard::outcome::busy)
            error = {errc::timeout, lock_file, guard_holder + " holds the takeover guard"};
        if (outcome != takeover_guard::outcome::held) return false;
    }
    failure unclear;
    bool const ours = still_ours(lock_file, held, unclear);
    if (ours && held.token && !raise_last_token(directory, lock_file, *held.token, error)) return false;
    if (ours) {
        if (auto const removal = sys::remove_file(directory, name_of(lock_file))) {
            error = {removal, lock_file, "cannot remove the lock file"};
            return false;
        }
    }
    if (unclear.code) {
        // Still held as far as we know: the claim file stays, it pins the inode that proves ownership.
        error = unclear;
        return false;
    }
    if (!held.claim_file.empty()) sys::remove_file(directory, held.claim_file.filename().string());
    if (ours) return true;
    error = {errc::not_locked, lock_file, "the lock file was removed or replaced while held"};
    return false;
}

refresh_result refresh_claim(fs::path const& lock_file, claim const& held, std::chrono::nanoseconds lifetime,
                             options const& settings, std::chrono::system_clock::time_point& expires,
                             failure& error) {
    sys::directory directory;
    if (!open_lock_directory(lock_file, directory, error)) return refresh_result::failed;
    takeover_guard guard{directory, lock_file};
    std::string guard_holder;
    switch (guard.try_hold(settings, guard_holder, error)) {
    case takeover_guard::outcome::held:
        break;
    case takeover_guard::outcome::busy:
        error = {errc::timeout, lock_file, guard_holder + " is taking the lock over"};
        return refresh_result::busy;
    case takeover_guard::outcome::failed:
        return refresh_result::failed;
    }
    // Under the guard nobody breaks the lock: if it is ours now, it is ours when the new end is written.
    if (!still_ours(lock_file, held, error)) {
        if (error.code) return refresh_result::failed;
        error = {errc::not_locked, lock_file, "the lock file was removed or replaced while held"};
        return refresh_result::lost;
    }
    auto const new_end = lease_end(std::chrono::system_clock::now(), lifetime);
    // Our own inode, through our descriptor or our unique claim name: never another holder's file.
    auto const code = held.pin ? sys::set_modified(held.pin, new_end)
                               : sys::set_modified(directory, held.claim_file.filename().string(), new_end);
    if (code) {
        error = {code, lock_file, "cannot refresh the lease"};
        return refresh_result::failed;
    }
    expires = new_end;
    return refresh_result::refreshed;
}

takeover_report remove_observed(fs::path const& lock_file, observation const& observed, bool force,
                                options const& settings, failure& error) {
    takeover_report report_back;
    auto const started = std::chrono::steady_clock::now();
    sys::directory directory;
    if (!open_lock_directory(lock_file, directory, error)) {
        report_back.result = takeover_result::failed;
        return report_back;
    }
    takeover_guard guard{directory, lock_file};
    switch (guard.try_hold(settings, report_back.guard_holder, error, force)) {
    case takeover_guard::outcome::held:
        break;
    case takeover_guard::outcome::busy:
        report_back.result = takeover_result::busy;
        return report_back;
    case takeover_guard::outcome::failed:
        report_back.result = takeover_result::failed;
        return report_back;
    }

    // Under the guard nobody else removes the lock file, and a stale holder cannot come back: what we read
    // now stays at the lock path until we remove it.
    observation now;
    if (!observe(lock_file, now, error)) {
        report_back.result = takeover_result::failed;
        return report_back;
    }
    // The bytes hold the holder's nonce, unique to one acquisition: equal bytes are the same lock file.
    // (Inode numbers are not compared: some file systems give a name a new one on every lookup.) A file we
    // may not read has no bytes to compare: its identity decides (only a forced break removes one).
    bool const same = now.what == observed.what && now.bytes == observed.bytes &&
                      (now.what != observation::kind::unreadable || now.identity == observed.identity);
    auto const judged = now.what == observation::kind::held ? judge(now, settings) : verdict::unknown;
    bool const removable = force || breakable(judged);
    report_back.result = takeover_result::changed;
    if (same && removable && now.what != observation::kind::absent) {
        if (now.what == observation::kind::held && now.record.token &&
            !raise_last_token(directory, lock_file, *now.record.token, error)) {
            report_back.result = takeover_result::failed;
            return report_back;
        }
        auto const code = sys::remove_file(directory, name_of(lock_file));
        // Gone already (a removal outside the protocol; Windows: a name that was going away, delete pending,
        // when we read it): nothing left to remove, and the caller looks again.
        if (code && is(code, std::errc::no_such_file_or_directory)) {
            sweep_leftovers(directory, lock_file, settings);
            return report_back;
        }
        if (code) {
            // A forced break removes a live or garbage lock too: the message says which it was.
            std::string const what = judged == verdict::stale     ? "the stale lock file"
                                     : judged == verdict::expired ? "the expired lock file"
                                                                  : "the lock file";
            error = {code, lock_file,
                     refused_by_permissions(code)
                         ? "cannot remove " + what + ": " + permission_remedy(now.owner)
                         : "cannot remove " + what};
            report_back.result = takeover_result::failed;
            return report_back;
        }
        report_back.result = takeover_result::removed;
        // Waiters behind a holder that rings may sleep with directory events off (docs/protocol.md 8.6).
        if (now.what == observation::kind::held && now.record.bell != 0)
            sys::ring_doorbell(lock_file, now.record.bell);
        if (now.what == observation::kind::held && now.record.format == lock_format::flufl)
            remove_flufl_claim(directory, lock_file, now);
        if (judged == verdict::expired)
            report(settings, diagnostic::kind::expired_lock_broken, lock_file,
                   "the lease of " + describe_holder(now.record) + " had expired");
        else
            report(settings, diagnostic::kind::stale_lock_removed, lock_file,
                   now.what == observation::kind::held ? describe_holder(now.record) : now.problem);
    }
    sweep_leftovers(directory, lock_file, settings);

    auto const took = std::chrono::steady_clock::now() - started;
    if (took > settings.race_delay)
        report(settings, diagnostic::kind::slow_system, lock_file,
               "a takeover took " +
                   std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(took).count()) +
                   " ms");
    return report_back;
}

} // namespace openlock::detail
