/* hub_cache.c -- the Hugging Face cache on disk, exactly as huggingface_hub
 * lays it out, so shardlm, transformers and vLLM share one copy:
 *
 *   <cache>/models--org--name/refs/<revision>         the commit sha (no newline)
 *   <cache>/models--org--name/snapshots/<commit>/<f>  -> ../../blobs/<etag>
 *   <cache>/models--org--name/blobs/<etag>             sha256 (LFS) or git sha1
 *   <cache>/models--org--name/blobs/<etag>.incomplete  a download in progress
 *   <cache>/models--org--name/.no_exist/<commit>/<f>   f is known to be absent
 *   <cache>/.locks/models--org--name/<etag>.lock       flock while downloading
 *
 * Blobs appear only complete and verified (rename from .incomplete) and a
 * snapshot entry only once its blob exists, so a reader never sees half a
 * file; whether a snapshot holds the whole model is decided here too. */
#include "hub/hub_internal.h"

#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/fs.h"
#include "util/log.h"

bool sl_hub_is_commit_hash(const char *s) {
    size_t n = 0;
    for (; s[n]; n++)
        if (!((s[n] >= '0' && s[n] <= '9') || (s[n] >= 'a' && s[n] <= 'f'))) return false;
    return n == 40;
}

static char *fmt_path(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *fmt_path(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char *s = NULL;
    if (vasprintf(&s, fmt, ap) < 0) s = NULL;
    va_end(ap);
    return s;
}

int sl_hub_mkdirs(const char *path, sl_err *err) {
    char *p = strdup(path);
    if (!p) return sl_err_set(err, SL_ENOMEM, "out of memory");
    for (char *s = p + 1;; s++) {
        if (*s != '/' && *s != '\0') continue;
        char c = *s;
        *s = '\0';
        if (mkdir(p, 0777) != 0 && errno != EEXIST) {
            int e = errno;
            sl_err_set(err, SL_EIO, "cannot create folder %s: %s (check --download-dir / HF_HUB_CACHE)", p,
                       strerror(e));
            free(p);
            return SL_EIO;
        }
        *s = c;
        if (c == '\0') break;
    }
    free(p);
    return SL_OK;
}

static char *read_ref(const char *ref_path) {
    char *text = NULL;
    if (sl_file_read_all(ref_path, &text, NULL, NULL) != SL_OK) return NULL;
    text[strcspn(text, "\r\n")] = '\0';
    if (sl_hub_is_commit_hash(text)) return text;
    free(text);
    return NULL;
}

char *sl_hub_cache_commit_for(const sl_hub_ctx *c) {
    if (sl_hub_is_commit_hash(c->revision)) return strdup(c->revision);
    char *ref_path = fmt_path("%s/refs/%s", c->storage, c->revision);
    char *commit = ref_path ? read_ref(ref_path) : NULL;
    free(ref_path);
    return commit;
}

/* Written atomically (temporary file + rename) so a concurrent reader never
 * sees an empty ref; revisions like refs/pr/1 nest folders as huggingface_hub's do. */
int sl_hub_cache_write_ref(const sl_hub_ctx *c, const char *commit, sl_err *err) {
    if (strcmp(c->revision, commit) == 0) return SL_OK;
    char *ref_path = fmt_path("%s/refs/%s", c->storage, c->revision);
    char *tmp = ref_path ? fmt_path("%s.%d.tmp", ref_path, (int)getpid()) : NULL;
    char *dir = ref_path ? strdup(ref_path) : NULL;
    int rc = SL_OK;
    if (!tmp || !dir) {
        rc = sl_err_set(err, SL_ENOMEM, "out of memory");
        goto done;
    }
    *strrchr(dir, '/') = '\0';
    if ((rc = sl_hub_mkdirs(dir, err)) != SL_OK) goto done;
    FILE *fp = fopen(tmp, "wb");
    bool ok = fp && fputs(commit, fp) >= 0;
    if (fp && fclose(fp) != 0) ok = false;
    if (!ok || rename(tmp, ref_path) != 0) {
        rc = sl_err_set(err, SL_EIO, "cannot write %s: %s", ref_path, strerror(errno));
        unlink(tmp);
    }
done:
    free(ref_path);
    free(tmp);
    free(dir);
    return rc;
}

char *sl_hub_cache_snapshot_dir(const sl_hub_ctx *c, const char *commit) {
    return fmt_path("%s/snapshots/%s", c->storage, commit);
}

char *sl_hub_cache_blob_path(const sl_hub_ctx *c, const char *etag, bool incomplete) {
    return fmt_path("%s/blobs/%s%s", c->storage, etag, incomplete ? ".incomplete" : "");
}

int sl_hub_cache_link(const sl_hub_ctx *c, const char *commit, const char *path, const char *etag, sl_err *err) {
    char *link = fmt_path("%s/snapshots/%s/%s", c->storage, commit, path);
    char *tmp = link ? fmt_path("%s.%d.tmp", link, (int)getpid()) : NULL;
    char *dir = link ? strdup(link) : NULL;
    /* One "../" per folder between snapshots/<commit>/ and the file, plus two. */
    size_t depth = 0;
    for (const char *s = path; *s; s++) depth += *s == '/';
    char *target = malloc(3 * depth + strlen("../../blobs/") + strlen(etag) + 1);
    int rc = SL_OK;
    if (!tmp || !dir || !target) {
        rc = sl_err_set(err, SL_ENOMEM, "out of memory");
        goto done;
    }
    target[0] = '\0';
    for (size_t i = 0; i < depth; i++) strcat(target, "../");
    strcat(target, "../../blobs/");
    strcat(target, etag);
    *strrchr(dir, '/') = '\0';
    if ((rc = sl_hub_mkdirs(dir, err)) != SL_OK) goto done;
    unlink(tmp);
    if (symlink(target, tmp) != 0 || rename(tmp, link) != 0) {
        rc = sl_err_set(err, SL_EIO, "cannot link %s to %s: %s", link, target, strerror(errno));
        unlink(tmp);
    }
done:
    free(link);
    free(tmp);
    free(dir);
    free(target);
    return rc;
}

void sl_hub_cache_mark_missing(const sl_hub_ctx *c, const char *commit, const char *path) {
    char *marker = fmt_path("%s/.no_exist/%s/%s", c->storage, commit, path);
    char *dir = marker ? strdup(marker) : NULL;
    if (dir) {
        *strrchr(dir, '/') = '\0';
        int fd = sl_hub_mkdirs(dir, NULL) == SL_OK ? open(marker, O_WRONLY | O_CREAT | O_CLOEXEC, 0666) : -1;
        if (fd >= 0) close(fd);
    }
    free(marker);
    free(dir);
}

int sl_hub_cache_lock(const sl_hub_ctx *c, const char *etag, int *out_fd, sl_err *err) {
    const char *folder = strrchr(c->storage, '/') + 1;
    char *dir = fmt_path("%s/.locks/%s", c->cache_dir, folder);
    char *path = dir ? fmt_path("%s/%s.lock", dir, etag) : NULL;
    int rc = path ? sl_hub_mkdirs(dir, err) : sl_err_set(err, SL_ENOMEM, "out of memory");
    int fd = -1;
    if (rc == SL_OK) {
        fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0666);
        if (fd < 0) rc = sl_err_set(err, SL_EIO, "cannot open lock %s: %s", path, strerror(errno));
    }
    if (rc == SL_OK && flock(fd, LOCK_EX | LOCK_NB) != 0) {
        SL_INFO("waiting for another process downloading %s (lock %s)", etag, path);
        while (flock(fd, LOCK_EX) != 0 && errno == EINTR) {}
    }
    free(dir);
    free(path);
    *out_fd = fd;
    return rc;
}

void sl_hub_cache_unlock(int fd) {
    if (fd < 0) return;
    flock(fd, LOCK_UN);
    close(fd);
}

/* The reason text the caller gets when a file is missing. */
static bool missing(const char *snapshot, const char *name, char **why) {
    char *p = sl_path_join(snapshot, name);
    bool present = p && sl_path_exists(p);
    free(p);
    if (!present && why && !*why) *why = fmt_path("%s is missing from %s", name, snapshot);
    return !present;
}

/* With the listing huggingface_hub cached for this commit: every wanted file. */
static bool complete_by_listing(const sl_hub_listing *l, const char *snapshot, char **why) {
    const char *index = NULL;
    for (size_t i = 0; i < l->n; i++) {
        if (!sl_hub_is_small_wanted(l->files[i].path)) continue;
        if (missing(snapshot, l->files[i].path, why)) return false;
        if (strcmp(l->files[i].path, "model.safetensors.index.json") == 0) index = l->files[i].path;
    }
    char *index_path = index ? sl_path_join(snapshot, index) : NULL;
    bool *wanted = calloc(l->n ? l->n : 1, sizeof *wanted);
    bool ok = wanted && (!index || index_path) && sl_hub_select_weights(l, index_path, wanted, "", NULL) == SL_OK;
    for (size_t i = 0; ok && i < l->n; i++)
        if (wanted[i] && missing(snapshot, l->files[i].path, why)) ok = false;
    if (!ok && why && !*why) *why = fmt_path("the weights in %s are incomplete", snapshot);
    free(index_path);
    free(wanted);
    return ok;
}

/* Some top-level *.safetensors entry whose blob exists. */
static bool has_safetensors(const char *snapshot) {
    DIR *d = opendir(snapshot);
    if (!d) return false;
    bool found = false;
    for (struct dirent *e; !found && (e = readdir(d));)
        found = sl_hub_is_safetensors(e->d_name) && !missing(snapshot, e->d_name, NULL);
    closedir(d);
    return found;
}

/* Without a listing: config.json, and the index's shards or some safetensors. */
static bool complete_by_contents(const char *snapshot, char **why) {
    if (missing(snapshot, "config.json", why)) return false;
    char *index_path = sl_path_join(snapshot, "model.safetensors.index.json");
    char **shards = NULL;
    size_t n = 0;
    bool ok;
    if (index_path && sl_path_exists(index_path)) {
        ok = sl_hub_index_shards(index_path, &shards, &n, NULL) == SL_OK;
        for (size_t i = 0; ok && i < n; i++)
            if (missing(snapshot, shards[i], why)) ok = false;
        sl_hub_free_names(shards, n);
    } else {
        ok = has_safetensors(snapshot);
        if (!ok && why && !*why) *why = fmt_path("no *.safetensors weights in %s", snapshot);
    }
    free(index_path);
    return ok;
}

bool sl_hub_cache_snapshot_complete(const sl_hub_ctx *c, const char *commit, char **why) {
    char *snapshot = sl_hub_cache_snapshot_dir(c, commit);
    char *tree = fmt_path("%s/trees/%s.json", c->storage, commit);
    bool ok = false;
    if (snapshot && tree && sl_path_is_dir(snapshot)) {
        sl_hub_listing l = {0};
        if (sl_path_exists(tree) && sl_hub_listing_load_tree_cache(&l, tree, NULL) == SL_OK)
            ok = complete_by_listing(&l, snapshot, why);
        else
            ok = complete_by_contents(snapshot, why);
        sl_hub_listing_destroy(&l);
    } else if (why && snapshot) {
        *why = fmt_path("%s does not exist", snapshot);
    }
    free(snapshot);
    free(tree);
    return ok;
}
