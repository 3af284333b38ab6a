// SPDX-License-Identifier: MIT
/* A fault-injection shim, LD_PRELOADed into torture workers. It wraps the libc calls openlock makes on the
 * lock directory and, with probability FAULT_PCT percent per call (default 5), and only for paths containing
 * FAULT_MATCH (when set), injects:
 *   FAULT_LINK_EIO=1     link/linkat do link, then report EIO (an NFS reply lost after the server acted)
 *   FAULT_EXCL_EEXIST=1  open/openat with O_CREAT|O_EXCL create the file, then report EEXIST (a retransmitted
 *                        exclusive create)
 *   FAULT_DELAY_US=N     sleep up to N microseconds before and after link/rename/unlink/mkdir/rmdir
 *   FAULT_ENOSPC=1       creating calls (open with O_CREAT or O_TMPFILE, link, mkdir, rename) and writes to
 *                        files opened under FAULT_MATCH fail with ENOSPC without acting
 *   FAULT_EACCES=1       open, link, unlink, mkdir, rmdir and rename fail with EACCES without acting
 * It cannot see raw syscall() or static binaries (testbeds.md). Each process draws from its own generator,
 * seeded from its pid and the clock. */
#include <cerrno>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <dlfcn.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

extern "C" {

static struct {
    int ready;
    double percent;
    const char* match;
    int link_eio, excl_eexist, enospc, eacces;
    long delay_us;
} config;

static __thread uint64_t random_state;
#define TRACKED_FDS 4096
static unsigned char tracked[TRACKED_FDS]; /* fds opened on a matching path: candidates for write ENOSPC */

static int enabled(const char* name) {
    const char* value = getenv(name);
    return value != nullptr && *value != '\0' && strcmp(value, "0") != 0;
}

static void configure() {
    if (config.ready) return;
    const char* percent = getenv("FAULT_PCT");
    config.percent = percent ? atof(percent) : 5.0;
    config.match = getenv("FAULT_MATCH");
    config.link_eio = enabled("FAULT_LINK_EIO");
    config.excl_eexist = enabled("FAULT_EXCL_EEXIST");
    config.enospc = enabled("FAULT_ENOSPC");
    config.eacces = enabled("FAULT_EACCES");
    const char* delay = getenv("FAULT_DELAY_US");
    config.delay_us = delay ? atol(delay) : 0;
    config.ready = 1;
}

static uint64_t next_random() {
    if (random_state == 0) {
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        random_state =
            ((uint64_t)getpid() << 32) ^ (uint64_t)now.tv_nsec ^ (uint64_t)now.tv_sec ^ 0x9e3779b97f4a7c15ull;
    }
    random_state ^= random_state << 13;
    random_state ^= random_state >> 7;
    random_state ^= random_state << 17;
    return random_state;
}

static int matches(const char* path) {
    configure();
    return path != nullptr && (config.match == nullptr || strstr(path, config.match) != nullptr);
}

static int roll() {
    return (double)(next_random() % 1000000) < config.percent * 10000.0;
}

static int inject(int wanted, const char* path) {
    return wanted && matches(path) && roll();
}

static void delay(const char* path) {
    if (config.delay_us > 0 && matches(path) && roll()) {
        struct timespec pause = {0, (long)(next_random() % (uint64_t)config.delay_us) * 1000L};
        nanosleep(&pause, nullptr);
    }
}

static int fail(int error) {
    errno = error;
    return -1;
}

#define REAL(name, type)                                                                                     \
    static type real_##name;                                                                                 \
    if (!real_##name) real_##name = (type)dlsym(RTLD_NEXT, #name)

static int creates(int flags) {
    return (flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE;
}

static int open_faulted(int dirfd, const char* path, int flags, mode_t mode, int at) {
    using open_type = int (*)(const char*, int, ...);
    using openat_type = int (*)(int, const char*, int, ...);
    REAL(open, open_type);
    REAL(openat, openat_type);
    if (inject(config.enospc, path) && creates(flags)) return fail(ENOSPC);
    if (inject(config.eacces, path)) return fail(EACCES);
    int fd = at ? real_openat(dirfd, path, flags, mode) : real_open(path, flags, mode);
    if (fd >= 0 && (flags & O_CREAT) && (flags & O_EXCL) && inject(config.excl_eexist, path)) {
        close(fd);
        return fail(EEXIST); /* created, but the answer says it was there already */
    }
    if (fd >= 0 && fd < TRACKED_FDS) tracked[fd] = (unsigned char)matches(path);
    return fd;
}

static mode_t mode_argument(int flags, va_list arguments) {
    return creates(flags) ? (mode_t)va_arg(arguments, int) : 0;
}

int open(const char* path, int flags, ...) {
    va_list arguments;
    va_start(arguments, flags);
    mode_t mode = mode_argument(flags, arguments);
    va_end(arguments);
    return open_faulted(AT_FDCWD, path, flags, mode, 0);
}

int open64(const char* path, int flags, ...) {
    va_list arguments;
    va_start(arguments, flags);
    mode_t mode = mode_argument(flags, arguments);
    va_end(arguments);
    return open_faulted(AT_FDCWD, path, flags, mode, 0);
}

int openat(int dirfd, const char* path, int flags, ...) {
    va_list arguments;
    va_start(arguments, flags);
    mode_t mode = mode_argument(flags, arguments);
    va_end(arguments);
    return open_faulted(dirfd, path, flags, mode, 1);
}

int openat64(int dirfd, const char* path, int flags, ...) {
    va_list arguments;
    va_start(arguments, flags);
    mode_t mode = mode_argument(flags, arguments);
    va_end(arguments);
    return open_faulted(dirfd, path, flags, mode, 1);
}

int close(int fd) {
    using close_type = int (*)(int);
    REAL(close, close_type);
    if (fd >= 0 && fd < TRACKED_FDS) tracked[fd] = 0;
    return real_close(fd);
}

ssize_t write(int fd, const void* buffer, size_t size) {
    using write_type = ssize_t (*)(int, const void*, size_t);
    REAL(write, write_type);
    configure();
    if (fd >= 0 && fd < TRACKED_FDS && tracked[fd] && config.enospc && roll()) return fail(ENOSPC);
    return real_write(fd, buffer, size);
}

static int link_common(int at, int olddirfd, const char* oldpath, int newdirfd, const char* newpath,
                       int flags) {
    using link_type = int (*)(const char*, const char*);
    using linkat_type = int (*)(int, const char*, int, const char*, int);
    REAL(link, link_type);
    REAL(linkat, linkat_type);
    if (inject(config.enospc, newpath)) return fail(ENOSPC);
    if (inject(config.eacces, newpath)) return fail(EACCES);
    delay(newpath);
    int result = at ? real_linkat(olddirfd, oldpath, newdirfd, newpath, flags) : real_link(oldpath, newpath);
    delay(newpath);
    if (result == 0 && inject(config.link_eio, newpath))
        return fail(EIO); /* linked, but the answer was lost */
    return result;
}

int link(const char* oldpath, const char* newpath) {
    return link_common(0, AT_FDCWD, oldpath, AT_FDCWD, newpath, 0);
}

int linkat(int olddirfd, const char* oldpath, int newdirfd, const char* newpath, int flags) {
    return link_common(1, olddirfd, oldpath, newdirfd, newpath, flags);
}

/* unlink, rmdir, mkdir, rename: delays and refusals, never a lie about an outcome. */
#define BEFORE(path, may_enospc)                                                                             \
    do {                                                                                                     \
        if ((may_enospc) && inject(config.enospc, path)) return fail(ENOSPC);                                \
        if (inject(config.eacces, path)) return fail(EACCES);                                                \
        delay(path);                                                                                         \
    } while (0)

int unlink(const char* path) {
    using unlink_type = int (*)(const char*);
    REAL(unlink, unlink_type);
    BEFORE(path, 0);
    int result = real_unlink(path);
    delay(path);
    return result;
}

int unlinkat(int dirfd, const char* path, int flags) {
    using unlinkat_type = int (*)(int, const char*, int);
    REAL(unlinkat, unlinkat_type);
    BEFORE(path, 0);
    int result = real_unlinkat(dirfd, path, flags);
    delay(path);
    return result;
}

int rmdir(const char* path) {
    using rmdir_type = int (*)(const char*);
    REAL(rmdir, rmdir_type);
    BEFORE(path, 0);
    int result = real_rmdir(path);
    delay(path);
    return result;
}

int mkdir(const char* path, mode_t mode) {
    using mkdir_type = int (*)(const char*, mode_t);
    REAL(mkdir, mkdir_type);
    BEFORE(path, 1);
    int result = real_mkdir(path, mode);
    delay(path);
    return result;
}

int mkdirat(int dirfd, const char* path, mode_t mode) {
    using mkdirat_type = int (*)(int, const char*, mode_t);
    REAL(mkdirat, mkdirat_type);
    BEFORE(path, 1);
    int result = real_mkdirat(dirfd, path, mode);
    delay(path);
    return result;
}

int rename(const char* oldpath, const char* newpath) {
    using rename_type = int (*)(const char*, const char*);
    REAL(rename, rename_type);
    BEFORE(newpath, 1);
    int result = real_rename(oldpath, newpath);
    delay(newpath);
    return result;
}

int renameat(int olddirfd, const char* oldpath, int newdirfd, const char* newpath) {
    using renameat_type = int (*)(int, const char*, int, const char*);
    REAL(renameat, renameat_type);
    BEFORE(newpath, 1);
    int result = real_renameat(olddirfd, oldpath, newdirfd, newpath);
    delay(newpath);
    return result;
}

int renameat2(int olddirfd, const char* oldpath, int newdirfd, const char* newpath, unsigned int flags) {
    using renameat2_type = int (*)(int, const char*, int, const char*, unsigned int);
    REAL(renameat2, renameat2_type);
    BEFORE(newpath, 1);
    int result = real_renameat2(olddirfd, oldpath, newdirfd, newpath, flags);
    delay(newpath);
    return result;
}

} // extern "C"
