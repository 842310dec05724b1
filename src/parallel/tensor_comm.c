/* tensor_comm.c -- which tensor communicator a rank gets (tensor_comm.h).
 *
 * One place decides. On the cuda backend of a build with NCCL, every rank of
 * the job tells every other (over MPI, one broadcast from each) what
 * $SHARDLM_TENSOR_COMM asks for and which GPU it computes on (machine and PCI
 * bus id), and all of them take NCCL unless a rank asks for MPI or two ranks
 * share a GPU, which NCCL cannot run (several ranks on one GPU is how layouts
 * are tried on a one-GPU machine: they go through MPI then, with a line saying
 * why). Everything else goes through MPI, staged through pinned host buffers
 * where the backend's memory is not the host's (MPI reads host memory).
 * $SHARDLM_TENSOR_COMM=nccl turns the fallback into an error. */
#include "parallel/tensor_comm.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util/log.h"

#ifdef SHARDLM_HAVE_NCCL
#define NCCL_BUILT "with"
#else
#define NCCL_BUILT "without"
#endif

int sl__tensor_comm_can_nccl(const sl_tensor_comm_rank *ranks, int n, char *why, size_t why_n) {
    for (int r = 0; r < n; r++) {
        if (ranks[r].want == SL_TENSOR_COMM_MPI) {
            snprintf(why, why_n, "rank %d asks for MPI (SHARDLM_TENSOR_COMM=mpi)", r);
            return 0;
        }
    }
    for (int a = 0; a < n; a++) {
        for (int b = a + 1; b < n; b++) {
            if (strcmp(ranks[a].host, ranks[b].host) == 0 && strcmp(ranks[a].gpu, ranks[b].gpu) == 0) {
                snprintf(why, why_n, "ranks %d and %d share GPU %s on %s, and NCCL cannot run two ranks of one "
                         "communicator on one GPU", a, b, ranks[a].gpu, ranks[a].host);
                return 0;
            }
        }
    }
    return 1;
}

static int parse_want(int *want, sl_err *err) {
    const char *v = getenv("SHARDLM_TENSOR_COMM");
    if (!v || !*v) *want = SL_TENSOR_COMM_AUTO;
    else if (strcmp(v, "mpi") == 0) *want = SL_TENSOR_COMM_MPI;
    else if (strcmp(v, "nccl") == 0) *want = SL_TENSOR_COMM_NCCL;
    else return sl_err_set(err, SL_EINVAL, "SHARDLM_TENSOR_COMM is \"%s\": use mpi or nccl (or leave it unset)", v);
    return SL_OK;
}

#ifdef SHARDLM_HAVE_NCCL
/* Every rank's ask and GPU to every rank, then the same choice on each: *nccl = 1 for NCCL. */
static int choose_nccl(const sl_dist *d, const sl_backend *b, int want, int *nccl, sl_err *err) {
    const sl_comm *w = &d->world;
    sl_tensor_comm_rank *ranks = calloc((size_t)w->size, sizeof *ranks);
    if (!ranks) return sl_err_set(err, SL_ENOMEM, "out of memory");
    sl_tensor_comm_rank *mine = &ranks[w->rank];
    mine->want = want;
    gethostname(mine->host, sizeof mine->host - 1);
    int rc = sl__tensor_comm_nccl_gpu(b, mine->gpu, sizeof mine->gpu, err);
    for (int r = 0; r < w->size && !rc; r++) rc = w->iface->broadcast(w->ctx, &ranks[r], sizeof ranks[r], r, err);
    char why[256];
    if (!rc) *nccl = sl__tensor_comm_can_nccl(ranks, w->size, why, sizeof why);
    if (!rc && !*nccl && want == SL_TENSOR_COMM_NCCL)
        rc = sl_err_set(err, SL_ENOTSUP, "SHARDLM_TENSOR_COMM=nccl on rank %d, but %s", w->rank, why);
    else if (!rc && !*nccl && w->rank == 0 && want != SL_TENSOR_COMM_MPI)
        SL_INFO("tensors between ranks go through MPI and host memory, not NCCL: %s", why);
    free(ranks);
    return rc;
}
#endif

int sl_tensor_comm_open(const sl_dist *d, const sl_backend *b, size_t max_bytes, sl_tensor_comm *out, sl_err *err) {
    int want = SL_TENSOR_COMM_AUTO, rc = parse_want(&want, err);
    if (rc) return rc;
#ifdef SHARDLM_HAVE_NCCL
    if (strcmp(b->iface->name, "cuda") == 0) {
        int nccl = 0;
        if ((rc = choose_nccl(d, b, want, &nccl, err))) return rc;
        if (nccl) {
            SL_DEBUG("tensors between ranks: NCCL");
            return sl__tensor_comm_nccl_open(d, b, max_bytes, out, err);
        }
    }
#endif
    if (want == SL_TENSOR_COMM_NCCL)
        return sl_err_set(err, SL_ENOTSUP, "SHARDLM_TENSOR_COMM=nccl, but rank %d has the %s backend in a build "
                          NCCL_BUILT " NCCL: NCCL moves the tensors of the cuda backend in builds with it",
                          d->world.rank, b->iface->name);
    const char *debug = getenv("SHARDLM_DEBUG_STAGE_COMM");
    const int stage = !b->iface->host_memory || (debug && atoi(debug) > 0);
    SL_DEBUG("tensors between ranks: MPI%s", stage ? ", through pinned host buffers" : "");
    return sl__tensor_comm_mpi_open(d, b, max_bytes, stage, out, err);
}

void sl_tensor_comm_close(sl_tensor_comm *t) {
    if (t->iface) t->iface->destroy(t->ctx);
    t->iface = NULL;
    t->ctx = NULL;
}

int sl_tensor_comm_wait(const sl_tensor_comm *t, sl_err *err) {
    return t->iface->wait ? t->iface->wait(t->ctx, err) : SL_OK;
}
