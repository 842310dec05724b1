/* hub_select.c -- which files of a hub repository shardlm needs, and the
 * repository listings that answer it.
 *
 * A model is its configs, tokenizer files, chat template and safetensors
 * weights; other weight formats (.bin, .pt, .gguf, .h5, onnx...) are never
 * fetched. When model.safetensors.index.json exists its weight_map decides
 * the shards, so a repository that also carries a consolidated copy of the
 * weights (as Mistral's do) is downloaded once. Only top-level files count:
 * subfolders hold other variants (original/, onnx/). The listing comes from
 * the hub's tree API, or from the trees/<commit>.json file huggingface_hub
 * caches, which has the same facts in another shape. */
#include "hub/hub_internal.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "util/json.h"

static const char *const small_wanted[] = {
    "config.json",           "generation_config.json", "tokenizer.json", "tokenizer_config.json",
    "special_tokens_map.json", "chat_template.jinja",  "model.safetensors.index.json",
};

bool sl_hub_is_small_wanted(const char *path) {
    for (size_t i = 0; i < sizeof small_wanted / sizeof *small_wanted; i++)
        if (strcmp(path, small_wanted[i]) == 0) return true;
    return false;
}

bool sl_hub_is_safetensors(const char *path) {
    size_t n = strlen(path), ext = strlen(".safetensors");
    return !strchr(path, '/') && n > ext && strcmp(path + n - ext, ".safetensors") == 0;
}

void sl_hub_listing_destroy(sl_hub_listing *l) {
    for (size_t i = 0; i < l->n; i++) {
        free(l->files[i].path);
        free(l->files[i].oid);
        free(l->files[i].lfs_sha256);
    }
    free(l->files);
    l->files = NULL;
    l->n = 0;
}

static int listing_push(sl_hub_listing *l, const char *path, json_int_t size, const char *oid,
                        const char *lfs_sha256, json_int_t lfs_size, sl_err *err) {
    sl_hub_file *grown = realloc(l->files, (l->n + 1) * sizeof *grown);
    if (!grown) return sl_err_set(err, SL_ENOMEM, "out of memory listing the repository");
    l->files = grown;
    sl_hub_file *f = &l->files[l->n];
    f->path = strdup(path);
    f->oid = strdup(oid);
    f->lfs_sha256 = lfs_sha256 ? strdup(lfs_sha256) : NULL;
    f->size = (uint64_t)(lfs_sha256 ? lfs_size : size);
    l->n++;
    if (!f->path || !f->oid || (lfs_sha256 && !f->lfs_sha256))
        return sl_err_set(err, SL_ENOMEM, "out of memory listing the repository");
    return SL_OK;
}

/* Tree API entry: {"type":"file","oid":..,"size":..,"path":..,"lfs":{"oid":..,"size":..}}. */
static int add_tree_entry(sl_hub_listing *l, json_t *e, const char *what, sl_err *err) {
    const char *type = json_string_value(json_object_get(e, "type"));
    if (type && strcmp(type, "file") != 0) return SL_OK;
    const char *path = json_string_value(json_object_get(e, "path"));
    const char *oid = json_string_value(json_object_get(e, "oid"));
    json_t *size = json_object_get(e, "size"), *lfs = json_object_get(e, "lfs");
    const char *lfs_oid = lfs ? json_string_value(json_object_get(lfs, "oid")) : NULL;
    json_t *lfs_size = lfs ? json_object_get(lfs, "size") : NULL;
    if (!type || !path || !oid || !json_is_integer(size) || (lfs && (!lfs_oid || !json_is_integer(lfs_size))))
        return sl_err_set(err, SL_EFORMAT, "%s: a file entry lacks type/path/oid/size/lfs fields", what);
    return listing_push(l, path, json_integer_value(size), oid, lfs_oid, json_integer_value(lfs_size), err);
}

int sl_hub_listing_add_tree_page(sl_hub_listing *l, const char *json_text, const char *what, sl_err *err) {
    json_error_t jerr;
    json_t *root = json_loads(json_text, 0, &jerr);
    if (!json_is_array(root)) {
        json_decref(root);
        return sl_err_set(err, SL_EFORMAT, "%s: expected a JSON array of files (%s)", what, jerr.text);
    }
    size_t i;
    json_t *e;
    int rc = SL_OK;
    json_array_foreach(root, i, e) {
        if ((rc = add_tree_entry(l, e, what, err)) != SL_OK) break;
    }
    json_decref(root);
    return rc;
}

/* trees/<commit>.json: {"format_version":1,"files":{"path":{"size","blob_id","lfs_sha256","lfs_size"}}}. */
int sl_hub_listing_load_tree_cache(sl_hub_listing *l, const char *path, sl_err *err) {
    json_t *root;
    int rc = sl_json_load_file(path, &root, err);
    if (rc != SL_OK) return rc;
    json_t *files = json_object_get(root, "files");
    if (json_integer_value(json_object_get(root, "format_version")) != 1 || !json_is_object(files)) {
        json_decref(root);
        return sl_err_set(err, SL_EFORMAT, "%s: not a version 1 tree listing", path);
    }
    const char *name;
    json_t *info;
    json_object_foreach(files, name, info) {
        const char *blob_id = json_string_value(json_object_get(info, "blob_id"));
        const char *lfs = json_string_value(json_object_get(info, "lfs_sha256"));
        json_t *size = json_object_get(info, "size"), *lfs_size = json_object_get(info, "lfs_size");
        if (!blob_id || !json_is_integer(size) || (lfs && !json_is_integer(lfs_size))) {
            rc = sl_err_set(err, SL_EFORMAT, "%s: entry '%s' lacks size/blob_id", path, name);
            break;
        }
        rc = listing_push(l, name, json_integer_value(size), blob_id, lfs, json_integer_value(lfs_size), err);
        if (rc != SL_OK) break;
    }
    json_decref(root);
    return rc;
}

void sl_hub_free_names(char **names, size_t n) {
    for (size_t i = 0; i < n; i++) free(names[i]);
    free(names);
}

static bool names_contain(char **names, size_t n, const char *s) {
    for (size_t i = 0; i < n; i++)
        if (strcmp(names[i], s) == 0) return true;
    return false;
}

int sl_hub_index_shards(const char *index_path, char ***out_names, size_t *out_n, sl_err *err) {
    *out_names = NULL;
    *out_n = 0;
    json_t *root;
    int rc = sl_json_load_file(index_path, &root, err);
    if (rc != SL_OK) return rc;
    json_t *map = json_object_get(root, "weight_map");
    if (!json_is_object(map)) {
        json_decref(root);
        return sl_err_set(err, SL_EFORMAT, "%s: no \"weight_map\" object", index_path);
    }
    char **names = NULL;
    size_t n = 0;
    const char *tensor;
    json_t *file;
    json_object_foreach(map, tensor, file) {
        const char *s = json_string_value(file);
        if (!s) {
            rc = sl_err_set(err, SL_EFORMAT, "%s: weight_map[\"%s\"] is not a file name", index_path, tensor);
            break;
        }
        if (names_contain(names, n, s)) continue;
        char **grown = realloc(names, (n + 1) * sizeof *grown);
        if (!grown || !(grown[n] = strdup(s))) {
            if (grown) names = grown;
            rc = sl_err_set(err, SL_ENOMEM, "%s: out of memory", index_path);
            break;
        }
        names = grown;
        n++;
    }
    json_decref(root);
    if (rc != SL_OK) {
        sl_hub_free_names(names, n);
        return rc;
    }
    *out_names = names;
    *out_n = n;
    return SL_OK;
}

int sl_hub_select_weights(const sl_hub_listing *l, const char *index_path, bool *wanted, const char *repo_id,
                          sl_err *err) {
    char **shards = NULL;
    size_t n_shards = 0, n_wanted = 0;
    if (index_path) {
        int rc = sl_hub_index_shards(index_path, &shards, &n_shards, err);
        if (rc != SL_OK) return rc;
    }
    for (size_t i = 0; i < l->n; i++) {
        const char *p = l->files[i].path;
        wanted[i] = sl_hub_is_safetensors(p) && (!index_path || names_contain(shards, n_shards, p));
        n_wanted += wanted[i];
    }
    int rc = SL_OK;
    if (index_path && n_wanted != n_shards)
        rc = sl_err_set(err, SL_EFORMAT,
                        "%s: model.safetensors.index.json names %zu shard files but the repository has %zu of them",
                        repo_id, n_shards, n_wanted);
    else if (n_wanted == 0)
        rc = sl_err_set(err, SL_ENOTSUP,
                        "%s has no safetensors weights at its top level; shardlm loads only safetensors "
                        "(convert the checkpoint or pick a repository that has *.safetensors)", repo_id);
    sl_hub_free_names(shards, n_shards);
    return rc;
}
