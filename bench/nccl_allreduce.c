/* nccl_allreduce.c -- NCCL's bf16 all-reduce at the message sizes of a decode step.
 *
 * A tensor-parallel decode step all-reduces rows x hidden bf16 values twice a
 * layer (after o_proj and after down_proj), rows being the step's sequences.
 * This program times ncclAllReduce (sum, in place, on one stream, as
 * src/parallel/tensor_comm_nccl.c issues it) for rows 1, 2, 4 ... 256 and one
 * hidden size (--hidden, 4096 for 8B models, 8192 for 70B), two ways:
 *
 *   eager  one call at a time: CUDA events before and after it, then a wait for
 *          the second: the latency a step issued call by call sees. The stream
 *          is idle when the call is issued, so the figure includes NCCL's work
 *          on the host; "host" is that alone (the time ncclAllReduce takes to
 *          return).
 *   graph  --graph-calls calls (32) back to back captured in one CUDA graph:
 *          the graph's time over the number of calls. Where capture fails the
 *          table says why and goes on.
 *
 * Variants, each on a communicator of its own, made and freed in turn:
 *   default    a cudaMalloc'd buffer, NCCL's own choice of algorithm and protocol
 *   LL, LL128, Simple
 *              NCCL_PROTO set for the life of the communicator (NCCL reads it when
 *              the communicator is made; this NCCL's ncclConfig_t has no protocol
 *              field)
 *   registered an ncclMemAlloc'd buffer registered with ncclCommRegister (NCCL 2.19+)
 *   symmetric  an ncclMemAlloc'd buffer registered as a symmetric window,
 *              ncclCommWindowRegister(NCCL_WIN_COLL_SYMMETRIC) (NCCL 2.27+)
 * A variant the headers or the library lack is reported as skipped, and why.
 *
 * Every size of every variant is checked before it is timed: each rank fills
 * ((i + rank) % 4) + 1 (small integers, whose sums are exact in bf16 up to 64
 * ranks), and the sum is compared element by element, as are sentinels after
 * the message, which must stay as they were; a graph of one call is checked the
 * same way before the timed graph is captured. A variant whose set-up or check
 * fails on any rank is reported as failed, the next one runs, and the program
 * ends non-zero.
 *
 * Ranks: one per GPU under mpirun, or alone (a world of 1); a rank's GPU is its
 * index among its machine's ranks (MPI_Comm_split_type shared) among the
 * visible GPUs, as src/parallel does, and two ranks never share one (NCCL
 * cannot run that). Rank 0 makes each communicator's unique id and broadcasts
 * it over MPI. A figure is the slowest rank's, iteration by iteration (MPI_MAX
 * over the ranks), then the median and p99 over the iterations. At one rank
 * NCCL runs no kernel for an in-place sum (it copies only out of place), so the
 * figures there are the cost of the call on the host and nothing else.
 *
 * No hangs: the communicators are non-blocking, as shardlm's (--blocking makes
 * them blocking); every wait polls the stream, the communicator's asynchronous
 * error and a deadline (--timeout), and a rank that fails or passes the
 * deadline aborts its communicator (ncclCommAbort ends its kernels). Behind
 * that a watchdog (SIGALRM, re-armed at every step) ends the process, and
 * mpirun the job, should anything else block. Errors outside a variant name
 * the call and end every rank (MPI_Abort) with a non-zero status.
 *
 * NVLink multicast stays off: NCCL_NVLS_ENABLE=0 unless the environment sets
 * it (see ../shared/DEVICE.md).
 *
 *   nccl_allreduce_bench [--hidden 4096] [--iters 200] [--warmup 20] [--graph-calls 32]
 *       [--variants default,LL,LL128,Simple,registered,symmetric] [--timeout 60] [--blocking]
 *       [--json FILE]
 *   mpirun --bind-to none -np 8 nccl_allreduce_bench --hidden 8192 --json out.json */
#include <cuda_runtime_api.h>
#include <math.h>
#include <mpi.h>
#include <nccl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#if NCCL_VERSION_CODE < NCCL_VERSION(2, 14, 0)
#error "nccl_allreduce.c needs NCCL 2.14 or newer (ncclCommInitRankConfig, ncclCommFinalize), as tensor_comm_nccl.c does"
#endif
/* ncclMemAlloc and ncclCommRegister came with NCCL 2.19; symmetric windows with 2.27 */
#define HAVE_USER_BUFFERS (NCCL_VERSION_CODE >= NCCL_VERSION(2, 19, 0))
#if NCCL_VERSION_CODE >= NCCL_VERSION(2, 27, 0) && defined(NCCL_WIN_COLL_SYMMETRIC)
#define HAVE_WINDOWS 1
#else
#define HAVE_WINDOWS 0
#endif

enum { N_SIZES = 9, TAIL = 2048, WHY = 320, GRAPH_WARMUP = 3 };
static const int k_rows[N_SIZES] = {1, 2, 4, 8, 16, 32, 64, 128, 256};
static const uint16_t k_sentinel = 0xBF00; /* -0.5 in bf16: no sum of the fill makes it */

/* ---- options, ranks ---- */

typedef struct opts {
    int hidden, iters, warmup, graph_calls, blocking;
    double timeout_s;
    const char *json, *variants;
} opts;

typedef struct world {
    int rank, size, local_rank, local_size, device;
    cudaStream_t stream;
    char gpu[128]; /* "NVIDIA H100 80GB HBM3 (0000:18:00.0)" */
} world;

/* ---- variants and their figures ---- */

enum { MEM_CUDA, MEM_NCCL };           /* cudaMalloc / ncclMemAlloc */
enum { REG_NONE, REG_LOCAL, REG_WINDOW };
enum { ST_OK, ST_SKIP, ST_FAIL };      /* a step's outcome, worst last */
enum { V_NOT_ASKED, V_OK, V_SKIPPED, V_FAILED };

typedef struct stat2 { double median, p99; } stat2;

typedef struct size_result {
    int rows, eager_done, graph_done;
    size_t n_bytes;
    stat2 eager, graph, host; /* us; graph per call */
} size_result;

typedef struct variant {
    const char *key;   /* as --variants and the JSON name it */
    const char *label; /* the table's */
    const char *proto; /* NCCL_PROTO while it runs, or NULL */
    int mem, reg;
    int asked;         /* named by --variants */
    int status;        /* V_*: V_NOT_ASKED until it has run */
    char why[WHY];     /* skipped or failed: why, naming the rank */
    char graph_why[WHY]; /* graph capture not measured: why */
    size_result sizes[N_SIZES];
} variant;

static variant g_variants[] = {
    {.key = "default", .label = "default", .mem = MEM_CUDA, .reg = REG_NONE},
    {.key = "LL", .label = "NCCL_PROTO=LL", .proto = "LL", .mem = MEM_CUDA, .reg = REG_NONE},
    {.key = "LL128", .label = "NCCL_PROTO=LL128", .proto = "LL128", .mem = MEM_CUDA, .reg = REG_NONE},
    {.key = "Simple", .label = "NCCL_PROTO=Simple", .proto = "Simple", .mem = MEM_CUDA, .reg = REG_NONE},
    {.key = "registered", .label = "ncclMemAlloc + ncclCommRegister", .mem = MEM_NCCL, .reg = REG_LOCAL},
    {.key = "symmetric", .label = "ncclMemAlloc + window (symmetric)", .mem = MEM_NCCL, .reg = REG_WINDOW},
};
enum { N_VARIANTS = sizeof g_variants / sizeof g_variants[0] };

/* ---- fatal errors (outside a variant): every rank ends ---- */

static int g_rank = -1;

static void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "nccl_allreduce_bench: rank %d: ", g_rank);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    int up = 0;
    MPI_Initialized(&up);
    if (up) MPI_Abort(MPI_COMM_WORLD, 1);
    exit(1);
}

#define CUDA_DIE(call)                                                                                                 \
    do {                                                                                                               \
        cudaError_t e_ = (call);                                                                                       \
        if (e_ != cudaSuccess) die("%s failed: %s (%s:%d)", #call, cudaGetErrorString(e_), __FILE__, __LINE__);       \
    } while (0)
#define MPI_DIE(call)                                                                                                  \
    do {                                                                                                               \
        int e_ = (call);                                                                                               \
        if (e_ != MPI_SUCCESS) {                                                                                       \
            char s_[MPI_MAX_ERROR_STRING];                                                                             \
            int n_ = 0;                                                                                                \
            MPI_Error_string(e_, s_, &n_);                                                                             \
            die("%s failed: %s (%s:%d)", #call, s_, __FILE__, __LINE__);                                               \
        }                                                                                                              \
    } while (0)

/* ---- the watchdog: ends the process when a step outlives its time ---- */

static char g_watch_msg[256];
static size_t g_watch_len;

static void on_alarm(int sig) {
    (void)sig;
    ssize_t n = write(STDERR_FILENO, g_watch_msg, g_watch_len);
    (void)n;
    _exit(3);
}

/* Arms the watchdog for a step that waits at most timeout_s a wait. */
static void watch(const opts *o, const char *variant_key, const char *step) {
    const unsigned s = (unsigned)(2 * o->timeout_s) + 30;
    int n = snprintf(g_watch_msg, sizeof g_watch_msg, "nccl_allreduce_bench: rank %d: %s%s%s still running after "
                     "%u s: ended by the watchdog\n", g_rank, variant_key ? variant_key : "", variant_key ? ": " : "",
                     step, s);
    g_watch_len = n < 0 ? 0 : (size_t)n >= sizeof g_watch_msg ? sizeof g_watch_msg - 1 : (size_t)n;
    alarm(s);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- one variant's run on this rank ---- */

typedef struct run {
    const world *w;
    const opts *o;
    variant *v;
    ncclComm_t comm;
    int comm_bad;          /* an error or a deadline: abort, never finalize */
    void *buf;             /* max_count + TAIL bf16 (device) */
    size_t buf_bytes, max_count;
    void *reg;             /* ncclCommRegister's handle */
#if HAVE_WINDOWS
    ncclWindow_t win;
#endif
    cudaEvent_t start, stop;
    uint16_t *host;        /* pinned, buf_bytes */
    double *dev_us, *host_us, *max_us; /* iters each */
    char why[WHY];         /* this rank's failure */
} run;

static int failf(run *r, int status, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = snprintf(r->why, sizeof r->why, "rank %d (GPU %d): ", r->w->rank, r->w->device);
    if (n < 0) n = 0;
    if ((size_t)n < sizeof r->why) vsnprintf(r->why + n, sizeof r->why - (size_t)n, fmt, ap);
    va_end(ap);
    return status;
}

static int fail_nccl(run *r, ncclResult_t res, const char *what) {
    const char *detail = r->comm ? ncclGetLastError(r->comm) : ncclGetLastError(NULL);
    r->comm_bad = 1;
    return failf(r, ST_FAIL, "%s failed: %s%s%s", what, ncclGetErrorString(res), detail && *detail ? ": " : "",
                 detail ? detail : "");
}

static int fail_cuda(run *r, cudaError_t e, const char *what) {
    cudaGetLastError(); /* not left for the next call's check */
    r->comm_bad = 1;
    return failf(r, ST_FAIL, "%s failed: %s", what, cudaGetErrorString(e));
}

#define CUDA_TRY(call)                                                                                                 \
    do {                                                                                                               \
        cudaError_t e_ = (call);                                                                                       \
        if (e_ != cudaSuccess) return fail_cuda(r, e_, #call);                                                         \
    } while (0)
#define NCCL_TRY(call)                                                                                                 \
    do {                                                                                                               \
        int s_ = settle(r, (call), #call);                                                                             \
        if (s_) return s_;                                                                                             \
    } while (0)

/* Finishes a call on a non-blocking communicator: res, or while it is ncclInProgress the communicator's state,
 * polled in naps until settled or the deadline. */
static int settle(run *r, ncclResult_t res, const char *what) {
    const double t0 = now_s();
    for (long nap_ns = 20000; res == ncclInProgress; nap_ns = nap_ns * 2 > 1000000 ? 1000000 : nap_ns * 2) {
        ncclResult_t q = ncclCommGetAsyncError(r->comm, &res);
        if (q != ncclSuccess) res = q;
        if (res != ncclInProgress) break;
        if (now_s() - t0 > r->o->timeout_s) {
            r->comm_bad = 1;
            return failf(r, ST_FAIL, "%s did not finish within %.0f s", what, r->o->timeout_s);
        }
        nanosleep(&(struct timespec){0, nap_ns}, NULL);
    }
    return res == ncclSuccess ? ST_OK : fail_nccl(r, res, what);
}

/* Waits for ev, recorded after the work to wait for: polls it without naps (a nap would only delay the next
 * iteration, not change what the events time), the communicator's asynchronous error and the deadline. */
static int wait_event(run *r, cudaEvent_t ev, const char *what) {
    const double t0 = now_s();
    for (unsigned long i = 1;; i++) {
        cudaError_t e = cudaEventQuery(ev);
        if (e == cudaSuccess) break;
        if (e != cudaErrorNotReady) return fail_cuda(r, e, what);
        if (i % 4096 == 0) {
            ncclResult_t a = ncclSuccess;
            if (ncclCommGetAsyncError(r->comm, &a) == ncclSuccess && a != ncclSuccess && a != ncclInProgress)
                return fail_nccl(r, a, what);
            if (now_s() - t0 > r->o->timeout_s) {
                r->comm_bad = 1;
                return failf(r, ST_FAIL, "%s did not finish within %.0f s (a rank stalled or died)", what,
                             r->o->timeout_s);
            }
        }
    }
    if (cudaPeekAtLastError() == cudaErrorNotReady) cudaGetLastError();
    return ST_OK;
}

static int all_reduce(run *r, size_t count) {
    return settle(r, ncclAllReduce(r->buf, r->buf, count, ncclBfloat16, ncclSum, r->comm, r->w->stream),
                  "ncclAllReduce");
}

/* ---- set-up and tear-down ---- */

static int make_comm(run *r) {
    struct { int ok; ncclUniqueId id; } msg = {1, {{0}}};
    ncclResult_t res = ncclSuccess;
    if (r->w->rank == 0 && (res = ncclGetUniqueId(&msg.id)) != ncclSuccess) msg.ok = 0;
    MPI_DIE(MPI_Bcast(&msg, (int)sizeof msg, MPI_BYTE, 0, MPI_COMM_WORLD));
    if (!msg.ok) return r->w->rank == 0 ? fail_nccl(r, res, "ncclGetUniqueId")
                                        : failf(r, ST_FAIL, "rank 0 could not make a unique id");
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = r->o->blocking;
    NCCL_TRY(ncclCommInitRankConfig(&r->comm, r->w->size, msg.id, r->w->rank, &config));
    return ST_OK;
}

static int setup(run *r) {
    const variant *v = r->v;
#if !HAVE_USER_BUFFERS
    if (v->mem == MEM_NCCL || v->reg == REG_LOCAL)
        return failf(r, ST_SKIP, "NCCL %d.%d's headers have no ncclMemAlloc / ncclCommRegister (2.19+)", NCCL_MAJOR,
                     NCCL_MINOR);
#endif
#if !HAVE_WINDOWS
    if (v->reg == REG_WINDOW)
        return failf(r, ST_SKIP, "NCCL %d.%d's headers have no ncclCommWindowRegister / NCCL_WIN_COLL_SYMMETRIC "
                     "(2.27+)", NCCL_MAJOR, NCCL_MINOR);
#endif
    r->max_count = (size_t)k_rows[N_SIZES - 1] * (size_t)r->o->hidden;
    r->buf_bytes = ((r->max_count + TAIL) * sizeof(uint16_t) + 4095) / 4096 * 4096; /* a window's alignment */
    const size_t iters = (size_t)r->o->iters;
    r->dev_us = malloc(iters * sizeof(double));
    r->host_us = malloc(iters * sizeof(double));
    r->max_us = malloc(iters * sizeof(double));
    if (!r->dev_us || !r->host_us || !r->max_us) return failf(r, ST_FAIL, "out of host memory");
    CUDA_TRY(cudaMallocHost((void **)&r->host, r->buf_bytes));
    CUDA_TRY(cudaEventCreate(&r->start));
    CUDA_TRY(cudaEventCreate(&r->stop));
    if (v->mem == MEM_CUDA) {
        CUDA_TRY(cudaMalloc(&r->buf, r->buf_bytes));
    } else {
#if HAVE_USER_BUFFERS
        ncclResult_t res = ncclMemAlloc(&r->buf, r->buf_bytes);
        if (res != ncclSuccess) return fail_nccl(r, res, "ncclMemAlloc");
#endif
    }
    int rc = make_comm(r);
    if (rc) return rc;
#if HAVE_USER_BUFFERS
    if (v->reg == REG_LOCAL) {
        NCCL_TRY(ncclCommRegister(r->comm, r->buf, r->buf_bytes, &r->reg));
        if (!r->reg)
            return failf(r, ST_SKIP, "NCCL registered nothing (ncclCommRegister gave no handle: NCCL_LOCAL_REGISTER=0, "
                         "or P2P through memcpy)");
    }
#endif
#if HAVE_WINDOWS
    if (v->reg == REG_WINDOW) {
        NCCL_TRY(ncclCommWindowRegister(r->comm, r->buf, r->buf_bytes, &r->win, NCCL_WIN_COLL_SYMMETRIC));
        if (!r->win)
            return failf(r, ST_SKIP, "this communicator has no symmetric memory: ncclCommWindowRegister made no window "
                         "(NCCL needs cuMem, P2P between all its GPUs and NCCL_WIN_ENABLE=1)");
    }
#endif
    return ST_OK;
}

static void warn_cuda(const run *r, cudaError_t e, const char *what) {
    if (e == cudaSuccess) return;
    cudaGetLastError();
    fprintf(stderr, "nccl_allreduce_bench: rank %d: %s failed: %s\n", r->w->rank, what, cudaGetErrorString(e));
}

/* Flushes and frees the communicator within the deadline, or aborts it after a failure; then the buffers. A
 * failure here is said and left: the variant's figures stand, and a broken GPU fails the next variant's set-up. */
static void teardown(run *r) {
    if (r->comm && !r->comm_bad) {
#if HAVE_WINDOWS
        if (r->win && settle(r, ncclCommWindowDeregister(r->comm, r->win), "ncclCommWindowDeregister"))
            fprintf(stderr, "nccl_allreduce_bench: %s\n", r->why);
#endif
#if HAVE_USER_BUFFERS
        if (r->reg && !r->comm_bad && settle(r, ncclCommDeregister(r->comm, r->reg), "ncclCommDeregister"))
            fprintf(stderr, "nccl_allreduce_bench: %s\n", r->why);
#endif
        if (!r->comm_bad && settle(r, ncclCommFinalize(r->comm), "ncclCommFinalize"))
            fprintf(stderr, "nccl_allreduce_bench: %s\n", r->why);
    }
    if (r->comm) {
        ncclResult_t res = r->comm_bad ? ncclCommAbort(r->comm) : ncclCommDestroy(r->comm);
        if (res != ncclSuccess)
            fprintf(stderr, "nccl_allreduce_bench: rank %d: %s failed: %s\n", r->w->rank,
                    r->comm_bad ? "ncclCommAbort" : "ncclCommDestroy", ncclGetErrorString(res));
    }
    if (r->buf && r->v->mem == MEM_CUDA) warn_cuda(r, cudaFree(r->buf), "cudaFree");
#if HAVE_USER_BUFFERS
    ncclResult_t res = r->buf && r->v->mem == MEM_NCCL ? ncclMemFree(r->buf) : ncclSuccess;
    if (res != ncclSuccess)
        fprintf(stderr, "nccl_allreduce_bench: rank %d: ncclMemFree failed: %s\n", r->w->rank, ncclGetErrorString(res));
#endif
    if (r->start) warn_cuda(r, cudaEventDestroy(r->start), "cudaEventDestroy");
    if (r->stop) warn_cuda(r, cudaEventDestroy(r->stop), "cudaEventDestroy");
    if (r->host) warn_cuda(r, cudaFreeHost(r->host), "cudaFreeHost");
    free(r->dev_us);
    free(r->host_us);
    free(r->max_us);
}

/* ---- checks ---- */

static uint16_t bf16_of(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return (uint16_t)(u >> 16); /* exact for the small integers used here */
}

static float float_of(uint16_t b) {
    uint32_t u = (uint32_t)b << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* Fills the first count elements with this rank's values and TAIL more with sentinels, on the stream. */
static int fill(run *r, size_t count) {
    for (size_t i = 0; i < count; i++) r->host[i] = bf16_of((float)((i + (size_t)r->w->rank) % 4 + 1));
    for (size_t i = count; i < count + TAIL; i++) r->host[i] = k_sentinel;
    CUDA_TRY(cudaMemcpyAsync(r->buf, r->host, (count + TAIL) * sizeof(uint16_t), cudaMemcpyHostToDevice,
                             r->w->stream));
    return ST_OK;
}

/* Brings the first count + TAIL elements down and compares them with the sum over the ranks and the sentinels. */
static int verify(run *r, size_t count, const char *how) {
    CUDA_TRY(cudaMemcpyAsync(r->host, r->buf, (count + TAIL) * sizeof(uint16_t), cudaMemcpyDeviceToHost,
                             r->w->stream));
    CUDA_TRY(cudaEventRecord(r->stop, r->w->stream));
    int rc = wait_event(r, r->stop, "waiting for the check's copy");
    if (rc) return rc;
    float want[4] = {0};
    for (int k = 0; k < 4; k++)
        for (int q = 0; q < r->w->size; q++) want[k] += (float)((k + q) % 4 + 1);
    for (size_t i = 0; i < count; i++)
        if (float_of(r->host[i]) != want[i % 4])
            return failf(r, ST_FAIL, "%s all-reduce of %zu elements is wrong at element %zu: %g, not %g", how, count,
                         i, (double)float_of(r->host[i]), (double)want[i % 4]);
    for (size_t i = count; i < count + TAIL; i++)
        if (r->host[i] != k_sentinel)
            return failf(r, ST_FAIL, "%s all-reduce of %zu elements wrote past its end (element %zu)", how, count, i);
    return ST_OK;
}

/* ---- agreeing on a step's outcome ---- */

typedef struct outcome {
    int status;
    char why[WHY];
} outcome;

/* Every rank's outcome of a step: the worst of them; on rank 0, out names the first rank that had it. */
static int agree(const world *w, int mine, const char *why, char *out) {
    int worst = ST_OK;
    MPI_DIE(MPI_Allreduce(&mine, &worst, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD));
    if (worst == ST_OK) return ST_OK;
    outcome me = {.status = mine}, *all = w->rank == 0 ? calloc((size_t)w->size, sizeof *all) : NULL;
    if (w->rank == 0 && !all) die("out of host memory");
    snprintf(me.why, sizeof me.why, "%s", mine ? why : "");
    MPI_DIE(MPI_Gather(&me, (int)sizeof me, MPI_BYTE, all, (int)sizeof me, MPI_BYTE, 0, MPI_COMM_WORLD));
    for (int q = 0; w->rank == 0 && q < w->size; q++)
        if (all[q].status == worst) {
            snprintf(out, WHY, "%s", all[q].why);
            break;
        }
    free(all);
    return worst;
}

/* ---- timing ---- */

static int cmp_double(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static stat2 stats(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    stat2 s = {n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]), 0};
    int p = (int)ceil(0.99 * n) - 1;
    s.p99 = v[p < 0 ? 0 : p >= n ? n - 1 : p];
    return s;
}

/* The slowest rank's figure of each iteration, on rank 0. */
static void slowest(run *r, const double *mine) {
    MPI_DIE(MPI_Reduce(mine, r->max_us, r->o->iters, MPI_DOUBLE, MPI_MAX, 0, MPI_COMM_WORLD));
}

/* A call on this rank's values, checked. */
static int check_eager(run *r, size_t count) {
    int rc = fill(r, count);
    if (!rc) rc = all_reduce(r, count);
    return rc ? rc : verify(r, count, "an eager");
}

/* warm-up and then iters calls, one at a time: microseconds in dev_us (events) and host_us (the call). */
static int time_eager(run *r, size_t count) {
    for (int it = 0; it < r->o->warmup + r->o->iters; it++) {
        CUDA_TRY(cudaEventRecord(r->start, r->w->stream));
        const double t0 = now_s();
        int rc = all_reduce(r, count);
        const double t1 = now_s();
        if (rc) return rc;
        CUDA_TRY(cudaEventRecord(r->stop, r->w->stream));
        if ((rc = wait_event(r, r->stop, "waiting for an all-reduce"))) return rc;
        float ms = 0;
        CUDA_TRY(cudaEventElapsedTime(&ms, r->start, r->stop));
        if (it >= r->o->warmup) {
            r->dev_us[it - r->o->warmup] = 1e3 * (double)ms;
            r->host_us[it - r->o->warmup] = 1e6 * (t1 - t0);
        }
    } /* the sums grow past bf16's range from here on: infinities cost NCCL what numbers do */
    return ST_OK;
}

/* One size, one call at a time, in steps every rank agrees on (no rank goes on to time calls that a rank whose
 * check failed will not join): checked, then timed. On rank 0, why names the first rank that failed. */
static int eager(run *r, size_t count, char *why) {
    int st = agree(r->w, check_eager(r, count), r->why, why);
    return st ? st : agree(r->w, time_eager(r, count), r->why, why);
}

/* calls all-reduces of count elements captured into one graph. */
static int capture(run *r, size_t count, int calls, cudaGraph_t *graph, cudaGraphExec_t *exec) {
    *graph = NULL;
    *exec = NULL;
    CUDA_TRY(cudaStreamBeginCapture(r->w->stream, cudaStreamCaptureModeGlobal));
    int rc = ST_OK;
    for (int c = 0; c < calls && !rc; c++) rc = all_reduce(r, count);
    cudaError_t e = cudaStreamEndCapture(r->w->stream, graph);
    if (rc) {
        if (*graph) cudaGraphDestroy(*graph);
        *graph = NULL;
        cudaGetLastError();
        return rc;
    }
    if (e != cudaSuccess) return fail_cuda(r, e, "cudaStreamEndCapture (capturing ncclAllReduce)");
    CUDA_TRY(cudaGraphInstantiate(exec, *graph, 0));
    return ST_OK;
}

static void drop_graph(const run *r, cudaGraph_t graph, cudaGraphExec_t exec) {
    if (exec) warn_cuda(r, cudaGraphExecDestroy(exec), "cudaGraphExecDestroy");
    if (graph) warn_cuda(r, cudaGraphDestroy(graph), "cudaGraphDestroy");
}

/* ---- graphs ---- */

/* A graph of one call, launched on this rank's values and checked. */
static int check_graph(run *r, size_t count, cudaGraphExec_t exec) {
    int rc = fill(r, count);
    if (rc) return rc;
    CUDA_TRY(cudaGraphLaunch(exec, r->w->stream));
    return verify(r, count, "a graph's");
}

/* iters launches of a graph of --graph-calls calls (after a few untimed): microseconds a call in dev_us. */
static int time_graph(run *r, cudaGraphExec_t exec) {
    for (int it = 0; it < GRAPH_WARMUP + r->o->iters; it++) {
        CUDA_TRY(cudaEventRecord(r->start, r->w->stream));
        CUDA_TRY(cudaGraphLaunch(exec, r->w->stream));
        CUDA_TRY(cudaEventRecord(r->stop, r->w->stream));
        int rc = wait_event(r, r->stop, "waiting for a graph of all-reduces");
        if (rc) return rc;
        float ms = 0;
        CUDA_TRY(cudaEventElapsedTime(&ms, r->start, r->stop));
        if (it >= GRAPH_WARMUP) r->dev_us[it - GRAPH_WARMUP] = 1e3 * (double)ms / r->o->graph_calls;
    }
    return ST_OK;
}

/* One size in graphs, in steps every rank agrees on (a rank whose capture failed must not leave the others
 * waiting in a graph): a graph of one call captured and checked, then one of --graph-calls calls captured and
 * timed. On rank 0, why names the first rank that failed. */
static int graphed(run *r, size_t count, char *why) {
    cudaGraph_t graph;
    cudaGraphExec_t exec;
    int st = agree(r->w, capture(r, count, 1, &graph, &exec), r->why, why);
    if (!st) st = agree(r->w, check_graph(r, count, exec), r->why, why);
    drop_graph(r, graph, exec);
    if (st) return st;
    st = agree(r->w, capture(r, count, r->o->graph_calls, &graph, &exec), r->why, why);
    if (!st) st = agree(r->w, time_graph(r, exec), r->why, why);
    drop_graph(r, graph, exec);
    return st;
}

/* ---- a variant from set-up to tear-down ---- */

static void run_variant(const world *w, const opts *o, variant *v, const char *proto_env) {
    run r = {.w = w, .o = o, .v = v};
    watch(o, v->key, "set-up");
    const char *proto = v->proto ? v->proto : proto_env; /* the environment's for the others */
    if (proto ? setenv("NCCL_PROTO", proto, 1) : unsetenv("NCCL_PROTO")) die("setting NCCL_PROTO failed");
    int st = agree(w, setup(&r), r.why, v->why);
    if (st) {
        v->status = st == ST_SKIP ? V_SKIPPED : V_FAILED;
        r.comm_bad = 1; /* some rank has a communicator or window that another lacks: nothing collective now */
        goto out;
    }
    for (int k = 0; k < N_SIZES; k++) {
        const size_t count = (size_t)k_rows[k] * (size_t)o->hidden;
        size_result *s = &v->sizes[k];
        s->rows = k_rows[k];
        s->n_bytes = count * sizeof(uint16_t);
        watch(o, v->key, "eager all-reduces");
        if (eager(&r, count, v->why)) {
            v->status = V_FAILED;
            r.comm_bad = 1;
            goto out;
        }
        slowest(&r, r.dev_us);
        if (w->rank == 0) s->eager = stats(r.max_us, o->iters);
        slowest(&r, r.host_us);
        if (w->rank == 0) s->host = stats(r.max_us, o->iters);
        s->eager_done = 1;
    }
    v->status = V_OK;
    if (o->graph_calls == 0) snprintf(v->graph_why, sizeof v->graph_why, "not asked (--graph-calls 0)");
    for (int k = 0; k < N_SIZES && o->graph_calls > 0; k++) {
        watch(o, v->key, "graphs of all-reduces");
        if (graphed(&r, (size_t)k_rows[k] * (size_t)o->hidden, v->graph_why)) {
            r.comm_bad = 1; /* whatever NCCL left after a failed capture is not reused */
            break;
        }
        slowest(&r, r.dev_us);
        if (w->rank == 0) v->sizes[k].graph = stats(r.max_us, o->iters);
        v->sizes[k].graph_done = 1;
    }
out:
    watch(o, v->key, "tear-down");
    teardown(&r);
    if (proto_env ? setenv("NCCL_PROTO", proto_env, 1) : unsetenv("NCCL_PROTO")) die("restoring NCCL_PROTO failed");
    MPI_DIE(MPI_Barrier(MPI_COMM_WORLD));
    alarm(0);
}

/* ---- output ---- */

static void json_str(FILE *f, const char *s) {
    fputc('"', f);
    for (; *s; s++) {
        const unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') fprintf(f, "\\%c", c);
        else if (c < 0x20) fprintf(f, "\\u%04x", c);
        else fputc(c, f);
    }
    fputc('"', f);
}

static const char *status_name(int s) {
    return s == V_OK ? "ok" : s == V_SKIPPED ? "skipped" : s == V_FAILED ? "failed" : "not asked";
}

static int write_json(const char *path, const world *w, const opts *o, const char *gpus, int lib_version) {
    FILE *f = fopen(path, "w");
    if (!f) return -1;
    fprintf(f, "{\"nccl_version\": \"%d.%d.%d\", \"nccl_header\": \"%d.%d.%d\", \"world_size\": %d, \"gpus\": ",
            lib_version / 10000, lib_version / 100 % 100, lib_version % 100, NCCL_MAJOR, NCCL_MINOR, NCCL_PATCH,
            w->size);
    json_str(f, gpus);
    fprintf(f, ", \"dtype\": \"bfloat16\", \"op\": \"sum, in place\", \"hidden\": %d, \"iters\": %d, \"warmup\": %d, "
            "\"graph_calls\": %d, \"blocking\": %s, \"units\": \"us; graph per call; the slowest rank per iteration\", "
            "\"variants\": [", o->hidden, o->iters, o->warmup, o->graph_calls, o->blocking ? "true" : "false");
    int first = 1;
    for (int i = 0; i < N_VARIANTS; i++) {
        const variant *v = &g_variants[i];
        if (v->status == V_NOT_ASKED) continue;
        fprintf(f, "%s\n  {\"name\": \"%s\", \"label\": ", first ? "" : ",", v->key);
        first = 0;
        json_str(f, v->label);
        fprintf(f, ", \"status\": \"%s\", \"why\": ", status_name(v->status));
        json_str(f, v->why);
        fprintf(f, ", \"graph\": ");
        json_str(f, v->graph_why[0] ? v->graph_why : v->status == V_OK ? "ok" : "");
        fprintf(f, ", \"sizes\": [");
        int first_size = 1;
        for (int k = 0; k < N_SIZES; k++) {
            const size_result *s = &v->sizes[k];
            if (!s->eager_done) continue;
            fprintf(f, "%s\n    {\"rows\": %d, \"bytes\": %zu, \"eager_median_us\": %.3f, \"eager_p99_us\": %.3f, "
                    "\"host_median_us\": %.3f, \"host_p99_us\": %.3f, ", first_size ? "" : ",", s->rows, s->n_bytes,
                    s->eager.median, s->eager.p99, s->host.median, s->host.p99);
            first_size = 0;
            if (s->graph_done)
                fprintf(f, "\"graph_median_us\": %.3f, \"graph_p99_us\": %.3f}", s->graph.median, s->graph.p99);
            else
                fprintf(f, "\"graph_median_us\": null, \"graph_p99_us\": null}");
        }
        fprintf(f, "]}");
    }
    fprintf(f, "\n]}\n");
    const int bad = ferror(f);
    return fclose(f) == 0 && !bad ? 0 : -1;
}

static void print_table(const world *w, const opts *o, const char *gpus, int lib_version, const char *proto_env) {
    printf("NCCL %d.%d.%d (headers %d.%d.%d), %d rank%s: %s\nbf16 all-reduce (sum, in place), hidden %d, %d "
           "iterations after %d warm-up; graph: %d calls a launch; %s communicators; NCCL_NVLS_ENABLE=%s%s%s\n",
           lib_version / 10000, lib_version / 100 % 100, lib_version % 100, NCCL_MAJOR, NCCL_MINOR, NCCL_PATCH, w->size,
           w->size == 1 ? "" : "s", gpus, o->hidden, o->iters, o->warmup, o->graph_calls,
           o->blocking ? "blocking" : "non-blocking", getenv("NCCL_NVLS_ENABLE"),
           proto_env ? "; NCCL_PROTO from the environment for the others: " : "", proto_env ? proto_env : "");
    if (w->size == 1)
        printf("one rank: NCCL runs no kernel for an in-place sum, so these are the costs of the call alone\n");
    printf("\n| variant | bytes | rows | eager median (us) | eager p99 (us) | graph median (us/call) | "
           "graph p99 (us/call) | host median (us) |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n");
    for (int i = 0; i < N_VARIANTS; i++) {
        const variant *v = &g_variants[i];
        for (int k = 0; k < N_SIZES && v->status == V_OK; k++) {
            const size_result *s = &v->sizes[k];
            char g[64] = "-", g99[64] = "-";
            if (s->graph_done) {
                snprintf(g, sizeof g, "%.2f", s->graph.median);
                snprintf(g99, sizeof g99, "%.2f", s->graph.p99);
            }
            printf("| %s | %zu | %d | %.2f | %.2f | %s | %s | %.2f |\n", v->label, s->n_bytes, s->rows, s->eager.median,
                   s->eager.p99, g, g99, s->host.median);
        }
    }
    printf("\n");
    for (int i = 0; i < N_VARIANTS; i++) {
        const variant *v = &g_variants[i];
        if (v->status == V_SKIPPED || v->status == V_FAILED) printf("%s %s: %s\n", status_name(v->status), v->key, v->why);
        else if (v->status == V_OK && v->graph_why[0]) printf("graph %s: not measured: %s\n", v->key, v->graph_why);
    }
    fflush(stdout);
}

/* ---- main ---- */

static void usage(FILE *f) {
    fprintf(f, "usage: nccl_allreduce_bench [--hidden N] [--iters N] [--warmup N] [--graph-calls N]\n"
            "         [--variants default,LL,LL128,Simple,registered,symmetric] [--timeout S] [--blocking] [--json FILE]\n"
            "  bf16 all-reduce (sum, in place) of rows x N for rows 1, 2, 4 ... 256 (N: --hidden, 4096); one rank\n"
            "  per GPU under mpirun, or alone. Defaults: 200 timed iterations after 20, graphs of 32 calls, every\n"
            "  variant, 60 s a wait, non-blocking communicators.\n");
}

static int parse_int(const char *s, int lo, int hi, int *out) {
    char *end = NULL;
    long v = strtol(s, &end, 10);
    if (!*s || *end || v < lo || v > hi) return -1;
    *out = (int)v;
    return 0;
}

/* 0, 1 for --help, or -1 */
static int parse(int argc, char **argv, opts *o) {
    *o = (opts){.hidden = 4096, .iters = 200, .warmup = 20, .graph_calls = 32, .timeout_s = 60,
                .variants = "default,LL,LL128,Simple,registered,symmetric"};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        int bad = 0, t = 0;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) return 1;
        if (!strcmp(a, "--blocking")) { o->blocking = 1; continue; }
        if (!val) return -1;
        if (!strcmp(a, "--hidden")) bad = parse_int(val, 1, 1 << 20, &o->hidden);
        else if (!strcmp(a, "--iters")) bad = parse_int(val, 1, 1000000, &o->iters);
        else if (!strcmp(a, "--warmup")) bad = parse_int(val, 0, 1000000, &o->warmup);
        else if (!strcmp(a, "--graph-calls")) bad = parse_int(val, 0, 4096, &o->graph_calls);
        else if (!strcmp(a, "--timeout")) { bad = parse_int(val, 1, 86400, &t); o->timeout_s = t; }
        else if (!strcmp(a, "--json")) o->json = val;
        else if (!strcmp(a, "--variants")) o->variants = val;
        else return -1;
        if (bad) return -1;
        i++;
    }
    /* which variants: a comma-separated list of their keys */
    char list[256];
    snprintf(list, sizeof list, "%s", o->variants);
    for (char *save = NULL, *tok = strtok_r(list, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        int found = 0;
        for (int i = 0; i < N_VARIANTS; i++)
            if (!strcmp(tok, g_variants[i].key)) g_variants[i].asked = found = 1;
        if (!found) return -1;
    }
    return 0;
}

/* The world, this rank's GPU (its index among its machine's ranks) and stream. */
static void start(world *w) {
    MPI_Comm node;
    MPI_DIE(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, w->rank, MPI_INFO_NULL, &node));
    MPI_DIE(MPI_Comm_rank(node, &w->local_rank));
    MPI_DIE(MPI_Comm_size(node, &w->local_size));
    MPI_DIE(MPI_Comm_free(&node));
    if (w->size > 64) die("%d ranks: the checks' sums are exact in bf16 up to 64", w->size);
    int n_gpus = 0;
    CUDA_DIE(cudaGetDeviceCount(&n_gpus));
    if (w->local_size > n_gpus)
        die("%d ranks on this machine but %d GPU%s visible: NCCL cannot run two ranks on one GPU", w->local_size,
            n_gpus, n_gpus == 1 ? "" : "s");
    w->device = w->local_rank;
    CUDA_DIE(cudaSetDevice(w->device));
    CUDA_DIE(cudaStreamCreateWithFlags(&w->stream, cudaStreamNonBlocking));
    struct cudaDeviceProp prop;
    CUDA_DIE(cudaGetDeviceProperties(&prop, w->device));
    char bus[32] = "?";
    CUDA_DIE(cudaDeviceGetPCIBusId(bus, (int)sizeof bus, w->device));
    snprintf(w->gpu, sizeof w->gpu, "%.96s (%.24s)", prop.name, bus);
}

int main(int argc, char **argv) {
    setenv("NCCL_NVLS_ENABLE", "0", 0); /* never NVLink multicast, unless the environment says otherwise */
    struct sigaction sa = {.sa_handler = on_alarm};
    sigaction(SIGALRM, &sa, NULL);
    watch(&(opts){.timeout_s = 60}, NULL, "start-up");
    MPI_DIE(MPI_Init(&argc, &argv));
    world w = {0};
    MPI_DIE(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
    MPI_DIE(MPI_Comm_rank(MPI_COMM_WORLD, &w.rank));
    MPI_DIE(MPI_Comm_size(MPI_COMM_WORLD, &w.size));
    g_rank = w.rank;
    opts o;
    const int parsed = parse(argc, argv, &o);
    if (parsed) {
        if (w.rank == 0) usage(parsed > 0 ? stdout : stderr);
        alarm(0);
        MPI_Finalize();
        return parsed > 0 ? 0 : 2;
    }
    start(&w);
    alarm(0);
    int lib_version = 0;
    ncclResult_t res = ncclGetVersion(&lib_version);
    if (res != ncclSuccess) die("ncclGetVersion failed: %s", ncclGetErrorString(res));
    const char *env = getenv("NCCL_PROTO");
    char *proto_env = env ? strdup(env) : NULL;

    /* every rank's GPU, for the header */
    char *names = w.rank == 0 ? malloc((size_t)w.size * sizeof w.gpu) : NULL, *gpus = NULL;
    if (w.rank == 0 && !names) die("out of host memory");
    MPI_DIE(MPI_Gather(w.gpu, (int)sizeof w.gpu, MPI_CHAR, names, (int)sizeof w.gpu, MPI_CHAR, 0, MPI_COMM_WORLD));
    if (w.rank == 0) {
        const size_t n = (size_t)w.size * (sizeof w.gpu + 8) + 1;
        if (!(gpus = calloc(1, n))) die("out of host memory");
        for (int q = 0; q < w.size; q++)
            snprintf(gpus + strlen(gpus), n - strlen(gpus), "%s%s", q ? ", " : "", names + (size_t)q * sizeof w.gpu);
    }

    for (int i = 0; i < N_VARIANTS; i++)
        if (g_variants[i].asked) run_variant(&w, &o, &g_variants[i], proto_env);

    int status = 0;
    for (int i = 0; i < N_VARIANTS; i++) status |= g_variants[i].status == V_FAILED;
    if (w.rank == 0) {
        print_table(&w, &o, gpus, lib_version, proto_env);
        if (o.json && write_json(o.json, &w, &o, gpus, lib_version)) {
            fprintf(stderr, "nccl_allreduce_bench: could not write %s\n", o.json);
            status = 1;
        }
    }
    MPI_DIE(MPI_Bcast(&status, 1, MPI_INT, 0, MPI_COMM_WORLD));
    free(names);
    free(gpus);
    free(proto_env);
    CUDA_DIE(cudaStreamDestroy(w.stream));
    MPI_DIE(MPI_Finalize());
    return status;
}
