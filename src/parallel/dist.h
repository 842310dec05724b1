/* dist.h -- the ranks of one model and how they find each other.
 *
 * tp x pp ranks: world rank r is pipeline stage r / tp, tensor-parallel rank
 * r % tp. Rank 0 schedules (and serves HTTP); the others are workers that
 * run their shard of every step. Ranks come from one of:
 *   - a launcher (mpirun, srun with PMIx): every rank runs the same command,
 *     MPI_COMM_WORLD holds them all;
 *   - self-launch on one node: rank 0 starts tp*pp-1 workers of its own
 *     executable (`shardlm worker`) with MPI_Comm_spawn, so
 *     `shardlm serve MODEL --tensor-parallel-size 4` needs no launcher.
 * The groups (world, this rank's tensor-parallel group) are communicators
 * (comm.h); pipeline stages talk point to point over the world group. */
#ifndef SL_PARALLEL_DIST_H
#define SL_PARALLEL_DIST_H

#include <stdbool.h>

#include "parallel/comm.h"

typedef struct sl_dist {
    sl_comm world, tp;
    int tp_rank, tp_size, pp_rank, pp_size;
    int prev_stage, next_stage;   /* world ranks of the same tp rank one stage up / down; -1 at the ends */
    int last_stage_root;          /* world rank of (last stage, tp rank 0): it gathers the logits */
    int local_rank, local_size;   /* this rank among the job's ranks on its machine (which GPU it takes) */
    double timeout_s;             /* deadline of every communication */
    bool spawned;                 /* workers were started by this process */
} sl_dist;

/* True when this process was started by a launcher as a rank other than 0
 * (it must run sl_worker_main, not its command). Reads the launcher's
 * environment only; MPI is not initialized. */
bool sl_dist_launched_as_worker(void);
/* True when a launcher started this process as one of several ranks. */
bool sl_dist_launched_by_launcher(void);

/* Rank 0: joins or creates the job of tp*pp ranks. worker_exe is the
 * program self-launch starts (NULL: this process's executable). Every rank
 * then calls sl_dist_set_layout, after rank 0 has shared the layout. */
int sl_dist_init_root(int tp, int pp, const char *worker_exe, double timeout_s, sl_dist **out, sl_err *err);
/* A worker: joins the job its parent or launcher made; tp and pp come from
 * rank 0 afterwards (sl_dist_set_layout). */
int sl_dist_init_worker(double timeout_s, sl_dist **out, sl_err *err);
/* Splits the world into tp groups once the layout is known (every rank). */
int sl_dist_set_layout(sl_dist *d, int tp, int pp, sl_err *err);
/* The deadline of every communication: $SHARDLM_COMM_TIMEOUT seconds, default 60. */
double sl_comm_timeout_s(void);

/* Seconds this process has spent in communication calls so far (all its communicators). */
double sl_dist_comm_seconds(const sl_dist *d);

/* The job failed (a rank died or stalled): this process leaves it without
 * the shutdown handshake. MPI is not finalized at exit (MPI_Finalize could
 * wait for the dead rank forever) and cannot start another job in this
 * process; the other ranks end on their own at their next communication,
 * within the deadline, and a launcher ends the job when a rank exits
 * non-zero. Nothing is aborted: the caller decides how to exit. */
void sl_dist_fail(sl_dist *d);
bool sl_dist_failed(void);
void sl_dist_destroy(sl_dist *d);

#endif
