/* backend.c -- choose a backend by name. The CUDA backend registers here
 * when the build has it (SHARDLM_HAVE_CUDA). */
#include "backend/backend.h"

#include <string.h>

#include "backend/cpu/cpu_backend.h"

int sl_backend_create(const char *name, const sl_backend_options *o, sl_backend *out, sl_err *err) {
    if (!name || strcmp(name, "cpu") == 0) return sl_cpu_backend_create(o, out, err);
    return sl_err_set(err, SL_ENOTSUP, "backend \"%s\" is not available in this build (available: cpu)", name);
}

void sl_backend_destroy(sl_backend *b) {
    if (b->iface) b->iface->destroy(b->ctx);
    b->iface = NULL;
    b->ctx = NULL;
}
