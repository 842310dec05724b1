/* test_tensor_comm_nccl.c -- the NCCL tensor communicator on GPUs.
 *
 *   test_tensor_comm_nccl                         one rank (tp 1, pp 1)
 *   mpirun -np N test_tensor_comm_nccl TPxPP      N = TP x PP ranks of one machine
 *
 * Each rank takes GPU local_rank % visible GPUs, as shardlm's ranks do. With a
 * GPU per rank the factory must choose NCCL, whose all-reduce (float32,
 * bfloat16, float16), uneven gather to the host (float32, bfloat16) and sends
 * between pipeline stages must give the exact sums and slices; the same checks
 * then run through MPI (SHARDLM_TENSOR_COMM=mpi). With more ranks than GPUs
 * the factory must fall back to MPI, which then passes the same checks, and
 * SHARDLM_TENSOR_COMM=nccl must be refused. Skips (exit 77) where no GPU is
 * visible. The rule the choice follows is tested on the CPU
 * (test_tensor_comm.c). */
#include <mpi.h>

#include "backend/backend.h"
#include "backend/cuda/cuda_backend.h"
#include "parallel/comm_mpi.h"
#include "parallel/tensor_comm.h"
#include "test.h"
#include "util/half.h"

#define MAX_BYTES ((size_t)1 << 20)

static sl_dist *g_dist;
static sl_backend g_gpu;
static int g_shared; /* more ranks than GPUs: some share one */

static void die(const char *what, const sl_err *err) {
    fprintf(stderr, "rank %d: %s: %s\n", g_dist ? g_dist->world.rank : -1, what, err->msg);
    exit(1);
}

/* n values in dtype's bytes (malloc'd). */
static void *encode(const float *x, int64_t n, sl_dtype dtype) {
    const size_t elem = sl_dtype_n_bytes(dtype);
    char *out = malloc((size_t)n * elem);
    for (int64_t i = 0; i < n; i++) {
        if (dtype == SL_DTYPE_F32) ((float *)out)[i] = x[i];
        else if (dtype == SL_DTYPE_BF16) ((uint16_t *)out)[i] = sl_f32_to_bf16(x[i]);
        else ((uint16_t *)out)[i] = sl_f32_to_f16(x[i]);
    }
    return out;
}

static float decode(const void *p, int64_t i, sl_dtype dtype) {
    if (dtype == SL_DTYPE_F32) return ((const float *)p)[i];
    const uint16_t h = ((const uint16_t *)p)[i];
    return dtype == SL_DTYPE_BF16 ? sl_bf16_to_f32(h) : sl_f16_to_f32(h);
}

static void *put(const float *x, int64_t n, sl_dtype dtype) {
    const size_t n_bytes = (size_t)n * sl_dtype_n_bytes(dtype);
    void *host = encode(x, n, dtype), *dev = NULL;
    sl_err err = {0};
    if (g_gpu.iface->alloc(g_gpu.ctx, n_bytes, &dev, &err) || g_gpu.iface->upload(g_gpu.ctx, dev, host, n_bytes, &err))
        die("uploading", &err);
    free(host); /* not pinned: the upload has read it */
    return dev;
}

/* Waits for t's communication within its deadline, then downloads. */
static void *get(const sl_tensor_comm *t, const void *dev, int64_t n, sl_dtype dtype) {
    const size_t n_bytes = (size_t)n * sl_dtype_n_bytes(dtype);
    void *host = malloc(n_bytes);
    sl_err err = {0};
    if (sl_tensor_comm_wait(t, &err) || g_gpu.iface->download(g_gpu.ctx, host, dev, n_bytes, &err))
        die("downloading", &err);
    return host;
}

/* Small integers, exact in every dtype and in their sums over 8 ranks. */
static void check_all_reduce(const sl_tensor_comm *t, sl_dtype dtype) {
    const int64_t n = 1000;
    const int r = g_dist->tp_rank, size = g_dist->tp_size;
    float *x = malloc(sizeof(float) * (size_t)n);
    for (int64_t i = 0; i < n; i++) x[i] = (float)((r + 1) * (i % 7 + 1));
    void *dev = put(x, n, dtype);
    sl_err err = {0};
    CHECK_EQ_INT(t->iface->all_reduce_sum(t->ctx, dev, n, dtype, &err), SL_OK);
    void *got = get(t, dev, n, dtype);
    int bad = 0;
    for (int64_t i = 0; i < n; i++) bad += decode(got, i, dtype) != (float)(size * (size + 1) / 2 * (i % 7 + 1));
    CHECK_EQ_INT(bad, 0);
    free(got);
    free(x);
    g_gpu.iface->free(g_gpu.ctx, dev);
}

/* Rank r sends 37 + 5r elements r * 16 + i % 16: every rank gets the slices end to end. */
static void check_gather(const sl_tensor_comm *t, sl_dtype dtype) {
    const int me = g_dist->tp_rank, size = g_dist->tp_size;
    int64_t counts[64], total = 0;
    for (int r = 0; r < size; r++) total += counts[r] = 37 + 5 * r;
    float *x = malloc(sizeof(float) * (size_t)counts[me]);
    for (int64_t i = 0; i < counts[me]; i++) x[i] = (float)(me * 16 + i % 16);
    void *dev = put(x, counts[me], dtype);
    char *recv = malloc((size_t)total * sl_dtype_n_bytes(dtype));
    sl_err err = {0};
    CHECK_EQ_INT(t->iface->gather_to_host(t->ctx, dev, counts[me], recv, counts, dtype, &err), SL_OK);
    int bad = 0;
    for (int r = 0, at = 0; r < size; r++)
        for (int64_t i = 0; i < counts[r]; i++) bad += decode(recv, at++, dtype) != (float)(r * 16 + i % 16);
    CHECK_EQ_INT(bad, 0);
    free(recv);
    free(x);
    g_gpu.iface->free(g_gpu.ctx, dev);
}

/* Hidden states down the pipeline: each stage receives its predecessor's, then sends its own. */
static void check_stages(const sl_tensor_comm *t) {
    const int64_t n = 300;
    const sl_dist *d = g_dist;
    float *x = malloc(sizeof(float) * (size_t)n);
    for (int64_t i = 0; i < n; i++) x[i] = (float)(d->world.rank * 100 + i % 100);
    void *dev = put(x, n, SL_DTYPE_F32);
    sl_err err = {0};
    if (d->prev_stage >= 0) {
        CHECK_EQ_INT(t->iface->recv_prev(t->ctx, dev, n, SL_DTYPE_F32, &err), SL_OK);
        float *got = get(t, dev, n, SL_DTYPE_F32);
        int bad = 0;
        for (int64_t i = 0; i < n; i++) bad += got[i] != (float)(d->prev_stage * 100 + i % 100);
        CHECK_EQ_INT(bad, 0);
        free(got);
        g_gpu.iface->upload(g_gpu.ctx, dev, x, sizeof(float) * (size_t)n, &err);
    }
    if (d->next_stage >= 0) {
        CHECK_EQ_INT(t->iface->send_next(t->ctx, dev, n, SL_DTYPE_F32, &err), SL_OK);
        CHECK_EQ_INT(sl_tensor_comm_wait(t, &err), SL_OK);
    }
    free(x);
    g_gpu.iface->free(g_gpu.ctx, dev);
}

static void check_moves(const sl_tensor_comm *t, int nccl) {
    check_all_reduce(t, SL_DTYPE_F32);
    check_gather(t, SL_DTYPE_F32);
    check_all_reduce(t, SL_DTYPE_BF16); /* MPI's sums 16-bit activations in float32 through its pinned buffer */
    check_all_reduce(t, SL_DTYPE_F16);
    if (nccl) check_gather(t, SL_DTYPE_BF16); /* MPI's gathers float32 (the logits) only */
    if (g_dist->pp_size > 1) check_stages(t);
}

static int open_comm(const char *asked, sl_tensor_comm *t, sl_err *err) {
    if (asked) setenv("SHARDLM_TENSOR_COMM", asked, 1);
    else unsetenv("SHARDLM_TENSOR_COMM");
    return sl_tensor_comm_open(g_dist, &g_gpu, MAX_BYTES, t, err);
}

/* Unasked, the factory takes NCCL where every rank has a GPU of its own, MPI otherwise. */
static void test_factory_choice(void) {
    sl_tensor_comm t = {0};
    sl_err err = {0};
    if (open_comm(NULL, &t, &err)) die("opening the tensor communicator", &err);
    CHECK_EQ_INT(sl__tensor_comm_is_nccl(&t), !g_shared);
    check_moves(&t, sl__tensor_comm_is_nccl(&t));
    sl_tensor_comm_close(&t);
}

static void test_asked_for_mpi(void) {
    sl_tensor_comm t = {0};
    sl_err err = {0};
    if (open_comm("mpi", &t, &err)) die("opening the MPI tensor communicator", &err);
    CHECK(!sl__tensor_comm_is_nccl(&t));
    check_moves(&t, 0);
    sl_tensor_comm_close(&t);
}

/* SHARDLM_TENSOR_COMM=nccl: NCCL where it can run, one sentence where ranks share a GPU. */
static void test_asked_for_nccl(void) {
    sl_tensor_comm t = {0};
    sl_err err = {0};
    const int rc = open_comm("nccl", &t, &err);
    if (g_shared) {
        CHECK_EQ_INT(rc, SL_ENOTSUP);
        CHECK_CONTAINS(err.msg, "SHARDLM_TENSOR_COMM=nccl on rank");
        CHECK_CONTAINS(err.msg, "NCCL cannot run two ranks of one communicator on one GPU");
        return;
    }
    CHECK_EQ_INT(rc, SL_OK);
    CHECK(sl__tensor_comm_is_nccl(&t));
    void *dev = put((float[]){1, 2}, 2, SL_DTYPE_F32);
    CHECK_EQ_INT(t.iface->all_reduce_sum(t.ctx, dev, (int64_t)(MAX_BYTES / 4 + 1), SL_DTYPE_F32, &err), SL_EINTERNAL);
    CHECK_CONTAINS(err.msg, "exceeds the communicator's");
    CHECK_EQ_INT(t.iface->all_reduce_sum(t.ctx, dev, 2, SL_DTYPE_OTHER, &err), SL_ENOTSUP);
    CHECK_EQ_INT(sl_tensor_comm_wait(&t, &err), SL_OK);
    g_gpu.iface->free(g_gpu.ctx, dev);
    sl_tensor_comm_close(&t);
}

/* The job this process is part of (mpirun's, or itself alone) as shardlm's ranks see it. */
static void start(int tp, int pp) {
    sl_err err = {0};
    int provided;
    MPI_Init_thread(NULL, NULL, MPI_THREAD_MULTIPLE, &provided);
    g_dist = calloc(1, sizeof *g_dist);
    g_dist->timeout_s = sl_comm_timeout_s();
    MPI_Comm world;
    MPI_Comm_dup(MPI_COMM_WORLD, &world);
    MPI_Comm_set_errhandler(world, MPI_ERRORS_RETURN);
    if (sl_comm_mpi_wrap(world, "world", g_dist->timeout_s, &g_dist->world, &err) ||
        sl_dist_set_layout(g_dist, tp, pp, &err))
        die("joining the job", &err);
    sl_backend_options o = {.device_index = g_dist->local_rank};
    if (sl_backend_create("cuda", &o, &g_gpu, &err)) die("opening the GPU", &err);
    g_shared = g_dist->world.size > sl_cuda_device_count();
}

int main(int argc, char **argv) {
    if (sl_cuda_device_count() == 0) {
        fprintf(stderr, "SKIP: no GPU visible: the NCCL tensor communicator is tried on a GPU machine\n");
        return 77;
    }
    int tp = 1, pp = 1;
    if (argc > 1 && sscanf(argv[1], "%dx%d", &tp, &pp) != 2) {
        fprintf(stderr, "usage: test_tensor_comm_nccl [TPxPP]\n");
        return 2;
    }
    start(tp, pp);
    fprintf(stderr, "rank %d of %d (tp %d, pp %d), %d GPU(s): %s\n", g_dist->world.rank, g_dist->world.size, tp, pp,
            sl_cuda_device_count(), g_shared ? "ranks share GPUs" : "a GPU per rank");
    TEST_RUN(test_factory_choice);
    TEST_RUN(test_asked_for_mpi);
    TEST_RUN(test_asked_for_nccl);
    g_gpu.iface->destroy(g_gpu.ctx);
    sl_dist_destroy(g_dist);
    MPI_Finalize();
    TEST_EXIT();
}
