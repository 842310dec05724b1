/* hub_internal.h -- the pieces of the hub client shared by its files; not a
 * public API (include hub/hub.h for that).
 *
 *   hub.c          sl_hub_resolve: settings from options and environment, the
 *                  cache-first decision, the download plan and its workers
 *   hub_cache.c    the on-disk layout huggingface_hub writes: refs, snapshots,
 *                  blobs, locks, and when a cached snapshot is complete
 *   hub_select.c   which repository files shardlm needs
 *   hub_http.c     libcurl requests, the hub's error headers, resumable and
 *                  verified blob downloads
 *   hub_digest.c   SHA-256 and SHA-1 */
#ifndef SL_HUB_INTERNAL_H
#define SL_HUB_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "hub/hub.h"
#include "util/error.h"

/* One sl_hub_resolve call's settings, with options and environment applied. */
typedef struct sl_hub_ctx {
    char *repo_id;    /* org/name */
    char *revision;   /* branch, tag or commit */
    char *cache_dir;
    char *storage;    /* cache_dir/models--org--name */
    char *token;      /* NULL when none */
    char *endpoint;   /* no trailing slash */
    bool offline;
    FILE *progress;
    int max_parallel;
} sl_hub_ctx;

/* ---- hub_select.c: the files a model needs ---- */

typedef struct sl_hub_file {
    char *path;          /* relative to the repository root */
    uint64_t size;       /* the file's bytes (the LFS object's size for LFS files) */
    char *oid;           /* git blob sha1 */
    char *lfs_sha256;    /* NULL unless stored with LFS */
} sl_hub_file;

typedef struct sl_hub_listing {
    sl_hub_file *files;
    size_t n;
} sl_hub_listing;

void sl_hub_listing_destroy(sl_hub_listing *l);
/* Appends the "file" entries of a tree API page or of a trees/<commit>.json
 * cache file's "files" object. */
int sl_hub_listing_add_tree_page(sl_hub_listing *l, const char *json_text, const char *what, sl_err *err);
int sl_hub_listing_load_tree_cache(sl_hub_listing *l, const char *path, sl_err *err);

/* Configs, tokenizer files, chat template and the safetensors index. */
bool sl_hub_is_small_wanted(const char *path);
/* A top-level *.safetensors file. */
bool sl_hub_is_safetensors(const char *path);
/* The distinct shard names of a model.safetensors.index.json weight_map. */
int sl_hub_index_shards(const char *index_path, char ***out_names, size_t *out_n, sl_err *err);
void sl_hub_free_names(char **names, size_t n);
/* The weights the model needs from `l`: the index's shards when `index_path`
 * names an index file, else every top-level safetensors file. Fills flags
 * (one per file, true = wanted); SL_ENOTSUP when the repository has no
 * safetensors weights at all. */
int sl_hub_select_weights(const sl_hub_listing *l, const char *index_path, bool *wanted, const char *repo_id,
                          sl_err *err);

/* ---- hub_cache.c: the cache layout ---- */

bool sl_hub_is_commit_hash(const char *s);
/* The commit refs/<revision> names (or the revision itself if a commit), or
 * NULL; caller frees. */
char *sl_hub_cache_commit_for(const sl_hub_ctx *c);
int sl_hub_cache_write_ref(const sl_hub_ctx *c, const char *commit, sl_err *err);
/* The snapshots/<commit> folder (heap string). */
char *sl_hub_cache_snapshot_dir(const sl_hub_ctx *c, const char *commit);
/* blobs/<etag> and its partial download blobs/<etag>.incomplete (heap strings). */
char *sl_hub_cache_blob_path(const sl_hub_ctx *c, const char *etag, bool incomplete);
/* Points snapshots/<commit>/<path> at ../../blobs/<etag> (atomically replaced). */
int sl_hub_cache_link(const sl_hub_ctx *c, const char *commit, const char *path, const char *etag, sl_err *err);
/* Records that `path` does not exist at `commit` (.no_exist/<commit>/<path>). */
void sl_hub_cache_mark_missing(const sl_hub_ctx *c, const char *commit, const char *path);
/* Takes the per-blob lock .locks/models--org--name/<etag>.lock (the lock
 * huggingface_hub takes), waiting for another process that holds it;
 * returns the lock's fd for sl_hub_cache_unlock. */
int sl_hub_cache_lock(const sl_hub_ctx *c, const char *etag, int *out_fd, sl_err *err);
void sl_hub_cache_unlock(int fd);
/* True when snapshots/<commit> holds every file the model needs (judged from
 * the trees/<commit>.json listing huggingface_hub caches when present, else
 * from config.json and the safetensors index). When not, *why (may be NULL)
 * gets a heap string naming what is missing. */
bool sl_hub_cache_snapshot_complete(const sl_hub_ctx *c, const char *commit, char **why);
/* mkdir -p. */
int sl_hub_mkdirs(const char *path, sl_err *err);

/* ---- hub_http.c: requests ---- */

typedef struct sl_hub_response {
    long status;
    char *body;            /* GET only; NUL-terminated */
    size_t n_body;
    char *etag, *linked_etag, *linked_size, *repo_commit, *location;
    char *error_code, *error_message, *link;
    int64_t content_length; /* -1 when absent */
} sl_hub_response;

void sl_hub_response_destroy(sl_hub_response *r);
/* curl_global_init once per process. */
void sl_hub_http_global_init(void);
/* One request: a GET follows redirects and keeps the body, a HEAD does
 * neither (a 3xx answer carries the file's metadata).
 * Fails only on transport errors: an unreachable host is SL_EIO naming the
 * endpoint. */
int sl_hub_http_request(const sl_hub_ctx *c, const char *method, const char *url, sl_hub_response *out,
                        sl_err *err);
/* Turns a non-2xx response into the error the user acts on, from X-Error-Code
 * and the status; `what` names the request ("listing org/name"). */
int sl_hub_http_status_error(const sl_hub_ctx *c, const sl_hub_response *r, const char *what, sl_err *err);
/* "%2F"-style escaping; keep_slash leaves '/' as is (file paths). */
char *sl_hub_url_escape(const char *s, bool keep_slash);

/* Progress shared by the download workers; fn is called with byte deltas
 * from any worker thread and returns nonzero to abort the transfer. */
typedef int (*sl_hub_progress_fn)(void *user, int64_t delta);

typedef struct sl_hub_blob_request {
    const char *url;           /* where the bytes are (redirects followed) */
    const char *part_path;     /* blobs/<etag>.incomplete, resumed when present */
    uint64_t size;
    const char *sha256;        /* expected digest of an LFS file, or NULL */
    const char *git_oid;       /* expected git blob id of any other file, or NULL */
    const char *label;         /* the repository path, for messages */
    sl_hub_progress_fn progress;
    void *progress_user;
} sl_hub_blob_request;

/* Downloads into part_path (Range-resumed from its current length, retried
 * after transient failures) and verifies size and digest. On a digest
 * mismatch the partial file is removed and SL_EFORMAT returned. */
int sl_hub_http_download(const sl_hub_ctx *c, const sl_hub_blob_request *req, sl_err *err);

#endif
