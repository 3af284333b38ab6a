// SPDX-License-Identifier: MIT
// Uncontended acquire+release of openlock::file_lock next to the raw syscall floor of the same claim method.
//
// The floor is the fewest system calls a correct implementation of the method makes, with nothing else:
//   hard_link:        getrandom (the claim name's nonce), open(claim, O_CREAT|O_EXCL|O_NOFOLLOW), write the
//                     record, fstat, close, link(claim, lock); release: lstat(lock), unlink(lock),
//                     unlink(claim)
//   exclusive_create: open(lock, O_CREAT|O_EXCL|O_NOFOLLOW), write the record, fstat, close;
//                     release: lstat(lock), unlink(lock)
//   anonymous_link:   getrandom (the record's nonce), open(dir, O_TMPFILE), write the record, fstat,
//                     linkat(/proc/self/fd/N, lock); release: lstat(lock), unlink(lock), close
// The record written is as long as the one the library writes. Every method runs on the file system of the
// working directory (or of $OPENLOCK_BENCH_DIR) and on /dev/shm (tmpfs) when it exists. Benchmark names are
// <method>/<file system>/{1_floor,2_openlock}, so each pair sorts together; after the run a table gives
// openlock / floor for every pair (from the medians when there are repetitions).
#include "file_system_name.hpp"

#include <benchmark/benchmark.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>
#include <utility>
#include <vector>

import openlock;

namespace {

namespace fs = std::filesystem;

// A scratch directory of this process, removed with everything in it at exit.
struct scratch_directory {
    fs::path path;
    std::string file_system; ///< "ext4", "tmpfs", ...: part of the benchmark names

    scratch_directory(scratch_directory const&) = delete;
    scratch_directory& operator=(scratch_directory const&) = delete;
    scratch_directory(fs::path where, std::string label)
        : path(std::move(where)), file_system(std::move(label)) {}
    ~scratch_directory() {
        std::error_code ignored;
        fs::remove_all(path, ignored);
    }
};

std::optional<fs::path> make_scratch(fs::path const& parent) {
    std::error_code error;
    fs::create_directories(parent, error);
    auto pattern = (parent / "openlock-bench.XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) {
        std::cerr << "openlock-bench: cannot make a scratch directory in " << parent << ": "
                  << std::strerror(errno) << '\n';
        return std::nullopt;
    }
    return fs::path{pattern};
}

std::string record_text(std::size_t size) {
    std::string text(std::max<std::size_t>(size, 1), 'r');
    text.back() = '\n';
    return text;
}

// The floor's record is as long as the library's: measured once from a real lock file.
std::size_t library_record_size(fs::path const& directory) {
    try {
        openlock::options settings = openlock::get_defaults();
        settings.method = openlock::claim_method::exclusive_create;
        openlock::file_lock lock{directory / "size.lock", std::nullopt, settings};
        lock.acquire();
        auto const size = fs::file_size(directory / "size.lock");
        lock.release();
        return size;
    } catch (std::exception const& e) {
        std::cerr << "openlock-bench: cannot measure the record size (" << e.what() << "); using 200 bytes\n";
        return 200;
    }
}

bool fail(benchmark::State& state, char const* call) {
    std::string const message = std::string{call} + ": " + std::strerror(errno);
    state.SkipWithError(message.c_str());
    return false;
}

void to_hex(unsigned char const (&bytes)[16], char* out) {
    static constexpr char digits[] = "0123456789abcdef";
    for (std::size_t i = 0; i < sizeof bytes; ++i) {
        out[2 * i] = digits[bytes[i] >> 4];
        out[2 * i + 1] = digits[bytes[i] & 0xf];
    }
}

bool random_nonce(benchmark::State& state, char* hex_out) {
    unsigned char bytes[16];
    if (::getrandom(bytes, sizeof bytes, 0) != static_cast<ssize_t>(sizeof bytes))
        return fail(state, "getrandom");
    to_hex(bytes, hex_out);
    return true;
}

bool write_record(benchmark::State& state, int fd, std::string_view record, struct stat& created) {
    if (::write(fd, record.data(), record.size()) != static_cast<ssize_t>(record.size()))
        return fail(state, "write");
    if (::fstat(fd, &created) != 0) return fail(state, "fstat");
    return true;
}

// lstat(lock), and unlink(lock) when it is still the file we made.
bool remove_if_ours(benchmark::State& state, char const* lock, struct stat const& created) {
    struct stat now{};
    if (::lstat(lock, &now) != 0) return fail(state, "lstat");
    if (now.st_dev != created.st_dev || now.st_ino != created.st_ino) {
        state.SkipWithError("the lock file was replaced");
        return false;
    }
    if (::unlink(lock) != 0) return fail(state, "unlink");
    return true;
}

constexpr int create_flags = O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC;

void floor_hard_link(benchmark::State& state, scratch_directory const& directory, std::size_t record_size) {
    auto const record = record_text(record_size);
    auto const lock = (directory.path / "bench.lock").string();
    // "<lock>.claim.<32 hex digits>", the nonce filled in per iteration.
    auto claim = lock + ".claim." + std::string(32, '0');
    char* const nonce = claim.data() + claim.size() - 32;
    for (auto _ : state) {
        if (!random_nonce(state, nonce)) break;
        int const fd = ::open(claim.c_str(), create_flags, 0644);
        if (fd < 0) {
            fail(state, "open");
            break;
        }
        struct stat created{};
        bool const written = write_record(state, fd, record, created);
        ::close(fd);
        if (!written) break;
        if (::link(claim.c_str(), lock.c_str()) != 0) {
            fail(state, "link");
            break;
        }
        if (!remove_if_ours(state, lock.c_str(), created)) break;
        if (::unlink(claim.c_str()) != 0) {
            fail(state, "unlink claim");
            break;
        }
    }
}

void floor_exclusive_create(benchmark::State& state, scratch_directory const& directory,
                            std::size_t record_size) {
    auto const record = record_text(record_size);
    auto const lock = (directory.path / "bench.lock").string();
    for (auto _ : state) {
        int const fd = ::open(lock.c_str(), create_flags, 0644);
        if (fd < 0) {
            fail(state, "open");
            break;
        }
        struct stat created{};
        bool const written = write_record(state, fd, record, created);
        ::close(fd);
        if (!written) break;
        if (!remove_if_ours(state, lock.c_str(), created)) break;
    }
}

void floor_anonymous_link(benchmark::State& state, scratch_directory const& directory,
                          std::size_t record_size) {
    auto const record = record_text(record_size);
    auto const lock = (directory.path / "bench.lock").string();
    char nonce[32];
    for (auto _ : state) {
        if (!random_nonce(state, nonce)) break;
        int const fd = ::open(directory.path.c_str(), O_TMPFILE | O_WRONLY | O_CLOEXEC, 0644);
        if (fd < 0) {
            fail(state, "open O_TMPFILE");
            break;
        }
        struct stat created{};
        char source[48];
        std::snprintf(source, sizeof source, "/proc/self/fd/%d", fd);
        bool const done = write_record(state, fd, record, created) &&
                          (::linkat(AT_FDCWD, source, AT_FDCWD, lock.c_str(), AT_SYMLINK_FOLLOW) == 0 ||
                           fail(state, "linkat")) &&
                          remove_if_ours(state, lock.c_str(), created);
        ::close(fd);
        if (!done) break;
    }
}

void library(benchmark::State& state, scratch_directory const& directory, openlock::claim_method method) {
    try {
        openlock::options settings = openlock::get_defaults();
        settings.method = method;
        openlock::file_lock lock{directory.path / "bench.lock", std::nullopt, settings};
        for (auto _ : state) {
            lock.acquire();
            lock.release();
        }
    } catch (std::exception const& e) {
        state.SkipWithError(e.what());
    }
}

// Prints what the console reporter prints, then library / floor for every pair: from the medians when there
// are repetitions, else from the single runs.
class ratio_reporter : public benchmark::ConsoleReporter {
public:
    /// pair_names: "<method>/<file system>" in the order of the table.
    ratio_reporter(OutputOptions options, std::vector<std::string> pair_names)
        : ConsoleReporter(options), order_(std::move(pair_names)) {}

    void ReportRuns(std::vector<Run> const& runs) override {
        ConsoleReporter::ReportRuns(runs);
        for (auto const& run : runs) {
            if (run.error_occurred) continue;
            bool const aggregate = run.run_type == Run::RT_Aggregate;
            if (aggregate && run.aggregate_name != "median") continue;
            auto const& name = run.run_name.function_name; // without the repetition and aggregate suffixes
            auto const slash = name.rfind('/');
            if (slash == std::string::npos) continue;
            auto& pair = pairs_[name.substr(0, slash)];
            auto& times = name.substr(slash + 1) == "1_floor" ? pair.floor : pair.library;
            (aggregate ? times.median : times.single) =
                run.GetAdjustedRealTime() / benchmark::GetTimeUnitMultiplier(run.time_unit) * 1e9;
        }
    }

    void Finalize() override {
        ConsoleReporter::Finalize();
        auto& out = GetOutputStream();
        char line[160];
        std::snprintf(line, sizeof line, "\n%-30s %14s %14s %8s\n", "acquire+release, real time", "floor",
                      "openlock", "ratio");
        out << line << std::string(69, '-') << '\n';
        for (auto const& name : order_) {
            auto const& pair = pairs_[name];
            auto const floor = pair.floor.best();
            auto const library = pair.library.best();
            if (!floor || !library) continue;
            double const ratio = *library / *floor;
            std::snprintf(line, sizeof line, "%-30s %11.0f ns %11.0f ns %7.2fx%s\n", name.c_str(), *floor,
                          *library, ratio, ratio > 1.2 ? "  (over 1.2x)" : "");
            out << line;
        }
    }

private:
    struct times {
        std::optional<double> median;
        std::optional<double> single;
        [[nodiscard]] std::optional<double> best() const { return median ? median : single; }
    };
    struct pair_of_times {
        times floor;
        times library;
    };
    std::vector<std::string> order_;
    std::map<std::string, pair_of_times> pairs_;
};

} // namespace

int main(int argc, char** argv) {
    // The table needs the console reporter; its options follow the flags the default one would read.
    bool console = true;
    bool color = ::isatty(STDOUT_FILENO) != 0;
    bool tabular = false;
    for (int i = 1; i < argc; ++i) {
        std::string_view const arg{argv[i]};
        auto const value = arg.substr(arg.find('=') + 1);
        bool const yes = value == "true" || value == "yes" || value == "1";
        if (arg.starts_with("--benchmark_format=")) console = value == "console";
        if (arg.starts_with("--benchmark_color=") && value != "auto") color = yes;
        if (arg.starts_with("--benchmark_counters_tabular=")) tabular = yes;
    }
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;

    std::vector<std::unique_ptr<scratch_directory>> directories;
    char const* chosen = std::getenv("OPENLOCK_BENCH_DIR");
    auto const local = chosen && *chosen ? fs::path{chosen} : fs::current_path();
    if (auto made = make_scratch(local))
        directories.push_back(std::make_unique<scratch_directory>(*made, file_system_name(*made)));
    if (fs::is_directory("/dev/shm"))
        if (auto made = make_scratch("/dev/shm"))
            directories.push_back(std::make_unique<scratch_directory>(*made, file_system_name(*made)));
    if (directories.empty()) return 1;

    using method = openlock::claim_method;
    struct method_under_test {
        char const* name;
        method value;
        void (*floor)(benchmark::State&, scratch_directory const&, std::size_t);
    };
    method_under_test const methods[] = {
        {"hard_link", method::hard_link, floor_hard_link},
        {"exclusive_create", method::exclusive_create, floor_exclusive_create},
        {"anonymous_link", method::anonymous_link, floor_anonymous_link},
    };
    std::vector<std::string> pair_names;
    for (auto const& directory : directories) {
        auto const record_size = library_record_size(directory->path);
        benchmark::AddCustomContext("dir " + directory->file_system, directory->path.string() + " (record " +
                                                                         std::to_string(record_size) +
                                                                         " bytes)");
        for (auto const& m : methods) {
            auto const prefix = std::string{m.name} + "/" + directory->file_system + "/";
            pair_names.push_back(prefix.substr(0, prefix.size() - 1));
            scratch_directory const& dir = *directory;
            benchmark::RegisterBenchmark((prefix + "1_floor").c_str(), [&dir, record_size, floor = m.floor](
                                                                           benchmark::State& state) {
                floor(state, dir, record_size);
            })->UseRealTime();
            benchmark::RegisterBenchmark((prefix + "2_openlock").c_str(), [&dir, value = m.value](
                                                                              benchmark::State& state) {
                library(state, dir, value);
            })->UseRealTime();
        }
    }

    if (console) {
        auto options = benchmark::ConsoleReporter::OO_None;
        if (color)
            options = static_cast<benchmark::ConsoleReporter::OutputOptions>(
                options | benchmark::ConsoleReporter::OO_Color);
        if (tabular)
            options = static_cast<benchmark::ConsoleReporter::OutputOptions>(
                options | benchmark::ConsoleReporter::OO_Tabular);
        ratio_reporter reporter{options, std::move(pair_names)};
        benchmark::RunSpecifiedBenchmarks(&reporter);
    } else {
        benchmark::RunSpecifiedBenchmarks();
    }
    benchmark::Shutdown();
    return 0;
}
