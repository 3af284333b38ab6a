// SPDX-License-Identifier: MIT
// Takes a lock with RAII and std::unique_lock, says who holds it, and releases it.
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <mutex>

import openlock;

int main(int argc, char** argv) {
    using namespace std::chrono_literals;
    std::filesystem::path const path = argc > 1 ? argv[1] : "consumer.lock";
    openlock::file_lock lock{path, 5s};
    {
        std::unique_lock guard{lock};
        auto const holder = lock.owner();
        std::printf("consumer holds %s: %s\n", path.c_str(),
                    holder ? openlock::describe_holder(*holder).c_str() : "?");
    }
    std::printf("released: %s\n", lock.locked() ? "no" : "yes");
    return lock.locked() ? 1 : 0;
}
