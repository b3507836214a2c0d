/* An I/O-error disk for tests/faults.rs, loaded with LD_PRELOAD. Files under $FAULT_EIO_UNDER
 * are numbered in the order this process first writes to them; the first $FAULT_EIO_FILES
 * (default 0) are written normally, and every later one fails with EIO once $FAULT_EIO_AFTER
 * bytes (default 0) have gone into it: writes, vectored and positioned writes, copies and syncs.
 * The kernels here have no device-mapper "error" target and no fault-injection knobs, so the
 * fault is injected at the libc boundary instead: smelt sees exactly the errno a dying disk
 * gives it. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

#define MAX_FILES 256

static char *seen[MAX_FILES];
static long long written[MAX_FILES];
static int count;

static long long env_number(const char *name) {
    const char *value = getenv(name);
    return value ? atoll(value) : 0;
}

/* Whether writing n more bytes to fd must fail (errno set to EIO). */
static int fails(int fd, size_t n) {
    const char *under = getenv("FAULT_EIO_UNDER");
    if (!under || !*under) return 0;
    char link[64], path[4096];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t len = readlink(link, path, sizeof path - 1);
    if (len < 0) return 0;
    path[len] = 0;
    if (strncmp(path, under, strlen(under)) != 0) return 0;
    int i = 0;
    while (i < count && strcmp(seen[i], path) != 0) i++;
    if (i == count) {
        if (count == MAX_FILES) return 0;
        seen[count++] = strdup(path);
    }
    if (i < env_number("FAULT_EIO_FILES")) return 0;
    written[i] += (long long)n;
    if (written[i] <= env_number("FAULT_EIO_AFTER")) return 0;
    errno = EIO;
    return 1;
}

/* The next definition of `name` (libc's), looked up once. */
#define REAL(name) static __typeof__(name) *real_##name; \
    if (!real_##name) real_##name = (__typeof__(name) *)dlsym(RTLD_NEXT, #name)

ssize_t write(int fd, const void *buf, size_t n) {
    REAL(write);
    return fails(fd, n) ? -1 : real_write(fd, buf, n);
}

ssize_t pwrite64(int fd, const void *buf, size_t n, off_t off) {
    REAL(pwrite64);
    return fails(fd, n) ? -1 : real_pwrite64(fd, buf, n, off);
}

ssize_t writev(int fd, const struct iovec *iov, int count) {
    REAL(writev);
    size_t n = 0;
    for (int i = 0; i < count; i++) n += iov[i].iov_len;
    return fails(fd, n) ? -1 : real_writev(fd, iov, count);
}

ssize_t copy_file_range(int in, off_t *in_off, int out, off_t *out_off, size_t n, unsigned flags) {
    REAL(copy_file_range);
    return fails(out, n) ? -1 : real_copy_file_range(in, in_off, out, out_off, n, flags);
}

int fsync(int fd) {
    REAL(fsync);
    return fails(fd, 0) ? -1 : real_fsync(fd);
}

int fdatasync(int fd) {
    REAL(fdatasync);
    return fails(fd, 0) ? -1 : real_fdatasync(fd);
}
