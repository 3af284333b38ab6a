// SPDX-License-Identifier: MIT
// The claim (docs/protocol.md 4): one attempt to make the lock file appear with our record, by linking a
// nameless or a named claim file or by an exclusive create; and staged claims (8.5), a handoff's short cut.
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
#include <utility>
#include <vector>

module openlock;
import :protocol;
import :protocol_internals;
import :sys;

namespace openlock::detail {

namespace fs = std::filesystem;

namespace {
bool younger_than(staged_claim const& staged, std::chrono::steady_clock::duration age);
std::error_code make_anonymous_claim(fs::path const& lock_file, claim_terms const& terms, staged_claim& out);
bool name_flufl_claim(fs::path const& lock_file, claim_terms const& terms, claim& out, failure& error);
bool hard_links_work(fs::path const& lock_file, std::string const& claim_name);
} // namespace

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
            if (creation == std::errc::operation_not_supported) return claim_result::no_anonymous_files;
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
                out.claim_file =
                    sys::at_path(lock_file.parent_path()) / helper_name(lock_file, ".claim." + out.nonce);
            auto const claim_name = sys::name_text(out.claim_file.filename());
            auto creation = sys::create_exclusive(directory, claim_name, text, out.identity);
            // flufl.lock reads a lease's end from the file time only: it must be set before the link shows
            // it.
            if (!creation && terms.format == lock_format::flufl)
                creation = sys::set_modified(directory, claim_name, lease_end(out.acquired, *terms.lifetime));
            if (creation) {
                // The name carries our fresh nonce: whatever stands there now (a file made although the call
                // failed, EEXIST after an NFS retransmission) is ours to remove.
                best_effort(sys::remove_file(directory, claim_name));
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
                    best_effort(sys::remove_file(directory, claim_name));
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
    if (!out.claim_file.empty())
        best_effort(sys::remove_file(directory, sys::name_text(out.claim_file.filename())));
    if (staged && readable && code == std::errc::file_exists) {
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
    if (code != std::errc::file_exists || !readable) remember_orphan(out.nonce);
    if (code == std::errc::file_exists) {
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

bool staged_claim_ready(staged_claim const& staged) {
    return younger_than(staged, staged_claim_max_age);
}

void stage_claim(fs::path const& lock_file, staged_claim& staged, std::uint64_t bell) noexcept {
    if (younger_than(staged, staged_claim_max_age / 2)) return;
    try {
        claim_terms terms;
        terms.bell = bell;
        best_effort(make_anonymous_claim(lock_file, terms, staged)); // the claim meets what fails here again
    } catch (...) {
        staged = {}; // getrandom failing, no memory: the claim meets (and reports) it again
    }
}

std::chrono::system_clock::time_point lease_end(std::chrono::system_clock::time_point from,
                                                std::chrono::nanoseconds lifetime) {
    return from + std::chrono::duration_cast<std::chrono::system_clock::duration>(lifetime);
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

// A second link to our claim file, under a fresh name of our own (the sweep knows its shape): when it works,
// the file system has hard links, whatever the link to the lock path answered.
bool hard_links_work(fs::path const& lock_file, std::string const& claim_name) {
    auto const directory = by_path(lock_file);
    auto const probe = helper_name(lock_file, ".claim." + random_nonce());
    auto const code = sys::make_link(directory, claim_name, probe);
    if (!code) best_effort(sys::remove_file(directory, probe));
    return !sys::means_no_hard_links(code);
}

} // namespace

} // namespace openlock::detail
