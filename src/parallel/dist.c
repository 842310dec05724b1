/* dist.c -- start or join the job of tp x pp ranks, and split it into groups.
 *
 * Under a launcher every rank runs the same command and MPI_COMM_WORLD is
 * the job. Without one, rank 0 initializes MPI as a singleton and spawns
 * the workers (`<exe> worker`) with MPI_Comm_spawn; merging the
 * intercommunicator gives the job with rank 0 first. Open MPI refuses to run
 * as root and to place more processes than cores unless told: self-launch
 * tells it (containers run as root; CPU tests run 4 ranks on 2 cores). Open
 * MPI 4 never returns from MPI_Comm_spawn when a worker dies before joining,
 * so the spawn runs on a thread of its own and rank 0 waits for it until a
 * deadline (engine/worker_exe.c has tried the program before). */
#include "parallel/dist.h"

#include <errno.h>
#include <mpi.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "parallel/comm_mpi.h"

/* What mpirun (Open MPI), hydra (MPICH) and srun set in each rank's environment. */
static const char *launcher_rank_vars[] = {"OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK", "SLURM_PROCID", NULL};
static const char *launcher_size_vars[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "SLURM_STEP_NUM_TASKS", NULL};

static int env_int(const char **names) {
    for (int i = 0; names[i]; i++) {
        const char *v = getenv(names[i]);
        if (v && *v) return atoi(v);
    }
    return -1;
}

bool sl_dist_launched_by_launcher(void) { return env_int(launcher_size_vars) > 1; }

bool sl_dist_launched_as_worker(void) {
    return sl_dist_launched_by_launcher() && env_int(launcher_rank_vars) > 0;
}

static bool g_failed; /* sl_dist_fail: a job of this process failed */

static void finalize_mpi(void) {
    if (g_failed) return;
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) MPI_Finalize();
}

static int init_mpi(sl_dist *d, bool self_launch, sl_err *err) {
    (void)d;
    if (g_failed)
        return sl_err_set(err, SL_EIO, "an earlier job of ranks in this process failed, and MPI cannot start another "
                          "in it: start a new process");
    int inited = 0;
    MPI_Initialized(&inited);
    if (inited) return SL_OK;
    if (self_launch) { /* one node: shared memory between ranks, TCP only on loopback; users may override */
        if (getuid() == 0) {
            setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 0);
            setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 0);
        }
        setenv("OMPI_MCA_rmaps_base_oversubscribe", "1", 0);
        setenv("OMPI_MCA_btl_tcp_if_include", "lo", 0);
        setenv("OMPI_MCA_oob_tcp_if_include", "lo", 0);
    }
    int provided;
    if (MPI_Init_thread(NULL, NULL, MPI_THREAD_MULTIPLE, &provided) != MPI_SUCCESS)
        return sl_err_set(err, SL_EIO, "MPI could not start (is Open MPI installed? apt-get install openmpi-bin)");
    if (provided < MPI_THREAD_SERIALIZED)
        return sl_err_set(err, SL_ENOTSUP, "the MPI library does not support calls from the engine thread");
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    atexit(finalize_mpi); /* MPI starts once per process: later engines reuse it */
    return SL_OK;
}

/* ---- spawning with a deadline ---- */

#define SPAWN_TIMEOUT_MAX_S 30.0 /* workers join in about a second; SHARDLM_COMM_TIMEOUT may shorten it */

typedef struct spawn_call {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    char exe[4096];
    int n_workers;
    MPI_Comm inter;
    bool ok, done, abandoned;
} spawn_call;

static bool g_spawn_stuck; /* a spawn never returned: MPI in this process cannot start another job */

static void spawn_call_free(spawn_call *c) {
    pthread_mutex_destroy(&c->mu);
    pthread_cond_destroy(&c->cv);
    free(c);
}

static void *spawn_thread(void *arg) {
    spawn_call *c = arg;
    char *args[] = {"worker", NULL};
    int *codes = calloc((size_t)c->n_workers, sizeof(int));
    MPI_Comm inter = MPI_COMM_NULL;
    const bool ok = codes && MPI_Comm_spawn(c->exe, args, c->n_workers, MPI_INFO_NULL, 0, MPI_COMM_SELF, &inter,
                                            codes) == MPI_SUCCESS;
    free(codes);
    pthread_mutex_lock(&c->mu);
    c->inter = inter;
    c->ok = ok;
    c->done = true;
    const bool abandoned = c->abandoned;
    pthread_cond_signal(&c->cv);
    pthread_mutex_unlock(&c->mu);
    if (abandoned) { /* rank 0 gave up on these workers: they end with this process */
        if (ok) MPI_Comm_free(&inter);
        spawn_call_free(c);
    }
    return NULL;
}

/* Waits for c until timeout_s; false (c then left to its thread) when it has not returned by then. */
static bool spawn_wait(spawn_call *c, double timeout_s) {
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += (time_t)timeout_s;
    until.tv_nsec += (long)((timeout_s - (double)(time_t)timeout_s) * 1e9);
    if (until.tv_nsec >= 1000000000L) until.tv_sec++, until.tv_nsec -= 1000000000L;
    pthread_mutex_lock(&c->mu);
    for (int rc = 0; !c->done && rc == 0;) rc = pthread_cond_timedwait(&c->cv, &c->mu, &until);
    const bool done = c->done;
    c->abandoned = !done;
    pthread_mutex_unlock(&c->mu);
    return done;
}

/* Starts n_workers of `exe worker`; the intercommunicator with them in *inter. */
static int spawn_workers(const char *exe, int n_workers, double timeout_s, MPI_Comm *inter, sl_err *err) {
    if (g_spawn_stuck)
        return sl_err_set(err, SL_EIO, "an earlier start of workers in this process never finished: open the engine "
                          "in a new process");
    spawn_call *c = calloc(1, sizeof *c);
    if (!c) return sl_err_set(err, SL_ENOMEM, "out of memory");
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv, NULL);
    snprintf(c->exe, sizeof c->exe, "%s", exe);
    c->n_workers = n_workers;
    pthread_t thread;
    if (pthread_create(&thread, NULL, spawn_thread, c) != 0) {
        spawn_call_free(c);
        return sl_err_set(err, SL_ENOMEM, "cannot start a thread to start the workers");
    }
    pthread_detach(thread);
    const double wait_s = timeout_s < SPAWN_TIMEOUT_MAX_S ? timeout_s : SPAWN_TIMEOUT_MAX_S;
    if (!spawn_wait(c, wait_s)) {
        g_spawn_stuck = true;
        return sl_err_set(err, SL_ETIMEDOUT, "the workers started from %s did not join within %.0f s (they exited or "
                          "crashed at start: see their messages above)", exe, wait_s);
    }
    const bool ok = c->ok;
    *inter = c->inter;
    spawn_call_free(c);
    return ok ? SL_OK : sl_err_set(err, SL_EIO, "could not start %d worker processes of %s", n_workers, exe);
}

static sl_dist *new_dist(double timeout_s) {
    sl_dist *d = calloc(1, sizeof *d);
    if (d) d->timeout_s = timeout_s;
    return d;
}

static int wrap_world(sl_dist *d, MPI_Comm world, sl_err *err) {
    MPI_Comm_set_errhandler(world, MPI_ERRORS_RETURN);
    return sl_comm_mpi_wrap(world, "world", d->timeout_s, &d->world, err);
}

int sl_dist_init_root(int tp, int pp, const char *worker_exe, double timeout_s, sl_dist **out, sl_err *err) {
    *out = NULL;
    sl_dist *d = new_dist(timeout_s);
    if (!d) return sl_err_set(err, SL_ENOMEM, "out of memory");
    const bool launcher = sl_dist_launched_by_launcher(); /* before MPI_Init writes its own variables */
    int rc = init_mpi(d, !launcher, err), n = tp * pp;
    MPI_Comm world = MPI_COMM_NULL;
    if (!rc && launcher) {
        int size;
        MPI_Comm_size(MPI_COMM_WORLD, &size);
        if (size != n)
            rc = sl_err_set(err, SL_EINVAL, "the launcher started %d ranks but --tensor-parallel-size %d x "
                            "--pipeline-parallel-size %d needs %d", size, tp, pp, n);
        else
            MPI_Comm_dup(MPI_COMM_WORLD, &world);
    } else if (!rc) {
        char self[4096];
        ssize_t len = worker_exe ? (ssize_t)snprintf(self, sizeof self, "%s", worker_exe)
                                 : readlink("/proc/self/exe", self, sizeof self - 1);
        if (len <= 0 || (size_t)len >= sizeof self) {
            sl_dist_destroy(d);
            return sl_err_set(err, SL_EIO, "cannot find the shardlm executable to start workers");
        }
        self[len] = '\0';
        MPI_Comm inter;
        MPI_Comm_set_errhandler(MPI_COMM_SELF, MPI_ERRORS_RETURN);
        if (!(rc = spawn_workers(self, n - 1, timeout_s, &inter, err))) {
            MPI_Intercomm_merge(inter, 0, &world);
            MPI_Comm_free(&inter);
            d->spawned = true;
        }
    }
    if (!rc) rc = wrap_world(d, world, err);
    if (rc) {
        sl_dist_destroy(d);
        return rc;
    }
    *out = d;
    return SL_OK;
}

int sl_dist_init_worker(double timeout_s, sl_dist **out, sl_err *err) {
    *out = NULL;
    sl_dist *d = new_dist(timeout_s);
    if (!d) return sl_err_set(err, SL_ENOMEM, "out of memory");
    int rc = init_mpi(d, !sl_dist_launched_by_launcher(), err);
    MPI_Comm parent = MPI_COMM_NULL, world = MPI_COMM_NULL;
    if (!rc) MPI_Comm_get_parent(&parent);
    if (!rc && parent != MPI_COMM_NULL) {
        MPI_Intercomm_merge(parent, 1, &world);
        MPI_Comm_free(&parent);
    } else if (!rc && sl_dist_launched_by_launcher()) {
        MPI_Comm_dup(MPI_COMM_WORLD, &world);
    } else if (!rc) {
        rc = sl_err_set(err, SL_EINVAL, "`shardlm worker` is started by shardlm itself or by mpirun, not by hand");
    }
    if (!rc) rc = wrap_world(d, world, err);
    if (rc) {
        sl_dist_destroy(d);
        return rc;
    }
    *out = d;
    return SL_OK;
}

/* The other ranks on this machine (node: their communicator) are watched by pid while this rank waits for
 * them, so one that dies is named within a second (comm_mpi.c). All are alive now: a pid this process
 * cannot see belongs to another pid namespace (a container) and is not watched. */
static int watch_local_ranks(const sl_dist *d, MPI_Comm node, sl_err *err) {
    const int n = d->world.size, mine[2] = {d->world.rank, (int)getpid()};
    int *pairs = malloc(sizeof(int) * 2 * (size_t)d->local_size), *pids = calloc((size_t)n, sizeof(int));
    int rc = pairs && pids ? SL_OK : sl_err_set(err, SL_ENOMEM, "out of memory for the rank table");
    if (!rc && MPI_Allgather(mine, 2, MPI_INT, pairs, 2, MPI_INT, node) != MPI_SUCCESS)
        rc = sl_err_set(err, SL_EIO, "exchanging process ids with the ranks on this machine failed in MPI");
    for (int i = 0; !rc && i < d->local_size; i++)
        if (pairs[2 * i] != d->world.rank && pairs[2 * i] >= 0 && pairs[2 * i] < n &&
            (kill(pairs[2 * i + 1], 0) == 0 || errno == EPERM))
            pids[pairs[2 * i]] = pairs[2 * i + 1];
    if (!rc) rc = sl_comm_mpi_watch_ranks(pids, n, err);
    free(pairs);
    free(pids);
    return rc;
}

int sl_dist_set_layout(sl_dist *d, int tp, int pp, sl_err *err) {
    if (tp * pp != d->world.size)
        return sl_err_set(err, SL_EINVAL, "layout %d x %d does not match the %d ranks of the job", tp, pp, d->world.size);
    const int r = d->world.rank;
    d->tp_size = tp;
    d->pp_size = pp;
    d->tp_rank = r % tp;
    d->pp_rank = r / tp;
    d->prev_stage = d->pp_rank > 0 ? r - tp : -1;
    d->next_stage = d->pp_rank + 1 < pp ? r + tp : -1;
    d->last_stage_root = (pp - 1) * tp;
    MPI_Comm node; /* the ranks that share this machine, whether mpirun or self-launch started them */
    MPI_Comm_split_type(sl_comm_mpi_handle(&d->world), MPI_COMM_TYPE_SHARED, r, MPI_INFO_NULL, &node);
    MPI_Comm_rank(node, &d->local_rank);
    MPI_Comm_size(node, &d->local_size);
    int rc = watch_local_ranks(d, node, err);
    MPI_Comm_free(&node);
    if (rc) return rc;
    MPI_Comm tp_comm;
    MPI_Comm_split(sl_comm_mpi_handle(&d->world), d->pp_rank, d->tp_rank, &tp_comm);
    MPI_Comm_set_errhandler(tp_comm, MPI_ERRORS_RETURN);
    return sl_comm_mpi_wrap(tp_comm, "tensor-parallel", d->timeout_s, &d->tp, err);
}

double sl_comm_timeout_s(void) {
    const char *v = getenv("SHARDLM_COMM_TIMEOUT");
    double t = v ? atof(v) : 0;
    return t > 0 ? t : 60.0;
}

double sl_dist_comm_seconds(const sl_dist *d) { return d ? sl_comm_mpi_seconds() : 0.0; }

void sl_dist_fail(sl_dist *d) {
    (void)d;
    g_failed = true;
}

bool sl_dist_failed(void) { return g_failed; }

void sl_dist_destroy(sl_dist *d) {
    if (!d) return;
    sl_comm_mpi_watch_ranks(NULL, 0, NULL);
    sl_comm_destroy(&d->tp);
    sl_comm_destroy(&d->world); /* MPI itself stays up until the process exits (finalize_mpi) */
    free(d);
}
