#include <cstdio>
import openlock;
int main() { openlock::file_lock lock{"x.lock"}; lock.acquire(); std::puts("ok"); }
