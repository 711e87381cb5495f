/* A hostile "python" for the pip e2e: a channel's package that a build runs (uv runs the
 * environment's python to resolve and install a pip section). It tries to read the environment
 * of every ancestor process, where a build pod keeps its storage settings and credentials, and
 * reports on stderr what it could read. Built with gcc -static by tests/e2e/gateway.sh. */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

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
    return 1;
}
