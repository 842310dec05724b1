/* hub_http.c -- the hub's HTTP side over libcurl: single requests whose
 * headers carry the hub's metadata (X-Repo-Commit, X-Linked-Etag,
 * X-Linked-Size, ETag, Location, Link) and errors (X-Error-Code,
 * X-Error-Message), and blob downloads that resume with Range, retry after
 * transient failures and verify size and digest while the bytes stream in.
 *
 * The token goes only to the hub's own origin: a download redirected to a
 * CDN is fetched without it, as huggingface_hub does. */
#include "hub/hub_internal.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "hub/hub_digest.h"

#define BODY_MAX (64u << 20)
#define MAX_ATTEMPTS 5

static pthread_once_t global_once = PTHREAD_ONCE_INIT;
static void global_init(void) { curl_global_init(CURL_GLOBAL_DEFAULT); }
void sl_hub_http_global_init(void) { pthread_once(&global_once, global_init); }

void sl_hub_response_destroy(sl_hub_response *r) {
    char **fields[] = {&r->body, &r->etag, &r->linked_etag, &r->linked_size, &r->repo_commit,
                       &r->location, &r->error_code, &r->error_message, &r->link};
    for (size_t i = 0; i < sizeof fields / sizeof *fields; i++) {
        free(*fields[i]);
        *fields[i] = NULL;
    }
    r->n_body = 0;
}

char *sl_hub_url_escape(const char *s, bool keep_slash) {
    static const char hex[] = "0123456789ABCDEF";
    char *out = malloc(3 * strlen(s) + 1), *o = out;
    if (!out) return NULL;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        bool plain = (*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
                     strchr("-._~", *p) || (keep_slash && *p == '/');
        if (plain) {
            *o++ = (char)*p;
        } else {
            *o++ = '%';
            *o++ = hex[*p >> 4];
            *o++ = hex[*p & 15];
        }
    }
    *o = '\0';
    return out;
}

/* ---- response capture ---- */

typedef struct capture {
    sl_hub_response *r;
    bool keep_body, body_too_big;
} capture;

static void set_field(char **field, const char *value, size_t n) {
    free(*field);
    *field = strndup(value, n);
}

static size_t on_header(char *line, size_t size, size_t n_items, void *user) {
    sl_hub_response *r = user;
    size_t n = size * n_items;
    if (n >= 5 && strncmp(line, "HTTP/", 5) == 0) { /* a new response of a redirect chain */
        char *body = r->body;
        size_t n_body = r->n_body;
        r->body = NULL;
        sl_hub_response_destroy(r);
        r->body = body;
        r->n_body = n_body;
        r->content_length = -1;
        return n;
    }
    const char *colon = memchr(line, ':', n);
    if (!colon) return n;
    size_t name_len = (size_t)(colon - line);
    const char *v = colon + 1, *end = line + n;
    while (v < end && (*v == ' ' || *v == '\t')) v++;
    while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' ')) end--;
    size_t vn = (size_t)(end - v);
    static const struct { const char *name; size_t off; } known[] = {
        {"ETag", offsetof(sl_hub_response, etag)},
        {"X-Linked-Etag", offsetof(sl_hub_response, linked_etag)},
        {"X-Linked-Size", offsetof(sl_hub_response, linked_size)},
        {"X-Repo-Commit", offsetof(sl_hub_response, repo_commit)},
        {"Location", offsetof(sl_hub_response, location)},
        {"X-Error-Code", offsetof(sl_hub_response, error_code)},
        {"X-Error-Message", offsetof(sl_hub_response, error_message)},
        {"Link", offsetof(sl_hub_response, link)},
    };
    for (size_t i = 0; i < sizeof known / sizeof *known; i++)
        if (strlen(known[i].name) == name_len && strncasecmp(line, known[i].name, name_len) == 0)
            set_field((char **)((char *)r + known[i].off), v, vn);
    if (name_len == 14 && strncasecmp(line, "Content-Length", 14) == 0) r->content_length = strtoll(v, NULL, 10);
    return n;
}

static size_t on_body(char *data, size_t size, size_t n_items, void *user) {
    capture *cap = user;
    size_t n = size * n_items;
    if (!cap->keep_body) return n;
    if (cap->r->n_body + n > BODY_MAX) {
        cap->body_too_big = true;
        return 0;
    }
    char *grown = realloc(cap->r->body, cap->r->n_body + n + 1);
    if (!grown) return 0;
    memcpy(grown + cap->r->n_body, data, n);
    cap->r->n_body += n;
    grown[cap->r->n_body] = '\0';
    cap->r->body = grown;
    return n;
}

/* The token travels only to the endpoint's own origin. */
static bool same_origin(const char *endpoint, const char *url) {
    const char *scheme_end = strstr(endpoint, "://");
    const char *host = scheme_end ? scheme_end + 3 : endpoint;
    size_t n = strcspn(host, "/") + (size_t)(host - endpoint);
    return strncmp(endpoint, url, n) == 0 && (url[n] == '\0' || url[n] == '/');
}

static struct curl_slist *request_headers(const sl_hub_ctx *c, const char *url) {
    struct curl_slist *h = curl_slist_append(NULL, "User-Agent: shardlm/" SHARDLM_VERSION);
    if (c->token && same_origin(c->endpoint, url)) {
        char *auth = NULL;
        if (asprintf(&auth, "Authorization: Bearer %s", c->token) >= 0) {
            struct curl_slist *grown = curl_slist_append(h, auth);
            if (grown) h = grown;
            free(auth);
        }
    }
    return h;
}

static int transport_error(const sl_hub_ctx *c, CURLcode rc, const char *url, sl_err *err) {
    bool unreachable = rc == CURLE_COULDNT_CONNECT || rc == CURLE_COULDNT_RESOLVE_HOST ||
                       rc == CURLE_COULDNT_RESOLVE_PROXY || rc == CURLE_OPERATION_TIMEDOUT;
    if (unreachable && !same_origin(c->endpoint, url))
        return sl_err_set(err, SL_EIO, "cannot reach %s (%s): check the network or proxy, then run again to resume",
                          url, curl_easy_strerror(rc));
    if (unreachable)
        return sl_err_set(err, SL_EIO,
                          "cannot reach the hub at %s (%s): check the network, proxy or HF_ENDPOINT; to use models "
                          "already in the cache without the network, set HF_HUB_OFFLINE=1",
                          c->endpoint, curl_easy_strerror(rc));
    return sl_err_set(err, SL_EIO, "request to %s failed: %s", url, curl_easy_strerror(rc));
}

int sl_hub_http_request(const sl_hub_ctx *c, const char *method, const char *url, sl_hub_response *out,
                        sl_err *err) {
    memset(out, 0, sizeof *out);
    out->content_length = -1;
    sl_hub_http_global_init();
    CURL *curl = curl_easy_init();
    struct curl_slist *headers = request_headers(c, url);
    if (!curl || !headers) {
        curl_easy_cleanup(curl);
        curl_slist_free_all(headers);
        return sl_err_set(err, SL_ENOMEM, "cannot start an HTTP request (out of memory)");
    }
    capture cap = {.r = out, .keep_body = strcmp(method, "GET") == 0};
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(curl, CURLOPT_NOBODY, strcmp(method, "HEAD") == 0 ? 1L : 0L);
    curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, cap.keep_body ? 1L : 0L); /* API answers of renamed repos */
    curl_easy_setopt(curl, CURLOPT_MAXREDIRS, 10L);
    curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(curl, CURLOPT_HEADERDATA, out);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &cap);
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT, 10L);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT, 60L);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    CURLcode rc = curl_easy_perform(curl);
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &out->status);
    curl_easy_cleanup(curl);
    curl_slist_free_all(headers);
    if (cap.body_too_big) return sl_err_set(err, SL_EFORMAT, "%s: response larger than %u bytes", url, BODY_MAX);
    if (rc != CURLE_OK) return transport_error(c, rc, url, err);
    return SL_OK;
}

int sl_hub_http_status_error(const sl_hub_ctx *c, const sl_hub_response *r, const char *what, sl_err *err) {
    const char *code = r->error_code ? r->error_code : "";
    const char *id = c->repo_id;
    int rc;
    if (strcmp(code, "GatedRepo") == 0 && c->token)
        rc = sl_err_set(err, SL_EPERM,
                        "model %s is gated and the token in HF_TOKEN has no access: accept its licence at %s/%s "
                        "with that token's account", id, c->endpoint, id);
    else if (strcmp(code, "GatedRepo") == 0)
        rc = sl_err_set(err, SL_EPERM,
                        "model %s is gated: set HF_TOKEN to a token whose account accepted its licence at %s/%s",
                        id, c->endpoint, id);
    else if (strcmp(code, "RevisionNotFound") == 0)
        rc = sl_err_set(err, SL_ENOTFOUND, "revision '%s' of model %s not found on %s: name a branch, tag or commit "
                        "of the repository", c->revision, id, c->endpoint);
    else if (strcmp(code, "EntryNotFound") == 0)
        rc = sl_err_set(err, SL_ENOTFOUND, "%s: the file does not exist in model %s at revision %s", what, id,
                        c->revision);
    else if ((strcmp(code, "RepoNotFound") == 0 || r->status == 401) && !c->token)
        rc = sl_err_set(err, SL_ENOTFOUND, "model %s not found on %s, or private/gated: check the id, or set "
                        "HF_TOKEN to a token with access", id, c->endpoint);
    else if (strcmp(code, "RepoNotFound") == 0)
        rc = sl_err_set(err, SL_ENOTFOUND, "model %s not found on %s, or the token in HF_TOKEN has no access to it",
                        id, c->endpoint);
    else if (r->status == 401 || r->status == 403)
        rc = sl_err_set(err, SL_EPERM, "%s: the hub refused the token in HF_TOKEN (HTTP %ld%s%s)", what, r->status,
                        r->error_message ? ": " : "", r->error_message ? r->error_message : "");
    else if (r->status == 404)
        rc = sl_err_set(err, SL_ENOTFOUND, "%s: not found on %s (HTTP 404)", what, c->endpoint);
    else if (r->status == 429 || r->status >= 500)
        rc = sl_err_set(err, SL_EIO, "%s: the hub at %s answered HTTP %ld; try again later", what, c->endpoint,
                        r->status);
    else
        rc = sl_err_set(err, SL_EIO, "%s: unexpected HTTP %ld from %s%s%s", what, r->status, c->endpoint,
                        r->error_message ? ": " : "", r->error_message ? r->error_message : "");
    return rc;
}

/* ---- blob downloads ---- */

typedef struct transfer {
    const sl_hub_blob_request *req;
    CURL *curl;
    sl_hub_response resp;
    int fd;
    uint64_t have;        /* bytes in the part file */
    uint64_t resumed_at;  /* `have` when this attempt started */
    bool started;         /* first body byte of this attempt seen */
    bool aborted, bad_status;
    int io_errno;
    sl_hub_sha256 sha256;
    sl_hub_sha1 sha1;
} transfer;

static void digest_reset(transfer *t) {
    sl_hub_sha256_init(&t->sha256);
    sl_hub_sha1_init(&t->sha1);
    char prefix[48];
    int n = snprintf(prefix, sizeof prefix, "blob %" PRIu64, t->req->size);
    sl_hub_sha1_update(&t->sha1, prefix, (size_t)n + 1); /* with its NUL */
}

static void digest_update(transfer *t, const void *p, size_t n) {
    if (t->req->sha256) sl_hub_sha256_update(&t->sha256, p, n);
    if (t->req->git_oid) sl_hub_sha1_update(&t->sha1, p, n);
}

/* Hashes the bytes already in the part file (a resumed download). */
static int digest_existing(transfer *t, sl_err *err) {
    char buf[1 << 16];
    uint64_t left = t->have;
    if (lseek(t->fd, 0, SEEK_SET) != 0) return sl_err_set(err, SL_EIO, "%s: seek failed", t->req->part_path);
    while (left > 0) {
        ssize_t got = read(t->fd, buf, left < sizeof buf ? (size_t)left : sizeof buf);
        if (got <= 0) return sl_err_set(err, SL_EIO, "%s: read failed while resuming", t->req->part_path);
        digest_update(t, buf, (size_t)got);
        left -= (uint64_t)got;
    }
    return SL_OK;
}

/* First bytes of an attempt: a 200 to a Range request restarts the file. */
static bool begin_body(transfer *t) {
    long status = 0;
    curl_easy_getinfo(t->curl, CURLINFO_RESPONSE_CODE, &status);
    if (status != 200 && status != 206) {
        t->bad_status = true;
        return false;
    }
    if (status == 200 && t->have > 0) {
        if (ftruncate(t->fd, 0) != 0) {
            t->io_errno = errno;
            return false;
        }
        if (t->req->progress) t->req->progress(t->req->progress_user, -(int64_t)t->have);
        t->have = 0;
        digest_reset(t);
    }
    lseek(t->fd, (off_t)t->have, SEEK_SET);
    t->started = true;
    return true;
}

static size_t on_blob_data(char *data, size_t size, size_t n_items, void *user) {
    transfer *t = user;
    size_t n = size * n_items;
    if (!t->started && !begin_body(t)) return 0;
    if (t->have + n > t->req->size) { /* more than the hub said: stop before writing junk */
        t->bad_status = true;
        return 0;
    }
    for (size_t off = 0; off < n;) {
        ssize_t w = write(t->fd, data + off, n - off);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            t->io_errno = errno;
            return 0;
        }
        off += (size_t)w;
    }
    digest_update(t, data, n);
    t->have += n;
    if (t->req->progress && t->req->progress(t->req->progress_user, (int64_t)n) != 0) {
        t->aborted = true;
        return 0;
    }
    return n;
}

static bool transient(CURLcode rc) {
    return rc == CURLE_PARTIAL_FILE || rc == CURLE_RECV_ERROR || rc == CURLE_SEND_ERROR ||
           rc == CURLE_OPERATION_TIMEDOUT || rc == CURLE_GOT_NOTHING || rc == CURLE_COULDNT_CONNECT ||
           rc == CURLE_HTTP2 || rc == CURLE_HTTP2_STREAM || rc == CURLE_SSL_CONNECT_ERROR;
}

/* One GET from t->have on; returns the curl code, the status in *status. */
static CURLcode attempt(const sl_hub_ctx *c, transfer *t, long *status) {
    t->curl = curl_easy_init();
    struct curl_slist *headers = request_headers(c, t->req->url);
    if (!t->curl || !headers) {
        curl_easy_cleanup(t->curl);
        curl_slist_free_all(headers);
        return CURLE_OUT_OF_MEMORY;
    }
    char range[48];
    snprintf(range, sizeof range, "%" PRIu64 "-", t->have);
    t->started = false;
    t->resumed_at = t->have;
    memset(&t->resp, 0, sizeof t->resp);
    t->resp.content_length = -1;
    curl_easy_setopt(t->curl, CURLOPT_URL, t->req->url);
    curl_easy_setopt(t->curl, CURLOPT_HTTPHEADER, headers);
    if (t->have > 0) curl_easy_setopt(t->curl, CURLOPT_RANGE, range);
    curl_easy_setopt(t->curl, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(t->curl, CURLOPT_MAXREDIRS, 10L);
    curl_easy_setopt(t->curl, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(t->curl, CURLOPT_HEADERDATA, &t->resp);
    curl_easy_setopt(t->curl, CURLOPT_WRITEFUNCTION, on_blob_data);
    curl_easy_setopt(t->curl, CURLOPT_WRITEDATA, t);
    curl_easy_setopt(t->curl, CURLOPT_CONNECTTIMEOUT, 10L);
    curl_easy_setopt(t->curl, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(t->curl, CURLOPT_LOW_SPEED_TIME, 60L);
    curl_easy_setopt(t->curl, CURLOPT_NOSIGNAL, 1L);
    CURLcode rc = curl_easy_perform(t->curl);
    curl_easy_getinfo(t->curl, CURLINFO_RESPONSE_CODE, status);
    curl_easy_cleanup(t->curl);
    curl_slist_free_all(headers);
    t->curl = NULL;
    return rc;
}

static void sleep_s(double s) {
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    nanosleep(&ts, NULL);
}

static int transfer_all(const sl_hub_ctx *c, transfer *t, sl_err *err) {
    int failures = 0;
    while (t->have < t->req->size) {
        long status = 0;
        t->bad_status = false;
        CURLcode rc = attempt(c, t, &status);
        bool progressed = t->have > t->resumed_at;
        int result = SL_OK;
        if (t->aborted) result = sl_err_set(err, SL_EABORT, "%s: download cancelled", t->req->label);
        else if (t->io_errno)
            result = sl_err_set(err, SL_EIO, "%s: cannot write %s: %s", t->req->label, t->req->part_path,
                                strerror(t->io_errno));
        else if (t->bad_status && (status == 200 || status == 206))
            result = sl_err_set(err, SL_EFORMAT, "%s: the server sent more than the %" PRIu64 " bytes the hub "
                                "announced", t->req->label, t->req->size);
        else if (status >= 300 && status != 429 && status < 500) {
            char what[512];
            snprintf(what, sizeof what, "downloading %s", t->req->label);
            result = sl_hub_http_status_error(c, &t->resp, what, err);
        } else if (rc == CURLE_OK && status < 300 && t->have < t->req->size)
            rc = CURLE_PARTIAL_FILE; /* a clean end before the announced size */
        sl_hub_response_destroy(&t->resp);
        if (result != SL_OK) return result;
        if (rc == CURLE_OK && status < 300) continue;
        if (progressed) failures = 0;
        if (++failures > MAX_ATTEMPTS || !(transient(rc) || status == 429 || status >= 500)) {
            if (rc != CURLE_OK) return transport_error(c, rc, t->req->url, err);
            return sl_err_set(err, SL_EIO, "downloading %s: HTTP %ld after %d attempts; run again to resume",
                              t->req->label, status, failures);
        }
        sleep_s(0.25 * failures);
    }
    return SL_OK;
}

static int verify(transfer *t, sl_err *err) {
    const sl_hub_blob_request *req = t->req;
    char got[65];
    const char *want = req->sha256 ? req->sha256 : req->git_oid;
    if (req->sha256) sl_hub_sha256_final_hex(&t->sha256, got);
    else if (req->git_oid) sl_hub_sha1_final_hex(&t->sha1, got);
    else return SL_OK;
    if (strcasecmp(got, want) == 0) return SL_OK;
    unlink(req->part_path);
    return sl_err_set(err, SL_EFORMAT,
                      "%s: downloaded bytes do not match the hub's %s (expected %s, got %s); the corrupt download "
                      "was removed, run again to fetch it anew", req->label, req->sha256 ? "sha256" : "git blob sha1",
                      want, got);
}

int sl_hub_http_download(const sl_hub_ctx *c, const sl_hub_blob_request *req, sl_err *err) {
    sl_hub_http_global_init();
    transfer t = {.req = req, .fd = open(req->part_path, O_RDWR | O_CREAT | O_CLOEXEC, 0666)};
    if (t.fd < 0) return sl_err_set(err, SL_EIO, "cannot open %s: %s", req->part_path, strerror(errno));
    struct stat st;
    int rc = fstat(t.fd, &st) == 0 ? SL_OK : sl_err_set(err, SL_EIO, "cannot stat %s", req->part_path);
    t.have = rc == SL_OK ? (uint64_t)st.st_size : 0;
    if (rc == SL_OK && t.have > req->size) { /* longer than the file: not ours to resume */
        rc = ftruncate(t.fd, 0) == 0 ? SL_OK : sl_err_set(err, SL_EIO, "cannot truncate %s", req->part_path);
        t.have = 0;
    }
    digest_reset(&t);
    if (rc == SL_OK && t.have > 0) {
        if (req->progress) req->progress(req->progress_user, (int64_t)t.have);
        rc = digest_existing(&t, err);
    }
    if (rc == SL_OK) rc = transfer_all(c, &t, err);
    if (rc == SL_OK && fsync(t.fd) != 0) rc = sl_err_set(err, SL_EIO, "cannot flush %s", req->part_path);
    close(t.fd);
    if (rc == SL_OK) rc = verify(&t, err);
    return rc;
}
