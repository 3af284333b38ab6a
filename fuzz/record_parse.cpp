// SPDX-License-Identifier: MIT
// libFuzzer target: parse_record on untrusted bytes. Whatever it accepts serializes canonically and, when the
// canonical text fits max_record_size (it may be longer than the input: empty fields and fractions are
// written out), parses back to an equal record; it never throws (an escaping exception is a crash).
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

import openlock;

namespace {

[[noreturn]] void fail(char const* property, std::string_view input, std::string const& text) {
    std::fprintf(stderr, "record_parse: %s\ninput: %zu bytes\nserialized (%zu bytes):\n%s\n", property,
                 input.size(), text.size(), text.c_str());
    std::abort();
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(std::uint8_t const* data, std::size_t size) {
    std::string_view const input{reinterpret_cast<char const*>(data), size};
    auto const parsed = openlock::parse_record(input);
    if (parsed.status != openlock::record_status::ok) {
        if (parsed.problem.empty()) fail("a rejected input has no problem in words", input, {});
        return 0;
    }
    auto const text = openlock::serialize_record(parsed.record);
    auto const reparsed = openlock::parse_record(text);
    if (text.size() > openlock::max_record_size) {
        if (reparsed.status != openlock::record_status::too_large)
            fail("an oversized text is not too_large", input, text);
        return 0;
    }
    if (reparsed.status != openlock::record_status::ok) fail(reparsed.problem.c_str(), input, text);
    if (!(reparsed.record == parsed.record)) fail("the re-parsed record differs", input, text);
    if (openlock::serialize_record(reparsed.record) != text)
        fail("serialization is not canonical", input, text);
    (void)openlock::describe_holder(parsed.record);
    return 0;
}
