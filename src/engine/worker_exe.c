/* worker_exe.c -- find the program worker ranks run, and try it before MPI does.
 *
 * MPI_Comm_spawn takes a program name and, in Open MPI 4, waits forever when
 * the workers never join: a name it cannot find ("(null) was unable to find
 * the specified executable file"), a file that is not a program, a program
 * that exits at once. So rank 0 resolves the program itself, to an absolute
 * path (a bare name through PATH, as execvp would), and runs `<exe> version`
 * once before spawning: whatever would have hung the job becomes an error at
 * open saying what was tried. */
#include "engine/worker_exe.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "shardlm.h"
#include "util/progress.h"

#define CHECK_TIMEOUT_S 10.0

/* ---- finding it ---- */

static bool is_executable_file(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode) && access(path, X_OK) == 0;
}

/* path made absolute into out; false when it does not fit. */
static bool absolute(const char *path, char *out, size_t n) {
    char *abs = realpath(path, NULL);
    bool ok = abs && strlen(abs) < n;
    if (ok) strcpy(out, abs);
    free(abs);
    return ok;
}

/* A name with a slash as it is, else the first PATH entry holding it (an empty entry is "."). */
static bool find_program(const char *name, char *out, size_t n) {
    if (strchr(name, '/')) return is_executable_file(name) && absolute(name, out, n);
    const char *path = getenv("PATH");
    for (const char *dir = path; dir && *dir;) {
        size_t len = strcspn(dir, ":");
        char candidate[4096];
        int k = snprintf(candidate, sizeof candidate, "%.*s/%s", (int)len, len ? dir : ".", name);
        if (k > 0 && (size_t)k < sizeof candidate && is_executable_file(candidate)) return absolute(candidate, out, n);
        dir += len + (dir[len] == ':');
    }
    return false;
}

/* This process is the shardlm command (then it starts copies of itself). */
static bool self_is_shardlm(void) {
    char self[4096];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) return false;
    self[n] = '\0';
    const char *base = strrchr(self, '/');
    return strcmp(base ? base + 1 : self, "shardlm") == 0;
}

int sl_worker_exe_resolve(const char *built_exe, char *out, size_t n, sl_err *err) {
    out[0] = '\0';
    const char *env = getenv("SHARDLM_WORKER_EXE");
    if (env && *env) {
        if (find_program(env, out, n)) return SL_OK;
        return sl_err_set(err, SL_ENOTFOUND, "SHARDLM_WORKER_EXE=%s is not an executable file%s: worker ranks run the "
                          "shardlm program; set SHARDLM_WORKER_EXE to its path", env, strchr(env, '/') ? "" : " on PATH");
    }
    if (self_is_shardlm()) return SL_OK;
    if (find_program(built_exe, out, n) || find_program("shardlm", out, n)) return SL_OK;
    return sl_err_set(err, SL_ENOTFOUND, "more than one rank needs worker processes running the shardlm program, and "
                      "none was found (SHARDLM_WORKER_EXE is unset; not at %s; not on PATH): set SHARDLM_WORKER_EXE "
                      "to the shardlm executable, or install it (the Python package built by `pip install ./python` "
                      "carries one)", built_exe);
}

/* ---- trying it ---- */

/* Reads what fd gives until end of file or the deadline; keeps the first n - 1 bytes, NUL-terminated. */
static void read_until(int fd, char *buf, size_t n, double deadline) {
    size_t len = 0;
    for (;;) {
        const double left = deadline - sl_now_s();
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (left <= 0 || poll(&p, 1, (int)(left * 1000) + 1) <= 0) break;
        char chunk[256];
        ssize_t got = read(fd, chunk, sizeof chunk);
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0) break;
        size_t take = (size_t)got < n - 1 - len ? (size_t)got : n - 1 - len;
        memcpy(buf + len, chunk, take);
        len += take;
    }
    buf[len] = '\0';
}

/* Waits for pid until the deadline, then kills it; false when it had to be killed. A process
 * that ignores SIGCHLD cannot wait: the child then counts as having exited with status 0. */
static bool reap(pid_t pid, int *status, double deadline) {
    while (sl_now_s() < deadline) {
        pid_t r = waitpid(pid, status, WNOHANG);
        if (r == pid) return true;
        if (r < 0 && errno == ECHILD) {
            *status = 0;
            return true;
        }
        nanosleep(&(struct timespec){0, 5000000}, NULL);
    }
    kill(pid, SIGKILL);
    waitpid(pid, status, 0);
    return false;
}

/* `exe version`'s output (stdout and stderr) and how it ended. */
static int run_version(const char *exe, char *out, size_t n, int *status, bool *finished, sl_err *err) {
    int fds[2];
    if (pipe2(fds, O_CLOEXEC)) return sl_err_set(err, SL_EIO, "cannot try the worker executable %s: pipe: %s", exe, strerror(errno));
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
    posix_spawn_file_actions_adddup2(&fa, fds[1], 2);
    char *argv[] = {(char *)exe, "version", NULL};
    pid_t pid;
    int rc = posix_spawn(&pid, exe, &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(fds[1]);
    if (rc) {
        close(fds[0]);
        return sl_err_set(err, SL_EIO, "cannot run the worker executable %s: %s", exe, strerror(rc));
    }
    const double deadline = sl_now_s() + CHECK_TIMEOUT_S;
    read_until(fds[0], out, n, deadline);
    close(fds[0]);
    *finished = reap(pid, status, deadline);
    return SL_OK;
}

int sl_worker_exe_check(const char *exe, sl_err *err) {
    char out[256], want[64];
    int status = 0;
    bool finished = false;
    int rc = run_version(exe, out, sizeof out, &status, &finished, err);
    if (rc) return rc;
    out[strcspn(out, "\r\n")] = '\0'; /* the first line */
    snprintf(want, sizeof want, "shardlm %s", sl_version());
    if (finished && WIFEXITED(status) && WEXITSTATUS(status) == 0 && strcmp(out, want) == 0) return SL_OK;
    char how[64];
    if (!finished) snprintf(how, sizeof how, "did not finish within %.0f s", CHECK_TIMEOUT_S);
    else if (WIFSIGNALED(status)) snprintf(how, sizeof how, "was killed by signal %d", WTERMSIG(status));
    else snprintf(how, sizeof how, "exited with status %d", WEXITSTATUS(status));
    return sl_err_set(err, SL_EIO, "the worker executable %s is not a working \"%s\": `%s version` %s and printed "
                      "\"%s\"; set SHARDLM_WORKER_EXE to the shardlm program built with this library", exe, want, exe,
                      how, out);
}
