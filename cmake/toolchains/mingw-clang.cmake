# Cross build for Windows x86_64 on Linux: clang-19 targeting x86_64-w64-mingw32 with lld and the mingw-w64
# sysroot (Debian: g++-mingw-w64-x86-64-posix, mingw-w64-x86-64-dev). The tests run under Wine through
# tools/wine-run (CMAKE_CROSSCOMPILING_EMULATOR). mingw g++ itself cannot build named modules, hence clang.
set(CMAKE_SYSTEM_NAME Windows)
set(CMAKE_SYSTEM_PROCESSOR x86_64)

set(CMAKE_C_COMPILER clang-19)
set(CMAKE_CXX_COMPILER clang++-19)
set(CMAKE_C_COMPILER_TARGET x86_64-w64-mingw32)
set(CMAKE_CXX_COMPILER_TARGET x86_64-w64-mingw32)
set(CMAKE_RC_COMPILER llvm-rc-19)
set(CMAKE_AR llvm-ar-19)
set(CMAKE_RANLIB llvm-ranlib-19)
set(CMAKE_CXX_COMPILER_CLANG_SCAN_DEPS clang-scan-deps-19)
set(CMAKE_LINKER_TYPE LLD)

# mingw's libstdc++ is built by GCC with emulated TLS (__emutls_v.*): clang must use it too, or thread_local
# symbols of the standard library (std::call_once's __once_callable) do not link.
set(CMAKE_C_FLAGS_INIT -femulated-tls)
set(CMAKE_CXX_FLAGS_INIT -femulated-tls)

# -static: a dynamically linked exe finds no libstdc++/winpthread DLLs under Wine and silently exits 53.
set(CMAKE_EXE_LINKER_FLAGS_INIT -static)
set(CMAKE_CXX_STANDARD_LIBRARIES -lpthread)

set(CMAKE_FIND_ROOT_PATH /usr/x86_64-w64-mingw32)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)

set(CMAKE_CROSSCOMPILING_EMULATOR ${CMAKE_CURRENT_LIST_DIR}/../../tools/wine-run)

# Header-only dependencies come from the build host (cmake/host-headers.cmake), never its /usr/include.
set(OPENLOCK_HOST_HEADERS ON)
