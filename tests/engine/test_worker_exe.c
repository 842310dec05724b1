/* test_worker_exe.c -- which program worker ranks run, and the check before MPI spawns it.
 *
 * Truth is the file system built here (a folder on PATH holding programs,
 * a file that is not executable) and the real shardlm executable: a name is
 * found on PATH and made absolute, nothing found is an error naming where it
 * looked, and only a program that prints this library's "shardlm <version>"
 * passes the check (a program that exits with an error, prints nothing or
 * another version does not).
 * Usage: test_worker_exe SHARDLM_EXECUTABLE */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/worker_exe.h"
#include "test.h"

static const char *g_shardlm;
static char g_dir[64];

/* g_dir/name holding text, with mode. */
static void write_file(const char *name, const char *text, mode_t mode) {
    char path[256];
    snprintf(path, sizeof path, "%s/%s", g_dir, name);
    FILE *f = fopen(path, "w");
    if (!f) return;
    fputs(text, f);
    fclose(f);
    chmod(path, mode);
}

static int resolve(const char *env, const char *path_var, const char *built, char *out, sl_err *err) {
    if (env) setenv("SHARDLM_WORKER_EXE", env, 1);
    else unsetenv("SHARDLM_WORKER_EXE");
    setenv("PATH", path_var, 1);
    return sl_worker_exe_resolve(built, out, 4096, err);
}

static void test_resolve(void) {
    char out[4096], want[256];
    sl_err err = {0};
    /* a name on PATH becomes its absolute path; so does a relative path */
    CHECK_EQ_INT(resolve("myworker", g_dir, "/nonexistent/shardlm", out, &err), 0);
    snprintf(want, sizeof want, "%s/myworker", g_dir);
    CHECK_STR(out, want);
    CHECK_EQ_INT(chdir(g_dir), 0);
    CHECK_EQ_INT(resolve("./myworker", "", "/nonexistent/shardlm", out, &err), 0);
    CHECK_STR(out, want);
    /* no env: the built one, then `shardlm` on PATH */
    CHECK_EQ_INT(resolve(NULL, "/nonexistent", g_shardlm, out, &err), 0);
    CHECK(out[0] == '/');
    CHECK_EQ_INT(resolve(NULL, g_dir, "/nonexistent/shardlm", out, &err), 0);
    snprintf(want, sizeof want, "%s/shardlm", g_dir);
    CHECK_STR(out, want);
    /* what is not there, or not executable, is an error saying where it looked and what to do */
    CHECK_EQ_INT(resolve("no-such-worker", g_dir, g_shardlm, out, &err), SL_ENOTFOUND);
    CHECK_CONTAINS(err.msg, "SHARDLM_WORKER_EXE=no-such-worker is not an executable file on PATH");
    CHECK_EQ_INT(resolve("./not-executable", g_dir, g_shardlm, out, &err), SL_ENOTFOUND);
    CHECK_CONTAINS(err.msg, "./not-executable is not an executable file");
    CHECK_EQ_INT(resolve(NULL, "/nonexistent", "/nonexistent/shardlm", out, &err), SL_ENOTFOUND);
    CHECK_CONTAINS(err.msg, "not at /nonexistent/shardlm; not on PATH");
    CHECK_CONTAINS(err.msg, "set SHARDLM_WORKER_EXE");
}

static void test_check(void) {
    sl_err err = {0};
    char path[256];
    CHECK_EQ_INT(sl_worker_exe_check(g_shardlm, &err), 0);
    CHECK_EQ_INT(sl_worker_exe_check("/bin/false", &err), SL_EIO);
    CHECK_CONTAINS(err.msg, "`/bin/false version` exited with status 1");
    snprintf(path, sizeof path, "%s/myworker", g_dir); /* exits 0, prints the wrong thing */
    CHECK_EQ_INT(sl_worker_exe_check(path, &err), SL_EIO);
    CHECK_CONTAINS(err.msg, "printed \"not shardlm\"");
    snprintf(path, sizeof path, "%s/old", g_dir);
    CHECK_EQ_INT(sl_worker_exe_check(path, &err), SL_EIO);
    CHECK_CONTAINS(err.msg, "printed \"shardlm 0.0.1\"");
    snprintf(path, sizeof path, "%s/crashes", g_dir);
    CHECK_EQ_INT(sl_worker_exe_check(path, &err), SL_EIO);
    CHECK_CONTAINS(err.msg, "killed by signal 9");
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    g_shardlm = argv[1];
    snprintf(g_dir, sizeof g_dir, "/tmp/test_worker_exe.XXXXXX");
    if (!mkdtemp(g_dir)) return 2;
    write_file("myworker", "#!/bin/sh\necho not shardlm\n", 0755);
    write_file("shardlm", "#!/bin/sh\nexit 0\n", 0755);
    write_file("old", "#!/bin/sh\necho shardlm 0.0.1\n", 0755);
    write_file("crashes", "#!/bin/sh\nkill -9 $$\n", 0755);
    write_file("not-executable", "#!/bin/sh\nexit 0\n", 0644);
    TEST_RUN(test_resolve);
    TEST_RUN(test_check);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", g_dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", g_dir);
    TEST_EXIT();
}
