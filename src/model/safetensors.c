/* safetensors.c -- parse, check and index .safetensors files.
 *
 * Layout of a file: u64 little-endian header length N, N bytes of JSON
 * ({"name": {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}),
 * then the data section, which offsets are relative to. The parser trusts
 * nothing: lengths are checked against the file size with overflow-safe
 * arithmetic, every tensor's byte size must equal its shape times its
 * element size, and tensors may not overlap. Tensors from all shards land in
 * one array sorted by name for lookup. */
#include "model/safetensors.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/fs.h"

#define MAX_HEADER_BYTES (100u << 20) /* the format's own limit */

struct sl_safetensors {
    sl_mapped_file *files;
    size_t n_files;
    sl_st_tensor *tensors;
    size_t n_tensors, cap_tensors;
    char **paths; /* paths of parsed images (owned), for tensor->file */
    size_t n_paths;
};

static const struct { const char *name; size_t n_bytes; sl_dtype dtype; } k_dtypes[] = {
    {"F32", 4, SL_DTYPE_F32},    {"F16", 2, SL_DTYPE_F16},    {"BF16", 2, SL_DTYPE_BF16},
    {"F64", 8, SL_DTYPE_OTHER},  {"I64", 8, SL_DTYPE_OTHER},  {"U64", 8, SL_DTYPE_OTHER},
    {"I32", 4, SL_DTYPE_OTHER},  {"U32", 4, SL_DTYPE_OTHER},  {"I16", 2, SL_DTYPE_OTHER},
    {"U16", 2, SL_DTYPE_OTHER},  {"I8", 1, SL_DTYPE_OTHER},   {"U8", 1, SL_DTYPE_OTHER},
    {"BOOL", 1, SL_DTYPE_OTHER}, {"F8_E4M3", 1, SL_DTYPE_OTHER}, {"F8_E5M2", 1, SL_DTYPE_OTHER},
};

sl_safetensors *sl_safetensors_new(void) { return calloc(1, sizeof(sl_safetensors)); }

void sl_safetensors_close(sl_safetensors *st) {
    if (!st) return;
    for (size_t i = 0; i < st->n_files; i++) sl_file_unmap(&st->files[i]);
    for (size_t i = 0; i < st->n_tensors; i++) free(st->tensors[i].name);
    for (size_t i = 0; i < st->n_paths; i++) free(st->paths[i]);
    free(st->files);
    free(st->tensors);
    free(st->paths);
    free(st);
}

static int cmp_tensor_name(const void *a, const void *b) {
    return strcmp(((const sl_st_tensor *)a)->name, ((const sl_st_tensor *)b)->name);
}

static int cmp_tensor_offset(const void *a, const void *b) {
    const uint8_t *x = ((const sl_st_tensor *)a)->data, *y = ((const sl_st_tensor *)b)->data;
    return x < y ? -1 : x > y;
}

/* Reads one "name": {...} entry of the header into t. */
static int parse_entry(const char *name, const json_t *v, const uint8_t *data_start, uint64_t n_data,
                       const char *path, sl_st_tensor *t, sl_err *err) {
    if (!json_is_object(v)) return sl_err_set(err, SL_EFORMAT, "%s: tensor \"%s\": header entry is not an object", path, name);
    const char *dtype = json_string_value(json_object_get(v, "dtype"));
    const json_t *shape = json_object_get(v, "shape"), *offsets = json_object_get(v, "data_offsets");
    if (!dtype || !json_is_array(shape) || !json_is_array(offsets) || json_array_size(offsets) != 2)
        return sl_err_set(err, SL_EFORMAT, "%s: tensor \"%s\": needs \"dtype\", \"shape\" and two \"data_offsets\"", path, name);
    size_t elem = 0;
    for (size_t i = 0; i < sizeof k_dtypes / sizeof k_dtypes[0]; i++) {
        if (strcmp(dtype, k_dtypes[i].name) == 0) {
            elem = k_dtypes[i].n_bytes;
            t->dtype = k_dtypes[i].dtype;
        }
    }
    if (!elem) return sl_err_set(err, SL_EFORMAT, "%s: tensor \"%s\": unknown dtype \"%.16s\"", path, name, dtype);
    snprintf(t->dtype_name, sizeof t->dtype_name, "%s", dtype);
    if (json_array_size(shape) > SL_ST_MAX_DIMS)
        return sl_err_set(err, SL_EFORMAT, "%s: tensor \"%s\": more than %d dimensions", path, name, SL_ST_MAX_DIMS);
    t->n_dims = (int)json_array_size(shape);
    uint64_t n_elems = 1;
    for (int d = 0; d < t->n_dims; d++) {
        const json_t *dim = json_array_get(shape, (size_t)d);
        if (!json_is_integer(dim) || json_integer_value(dim) < 0)
            return sl_err_set(err, SL_EFORMAT, "%s: tensor \"%s\": shape holds a non-integer or negative size", path, name);
        t->shape[d] = json_integer_value(dim);
        if (t->shape[d] != 0 && n_elems > UINT64_MAX / (uint64_t)t->shape[d])
            return sl_err_set(err, SL_EFORMAT, "%s: tensor \"%s\": shape overflows", path, name);
        n_elems *= (uint64_t)t->shape[d];
    }
    const json_t *jb = json_array_get(offsets, 0), *je = json_array_get(offsets, 1);
    if (!json_is_integer(jb) || !json_is_integer(je) || json_integer_value(jb) < 0 ||
        json_integer_value(je) < json_integer_value(jb))
        return sl_err_set(err, SL_EFORMAT, "%s: tensor \"%s\": data_offsets must be integers 0 <= begin <= end", path, name);
    uint64_t begin = (uint64_t)json_integer_value(jb), end = (uint64_t)json_integer_value(je);
    if (end > n_data)
        return sl_err_set(err, SL_EFORMAT, "%s: tensor \"%s\": data ends at byte %llu but the data section has %llu bytes "
                          "(truncated file?)", path, name, (unsigned long long)end, (unsigned long long)n_data);
    if (n_elems > UINT64_MAX / elem || n_elems * elem != end - begin)
        return sl_err_set(err, SL_EFORMAT, "%s: tensor \"%s\": %llu bytes for %llu elements of %s", path, name,
                          (unsigned long long)(end - begin), (unsigned long long)n_elems, dtype);
    t->data = data_start + begin;
    t->n_bytes = (size_t)(end - begin);
    return SL_OK;
}

static int push_tensor(sl_safetensors *st, sl_st_tensor *t, sl_err *err) {
    if (st->n_tensors == st->cap_tensors) {
        size_t cap = st->cap_tensors ? st->cap_tensors * 2 : 64;
        sl_st_tensor *grown = realloc(st->tensors, cap * sizeof *grown);
        if (!grown) return sl_err_set(err, SL_ENOMEM, "out of memory indexing tensors");
        st->tensors = grown;
        st->cap_tensors = cap;
    }
    st->tensors[st->n_tensors++] = *t;
    return SL_OK;
}

/* No two tensors of one image may share bytes. */
static int check_overlaps(sl_st_tensor *ts, size_t n, const char *path, sl_err *err) {
    if (n < 2) return SL_OK;
    qsort(ts, n, sizeof *ts, cmp_tensor_offset);
    for (size_t i = 1; i < n; i++) {
        const uint8_t *prev_end = (const uint8_t *)ts[i - 1].data + ts[i - 1].n_bytes;
        if ((const uint8_t *)ts[i].data < prev_end && ts[i].n_bytes && ts[i - 1].n_bytes)
            return sl_err_set(err, SL_EFORMAT, "%s: tensors \"%s\" and \"%s\" overlap", path, ts[i - 1].name, ts[i].name);
    }
    return SL_OK;
}

static int parse_header(sl_safetensors *st, const json_t *root, const uint8_t *data_start, uint64_t n_data,
                        const char *path, sl_err *err) {
    size_t first = st->n_tensors;
    const char *name;
    const json_t *v;
    json_object_foreach((json_t *)root, name, v) {
        if (strcmp(name, "__metadata__") == 0) continue;
        sl_st_tensor t = {0};
        t.file = path;
        int rc = parse_entry(name, v, data_start, n_data, path, &t, err);
        if (!rc && !(t.name = strdup(name))) rc = sl_err_set(err, SL_ENOMEM, "out of memory");
        if (!rc) rc = push_tensor(st, &t, err);
        if (rc) {
            free(t.name);
            return rc;
        }
    }
    int rc = check_overlaps(st->tensors + first, st->n_tensors - first, path, err);
    if (rc || st->n_tensors < 2) return rc;
    qsort(st->tensors, st->n_tensors, sizeof *st->tensors, cmp_tensor_name);
    for (size_t i = 1; i < st->n_tensors; i++)
        if (strcmp(st->tensors[i - 1].name, st->tensors[i].name) == 0)
            return sl_err_set(err, SL_EFORMAT, "%s: tensor \"%s\" appears twice (in %s and %s)", path,
                              st->tensors[i].name, st->tensors[i - 1].file, st->tensors[i].file);
    return SL_OK;
}

int sl_safetensors_parse(sl_safetensors *st, const uint8_t *data, size_t n_bytes, const char *path, sl_err *err) {
    if (n_bytes < 8)
        return sl_err_set(err, SL_EFORMAT, "%s: %zu bytes is too short for a safetensors file (truncated?)", path, n_bytes);
    uint64_t n_header = 0;
    for (int i = 7; i >= 0; i--) n_header = (n_header << 8) | data[i];
    if (n_header > n_bytes - 8 || n_header > MAX_HEADER_BYTES)
        return sl_err_set(err, SL_EFORMAT, "%s: header length %llu does not fit in the %zu-byte file (truncated or "
                          "not a safetensors file)", path, (unsigned long long)n_header, n_bytes);
    char **paths = realloc(st->paths, (st->n_paths + 1) * sizeof *paths);
    if (!paths) return sl_err_set(err, SL_ENOMEM, "out of memory");
    st->paths = paths;
    if (!(st->paths[st->n_paths] = strdup(path))) return sl_err_set(err, SL_ENOMEM, "out of memory");
    const char *owned_path = st->paths[st->n_paths++];
    json_error_t jerr;
    json_t *root = json_loadb((const char *)data + 8, (size_t)n_header, 0, &jerr);
    if (!root) return sl_err_set(err, SL_EFORMAT, "%s: header is not valid JSON at byte %d: %s", path, jerr.position, jerr.text);
    int rc = json_is_object(root) ? parse_header(st, root, data + 8 + n_header, n_bytes - 8 - n_header, owned_path, err)
                                  : sl_err_set(err, SL_EFORMAT, "%s: header is not a JSON object", path);
    json_decref(root);
    return rc;
}

static int add_file(sl_safetensors *st, const char *path, sl_err *err) {
    sl_mapped_file *files = realloc(st->files, (st->n_files + 1) * sizeof *files);
    if (!files) return sl_err_set(err, SL_ENOMEM, "out of memory");
    st->files = files;
    int rc = sl_file_map(&st->files[st->n_files], path, err);
    if (rc) return rc;
    sl_mapped_file *f = &st->files[st->n_files++];
    return sl_safetensors_parse(st, f->data, f->n_bytes, path, err);
}

int sl_safetensors_open_file(const char *path, sl_safetensors **out, sl_err *err) {
    *out = NULL;
    sl_safetensors *st = sl_safetensors_new();
    if (!st) return sl_err_set(err, SL_ENOMEM, "out of memory");
    int rc = add_file(st, path, err);
    if (rc) {
        sl_safetensors_close(st);
        return rc;
    }
    *out = st;
    return SL_OK;
}

/* The distinct shard file names of an index's weight_map, in order seen. */
static int open_index(sl_safetensors *st, const char *model_dir, const char *index_path, sl_err *err) {
    json_error_t jerr;
    json_t *root = json_load_file(index_path, 0, &jerr);
    if (!root) return sl_err_set(err, SL_EFORMAT, "%s:%d: invalid JSON: %s", index_path, jerr.line, jerr.text);
    const json_t *map = json_object_get(root, "weight_map");
    int rc = SL_OK;
    if (!json_is_object(map)) rc = sl_err_set(err, SL_EFORMAT, "%s: no \"weight_map\" object", index_path);
    json_t *seen = json_object();
    const char *name;
    const json_t *v;
    json_object_foreach((json_t *)map, name, v) {
        if (rc) break;
        const char *file = json_string_value(v);
        if (!file || strchr(file, '/') || strcmp(file, "..") == 0) {
            rc = sl_err_set(err, SL_EFORMAT, "%s: tensor \"%s\" maps to an invalid file name", index_path, name);
            break;
        }
        if (json_object_get(seen, file)) continue;
        json_object_set_new(seen, file, json_true());
        char *path = sl_path_join(model_dir, file);
        rc = path ? add_file(st, path, err) : sl_err_set(err, SL_ENOMEM, "out of memory");
        free(path);
    }
    /* Every tensor the index names must exist in the shards. */
    json_object_foreach((json_t *)map, name, v) {
        if (rc) break;
        if (!sl_safetensors_find(st, name))
            rc = sl_err_set(err, SL_EFORMAT, "%s: tensor \"%s\" is listed for %s but that file does not hold it",
                            index_path, name, json_string_value(v));
    }
    json_decref(seen);
    json_decref(root);
    return rc;
}

int sl_safetensors_open(const char *model_dir, sl_safetensors **out, sl_err *err) {
    *out = NULL;
    sl_safetensors *st = sl_safetensors_new();
    char *index = sl_path_join(model_dir, "model.safetensors.index.json");
    char *single = sl_path_join(model_dir, "model.safetensors");
    int rc;
    if (!st || !index || !single) rc = sl_err_set(err, SL_ENOMEM, "out of memory");
    else if (sl_path_exists(index)) rc = open_index(st, model_dir, index, err);
    else if (sl_path_exists(single)) rc = add_file(st, single, err);
    else rc = sl_err_set(err, SL_ENOTFOUND, "%s: no model.safetensors or model.safetensors.index.json "
                         "(shardlm reads safetensors weights only)", model_dir);
    free(index);
    free(single);
    if (rc) {
        sl_safetensors_close(st);
        return rc;
    }
    *out = st;
    return SL_OK;
}

size_t sl_safetensors_count(const sl_safetensors *st) { return st->n_tensors; }
const sl_st_tensor *sl_safetensors_at(const sl_safetensors *st, size_t i) { return &st->tensors[i]; }

const sl_st_tensor *sl_safetensors_find(const sl_safetensors *st, const char *name) {
    sl_st_tensor key = {.name = (char *)name};
    return st->n_tensors ? bsearch(&key, st->tensors, st->n_tensors, sizeof key, cmp_tensor_name) : NULL;
}

static void format_shape(char *buf, size_t n, int n_dims, const int64_t *shape) {
    size_t used = (size_t)snprintf(buf, n, "[");
    for (int d = 0; d < n_dims && used < n; d++)
        used += (size_t)snprintf(buf + used, n - used, d ? ", %lld" : "%lld", (long long)shape[d]);
    if (used < n) snprintf(buf + used, n - used, "]");
}

int sl_safetensors_get(sl_safetensors *st, const char *name, int n_dims, const int64_t *shape,
                       const sl_st_tensor **out, sl_err *err) {
    sl_st_tensor *t = (sl_st_tensor *)sl_safetensors_find(st, name);
    if (!t) return sl_err_set(err, SL_ENOTFOUND, "tensor \"%s\" is missing from the model's safetensors files", name);
    bool same = t->n_dims == n_dims;
    for (int d = 0; same && d < n_dims; d++) same = t->shape[d] == shape[d];
    if (!same) {
        char want[128], got[128];
        format_shape(want, sizeof want, n_dims, shape);
        format_shape(got, sizeof got, t->n_dims, t->shape);
        return sl_err_set(err, SL_EFORMAT, "%s: tensor \"%s\" has shape %s, expected %s from config.json", t->file,
                          name, got, want);
    }
    if (t->dtype == SL_DTYPE_OTHER)
        return sl_err_set(err, SL_ENOTSUP, "%s: tensor \"%s\" is %s; shardlm computes with BF16, F16 or F32 weights",
                          t->file, name, t->dtype_name);
    t->used = true;
    *out = t;
    return SL_OK;
}
