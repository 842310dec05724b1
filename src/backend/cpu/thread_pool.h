/* thread_pool.h -- the CPU backend's worker threads.
 *
 * One pool per backend, started once. A kernel hands the pool a loop over
 * [0, n) and a function for a range of it; the calling thread takes part as
 * thread 0, and the call returns when every range is done. Between calls the
 * workers spin for a short while (a decode step issues ~150 calls a few
 * microseconds apart), yielding the core to any other runnable thread, then
 * sleep until the next call: no wake-up cost inside a step, no core held
 * between steps. */
#ifndef SL_BACKEND_CPU_THREAD_POOL_H
#define SL_BACKEND_CPU_THREAD_POOL_H

#include <stdint.h>

#include "util/error.h"

typedef struct cpu_pool cpu_pool;

/* fn computes items [begin, end) of the loop; `thread` is in [0, n_threads). */
typedef void (*cpu_range_fn)(void *arg, int64_t begin, int64_t end, int thread);

/* n_threads 0: OMP_NUM_THREADS when set (the usual knob), else the cores this process may run on. */
int cpu_pool_create(int n_threads, cpu_pool **out, sl_err *err);
void cpu_pool_destroy(cpu_pool *p);
int cpu_pool_n_threads(const cpu_pool *p);

/* Static split: thread t computes one contiguous range, [n*t/T, n*(t+1)/T).
 * Below `min_n` items the caller computes everything itself (waking threads
 * would cost more than the loop). */
void cpu_pool_for(cpu_pool *p, int64_t n, int64_t min_n, cpu_range_fn fn, void *arg);

/* Dynamic split: threads take `chunk` items at a time until none are left
 * (uneven items, e.g. attention over contexts of different lengths). */
void cpu_pool_for_dynamic(cpu_pool *p, int64_t n, int64_t chunk, int64_t min_n, cpu_range_fn fn, void *arg);

#endif
