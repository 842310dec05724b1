/* dtype.h -- the element types of weights, KV caches and activations (backend.h says which activations). */
#ifndef SL_UTIL_DTYPE_H
#define SL_UTIL_DTYPE_H

#include <stddef.h>

typedef enum { SL_DTYPE_F32, SL_DTYPE_F16, SL_DTYPE_BF16, SL_DTYPE_OTHER } sl_dtype;

static inline size_t sl_dtype_n_bytes(sl_dtype t) {
    return t == SL_DTYPE_F32 ? 4 : (t == SL_DTYPE_F16 || t == SL_DTYPE_BF16) ? 2 : 0;
}

static inline const char *sl_dtype_name(sl_dtype t) {
    switch (t) {
    case SL_DTYPE_F32: return "float32";
    case SL_DTYPE_F16: return "float16";
    case SL_DTYPE_BF16: return "bfloat16";
    default: return "unsupported";
    }
}

#endif
