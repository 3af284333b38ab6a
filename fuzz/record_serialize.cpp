// SPDX-License-Identifier: MIT
// libFuzzer target: serialize_record on records with arbitrary field contents (newlines, NULs, '=', any
// byte). The text always parses back, to the record with '\n' and NUL replaced by '?', unless it is longer
// than max_record_size, which parse_record must then refuse as too_large.
#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fuzzer/FuzzedDataProvider.h>
#include <string>
#include <string_view>

import openlock;

namespace {

std::string printable(std::string text) {
    std::replace_if(text.begin(), text.end(), [](char c) { return c == '\n' || c == '\0'; }, '?');
    return text;
}

// Extra keys carry a prefix no known key has, so that they stay extra in every version of the format.
std::string extra_key(FuzzedDataProvider& input) {
    static constexpr char allowed[] = "abcdefghijklmnopqrstuvwxyz0123456789_-";
    std::string key = "x-";
    auto const length = input.ConsumeIntegralInRange<std::size_t>(1, 62);
    for (std::size_t i = 0; i < length; ++i)
        key += allowed[input.ConsumeIntegralInRange<std::size_t>(0, sizeof allowed - 2)];
    return key;
}

openlock::lock_record make_record(FuzzedDataProvider& input) {
    openlock::lock_record record;
    record.pid = input.ConsumeIntegralInRange<std::int64_t>(1, 4294967295);
    record.name = input.ConsumeRandomLengthString(64);
    if (input.ConsumeBool()) return record; // version 0: Python openlock's "pid\nname\n"
    record.version = input.ConsumeIntegralInRange<int>(1, 1000);
    record.host = input.ConsumeRandomLengthString(64);
    record.boot_id = input.ConsumeRandomLengthString(64);
    record.pid_namespace = input.ConsumeRandomLengthString(32);
    if (input.ConsumeBool()) record.start_time = input.ConsumeIntegral<std::uint64_t>();
    do
        record.nonce = input.ConsumeRandomLengthString(64);
    while (record.nonce.empty() && input.remaining_bytes() > 0);
    if (record.nonce.empty()) record.nonce = "n";
    if (input.ConsumeBool()) {
        // parse_record accepts seconds up to 9223372035 (system_clock's nanoseconds end in 2262).
        auto const nanoseconds = input.ConsumeIntegralInRange<std::int64_t>(0, 9'223'372'035'999'999'999);
        record.acquired = std::chrono::system_clock::time_point{
            std::chrono::duration_cast<std::chrono::system_clock::duration>(
                std::chrono::nanoseconds{nanoseconds})};
    }
    auto const extras = input.ConsumeIntegralInRange<int>(0, 8);
    for (int i = 0; i < extras; ++i) {
        auto key = extra_key(input);
        if (std::none_of(record.extra.begin(), record.extra.end(),
                         [&](auto const& kv) { return kv.first == key; }))
            record.extra.emplace_back(std::move(key), input.ConsumeRandomLengthString(64));
    }
    return record;
}

[[noreturn]] void fail(char const* property, std::string const& text) {
    std::fprintf(stderr, "record_serialize: %s\nserialized (%zu bytes):\n%s\n", property, text.size(),
                 text.c_str());
    std::abort();
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(std::uint8_t const* data, std::size_t size) {
    FuzzedDataProvider input{data, size};
    auto const record = make_record(input);
    auto const text = openlock::serialize_record(record);
    auto const parsed = openlock::parse_record(text);
    if (text.size() > openlock::max_record_size) {
        if (parsed.status != openlock::record_status::too_large) fail("a long text is not too_large", text);
        return 0;
    }
    if (parsed.status != openlock::record_status::ok) fail(parsed.problem.c_str(), text);
    auto expected = record;
    expected.name = printable(expected.name);
    expected.host = printable(expected.host);
    expected.boot_id = printable(expected.boot_id);
    expected.pid_namespace = printable(expected.pid_namespace);
    expected.nonce = printable(expected.nonce);
    for (auto& [key, value] : expected.extra)
        value = printable(value);
    if (!(parsed.record == expected)) fail("the parsed record differs from the serialized one", text);
    return 0;
}
