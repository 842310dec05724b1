/* tensor_comm_mpi.c -- the tensor communicator over MPI (comm.h's groups).
 *
 * MPI moves host memory. Where the backend's memory is the host's (the CPU
 * backend) tensors go to MPI as they are, after a synchronize; otherwise
 * (a GPU) through one pinned host buffer: downloaded (which waits for the ops
 * that wrote them), communicated, uploaded (ordered before the ops that read
 * them; the buffer is next written only after a download, which waits for
 * that upload). The MPI sums are float32: a 16-bit all-reduce (bf16 or f16
 * activations, which only staged backends have) is downloaded into the
 * upper half of the tensor's float32 span of the buffer, widened in place,
 * summed and narrowed back before it goes up. The other tensors (the
 * residual stream between stages, the logits) are float32. */
#include <stdlib.h>

#include "parallel/tensor_comm.h"
#include "util/half.h"

#define SL_TAG_HIDDEN 11 /* message tag of hidden states between pipeline stages */

typedef struct mpi_tensors {
    const sl_dist *dist;
    sl_backend backend;
    int stage;                 /* through `host` */
    void *host;                /* pinned, max_bytes */
    size_t max_bytes;
} mpi_tensors;

static int check(const mpi_tensors *t, int64_t n, sl_dtype dtype, sl_err *err) {
    if (dtype != SL_DTYPE_F32)
        return sl_err_set(err, SL_ENOTSUP,
                          "the MPI tensor communicator moves float32 (16-bit tensors only all-reduced through its "
                          "pinned buffer), not %s",
                          sl_dtype_name(dtype));
    if ((size_t)n * sizeof(float) > t->max_bytes)
        return sl_err_set(err, SL_EINTERNAL, "a tensor of %lld elements exceeds the communicator's %zu bytes",
                          (long long)n, t->max_bytes);
    return SL_OK;
}

/* Where MPI reads a backend tensor of n_bytes: the tensor itself once its ops are done, or its host copy. */
static int to_host(mpi_tensors *t, const void *buf, size_t n_bytes, void **host, sl_err *err) {
    const sl_backend_iface *be = t->backend.iface;
    *host = t->stage ? t->host : (void *)buf;
    return t->stage ? be->download(t->backend.ctx, t->host, buf, n_bytes, err) : be->synchronize(t->backend.ctx, err);
}

/* host[0, n) as float32 from the 16-bit values at host + 2n bytes (element i is read before
 * anything is written over it), and back to 16 bits at host[0, 2n bytes). */
static void widen(void *host, int64_t n, sl_dtype dtype) {
    float *f = host;
    const uint16_t *h = (const uint16_t *)host + n;
    for (int64_t i = 0; i < n; i++) f[i] = dtype == SL_DTYPE_BF16 ? sl_bf16_to_f32(h[i]) : sl_f16_to_f32(h[i]);
}
static void narrow(void *host, int64_t n, sl_dtype dtype) {
    const float *f = host;
    uint16_t *h = host;
    for (int64_t i = 0; i < n; i++) h[i] = dtype == SL_DTYPE_BF16 ? sl_f32_to_bf16(f[i]) : sl_f32_to_f16(f[i]);
}

/* A 16-bit all-reduce on a staged backend, summed in float32. */
static int all_reduce_16(mpi_tensors *t, void *buf, int64_t n, sl_dtype dtype, sl_err *err) {
    const sl_backend_iface *be = t->backend.iface;
    const sl_comm *tp = &t->dist->tp;
    const size_t n_bytes = (size_t)n * 2;
    int rc = (size_t)n * sizeof(float) > t->max_bytes
                 ? sl_err_set(err, SL_EINTERNAL, "a tensor of %lld elements exceeds the communicator's %zu bytes",
                              (long long)n, t->max_bytes)
                 : be->download(t->backend.ctx, (char *)t->host + n_bytes, buf, n_bytes, err);
    if (rc) return rc;
    widen(t->host, n, dtype);
    if ((rc = tp->iface->all_reduce_sum(tp->ctx, t->host, n, err))) return rc;
    narrow(t->host, n, dtype);
    return be->upload(t->backend.ctx, buf, t->host, n_bytes, err);
}

static int mpi_all_reduce_sum(void *ctx, void *buf, int64_t n, sl_dtype dtype, sl_err *err) {
    mpi_tensors *t = ctx;
    if (t->stage && (dtype == SL_DTYPE_BF16 || dtype == SL_DTYPE_F16)) return all_reduce_16(t, buf, n, dtype, err);
    const sl_comm *tp = &t->dist->tp;
    const size_t n_bytes = (size_t)n * sizeof(float);
    void *host;
    int rc = check(t, n, dtype, err);
    if (!rc) rc = to_host(t, buf, n_bytes, &host, err);
    if (!rc) rc = tp->iface->all_reduce_sum(tp->ctx, host, n, err);
    if (!rc && t->stage) rc = t->backend.iface->upload(t->backend.ctx, buf, t->host, n_bytes, err);
    return rc;
}

static int mpi_gather_to_host(void *ctx, const void *send, int64_t n_send, void *recv, const int64_t *counts,
                              sl_dtype dtype, sl_err *err) {
    mpi_tensors *t = ctx;
    const sl_comm *tp = &t->dist->tp;
    void *host;
    int rc = check(t, n_send, dtype, err);
    if (!rc) rc = to_host(t, send, (size_t)n_send * sizeof(float), &host, err);
    if (!rc) rc = tp->iface->all_gather_v(tp->ctx, host, n_send, recv, counts, err);
    return rc;
}

static int mpi_send_next(void *ctx, const void *buf, int64_t n, sl_dtype dtype, sl_err *err) {
    mpi_tensors *t = ctx;
    const sl_comm *w = &t->dist->world;
    const size_t n_bytes = (size_t)n * sizeof(float);
    void *host;
    int rc = check(t, n, dtype, err);
    if (!rc) rc = to_host(t, buf, n_bytes, &host, err);
    if (!rc) rc = w->iface->send(w->ctx, host, n_bytes, t->dist->next_stage, SL_TAG_HIDDEN, err);
    return rc;
}

static int mpi_recv_prev(void *ctx, void *buf, int64_t n, sl_dtype dtype, sl_err *err) {
    mpi_tensors *t = ctx;
    const sl_comm *w = &t->dist->world;
    const size_t n_bytes = (size_t)n * sizeof(float);
    int rc = check(t, n, dtype, err);
    if (!rc) rc = w->iface->recv(w->ctx, t->stage ? t->host : buf, n_bytes, t->dist->prev_stage, SL_TAG_HIDDEN, err);
    if (!rc && t->stage) rc = t->backend.iface->upload(t->backend.ctx, buf, t->host, n_bytes, err);
    return rc;
}

static void mpi_destroy(void *ctx) {
    mpi_tensors *t = ctx;
    if (t->host) t->backend.iface->free_host(t->backend.ctx, t->host);
    free(t);
}

static const sl_tensor_comm_iface k_mpi_tensors = {
    .all_reduce_sum = mpi_all_reduce_sum,
    .gather_to_host = mpi_gather_to_host,
    .send_next = mpi_send_next,
    .recv_prev = mpi_recv_prev,
    .destroy = mpi_destroy,
};

int sl__tensor_comm_mpi_open(const sl_dist *d, const sl_backend *b, size_t max_bytes, int stage, sl_tensor_comm *out,
                             sl_err *err) {
    mpi_tensors *t = calloc(1, sizeof *t);
    if (!t) return sl_err_set(err, SL_ENOMEM, "out of memory");
    *t = (mpi_tensors){.dist = d, .backend = *b, .stage = stage, .max_bytes = max_bytes};
    if (stage) {
        int rc = b->iface->alloc_host(b->ctx, max_bytes, &t->host, err);
        if (rc) {
            free(t);
            return rc;
        }
    }
    *out = (sl_tensor_comm){.iface = &k_mpi_tensors, .ctx = t};
    return SL_OK;
}
