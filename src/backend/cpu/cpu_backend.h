/* cpu_backend.h -- create the CPU reference backend. */
#ifndef SL_BACKEND_CPU_BACKEND_H
#define SL_BACKEND_CPU_BACKEND_H

#include "backend/backend.h"

/* o->n_threads 0: OMP_NUM_THREADS when set, else the cores this process may use. */
int sl_cpu_backend_create(const sl_backend_options *o, sl_backend *out, sl_err *err);

#endif
