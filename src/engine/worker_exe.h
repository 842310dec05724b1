/* worker_exe.h -- which program the worker ranks run, and whether it can.
 *
 * Rank 0 starts tp x pp - 1 workers with MPI_Comm_spawn, each running
 * `<exe> worker`. Open MPI waits forever for workers that never start (a
 * name it cannot find, a program that exits at once), so the program is
 * found and tried here first: a missing or wrong one is an error at open,
 * naming where it looked and what to do, never a hang. */
#ifndef SL_ENGINE_WORKER_EXE_H
#define SL_ENGINE_WORKER_EXE_H

#include <stddef.h>

#include "util/error.h"

/* The worker program as an absolute path in out[0..n), or "" for this
 * process's own executable (it is the shardlm command). In order:
 * $SHARDLM_WORKER_EXE (a path, or a name looked up on PATH); this process
 * when it is `shardlm`; built_exe (the shardlm built beside the library);
 * `shardlm` on PATH. SL_ENOTFOUND, saying where it looked, when none is an
 * executable file. */
int sl_worker_exe_resolve(const char *built_exe, char *out, size_t n, sl_err *err);

/* Runs `exe version` (a few seconds at most) and checks that it prints this
 * library's "shardlm <version>": a program that cannot run, exits with an
 * error, hangs or is another version is refused with what it did. */
int sl_worker_exe_check(const char *exe, sl_err *err);

#endif
