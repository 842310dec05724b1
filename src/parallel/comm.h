/* comm.h -- the communicator interface: how ranks exchange tensors.
 *
 * A communicator is {iface, ctx, rank, size} over one group of ranks (the
 * whole job, a tensor-parallel group, ...). The model and the engine call
 * only these operations; the implementation decides how bytes move: MPI for
 * CPU tensors (comm_mpi.c), NCCL for GPU tensors in the CUDA backend, where
 * MPI only starts the ranks and hands out the NCCL unique id. Every call has
 * a deadline: a peer that stalls makes the call fail with SL_ETIMEDOUT and a
 * message naming the operation and the peers, instead of hanging forever. */
#ifndef SL_PARALLEL_COMM_H
#define SL_PARALLEL_COMM_H

#include <stddef.h>
#include <stdint.h>

#include "util/error.h"

/* A send or receive in progress (isend, irecv): finished by wait, or given
 * up by cancel. Its buffer belongs to the operation until then. */
typedef struct sl_comm_request {
    void *impl;   /* NULL: no operation */
} sl_comm_request;

typedef struct sl_comm_iface {
    /* buf[0..n) = sum over ranks of buf[0..n), in place */
    int (*all_reduce_sum)(void *ctx, float *buf, int64_t n, sl_err *err);
    /* recv = concatenation over ranks r of the counts[r] floats each sent (recv holds the sum of counts) */
    int (*all_gather_v)(void *ctx, const float *send, int64_t n_send, float *recv, const int64_t *counts, sl_err *err);
    /* root's n_bytes of buf go to every rank */
    int (*broadcast)(void *ctx, void *buf, size_t n_bytes, int root, sl_err *err);
    int (*send)(void *ctx, const void *buf, size_t n_bytes, int peer, int tag, sl_err *err);
    int (*recv)(void *ctx, void *buf, size_t n_bytes, int peer, int tag, sl_err *err);
    /* send / recv started without waiting; messages of one peer and tag still match in the order they were
       sent and receives were posted (MPI's non-overtaking rule) */
    int (*isend)(void *ctx, const void *buf, size_t n_bytes, int peer, int tag, sl_comm_request *req, sl_err *err);
    int (*irecv)(void *ctx, void *buf, size_t n_bytes, int peer, int tag, sl_comm_request *req, sl_err *err);
    /* finishes *req within the deadline (then *req is empty either way; no-op on an empty one) */
    int (*wait)(void *ctx, sl_comm_request *req, sl_err *err);
    /* gives *req up without waiting (a failed job); its buffer must outlive the process's communication */
    void (*cancel)(void *ctx, sl_comm_request *req);
    /* int64 minimum over ranks, in place (memory planning) */
    int (*all_reduce_min_i64)(void *ctx, int64_t *v, sl_err *err);
    int (*barrier)(void *ctx, sl_err *err);
    void (*destroy)(void *ctx);
} sl_comm_iface;

typedef struct sl_comm {
    const sl_comm_iface *iface;
    void *ctx;
    int rank, size;
    const char *name;   /* "world", "tensor-parallel", ... for messages */
} sl_comm;

/* Frees the communicator's resources (no-op on a zeroed one). */
void sl_comm_destroy(sl_comm *c);

#endif
