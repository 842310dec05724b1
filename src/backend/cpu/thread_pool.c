/* thread_pool.c -- persistent worker threads for the CPU kernels.
 *
 * A call publishes its loop (function, argument, size) and bumps a
 * generation counter; workers waiting on the counter see it change, compute
 * their share and count themselves done; the caller computes share 0 and
 * spins until the count reaches zero. So a call costs two cache-line
 * transfers each way, not a thread wake-up: OpenMP's parallel regions cost
 * 10-20 us each here, and ~150 of them per decode step were 2-3 ms.
 *
 * Waiting workers spin for SPIN_US, calling sched_yield so that another
 * runnable thread on the core (another rank, another process) goes first,
 * then sleep on a condition variable. The caller only takes the lock when
 * someone sleeps; the sleeper re-reads the generation under the lock after
 * announcing itself, so a bump is never missed (both sides use sequentially
 * consistent atomics: either the caller sees the sleeper, or the sleeper
 * sees the bump).
 *
 * One caller at a time (the backend belongs to one engine thread), and a
 * range function must not call the pool itself. */
#include "backend/cpu/thread_pool.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define SPIN_US 1000          /* a worker sleeps after this long without work */
#define SPINS_BETWEEN_YIELDS 64

struct cpu_pool {
    int n_threads;            /* including the caller */
    pthread_t *workers;       /* n_threads - 1 */
    int n_started;

    /* the current loop, written by the caller before the generation bump */
    cpu_range_fn fn;
    void *arg;
    int64_t n, chunk;         /* chunk 0: static split */
    atomic_int_fast64_t next; /* dynamic split: the first item nobody took */

    atomic_uint generation;
    atomic_int pending;       /* workers still computing the current loop */
    atomic_int n_sleeping;
    atomic_bool stopping;
    pthread_mutex_t mu;
    pthread_cond_t wake;
};

typedef struct worker_arg {
    cpu_pool *pool;
    int thread;
} worker_arg;

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static double now_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e6 + (double)t.tv_nsec * 1e-3;
}

/* Returns the generation once it differs from `seen`. */
static unsigned wait_for_work(cpu_pool *p, unsigned seen) {
    const double deadline = now_us() + SPIN_US;
    for (unsigned spins = 1;; spins++) {
        unsigned g = atomic_load(&p->generation);
        if (g != seen) return g;
        cpu_relax();
        if (spins % SPINS_BETWEEN_YIELDS) continue;
        if (now_us() > deadline) break;
        sched_yield();
    }
    pthread_mutex_lock(&p->mu);
    atomic_fetch_add(&p->n_sleeping, 1);
    unsigned g;
    while ((g = atomic_load(&p->generation)) == seen) pthread_cond_wait(&p->wake, &p->mu);
    atomic_fetch_sub(&p->n_sleeping, 1);
    pthread_mutex_unlock(&p->mu);
    return g;
}

/* Thread `t`'s part of the current loop. */
static void run_share(cpu_pool *p, int t) {
    if (p->chunk == 0) {
        int64_t begin = p->n * t / p->n_threads, end = p->n * (t + 1) / p->n_threads;
        if (begin < end) p->fn(p->arg, begin, end, t);
        return;
    }
    for (;;) {
        int64_t begin = atomic_fetch_add(&p->next, p->chunk);
        if (begin >= p->n) return;
        p->fn(p->arg, begin, begin + p->chunk < p->n ? begin + p->chunk : p->n, t);
    }
}

static void *worker_main(void *varg) {
    worker_arg a = *(worker_arg *)varg;
    free(varg);
    unsigned seen = 0;
    for (;;) {
        seen = wait_for_work(a.pool, seen);
        if (atomic_load(&a.pool->stopping)) return NULL;
        run_share(a.pool, a.thread);
        atomic_fetch_sub(&a.pool->pending, 1);
    }
}

static int default_threads(void) {
    const char *env = getenv("OMP_NUM_THREADS");
    if (env && atoi(env) > 0) return atoi(env);
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0) return CPU_COUNT(&set);
    return 1;
}

int cpu_pool_create(int n_threads, cpu_pool **out, sl_err *err) {
    *out = NULL;
    cpu_pool *p = calloc(1, sizeof *p);
    if (!p) return sl_err_set(err, SL_ENOMEM, "out of memory for the CPU thread pool");
    p->n_threads = n_threads > 0 ? n_threads : default_threads();
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->wake, NULL);
    if (p->n_threads > 1 && !(p->workers = calloc((size_t)p->n_threads - 1, sizeof *p->workers))) {
        cpu_pool_destroy(p);
        return sl_err_set(err, SL_ENOMEM, "out of memory for the CPU thread pool");
    }
    for (int t = 1; t < p->n_threads; t++) {
        worker_arg *a = malloc(sizeof *a);
        if (a) *a = (worker_arg){p, t};
        if (!a || pthread_create(&p->workers[t - 1], NULL, worker_main, a) != 0) {
            free(a);
            int n = p->n_threads;
            cpu_pool_destroy(p);
            return sl_err_set(err, SL_ENOMEM, "cannot start CPU worker thread %d of %d; try fewer --threads", t, n);
        }
        p->n_started++;
        char name[16];
        snprintf(name, sizeof name, "shardlm-cpu%d", t % 1000);
        pthread_setname_np(p->workers[t - 1], name);
    }
    *out = p;
    return SL_OK;
}

void cpu_pool_destroy(cpu_pool *p) {
    if (!p) return;
    atomic_store(&p->stopping, true);
    pthread_mutex_lock(&p->mu);
    atomic_fetch_add(&p->generation, 1);
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->n_started; i++) pthread_join(p->workers[i], NULL);
    pthread_cond_destroy(&p->wake);
    pthread_mutex_destroy(&p->mu);
    free(p->workers);
    free(p);
}

int cpu_pool_n_threads(const cpu_pool *p) { return p->n_threads; }

static void run(cpu_pool *p, int64_t n, int64_t chunk, int64_t min_n, cpu_range_fn fn, void *arg) {
    if (n <= 0) return;
    if (p->n_threads == 1 || n < min_n) {
        fn(arg, 0, n, 0);
        return;
    }
    p->fn = fn;
    p->arg = arg;
    p->n = n;
    p->chunk = chunk;
    atomic_store(&p->next, 0);
    atomic_store(&p->pending, p->n_threads - 1);
    atomic_fetch_add(&p->generation, 1);
    if (atomic_load(&p->n_sleeping) > 0) {
        pthread_mutex_lock(&p->mu);
        pthread_cond_broadcast(&p->wake);
        pthread_mutex_unlock(&p->mu);
    }
    run_share(p, 0);
    for (unsigned spins = 1; atomic_load(&p->pending) > 0; spins++) {
        cpu_relax();
        if (spins % SPINS_BETWEEN_YIELDS == 0) sched_yield();
    }
}

void cpu_pool_for(cpu_pool *p, int64_t n, int64_t min_n, cpu_range_fn fn, void *arg) {
    run(p, n, 0, min_n, fn, arg);
}

void cpu_pool_for_dynamic(cpu_pool *p, int64_t n, int64_t chunk, int64_t min_n, cpu_range_fn fn, void *arg) {
    run(p, n, chunk > 0 ? chunk : 1, min_n, fn, arg);
}
