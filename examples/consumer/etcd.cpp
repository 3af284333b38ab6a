// SPDX-License-Identifier: MIT
// The same with the lock held in etcd (openlock::etcd): takes it, says its fencing token, and releases it.
// Usage: etcd-consumer etcd://127.0.0.1:2379/consumer
#include <chrono>
#include <cstdio>
#include <mutex>
#include <string>
#include <system_error>

import openlock.etcd;

int main(int argc, char** argv) {
    using namespace std::chrono_literals;
    std::string const url = argc > 1 ? argv[1] : "etcd://127.0.0.1:2379/consumer";
    openlock::etcd_lock lock{url, 5s};
    std::error_code error;
    lock.acquire(error);
    if (error) {
        std::printf("not acquired: %s\n", error.message().c_str());
        return error == openlock::errc::unavailable ? 2 : 1;
    }
    std::printf("consumer holds %s with token %llu\n", url.c_str(),
                static_cast<unsigned long long>(lock.token()));
    lock.release();
    return 0;
}
