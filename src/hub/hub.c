/* hub.c -- sl_hub_resolve: a model name to a folder of files.
 *
 * A local path wins. A hub id is looked up in the Hugging Face cache first: a
 * complete snapshot for the revision is returned with no request at all
 * (which is also what HF_HUB_OFFLINE=1 allows). Otherwise the hub is asked,
 * in the order huggingface_hub asks it: GET /api/models/<id>/revision/<rev>
 * for the commit, GET /api/models/<id>/tree/<commit>?recursive=true (Link-
 * paginated) for the files, then per missing file HEAD /<id>/resolve/<commit>/
 * <path> for its etag and location and a GET of that location. Configs and
 * tokenizer files come first, then the shards the safetensors index names,
 * spread over max_parallel threads with one aggregate progress bar. Settings
 * left NULL in the options come from the environment variables
 * huggingface_hub reads, with its defaults. */
#include "hub/hub.h"

#include <ctype.h>
#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "hub/hub_internal.h"
#include "util/fs.h"
#include "util/log.h"
#include "util/progress.h"

#define DEFAULT_ENDPOINT "https://huggingface.co"
#define DEFAULT_PARALLEL 4

/* ---- names ---- */

static bool valid_name_part(const char *s, size_t n) {
    if (n == 0 || n > 96 || s[0] == '.' || s[0] == '-' || s[n - 1] == '.' || s[n - 1] == '-') return false;
    for (size_t i = 0; i < n; i++) {
        if (!isalnum((unsigned char)s[i]) && !strchr("-_.", s[i])) return false;
        if (i > 0 && (s[i] == '-' || s[i] == '.') && s[i - 1] == s[i]) return false; /* "--", ".." */
    }
    return true;
}

bool sl_hub_looks_like_repo_id(const char *model) {
    if (!model) return false;
    const char *at = strchr(model, '@');
    size_t n = at ? (size_t)(at - model) : strlen(model);
    if (at && (at[1] == '\0' || strpbrk(at + 1, " \t\r\n"))) return false;
    const char *slash = memchr(model, '/', n);
    if (!slash) return false;
    size_t org = (size_t)(slash - model);
    return valid_name_part(model, org) && valid_name_part(slash + 1, n - org - 1);
}

/* ---- settings ---- */

static const char *env(const char *name) {
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

static bool env_true(const char *v) {
    return v && (strcasecmp(v, "1") == 0 || strcasecmp(v, "on") == 0 || strcasecmp(v, "yes") == 0 ||
                 strcasecmp(v, "true") == 0);
}

/* "~/x" -> "$HOME/x"; anything else copied. */
static char *expand_home(const char *p) {
    const char *home = env("HOME");
    if (p[0] == '~' && (p[1] == '/' || p[1] == '\0') && home) {
        char *s = NULL;
        return asprintf(&s, "%s%s", home, p + 1) < 0 ? NULL : s;
    }
    return strdup(p);
}

/* $HF_HOME, else $XDG_CACHE_HOME/huggingface, else ~/.cache/huggingface. */
static char *hf_home(void) {
    if (env("HF_HOME")) return expand_home(env("HF_HOME"));
    char *s = NULL;
    if (env("XDG_CACHE_HOME")) return asprintf(&s, "%s/huggingface", env("XDG_CACHE_HOME")) < 0 ? NULL : s;
    return expand_home("~/.cache/huggingface");
}

static char *default_cache_dir(void) {
    const char *v = env("HF_HUB_CACHE") ? env("HF_HUB_CACHE") : env("HUGGINGFACE_HUB_CACHE");
    if (v) return expand_home(v);
    char *home = hf_home(), *dir = home ? sl_path_join(home, "hub") : NULL;
    free(home);
    return dir;
}

/* Strips CR/LF and surrounding blanks; NULL when nothing is left. */
static char *clean_token(const char *t) {
    char *s = malloc(strlen(t) + 1), *o = s;
    if (!s) return NULL;
    for (; *t; t++)
        if (*t != '\r' && *t != '\n') *o++ = *t;
    *o = '\0';
    while (o > s && isspace((unsigned char)o[-1])) *--o = '\0';
    char *start = s;
    while (isspace((unsigned char)*start)) start++;
    char *out = *start ? strdup(start) : NULL;
    free(s);
    return out;
}

/* $HF_TOKEN, $HUGGING_FACE_HUB_TOKEN, then the file $HF_TOKEN_PATH or $HF_HOME/token. */
static char *default_token(void) {
    const char *v = env("HF_TOKEN") ? env("HF_TOKEN") : env("HUGGING_FACE_HUB_TOKEN");
    if (v) return clean_token(v);
    char *home = env("HF_TOKEN_PATH") ? NULL : hf_home();
    char *path = env("HF_TOKEN_PATH") ? expand_home(env("HF_TOKEN_PATH")) : home ? sl_path_join(home, "token") : NULL;
    char *text = NULL, *token = NULL;
    if (path && sl_file_read_all(path, &text, NULL, NULL) == SL_OK) token = clean_token(text);
    free(text);
    free(path);
    free(home);
    return token;
}

static void ctx_destroy(sl_hub_ctx *c) {
    free(c->repo_id);
    free(c->revision);
    free(c->cache_dir);
    free(c->storage);
    free(c->token);
    free(c->endpoint);
    memset(c, 0, sizeof *c);
}

static int ctx_init(sl_hub_ctx *c, const char *model, const sl_hub_options *o, sl_err *err) {
    memset(c, 0, sizeof *c);
    const char *at = strchr(model, '@');
    c->repo_id = at ? strndup(model, (size_t)(at - model)) : strdup(model);
    if (o->revision && at && strcmp(o->revision, at + 1) != 0)
        return sl_err_set(err, SL_EINVAL, "%s names revision '%s' but --revision says '%s': give one", model, at + 1,
                          o->revision);
    c->revision = strdup(o->revision ? o->revision : at ? at + 1 : "main");
    c->cache_dir = o->cache_dir ? expand_home(o->cache_dir) : default_cache_dir();
    c->token = o->token ? clean_token(o->token) : default_token();
    c->endpoint = strdup(o->endpoint ? o->endpoint : env("HF_ENDPOINT") ? env("HF_ENDPOINT") : DEFAULT_ENDPOINT);
    c->offline = o->offline >= 0 ? o->offline != 0
                                 : env_true(env("HF_HUB_OFFLINE") ? env("HF_HUB_OFFLINE") : env("TRANSFORMERS_OFFLINE"));
    c->progress = o->progress ? o->progress : stderr;
    c->max_parallel = o->max_parallel > 0 ? o->max_parallel : DEFAULT_PARALLEL;
    if (!c->repo_id || !c->revision || !c->cache_dir || !c->endpoint)
        return sl_err_set(err, SL_ENOMEM, "out of memory");
    size_t n = strlen(c->endpoint);
    while (n > 0 && c->endpoint[n - 1] == '/') c->endpoint[--n] = '\0';
    const char *slash = strchr(c->repo_id, '/'); /* models--org--name */
    if (asprintf(&c->storage, "%s/models--%.*s--%s", c->cache_dir, (int)(slash - c->repo_id), c->repo_id,
                 slash + 1) < 0) {
        c->storage = NULL;
        return sl_err_set(err, SL_ENOMEM, "out of memory");
    }
    return SL_OK;
}

/* ---- the hub's answers ---- */

/* GET a JSON document from the API; non-2xx answers become the user's error. */
static int api_get(const sl_hub_ctx *c, const char *url, const char *what, sl_hub_response *r, sl_err *err) {
    int rc = sl_hub_http_request(c, "GET", url, r, err);
    if (rc == SL_OK && (r->status < 200 || r->status >= 300)) rc = sl_hub_http_status_error(c, r, what, err);
    if (rc == SL_OK && !r->body) rc = sl_err_set(err, SL_EFORMAT, "%s: empty answer from %s", what, url);
    if (rc != SL_OK) sl_hub_response_destroy(r);
    return rc;
}

static int remote_commit(const sl_hub_ctx *c, char **out, sl_err *err) {
    *out = NULL;
    if (sl_hub_is_commit_hash(c->revision)) return (*out = strdup(c->revision)) ? SL_OK : SL_ENOMEM;
    char *rev = sl_hub_url_escape(c->revision, false), *url = NULL, what[300];
    snprintf(what, sizeof what, "looking up model %s (revision %s)", c->repo_id, c->revision);
    if (!rev || asprintf(&url, "%s/api/models/%s/revision/%s", c->endpoint, c->repo_id, rev) < 0) {
        free(rev);
        return sl_err_set(err, SL_ENOMEM, "out of memory");
    }
    sl_hub_response r;
    int rc = api_get(c, url, what, &r, err);
    if (rc == SL_OK) {
        json_t *root = json_loads(r.body, 0, NULL);
        const char *sha = json_string_value(json_object_get(root, "sha"));
        if (sha && sl_hub_is_commit_hash(sha)) *out = strdup(sha);
        else rc = sl_err_set(err, SL_EFORMAT, "%s: the answer from %s has no commit \"sha\"", what, url);
        json_decref(root);
        sl_hub_response_destroy(&r);
    }
    free(rev);
    free(url);
    return rc;
}

/* The URL in a Link header's rel="next" entry, or NULL. */
static char *link_next(const char *link) {
    for (const char *p = link; p && (p = strchr(p, '<'));) {
        const char *end = strchr(p, '>');
        if (!end) return NULL;
        const char *next_entry = strchr(end, ',');
        const char *rel = strstr(end, "rel=\"next\"");
        if (rel && (!next_entry || rel < next_entry)) return strndup(p + 1, (size_t)(end - p - 1));
        p = next_entry;
    }
    return NULL;
}

static int list_files(const sl_hub_ctx *c, const char *commit, sl_hub_listing *l, sl_err *err) {
    char *url = NULL, what[300];
    snprintf(what, sizeof what, "listing the files of model %s at %s", c->repo_id, commit);
    if (asprintf(&url, "%s/api/models/%s/tree/%s?recursive=true&expand=false", c->endpoint, c->repo_id, commit) < 0)
        return sl_err_set(err, SL_ENOMEM, "out of memory");
    int rc = SL_OK;
    while (url && rc == SL_OK) {
        sl_hub_response r;
        if ((rc = api_get(c, url, what, &r, err)) != SL_OK) break;
        rc = sl_hub_listing_add_tree_page(l, r.body, what, err);
        free(url);
        url = r.link ? link_next(r.link) : NULL;
        sl_hub_response_destroy(&r);
    }
    free(url);
    return rc;
}

/* ---- downloading ---- */

typedef struct plan {
    const sl_hub_ctx *c;
    const char *commit;
    const sl_hub_listing *l;
    size_t *jobs, n_jobs, next;
    pthread_mutex_t mu;
    bool failed;
    int rc;
    sl_err err;
    sl_progress bar;
    bool bar_started;
    uint64_t done;
} plan;

static int on_progress(void *user, int64_t delta) {
    plan *p = user;
    pthread_mutex_lock(&p->mu);
    p->done = (uint64_t)((int64_t)p->done + delta);
    if (p->bar_started) sl_progress_update(&p->bar, p->done);
    int stop = p->failed;
    pthread_mutex_unlock(&p->mu);
    return stop;
}

/* Normalized ETag: W/"x" and "x" -> x. */
static char *normalize_etag(const char *e) {
    if (!e) return NULL;
    if (strncmp(e, "W/", 2) == 0) e += 2;
    size_t n = strlen(e);
    if (n >= 2 && e[0] == '"' && e[n - 1] == '"') return strndup(e + 1, n - 2);
    return strdup(e);
}

/* Location resolved against the request URL (absolute or origin-relative). */
static char *resolve_location(const char *url, const char *location) {
    if (strstr(location, "://")) return strdup(location);
    const char *host = strstr(url, "://");
    size_t origin = host ? strcspn(host + 3, "/") + (size_t)(host + 3 - url) : strlen(url);
    char *s = NULL;
    return asprintf(&s, "%.*s%s%s", (int)origin, url, location[0] == '/' ? "" : "/", location) < 0 ? NULL : s;
}

/* HEAD /<id>/resolve/<commit>/<path>: where the bytes are, checked against the listing. */
static int file_location(const sl_hub_ctx *c, const char *commit, const sl_hub_file *f, const char *etag,
                         char **out_url, sl_err *err) {
    char *path = sl_hub_url_escape(f->path, true), *url = NULL, what[600];
    snprintf(what, sizeof what, "%s/%s", c->repo_id, f->path);
    *out_url = NULL;
    if (!path || asprintf(&url, "%s/%s/resolve/%s/%s", c->endpoint, c->repo_id, commit, path) < 0) {
        free(path);
        return sl_err_set(err, SL_ENOMEM, "out of memory");
    }
    free(path);
    sl_hub_response r;
    int rc = sl_hub_http_request(c, "HEAD", url, &r, err);
    bool redirect = r.status >= 300 && r.status < 400 && r.location;
    for (int hops = 0; rc == SL_OK && redirect && r.location[0] == '/' && hops < 5; hops++) {
        char *next = resolve_location(url, r.location); /* the hub's own move (a renamed repo): follow */
        sl_hub_response_destroy(&r);
        free(url);
        if (!(url = next)) return sl_err_set(err, SL_ENOMEM, "out of memory");
        rc = sl_hub_http_request(c, "HEAD", url, &r, err);
        redirect = r.status >= 300 && r.status < 400 && r.location;
    }
    if (rc == SL_OK && !redirect && (r.status < 200 || r.status >= 300))
        rc = sl_hub_http_status_error(c, &r, what, err);
    char *got_etag = rc == SL_OK ? normalize_etag(r.linked_etag ? r.linked_etag : r.etag) : NULL;
    const char *size_text = r.linked_size;
    int64_t size = size_text ? strtoll(size_text, NULL, 10) : redirect ? -1 : r.content_length;
    if (rc == SL_OK && !r.repo_commit)
        rc = sl_err_set(err, SL_EFORMAT, "%s: the answer of %s has no X-Repo-Commit header: is HF_ENDPOINT (%s) a "
                        "Hugging Face hub?", what, url, c->endpoint);
    else if (rc == SL_OK && (!got_etag || strcmp(got_etag, etag) != 0))
        rc = sl_err_set(err, SL_EFORMAT, "%s: the hub's listing says etag %s but its file answer says %s", what, etag,
                        got_etag ? got_etag : "none");
    else if (rc == SL_OK && size >= 0 && (uint64_t)size != f->size)
        rc = sl_err_set(err, SL_EFORMAT, "%s: the hub's listing says %" PRIu64 " bytes but its file answer says %"
                        PRId64, what, f->size, size);
    if (rc == SL_OK) *out_url = redirect ? resolve_location(url, r.location) : strdup(url);
    if (rc == SL_OK && !*out_url) rc = sl_err_set(err, SL_ENOMEM, "out of memory");
    free(got_etag);
    free(url);
    sl_hub_response_destroy(&r);
    return rc;
}

static int fetch_blob(plan *p, const sl_hub_file *f, const char *etag, const char *blob, sl_err *err) {
    char *url = NULL, *part = sl_hub_cache_blob_path(p->c, etag, true), label[600];
    snprintf(label, sizeof label, "%s/%s", p->c->repo_id, f->path);
    int rc = part ? file_location(p->c, p->commit, f, etag, &url, err) : sl_err_set(err, SL_ENOMEM, "out of memory");
    if (rc == SL_OK) {
        sl_hub_blob_request req = {.url = url, .part_path = part, .size = f->size, .label = label,
                                   .sha256 = f->lfs_sha256, .git_oid = f->lfs_sha256 ? NULL : f->oid,
                                   .progress = on_progress, .progress_user = p};
        rc = sl_hub_http_download(p->c, &req, err);
    }
    if (rc == SL_OK && rename(part, blob) != 0) rc = sl_err_set(err, SL_EIO, "cannot rename %s to %s", part, blob);
    free(url);
    free(part);
    return rc;
}

/* One file: its blob (downloaded under the blob's lock unless present) and its snapshot link. */
static int fetch_file(plan *p, const sl_hub_file *f, sl_err *err) {
    const char *etag = f->lfs_sha256 ? f->lfs_sha256 : f->oid;
    char *blob = sl_hub_cache_blob_path(p->c, etag, false);
    char *blobs_dir = sl_path_join(p->c->storage, "blobs");
    int fd = -1;
    int rc = blob && blobs_dir ? sl_hub_mkdirs(blobs_dir, err) : sl_err_set(err, SL_ENOMEM, "out of memory");
    if (rc == SL_OK) rc = sl_hub_cache_lock(p->c, etag, &fd, err);
    if (rc == SL_OK && !sl_path_exists(blob)) rc = fetch_blob(p, f, etag, blob, err);
    sl_hub_cache_unlock(fd);
    if (rc == SL_OK) rc = sl_hub_cache_link(p->c, p->commit, f->path, etag, err);
    free(blob);
    free(blobs_dir);
    return rc;
}

static void *worker(void *arg) {
    plan *p = arg;
    for (;;) {
        pthread_mutex_lock(&p->mu);
        bool stop = p->failed || p->next == p->n_jobs;
        size_t job = stop ? 0 : p->jobs[p->next++];
        pthread_mutex_unlock(&p->mu);
        if (stop) return NULL;
        sl_err e = {0};
        int rc = fetch_file(p, &p->l->files[job], &e);
        pthread_mutex_lock(&p->mu);
        if (rc != SL_OK && !p->failed) {
            p->failed = true;
            p->rc = rc;
            p->err = e;
        }
        pthread_mutex_unlock(&p->mu);
    }
}

static uint64_t missing_bytes(const sl_hub_ctx *c, const sl_hub_file *f) {
    char *blob = sl_hub_cache_blob_path(c, f->lfs_sha256 ? f->lfs_sha256 : f->oid, false);
    bool have = blob && sl_path_exists(blob);
    free(blob);
    return have ? 0 : f->size;
}

/* Fetches the files flagged in `wanted`, in parallel. */
static int fetch_files(const sl_hub_ctx *c, const char *commit, const sl_hub_listing *l, const bool *wanted,
                       sl_err *err) {
    plan p = {.c = c, .commit = commit, .l = l, .jobs = malloc((l->n ? l->n : 1) * sizeof(size_t))};
    if (!p.jobs) return sl_err_set(err, SL_ENOMEM, "out of memory");
    uint64_t total = 0;
    for (size_t i = 0; i < l->n; i++)
        if (wanted[i]) {
            p.jobs[p.n_jobs++] = i;
            total += missing_bytes(c, &l->files[i]);
        }
    pthread_mutex_init(&p.mu, NULL);
    if (total > 0) {
        char label[200];
        snprintf(label, sizeof label, "%s: %zu files", c->repo_id, p.n_jobs);
        sl_progress_start(&p.bar, c->progress, label, total, "B");
        p.bar_started = true;
    }
    size_t n_threads = p.n_jobs < (size_t)c->max_parallel ? p.n_jobs : (size_t)c->max_parallel;
    pthread_t threads[64];
    if (n_threads > 64) n_threads = 64;
    size_t started = 0;
    for (; started < n_threads; started++)
        if (pthread_create(&threads[started], NULL, worker, &p) != 0) break;
    if (started == 0) worker(&p);
    for (size_t i = 0; i < started; i++) pthread_join(threads[i], NULL);
    if (p.bar_started && !p.failed) sl_progress_finish(&p.bar);
    else if (p.bar_started && p.bar.tty) fputc('\n', c->progress); /* end the half-drawn bar */
    pthread_mutex_destroy(&p.mu);
    free(p.jobs);
    if (p.failed && err) *err = p.err;
    return p.failed ? p.rc : SL_OK;
}

/* Configs and tokenizer files first, then the weights they (the index) name. */
static int download_snapshot(const sl_hub_ctx *c, const char *commit, const sl_hub_listing *l, sl_err *err) {
    bool *wanted = calloc(l->n ? l->n : 1, sizeof *wanted);
    if (!wanted) return sl_err_set(err, SL_ENOMEM, "out of memory");
    bool has_index = false;
    for (size_t i = 0; i < l->n; i++) {
        wanted[i] = sl_hub_is_small_wanted(l->files[i].path);
        has_index |= strcmp(l->files[i].path, "model.safetensors.index.json") == 0;
    }
    int rc = fetch_files(c, commit, l, wanted, err);
    char *snapshot = sl_hub_cache_snapshot_dir(c, commit);
    char *index = snapshot && has_index ? sl_path_join(snapshot, "model.safetensors.index.json") : NULL;
    if (rc == SL_OK && (!snapshot || (has_index && !index))) rc = sl_err_set(err, SL_ENOMEM, "out of memory");
    if (rc == SL_OK) rc = sl_hub_select_weights(l, index, wanted, c->repo_id, err);
    if (rc == SL_OK) rc = fetch_files(c, commit, l, wanted, err);
    free(snapshot);
    free(index);
    free(wanted);
    return rc;
}

/* Remembers the wanted small files the repository lacks, as huggingface_hub does. */
static void mark_absent(const sl_hub_ctx *c, const char *commit, const sl_hub_listing *l) {
    static const char *const names[] = {"config.json", "generation_config.json", "tokenizer.json",
                                        "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        bool found = false;
        for (size_t j = 0; j < l->n && !found; j++) found = strcmp(l->files[j].path, names[i]) == 0;
        if (!found) sl_hub_cache_mark_missing(c, commit, names[i]);
    }
}

static int download(const sl_hub_ctx *c, char **out_dir, sl_err *err) {
    char *commit = NULL, *why = NULL;
    sl_hub_listing l = {0};
    int rc = remote_commit(c, &commit, err);
    if (rc == SL_OK) rc = list_files(c, commit, &l, err);
    if (rc == SL_OK) rc = sl_hub_cache_write_ref(c, commit, err);
    if (rc == SL_OK) {
        SL_INFO("%s: fetching revision %s (commit %s) into %s", c->repo_id, c->revision, commit, c->storage);
        mark_absent(c, commit, &l);
        rc = download_snapshot(c, commit, &l, err);
    }
    if (rc == SL_OK && !sl_hub_cache_snapshot_complete(c, commit, &why))
        rc = sl_err_set(err, SL_EIO, "%s: the download finished but the snapshot is incomplete: %s", c->repo_id,
                        why ? why : "?");
    if (rc == SL_OK && !(*out_dir = sl_hub_cache_snapshot_dir(c, commit)))
        rc = sl_err_set(err, SL_ENOMEM, "out of memory");
    free(why);
    free(commit);
    sl_hub_listing_destroy(&l);
    return rc;
}

static int offline_error(const sl_hub_ctx *c, const char *commit, const char *why, sl_err *err) {
    if (commit)
        return sl_err_set(err, SL_ENOTFOUND,
                          "HF_HUB_OFFLINE is set and the cached snapshot of %s (revision %s) is incomplete (%s): "
                          "unset HF_HUB_OFFLINE to finish the download", c->repo_id, c->revision, why ? why : "?");
    return sl_err_set(err, SL_ENOTFOUND,
                      "HF_HUB_OFFLINE is set and model %s (revision %s) is not in the cache at %s: unset "
                      "HF_HUB_OFFLINE to download it, or point HF_HUB_CACHE / --download-dir at a cache that has it",
                      c->repo_id, c->revision, c->cache_dir);
}

int sl_hub_resolve(const char *model, const sl_hub_options *opts, char **out_dir, sl_err *err) {
    *out_dir = NULL;
    if (!model || !*model) return sl_err_set(err, SL_EINVAL, "no model given: name a folder or a hub id org/name");
    if (sl_path_exists(model))
        return (*out_dir = strdup(model)) ? SL_OK : sl_err_set(err, SL_ENOMEM, "out of memory");
    if (!sl_hub_looks_like_repo_id(model))
        return sl_err_set(err, SL_ENOTFOUND,
                          "model '%s' is neither an existing local path nor a hub id (org/name[@revision])", model);
    sl_hub_options defaults = {.offline = -1};
    sl_hub_ctx c;
    int rc = ctx_init(&c, model, opts ? opts : &defaults, err);
    char *commit = rc == SL_OK ? sl_hub_cache_commit_for(&c) : NULL, *why = NULL;
    if (rc == SL_OK && commit && sl_hub_cache_snapshot_complete(&c, commit, &why)) {
        *out_dir = sl_hub_cache_snapshot_dir(&c, commit);
        rc = *out_dir ? SL_OK : sl_err_set(err, SL_ENOMEM, "out of memory");
        SL_DEBUG("%s: using the cached snapshot %s", c.repo_id, *out_dir ? *out_dir : "");
    } else if (rc == SL_OK && c.offline) {
        rc = offline_error(&c, commit, why, err);
    } else if (rc == SL_OK) {
        rc = download(&c, out_dir, err);
    }
    free(why);
    free(commit);
    ctx_destroy(&c);
    return rc;
}
