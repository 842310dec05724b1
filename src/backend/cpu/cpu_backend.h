/* cpu_backend.h -- create the CPU reference backend. */
#ifndef SL_BACKEND_CPU_BACKEND_H
#define SL_BACKEND_CPU_BACKEND_H

#include "backend/backend.h"

/* n_threads 0: OpenMP's default (OMP_NUM_THREADS, else all cores). */
int sl_cpu_backend_create(int n_threads, sl_backend *out, sl_err *err);
int sl_cpu_backend_n_threads(const sl_backend *b);

#endif
