/* backend.c -- choose a backend by name. The CUDA backend registers here
 * when the build has it (SHARDLM_HAVE_CUDA). */
#include "backend/backend.h"

#include <string.h>

#include "backend/cpu/cpu_backend.h"
#ifdef SHARDLM_HAVE_CUDA
#include "backend/cuda/cuda_backend.h"
#endif

int sl_backend_create(const char *name, const sl_backend_options *o, sl_backend *out, sl_err *err) {
    if (!name || strcmp(name, "cpu") == 0) return sl_cpu_backend_create(o, out, err);
#ifdef SHARDLM_HAVE_CUDA
    if (strcmp(name, "cuda") == 0) return sl_cuda_backend_create(o, out, err);
    return sl_err_set(err, SL_ENOTSUP, "backend \"%s\" does not exist (available: cpu, cuda)", name);
#else
    if (strcmp(name, "cuda") == 0)
        return sl_err_set(err, SL_ENOTSUP, "--device cuda: this build has no CUDA backend (rebuild with nvcc on the "
                          "PATH, or -DSHARDLM_CUDA=ON), or use --device cpu");
    return sl_err_set(err, SL_ENOTSUP, "backend \"%s\" does not exist (available: cpu)", name);
#endif
}

const char *sl_backend_default_name(void) {
#ifdef SHARDLM_HAVE_CUDA
    if (sl_cuda_device_count() > 0) return "cuda";
#endif
    return "cpu";
}

void sl_backend_gpus(int *count, size_t *total_bytes) {
    *count = 0;
    *total_bytes = 0;
#ifdef SHARDLM_HAVE_CUDA
    *count = sl_cuda_device_count();
    if (*count > 0) *total_bytes = sl_cuda_device_memory(0);
#endif
}

void sl_backend_destroy(sl_backend *b) {
    if (b->iface) b->iface->destroy(b->ctx);
    b->iface = NULL;
    b->ctx = NULL;
}
