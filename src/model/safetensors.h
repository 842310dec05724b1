/* safetensors.h -- weights from .safetensors files, mapped, never copied.
 *
 * A model folder holds one `model.safetensors` or several shards listed in
 * `model.safetensors.index.json`. Each file is mapped read-only; a tensor is
 * a pointer into the mapping plus its dtype and shape. Every header is
 * checked before use (offsets inside the file, sizes that match dtype and
 * shape, no overlaps), so a truncated or lying file is an error naming the
 * file and the tensor, not a crash. */
#ifndef SL_MODEL_SAFETENSORS_H
#define SL_MODEL_SAFETENSORS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/dtype.h"
#include "util/error.h"

#define SL_ST_MAX_DIMS 8

typedef struct sl_st_tensor {
    char *name;
    sl_dtype dtype;            /* SL_DTYPE_OTHER for types shardlm does not compute with */
    char dtype_name[16];       /* as written in the header: "BF16", "I64", ... */
    int n_dims;
    int64_t shape[SL_ST_MAX_DIMS];
    const void *data;          /* into the file mapping */
    size_t n_bytes;
    const char *file;          /* path of the file holding it */
    bool used;                 /* handed out by sl_safetensors_get */
} sl_st_tensor;

typedef struct sl_safetensors sl_safetensors;

/* Opens model_dir/model.safetensors, or every shard named by
 * model_dir/model.safetensors.index.json. */
int sl_safetensors_open(const char *model_dir, sl_safetensors **out, sl_err *err);
/* Opens one .safetensors file. */
int sl_safetensors_open_file(const char *path, sl_safetensors **out, sl_err *err);
void sl_safetensors_close(sl_safetensors *st);

/* Checks a safetensors image in memory (header + data) and appends its
 * tensors; `path` names it in messages. Exposed for the fuzzer. */
int sl_safetensors_parse(sl_safetensors *st, const uint8_t *data, size_t n_bytes, const char *path, sl_err *err);
sl_safetensors *sl_safetensors_new(void);

size_t sl_safetensors_count(const sl_safetensors *st);
const sl_st_tensor *sl_safetensors_at(const sl_safetensors *st, size_t i);
/* NULL when absent. */
const sl_st_tensor *sl_safetensors_find(const sl_safetensors *st, const char *name);
/* The tensor `name` with exactly this shape and a dtype shardlm computes with,
 * marked used; otherwise an error naming the file, the tensor, and what was
 * expected. */
int sl_safetensors_get(sl_safetensors *st, const char *name, int n_dims, const int64_t *shape,
                       const sl_st_tensor **out, sl_err *err);

#endif
