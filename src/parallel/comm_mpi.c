/* comm_mpi.c -- the communicator over MPI, for tensors in host memory.
 *
 * Every operation is MPI's own non-blocking collective or point-to-point
 * call, completed by polling against a deadline, so a rank that died or
 * stalls turns into an SL_ETIMEDOUT error naming the operation and the group
 * instead of a hang. isend/irecv hand the started request to the caller
 * (a pipeline keeps several in flight) and wait completes it the same way,
 * so time waiting on them is counted too. The poll spins briefly (a step's
 * collectives follow each other closely) and then sleeps in naps up to a
 * millisecond, so an idle worker waiting for the next step costs no CPU. No collective algorithm is written
 * here: MPI chooses and runs them.
 *
 * A rank that died on this machine is not left to the deadline (a minute by
 * default): a wait that has lasted past WATCH_AFTER_S looks every
 * WATCH_EVERY_S whether the job's other processes here still run (their pids,
 * exchanged at set-up), and fails at once naming the rank that has exited.
 * Ranks on other machines are known lost by the deadline only. */
#include <errno.h>
#include <mpi.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "parallel/comm_mpi.h"
#include "util/progress.h"

typedef struct mpi_ctx {
    MPI_Comm comm;
    double timeout_s;
    const char *name;
} mpi_ctx;

/* Seconds this process has spent waiting for communication (all groups).
 * One thread per process communicates (rank 0's engine loop, a worker's
 * main thread), and it is also the one that reads this. */
static double g_comm_seconds;

double sl_comm_mpi_seconds(void) { return g_comm_seconds; }

/* How a wait polls: spinning (yielding the core after the first spins, for a
 * peer on the same core) while the wait is short, as between a step's
 * collectives; then sleeping between polls, the naps doubling up to
 * WAIT_NAP_MAX_S, so an idle worker waiting for the next step costs next to
 * no CPU (about one MPI_Test a millisecond) and wakes within a millisecond. */
#define WAIT_SPIN_S 0.002
#define WAIT_NAP_MIN_NS 20000L
#define WAIT_NAP_MAX_NS 1000000L
#define WATCH_AFTER_S 0.5
#define WATCH_EVERY_S 0.25

/* The watched ranks (sl_comm_mpi_watch_ranks): world rank -> pid here, 0 for none. */
static int *g_watch_pids;
static int g_watch_n;

int sl_comm_mpi_watch_ranks(const int *pids, int n_ranks, sl_err *err) {
    free(g_watch_pids);
    g_watch_pids = NULL;
    g_watch_n = 0;
    if (n_ranks <= 0) return SL_OK;
    g_watch_pids = malloc(sizeof(int) * (size_t)n_ranks);
    if (!g_watch_pids) return sl_err_set(err, SL_ENOMEM, "out of memory for the rank table");
    memcpy(g_watch_pids, pids, sizeof(int) * (size_t)n_ranks);
    g_watch_n = n_ranks;
    return SL_OK;
}

/* Whether process pid has exited: gone, or a zombie its parent has not reaped yet. */
static bool exited(int pid) {
    if (kill(pid, 0) != 0 && errno == ESRCH) return true;
    char path[64], state = 0;
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f) return false;
    /* "pid (comm) state ...": the state follows the last ')' (comm may hold one) */
    char line[512];
    size_t n = fread(line, 1, sizeof line - 1, f);
    fclose(f);
    line[n] = '\0';
    const char *close = strrchr(line, ')');
    if (close && close[1] == ' ') state = close[2];
    return state == 'Z' || state == 'X';
}

int sl_comm_mpi_watch(double start, double *watched, const char *op, const char *group, sl_err *err) {
    const double now = sl_now_s();
    if (now - start < WATCH_AFTER_S || now - *watched < WATCH_EVERY_S) return SL_OK;
    *watched = now;
    for (int r = 0; r < g_watch_n; r++)
        if (g_watch_pids[r] > 0 && exited(g_watch_pids[r]))
            return sl_err_set(err, SL_EIO, "rank %d (process %d, on this machine) has exited: %s%s%s%s cannot finish",
                              r, g_watch_pids[r], op, group ? " over the " : "", group ? group : "",
                              group ? " group" : "");
    return SL_OK;
}

static int wait_timed_out(mpi_ctx *c, const char *op, int peer, sl_err *err) {
    if (peer >= 0)
        return sl_err_set(err, SL_ETIMEDOUT, "%s with rank %d of the %s group timed out after %.0f s: "
                          "that rank stalled or died", op, peer, c->name, c->timeout_s);
    return sl_err_set(err, SL_ETIMEDOUT, "%s over the %s group timed out after %.0f s: a rank stalled or died",
                      op, c->name, c->timeout_s);
}

static int wait_for(mpi_ctx *c, MPI_Request *req, const char *op, int peer, sl_err *err) {
    double start = sl_now_s(), watched = start;
    long nap_ns = WAIT_NAP_MIN_NS;
    bool napping = false;
    for (long polls = 1;; polls++) {
        int done = 0;
        if (MPI_Test(req, &done, MPI_STATUS_IGNORE) != MPI_SUCCESS)
            return sl_err_set(err, SL_EIO, "%s over the %s group failed in MPI", op, c->name);
        if (done) {
            g_comm_seconds += sl_now_s() - start;
            return SL_OK;
        }
        if (napping || polls % 64 == 0) {
            double waited = sl_now_s() - start;
            if (waited > c->timeout_s) return wait_timed_out(c, op, peer, err);
            if (sl_comm_mpi_watch(start, &watched, op, c->name, err)) return SL_EIO;
            if (waited > WAIT_SPIN_S) {
                napping = true;
                nanosleep(&(struct timespec){0, nap_ns}, NULL);
                nap_ns = nap_ns * 2 > WAIT_NAP_MAX_NS ? WAIT_NAP_MAX_NS : nap_ns * 2;
            }
        } else if (polls > 100) {
            sched_yield(); /* let a peer on the same core run */
        }
    }
}

static int mpi_all_reduce_sum(void *ctx, float *buf, int64_t n, sl_err *err) {
    mpi_ctx *c = ctx;
    MPI_Request req;
    if (n > INT32_MAX) return sl_err_set(err, SL_EINVAL, "all-reduce of %lld floats is too large", (long long)n);
    MPI_Iallreduce(MPI_IN_PLACE, buf, (int)n, MPI_FLOAT, MPI_SUM, c->comm, &req);
    return wait_for(c, &req, "all-reduce", -1, err);
}

static int mpi_all_gather_v(void *ctx, const float *send, int64_t n_send, float *recv, const int64_t *counts, sl_err *err) {
    mpi_ctx *c = ctx;
    int size;
    MPI_Comm_size(c->comm, &size);
    int *cnt = malloc(sizeof(int) * (size_t)size), *displ = malloc(sizeof(int) * (size_t)size);
    if (!cnt || !displ) {
        free(cnt);
        free(displ);
        return sl_err_set(err, SL_ENOMEM, "out of memory");
    }
    int64_t off = 0;
    for (int r = 0; r < size; r++) {
        cnt[r] = (int)counts[r];
        displ[r] = (int)off;
        off += counts[r];
    }
    MPI_Request req;
    MPI_Iallgatherv(send, (int)n_send, MPI_FLOAT, recv, cnt, displ, MPI_FLOAT, c->comm, &req);
    int rc = wait_for(c, &req, "all-gather", -1, err);
    free(cnt);
    free(displ);
    return rc;
}

static int mpi_broadcast(void *ctx, void *buf, size_t n_bytes, int root, sl_err *err) {
    mpi_ctx *c = ctx;
    MPI_Request req;
    MPI_Ibcast(buf, (int)n_bytes, MPI_BYTE, root, c->comm, &req);
    return wait_for(c, &req, "broadcast", root, err);
}

static int mpi_send(void *ctx, const void *buf, size_t n_bytes, int peer, int tag, sl_err *err) {
    mpi_ctx *c = ctx;
    MPI_Request req;
    MPI_Isend(buf, (int)n_bytes, MPI_BYTE, peer, tag, c->comm, &req);
    return wait_for(c, &req, "send", peer, err);
}

static int mpi_recv(void *ctx, void *buf, size_t n_bytes, int peer, int tag, sl_err *err) {
    mpi_ctx *c = ctx;
    MPI_Request req;
    MPI_Irecv(buf, (int)n_bytes, MPI_BYTE, peer, tag, c->comm, &req);
    return wait_for(c, &req, "receive", peer, err);
}

/* A started send or receive and what its messages name. */
typedef struct mpi_pending {
    MPI_Request req;
    int peer;
    const char *op;
} mpi_pending;

static int start(MPI_Request req, int peer, const char *op, sl_comm_request *out, sl_err *err) {
    mpi_pending *p = malloc(sizeof *p);
    if (!p) {
        MPI_Cancel(&req);
        MPI_Request_free(&req);
        return sl_err_set(err, SL_ENOMEM, "out of memory");
    }
    *p = (mpi_pending){.req = req, .peer = peer, .op = op};
    out->impl = p;
    return SL_OK;
}

static int mpi_isend(void *ctx, const void *buf, size_t n_bytes, int peer, int tag, sl_comm_request *out, sl_err *err) {
    mpi_ctx *c = ctx;
    MPI_Request req;
    MPI_Isend(buf, (int)n_bytes, MPI_BYTE, peer, tag, c->comm, &req);
    return start(req, peer, "send", out, err);
}

static int mpi_irecv(void *ctx, void *buf, size_t n_bytes, int peer, int tag, sl_comm_request *out, sl_err *err) {
    mpi_ctx *c = ctx;
    MPI_Request req;
    MPI_Irecv(buf, (int)n_bytes, MPI_BYTE, peer, tag, c->comm, &req);
    return start(req, peer, "receive", out, err);
}

static void mpi_cancel(void *ctx, sl_comm_request *r) {
    (void)ctx;
    mpi_pending *p = r->impl;
    if (!p) return;
    if (p->req != MPI_REQUEST_NULL) {
        MPI_Cancel(&p->req);
        MPI_Request_free(&p->req);
    }
    free(p);
    r->impl = NULL;
}

static int mpi_wait(void *ctx, sl_comm_request *r, sl_err *err) {
    mpi_pending *p = r->impl;
    if (!p) return SL_OK;
    int rc = wait_for(ctx, &p->req, p->op, p->peer, err);
    if (rc) {
        mpi_cancel(ctx, r);
        return rc;
    }
    free(p);
    r->impl = NULL;
    return SL_OK;
}

static int mpi_all_reduce_min_i64(void *ctx, int64_t *v, sl_err *err) {
    mpi_ctx *c = ctx;
    MPI_Request req;
    MPI_Iallreduce(MPI_IN_PLACE, v, 1, MPI_INT64_T, MPI_MIN, c->comm, &req);
    return wait_for(c, &req, "all-reduce", -1, err);
}

static int mpi_barrier(void *ctx, sl_err *err) {
    mpi_ctx *c = ctx;
    MPI_Request req;
    MPI_Ibarrier(c->comm, &req);
    return wait_for(c, &req, "barrier", -1, err);
}

static void mpi_destroy(void *ctx) {
    mpi_ctx *c = ctx;
    /* free, not disconnect: Open MPI 4's disconnect of a spawned group can wait forever on its
       PMIx fence; finished workers instead wait in MPI_Finalize until this process exits */
    if (c->comm != MPI_COMM_NULL) MPI_Comm_free(&c->comm);
    free(c);
}

static const sl_comm_iface k_mpi_iface = {
    .all_reduce_sum = mpi_all_reduce_sum,
    .all_gather_v = mpi_all_gather_v,
    .broadcast = mpi_broadcast,
    .send = mpi_send,
    .recv = mpi_recv,
    .isend = mpi_isend,
    .irecv = mpi_irecv,
    .wait = mpi_wait,
    .cancel = mpi_cancel,
    .all_reduce_min_i64 = mpi_all_reduce_min_i64,
    .barrier = mpi_barrier,
    .destroy = mpi_destroy,
};

int sl_comm_mpi_wrap(MPI_Comm comm, const char *name, double timeout_s, sl_comm *out, sl_err *err) {
    mpi_ctx *c = calloc(1, sizeof *c);
    if (!c) return sl_err_set(err, SL_ENOMEM, "out of memory");
    c->comm = comm;
    c->timeout_s = timeout_s;
    c->name = name;
    int rank, size;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);
    *out = (sl_comm){.iface = &k_mpi_iface, .ctx = c, .rank = rank, .size = size, .name = name};
    return SL_OK;
}

MPI_Comm sl_comm_mpi_handle(const sl_comm *c) { return ((const mpi_ctx *)c->ctx)->comm; }

void sl_comm_destroy(sl_comm *c) {
    if (c->iface) c->iface->destroy(c->ctx);
    memset(c, 0, sizeof *c);
}
