/* tensor_comm_nccl.c -- the tensor communicator over NCCL, for ranks on the CUDA backend.
 *
 * MPI starts the ranks and carries the set-up: tensor-parallel rank 0 makes an
 * ncclUniqueId and broadcasts it over dist->tp, and each tensor-parallel group
 * makes one NCCL communicator of its ranks; with pipeline stages, world rank 0
 * does the same over the world for one communicator of every rank, which the
 * hidden states take from a stage to the next (ncclSend / ncclRecv between the
 * world ranks dist->next_stage and prev_stage). Control messages stay on MPI.
 *
 * Every NCCL call is enqueued on the backend's one stream
 * (sl_cuda_backend_stream): it runs after the ops that wrote its input and
 * before the ops issued after it, which read its output, and the host waits
 * for none of it. NCCL has no all-gather of uneven slices: gather_to_host
 * copies this rank's slice into its block of a device buffer of tp_size blocks,
 * each as large as the largest slice (allocated at open, tp_size x max_bytes),
 * ncclAllGather fills the other blocks in place, and the blocks come down one
 * by one into recv, end to end, as the MPI communicator leaves them.
 *
 * Deadlines. The communicators are non-blocking (config.blocking = 0): their
 * creation and calls return at once, ncclInProgress while NCCL still works on
 * them, and the host polls ncclCommGetAsyncError against dist->timeout_s.
 * A peer that died or stalls leaves this rank's NCCL kernel waiting on the
 * GPU. Nothing here waits for a kernel but gather_to_host, which waits for its
 * all-gather through `wait`: an event after the work issued so far, polled
 * with the communicators' asynchronous errors against the deadline; on an
 * error or the deadline every communicator of this rank is aborted
 * (ncclCommAbort ends its kernels) and the call returns the error. Where a
 * hang can still happen: the backend's synchronize and download wait on the
 * stream without a deadline, so a caller that reaches them after an
 * all_reduce_sum, send_next or recv_prev whose peer died waits for ever
 * unless it has called `wait` first. destroy aborts the communicators when
 * the job failed (sl_dist_failed) and finalizes them within the deadline
 * otherwise.
 *
 * NCCL cannot run two ranks of one communicator on one GPU: tensor_comm.c
 * does not open this communicator then. */
#include <cuda_runtime_api.h>
#include <nccl.h>
#include <sched.h>
#include <stdlib.h>
#include <time.h>

#include "backend/cuda/cuda_backend.h"
#include "parallel/comm_mpi.h"
#include "parallel/tensor_comm.h"
#include "util/log.h"
#include "util/progress.h"

#define NAP_MIN_NS 20000L   /* settle's first pause between polls; doubling up to */
#define NAP_MAX_NS 1000000L

typedef struct nccl_tensors {
    const sl_dist *dist;
    sl_backend backend;
    cudaStream_t stream;       /* the backend's */
    int device;
    ncclComm_t tp;             /* the tensor-parallel group */
    ncclComm_t world;          /* every rank, for pipeline stages; NULL without them */
    void *gather;              /* tp_size blocks of max_bytes (device) */
    size_t max_bytes;
    cudaEvent_t issued;        /* recorded by wait after the work issued so far */
    int aborted;               /* the communicators were aborted after a failure: every call fails */
} nccl_tensors;

/* ---- errors, deadlines, abort ---- */

static void abort_all(nccl_tensors *t) {
    if (t->tp) ncclCommAbort(t->tp);
    if (t->world) ncclCommAbort(t->world);
    t->tp = t->world = NULL;
    t->aborted = 1;
}

static int nccl_failed(nccl_tensors *t, ncclComm_t comm, ncclResult_t r, const char *what, sl_err *err) {
    const char *detail = ncclGetLastError(comm);
    sl_err_set(err, SL_EIO, "NCCL %s failed on rank %d (GPU %d): %s%s%s", what, t->dist->world.rank, t->device,
               ncclGetErrorString(r), detail && *detail ? ": " : "", detail ? detail : "");
    abort_all(t);
    return SL_EIO;
}

static int timed_out(nccl_tensors *t, const char *what, sl_err *err) {
    abort_all(t);
    return sl_err_set(err, SL_ETIMEDOUT, "NCCL %s on rank %d did not finish within %.0f s: a rank of its group "
                      "stalled or died (this rank's NCCL communicators were aborted)", what, t->dist->world.rank,
                      t->dist->timeout_s);
}

static int cuda_failed(nccl_tensors *t, cudaError_t e, const char *what, sl_err *err) {
    cudaGetLastError(); /* not left for the backend's next launch check */
    return sl_err_set(err, e == cudaErrorMemoryAllocation ? SL_ENOMEM : SL_EINTERNAL, "CUDA error %s on rank %d "
                      "(GPU %d): %s", what, t->dist->world.rank, t->device, cudaGetErrorString(e));
}

/* Finishes a call on a non-blocking communicator: r, or while it is ncclInProgress the communicator's state,
 * polled in naps (creating a communicator takes a second or two) until it is settled or the deadline
 * passes. Any failure aborts the communicators. The call's work is on the backend's stream: its next kernel
 * waits for it the ordinary way (launch.cuh). */
static int settle(nccl_tensors *t, ncclComm_t comm, ncclResult_t r, const char *what, sl_err *err) {
    sl_cuda_backend_enqueued(&t->backend);
    const double start = sl_now_s();
    for (long nap_ns = NAP_MIN_NS; r == ncclInProgress; nap_ns = nap_ns * 2 > NAP_MAX_NS ? NAP_MAX_NS : nap_ns * 2) {
        ncclResult_t q = ncclCommGetAsyncError(comm, &r);
        if (q != ncclSuccess) r = q;
        if (r != ncclInProgress) break;
        if (sl_now_s() - start > t->dist->timeout_s) return timed_out(t, what, err);
        nanosleep(&(struct timespec){0, nap_ns}, NULL);
    }
    return r == ncclSuccess ? SL_OK : nccl_failed(t, comm, r, what, err);
}

/* An asynchronous error of either communicator (a peer's connection lost, ...). */
static int async_errors(nccl_tensors *t, sl_err *err) {
    ncclComm_t comms[2] = {t->tp, t->world};
    const char *what[2] = {"tensor-parallel communication", "pipeline communication"};
    for (int i = 0; i < 2; i++) {
        ncclResult_t r = ncclSuccess;
        if (comms[i] && ncclCommGetAsyncError(comms[i], &r) == ncclSuccess && r != ncclSuccess && r != ncclInProgress)
            return nccl_failed(t, comms[i], r, what[i], err);
    }
    return SL_OK;
}

static int usable(const nccl_tensors *t, sl_err *err) {
    return t->aborted ? sl_err_set(err, SL_EIO, "rank %d's NCCL communicators were aborted after an earlier failure",
                                   t->dist->world.rank) : SL_OK;
}

/* Refuses calls after an abort, tensors larger than the buffers, and dtypes NCCL is not given. */
static int check(nccl_tensors *t, int64_t n, sl_dtype dtype, ncclDataType_t *type, sl_err *err) {
    int rc = usable(t, err);
    if (rc) return rc;
    switch (dtype) {
    case SL_DTYPE_F32: *type = ncclFloat32; break;
    case SL_DTYPE_BF16: *type = ncclBfloat16; break;
    case SL_DTYPE_F16: *type = ncclFloat16; break;
    default: return sl_err_set(err, SL_ENOTSUP, "the NCCL tensor communicator moves float32, bfloat16 and float16, "
                               "not %s", sl_dtype_name(dtype));
    }
    if ((size_t)n * sl_dtype_n_bytes(dtype) > t->max_bytes)
        return sl_err_set(err, SL_EINTERNAL, "a tensor of %lld elements exceeds the communicator's %zu bytes",
                          (long long)n, t->max_bytes);
    return SL_OK;
}

/* ---- the interface ---- */

/* Polls an event after the work issued so far, without naps (it waits on a step's GPU work, whose time
 * a nap would lengthen), checking the communicators' asynchronous errors and the deadline. */
static int nccl_wait(void *ctx, sl_err *err) {
    nccl_tensors *t = ctx;
    int rc = usable(t, err);
    if (rc) return rc;
    cudaError_t e = cudaEventRecord(t->issued, t->stream);
    if (e != cudaSuccess) return cuda_failed(t, e, "marking the communication issued", err);
    const double start = sl_now_s();
    double watched = start;
    while (!rc && (e = cudaEventQuery(t->issued)) == cudaErrorNotReady) {
        rc = async_errors(t, err);
        if (!rc && sl_now_s() - start > t->dist->timeout_s) rc = timed_out(t, "communication", err);
        if (!rc && (rc = sl_comm_mpi_watch(start, &watched, "NCCL communication", NULL, err))) abort_all(t);
        sched_yield();
    }
    if (cudaPeekAtLastError() == cudaErrorNotReady) cudaGetLastError();
    if (!rc && e != cudaSuccess) rc = cuda_failed(t, e, "waiting for the communication", err);
    return rc;
}

static int nccl_all_reduce_sum(void *ctx, void *buf, int64_t n, sl_dtype dtype, sl_err *err) {
    nccl_tensors *t = ctx;
    ncclDataType_t type = ncclFloat32;
    int rc = check(t, n, dtype, &type, err);
    if (rc) return rc;
    return settle(t, t->tp, ncclAllReduce(buf, buf, (size_t)n, type, ncclSum, t->tp, t->stream),
                  "all-reduce over the tensor-parallel group", err);
}

static int nccl_gather_to_host(void *ctx, const void *send, int64_t n_send, void *recv, const int64_t *counts,
                               sl_dtype dtype, sl_err *err) {
    nccl_tensors *t = ctx;
    const sl_dist *d = t->dist;
    int64_t block = 0; /* elements of each rank's block: the largest slice */
    for (int r = 0; r < d->tp_size; r++) block = counts[r] > block ? counts[r] : block;
    ncclDataType_t type = ncclFloat32;
    int rc = check(t, block, dtype, &type, err);
    if (rc) return rc;
    if (n_send != counts[d->tp_rank])
        return sl_err_set(err, SL_EINTERNAL, "rank %d gathers %lld elements but its count says %lld", d->world.rank,
                          (long long)n_send, (long long)counts[d->tp_rank]);
    const size_t elem = sl_dtype_n_bytes(dtype), block_bytes = (size_t)block * elem;
    char *blocks = t->gather, *mine = blocks + (size_t)d->tp_rank * block_bytes;
    cudaError_t e = cudaMemcpyAsync(mine, send, (size_t)n_send * elem, cudaMemcpyDeviceToDevice, t->stream);
    sl_cuda_backend_enqueued(&t->backend);
    if (e != cudaSuccess) return cuda_failed(t, e, "copying a slice into the gather buffer", err);
    rc = settle(t, t->tp, ncclAllGather(mine, blocks, (size_t)block, type, t->tp, t->stream),
                "all-gather over the tensor-parallel group", err);
    if (!rc) rc = nccl_wait(t, err);
    char *out = recv;
    for (int r = 0; r < d->tp_size && !rc; r++) { /* the blocks' slices end to end */
        const size_t n_bytes = (size_t)counts[r] * elem;
        rc = t->backend.iface->download(t->backend.ctx, out, blocks + (size_t)r * block_bytes, n_bytes, err);
        out += n_bytes;
    }
    return rc;
}

static int nccl_send_next(void *ctx, const void *buf, int64_t n, sl_dtype dtype, sl_err *err) {
    nccl_tensors *t = ctx;
    ncclDataType_t type = ncclFloat32;
    int rc = check(t, n, dtype, &type, err);
    if (!rc && (!t->world || t->dist->next_stage < 0))
        rc = sl_err_set(err, SL_EINTERNAL, "rank %d has no next pipeline stage to send to", t->dist->world.rank);
    if (rc) return rc;
    return settle(t, t->world, ncclSend(buf, (size_t)n, type, t->dist->next_stage, t->world, t->stream),
                  "send to the next stage", err);
}

static int nccl_recv_prev(void *ctx, void *buf, int64_t n, sl_dtype dtype, sl_err *err) {
    nccl_tensors *t = ctx;
    ncclDataType_t type = ncclFloat32;
    int rc = check(t, n, dtype, &type, err);
    if (!rc && (!t->world || t->dist->prev_stage < 0))
        rc = sl_err_set(err, SL_EINTERNAL, "rank %d has no previous pipeline stage to receive from",
                        t->dist->world.rank);
    if (rc) return rc;
    return settle(t, t->world, ncclRecv(buf, (size_t)n, type, t->dist->prev_stage, t->world, t->stream),
                  "receive from the previous stage", err);
}

/* Flushes and frees a communicator within the deadline (aborting them all when that fails). */
static void finish(nccl_tensors *t, ncclComm_t *comm, const char *what) {
    if (!*comm) return;
    sl_err err = {0};
    if (settle(t, *comm, ncclCommFinalize(*comm), what, &err)) {
        SL_WARN("%s", err.msg);
        return;
    }
    ncclCommDestroy(*comm);
    *comm = NULL;
}

static void nccl_destroy(void *ctx) {
    nccl_tensors *t = ctx;
    if (sl_dist_failed()) abort_all(t);
    finish(t, &t->tp, "closing the tensor-parallel communicator");
    finish(t, &t->world, "closing the pipeline communicator");
    if (t->gather) t->backend.iface->free(t->backend.ctx, t->gather); /* after the kernels that use it ended */
    if (t->issued) cudaEventDestroy(t->issued);
    free(t);
}

static const sl_tensor_comm_iface k_nccl_tensors = {
    .all_reduce_sum = nccl_all_reduce_sum,
    .gather_to_host = nccl_gather_to_host,
    .send_next = nccl_send_next,
    .recv_prev = nccl_recv_prev,
    .wait = nccl_wait,
    .destroy = nccl_destroy,
};

/* ---- opening ---- */

/* One NCCL communicator of group's ranks: its rank 0 makes the id and broadcasts it over MPI. */
static int comm_init(nccl_tensors *t, const sl_comm *group, ncclComm_t *comm, const char *what, sl_err *err) {
    ncclUniqueId id = {0};
    ncclResult_t r = group->rank == 0 ? ncclGetUniqueId(&id) : ncclSuccess;
    if (r != ncclSuccess) return nccl_failed(t, NULL, r, what, err);
    int rc = group->iface->broadcast(group->ctx, &id, sizeof id, 0, err);
    if (rc) return rc;
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;
    r = ncclCommInitRankConfig(comm, group->size, id, group->rank, &config);
    return settle(t, *comm, r, what, err);
}

static int setup(nccl_tensors *t, sl_err *err) {
    const sl_dist *d = t->dist;
    cudaError_t e = cudaStreamGetDevice(t->stream, &t->device);
    if (e == cudaSuccess) e = cudaSetDevice(t->device); /* NCCL takes the calling thread's device */
    if (e == cudaSuccess) e = cudaEventCreateWithFlags(&t->issued, cudaEventDisableTiming);
    if (e != cudaSuccess) return cuda_failed(t, e, "setting up the NCCL communicator", err);
    int rc = t->backend.iface->alloc(t->backend.ctx, (size_t)d->tp_size * t->max_bytes, &t->gather, err);
    if (!rc) rc = comm_init(t, &d->tp, &t->tp, "creating the tensor-parallel communicator", err);
    if (!rc && d->pp_size > 1) rc = comm_init(t, &d->world, &t->world, "creating the pipeline communicator", err);
    return rc;
}

int sl__tensor_comm_nccl_open(const sl_dist *d, const sl_backend *b, size_t max_bytes, sl_tensor_comm *out,
                              sl_err *err) {
    nccl_tensors *t = calloc(1, sizeof *t);
    if (!t) return sl_err_set(err, SL_ENOMEM, "out of memory");
    *t = (nccl_tensors){.dist = d, .backend = *b, .stream = sl_cuda_backend_stream(b), .max_bytes = max_bytes};
    int rc = setup(t, err);
    if (rc) {
        abort_all(t);
        nccl_destroy(t);
        return rc;
    }
    *out = (sl_tensor_comm){.iface = &k_nccl_tensors, .ctx = t};
    return SL_OK;
}

int sl__tensor_comm_nccl_gpu(const sl_backend *b, char *bus_id, size_t n, sl_err *err) {
    int device = -1;
    cudaError_t e = cudaStreamGetDevice(sl_cuda_backend_stream(b), &device);
    if (e == cudaSuccess) e = cudaDeviceGetPCIBusId(bus_id, (int)n, device);
    if (e == cudaSuccess) return SL_OK;
    cudaGetLastError();
    return sl_err_set(err, SL_EINTERNAL, "CUDA error reading the PCI bus id of GPU %d: %s", device,
                      cudaGetErrorString(e));
}

int sl__tensor_comm_is_nccl(const sl_tensor_comm *t) { return t->iface == &k_nccl_tensors; }
