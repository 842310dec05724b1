/* tensor_comm.h -- tensors between the ranks of one model.
 *
 * Two kinds of communication are kept apart. Control (step plans, set-up,
 * pings, a step's logits to rank 0) is host memory over MPI: comm.h. Tensors
 * (the all-reduces after o_proj and down_proj, the vocabulary gather of the
 * LM head, hidden states between pipeline stages) go through a tensor
 * communicator: {iface, ctx} bound to one rank's backend, moving backend
 * memory in a dtype, in order with the backend's ops (a tensor is read only
 * after the ops that wrote it; its result is there for the ops issued after).
 *
 * parallel/tensor_comm.c chooses the implementation in one place: NCCL
 * (tensor_comm_nccl.c) for ranks on the cuda backend in a build with NCCL,
 * unless $SHARDLM_TENSOR_COMM=mpi or two ranks of the job share one GPU (NCCL
 * cannot run that: several ranks on one GPU, how layouts are tried on a
 * one-GPU machine, fall back to MPI with a line saying so); otherwise MPI,
 * through pinned host buffers where the backend's memory is not the host's
 * (tensor_comm_mpi.c). Every rank tells every other which GPU it has and what
 * it asks for, so all of them choose the same. */
#ifndef SL_PARALLEL_TENSOR_COMM_H
#define SL_PARALLEL_TENSOR_COMM_H

#include <stdint.h>

#include "backend/backend.h"
#include "parallel/dist.h"

typedef struct sl_tensor_comm_iface {
    /* buf[0..n) = its sum over the tensor-parallel group, in place (backend memory) */
    int (*all_reduce_sum)(void *ctx, void *buf, int64_t n, sl_dtype dtype, sl_err *err);
    /* The group's slices end to end in host memory on every rank: rank r sends counts[r]
     * elements (send, backend memory, n_send = counts[this rank]); recv holds their sum. */
    int (*gather_to_host)(void *ctx, const void *send, int64_t n_send, void *recv, const int64_t *counts,
                          sl_dtype dtype, sl_err *err);
    /* n elements of backend memory to the same tensor-parallel rank of the next stage / from the previous */
    int (*send_next)(void *ctx, const void *buf, int64_t n, sl_dtype dtype, sl_err *err);
    int (*recv_prev)(void *ctx, void *buf, int64_t n, sl_dtype dtype, sl_err *err);
    /* Waits, within the deadline of every communication, until the communication issued so far has
     * finished: a dead or stalled peer becomes SL_ETIMEDOUT instead of a backend synchronize that never
     * returns. NULL where every call finishes before it returns (MPI). */
    int (*wait)(void *ctx, sl_err *err);
    void (*destroy)(void *ctx);
} sl_tensor_comm_iface;

typedef struct sl_tensor_comm {
    const sl_tensor_comm_iface *iface;
    void *ctx;
} sl_tensor_comm;

/* The tensor communicator of this rank of dist for tensors of at most max_bytes, on backend b
 * (both outlive it). $SHARDLM_DEBUG_STAGE_COMM=1 stages through host buffers on the CPU too. */
int sl_tensor_comm_open(const sl_dist *d, const sl_backend *b, size_t max_bytes, sl_tensor_comm *out, sl_err *err);
void sl_tensor_comm_close(sl_tensor_comm *t);
/* The iface's wait, where it has one. */
int sl_tensor_comm_wait(const sl_tensor_comm *t, sl_err *err);

/* What one rank asks for and where it computes, as every rank of the job tells every other. */
enum { SL_TENSOR_COMM_AUTO, SL_TENSOR_COMM_MPI, SL_TENSOR_COMM_NCCL };
typedef struct sl_tensor_comm_rank {
    int want;           /* SL_TENSOR_COMM_*, from $SHARDLM_TENSOR_COMM */
    char host[64];      /* its machine (gethostname) */
    char gpu[32];       /* its GPU's PCI bus id */
} sl_tensor_comm_rank;

/* Whether the job's n ranks (ranks[r]: world rank r) can move tensors over NCCL: 1; or 0, and
 * in why one sentence saying what prevents it. */
int sl__tensor_comm_can_nccl(const sl_tensor_comm_rank *ranks, int n, char *why, size_t why_n);

/* The MPI implementation; stage: through pinned host buffers of max_bytes. */
int sl__tensor_comm_mpi_open(const sl_dist *d, const sl_backend *b, size_t max_bytes, int stage, sl_tensor_comm *out,
                             sl_err *err);
/* The NCCL implementation (builds with NCCL, cuda backend; every rank of the job on a GPU of its own). */
int sl__tensor_comm_nccl_open(const sl_dist *d, const sl_backend *b, size_t max_bytes, sl_tensor_comm *out,
                              sl_err *err);
/* The PCI bus id of the GPU backend b computes on ("0000:01:00.0"). */
int sl__tensor_comm_nccl_gpu(const sl_backend *b, char *bus_id, size_t n, sl_err *err);
/* Whether t is the NCCL implementation's. */
int sl__tensor_comm_is_nccl(const sl_tensor_comm *t);

#endif
