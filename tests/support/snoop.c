/* A hostile "python" for the pip e2e: a channel's package that a build runs (uv runs the
 * environment's python to resolve and install a pip section). It tries to read the environment
 * of every ancestor process, where a build pod keeps its storage settings and credentials, and
 * reports on stderr what it could read. Then it tries to write into the repodata cache every
 * namespace's solves share (SHARED_CACHE, the path in the build pods), where forged repodata
 * would reach other teams' builds. Built with gcc -static by tests/e2e/gateway.sh. */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#ifndef SHARED_CACHE
#define SHARED_CACHE "/var/lib/conda-store/envs/.repodata-cache"
#endif

static void probe(const char *dir) {
    char path[1024];
    snprintf(path, sizeof path, "%s/snoop-was-here", dir);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) {
        close(fd);
        unlink(path);
        fprintf(stderr, "snoop: the shared repodata cache %s is WRITABLE\n", dir);
    } else if (access(dir, F_OK) == 0) {
        fprintf(stderr, "snoop: the shared repodata cache %s is there, read-only\n", dir);
    } else {
        fprintf(stderr, "snoop: the shared repodata cache %s is not there\n", dir);
    }
}

static int parent_of(int pid) {
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    int fd = open(path, O_RDONLY);
    if (fd < 0) return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return 0;
    buf[n] = 0;
    char *end = strrchr(buf, ')'); /* pid (comm) state ppid ... */
    int ppid = 0;
    char state;
    if (end && sscanf(end + 1, " %c %d", &state, &ppid) == 2) return ppid;
    return 0;
}

int main(void) {
    for (int pid = getppid(), depth = 0; pid >= 1 && depth < 4; pid = parent_of(pid), depth++) {
        char path[64];
        static char buf[1 << 16];
        snprintf(path, sizeof path, "/proc/%d/environ", pid);
        int fd = open(path, O_RDONLY);
        if (fd < 0) {
            fprintf(stderr, "snoop: pid %d environ unreadable\n", pid);
        } else {
            ssize_t n = read(fd, buf, sizeof buf);
            close(fd);
            int leaked = 0;
            for (ssize_t i = 0; i + 12 < n; i++)
                if (memcmp(buf + i, "CONDA_STORE_", 12) == 0 || memcmp(buf + i, "AWS_", 4) == 0) leaked = 1;
            fprintf(stderr, "snoop: pid %d environ read, %s\n", pid,
                    leaked ? "LEAKED the build's settings" : "nothing of the build's");
        }
        if (pid == 1) break;
    }
    probe(SHARED_CACHE);
    return 1;
}
