/* cors.c -- Cross-Origin Resource Sharing, as vLLM's server answers it
 * (Starlette's CORSMiddleware under --allowed-origins, --allowed-methods,
 * --allowed-headers and --allow-credentials; by default every origin,
 * method and header), so a web page on another origin can call the API.
 * tests/server/test_cors.py holds every answer to Starlette's own.
 *
 * A preflight (OPTIONS with Origin and Access-Control-Request-Method) is
 * answered here for any path and without the API key, as vLLM does: 200
 * "OK" with what is allowed, or 400 "Disallowed CORS origin, method,
 * headers, private-network" naming what is not. Any other request is
 * answered as usual with "Vary: Origin", and, when it comes from an
 * allowed origin, Access-Control-Allow-Origin: "*" while every origin is
 * allowed without credentials, else the origin itself. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "server/server_internal.h"

#define CORS_MAX_AGE "600"
static char *const all_methods[] = {"DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "QUERY"}; /* "*" */
#define N_ALL_METHODS ((int)(sizeof all_methods / sizeof *all_methods))
static const char *const safelisted_headers[] = {"Accept", "Accept-Language", "Content-Language", "Content-Type"};
static const char *const preflight_vary =
    "Origin, Access-Control-Request-Method, Access-Control-Request-Headers, Access-Control-Request-Private-Network";

/* The strings of JSON list text (vLLM takes these flags as JSON lists: '["https://a.example"]') into an array
 * of *n; *any when "*" is among them. */
static int parse_list(const char *flag, const char *text, const char *const *deflt, int n_deflt, char ***out,
                      int *n, int *any, sl_err *err) {
    json_t *list = NULL;
    if (text) {
        json_error_t jerr;
        list = json_loads(text, JSON_DECODE_ANY, &jerr);
        if (!json_is_array(list)) {
            json_decref(list);
            return sl_err_set(err, SL_EINVAL, "%s must be a JSON list of strings, e.g. '[\"*\"]', got %s", flag,
                              text);
        }
    }
    const int count = list ? (int)json_array_size(list) : n_deflt;
    char **items = calloc((size_t)count ? (size_t)count : 1, sizeof *items);
    if (!items) {
        json_decref(list);
        return sl_err_set(err, SL_ENOMEM, "out of memory reading %s", flag);
    }
    *out = items, *n = 0, *any = 0;
    for (int i = 0; i < count; i++) {
        const char *v = list ? json_string_value(json_array_get(list, (size_t)i)) : deflt[i];
        if (!v) {
            json_decref(list);
            return sl_err_set(err, SL_EINVAL, "%s must be a JSON list of strings, e.g. '[\"*\"]', got %s", flag,
                              text);
        }
        if (!(items[*n] = strdup(v))) {
            json_decref(list);
            return sl_err_set(err, SL_ENOMEM, "out of memory reading %s", flag);
        }
        *any |= strcmp(v, "*") == 0;
        (*n)++;
    }
    json_decref(list);
    return SL_OK;
}

static void free_list(char **items, int n) {
    for (int i = 0; i < n; i++) free(items[i]);
    free(items);
}

void sl_cors_free(sl_cors *c) {
    free_list(c->origins, c->n_origins), free_list(c->methods, c->n_methods), free_list(c->headers, c->n_headers);
    free(c->allow_methods), free(c->allow_headers);
    *c = (sl_cors){0};
}

static int by_bytes(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* "a, b, c" of items */
static char *joined(char *const *items, int n) {
    size_t len = 1;
    for (int i = 0; i < n; i++) len += strlen(items[i]) + 2;
    char *s = malloc(len);
    if (!s) return NULL;
    s[0] = '\0';
    for (int i = 0; i < n; i++) {
        if (i) strcat(s, ", ");
        strcat(s, items[i]);
    }
    return s;
}

int sl_cors_init(sl_cors *c, const sl_server_options *o, sl_err *err) {
    static const char *const star[] = {"*"};
    *c = (sl_cors){.credentials = o->allow_credentials};
    int rc = parse_list("--allowed-origins", o->allowed_origins, star, 1, &c->origins, &c->n_origins,
                        &c->any_origin, err);
    if (!rc)
        rc = parse_list("--allowed-methods", o->allowed_methods, star, 1, &c->methods, &c->n_methods, &c->any_method,
                        err);
    if (!rc)
        rc = parse_list("--allowed-headers", o->allowed_headers, star, 1, &c->headers, &c->n_headers, &c->any_header,
                        err);
    if (rc) {
        sl_cors_free(c);
        return rc;
    }
    /* what a preflight answer lists: the methods, and (unless any header goes) the headers with the safelisted */
    c->allow_methods = c->any_method ? joined(all_methods, N_ALL_METHODS) : joined(c->methods, c->n_methods);
    if (!c->any_header) {
        const int n_safe = (int)(sizeof safelisted_headers / sizeof *safelisted_headers);
        char **with = malloc(sizeof *with * (size_t)(n_safe + c->n_headers));
        int n = 0; /* sorted, without repeats */
        for (int i = 0; with && i < n_safe + c->n_headers; i++)
            with[i] = i < n_safe ? (char *)safelisted_headers[i] : c->headers[i - n_safe];
        if (with) qsort(with, (size_t)(n_safe + c->n_headers), sizeof *with, by_bytes);
        for (int i = 0; with && i < n_safe + c->n_headers; i++)
            if (!n || strcmp(with[n - 1], with[i]) != 0) with[n++] = with[i];
        c->allow_headers = with ? joined(with, n) : NULL;
        free(with);
    }
    if (!c->allow_methods || (!c->any_header && !c->allow_headers)) {
        sl_cors_free(c);
        return sl_err_set(err, SL_ENOMEM, "out of memory setting up CORS");
    }
    return SL_OK;
}

static int origin_allowed(const sl_cors *c, const char *origin) {
    if (c->any_origin) return 1;
    for (int i = 0; i < c->n_origins; i++)
        if (strcmp(c->origins[i], origin) == 0) return 1;
    return 0;
}

static int method_allowed(const sl_cors *c, const char *method) {
    char *const *list = c->any_method ? all_methods : c->methods;
    for (int i = 0; i < (c->any_method ? N_ALL_METHODS : c->n_methods); i++)
        if (strcmp(list[i], method) == 0) return 1;
    return 0;
}

/* Every item of a comma-separated request list, blanks around it dropped, is an allowed or safelisted header
 * (case-insensitively); an empty item is not. */
static int headers_allowed(const sl_cors *c, const char *list) {
    char name[256];
    for (const char *p = list;; p++) {
        size_t n = strcspn(p, ",");
        const char *end = p + n;
        while (p < end && strchr(" \t\r\n\f\v", *p)) p++;
        size_t k = (size_t)(end - p);
        while (k && strchr(" \t\r\n\f\v", p[k - 1])) k--;
        if (k >= sizeof name) return 0;
        memcpy(name, p, k), name[k] = '\0';
        int ok = 0;
        for (size_t i = 0; !ok && i < sizeof safelisted_headers / sizeof *safelisted_headers; i++)
            ok = strcasecmp(name, safelisted_headers[i]) == 0;
        for (int i = 0; !ok && i < c->n_headers; i++) ok = strcasecmp(name, c->headers[i]) == 0;
        if (!ok) return 0;
        if (!*end) return 1;
        p = end;
    }
}

static const char *header(struct MHD_Connection *conn, const char *name) {
    return MHD_lookup_connection_value(conn, MHD_HEADER_KIND, name);
}

int sl_cors_is_preflight(struct MHD_Connection *conn, const char *method) {
    return strcmp(method, "OPTIONS") == 0 && header(conn, "Origin") && header(conn, "Access-Control-Request-Method");
}

void sl_cors_add_headers(const sl_cors *c, struct MHD_Connection *conn, struct MHD_Response *r) {
    const char *origin = header(conn, "Origin");
    MHD_add_response_header(r, "Vary", "Origin");
    if (!origin) return;
    if (c->credentials) MHD_add_response_header(r, "Access-Control-Allow-Credentials", "true");
    /* with credentials a browser refuses "*": the origin is named instead */
    if (c->any_origin && !c->credentials) MHD_add_response_header(r, "Access-Control-Allow-Origin", "*");
    else if (origin_allowed(c, origin)) MHD_add_response_header(r, "Access-Control-Allow-Origin", origin);
}

enum MHD_Result sl_cors_reply_preflight(sl_server *s, struct MHD_Connection *conn) {
    const sl_cors *c = &s->cors;
    const char *origin = header(conn, "Origin"), *method = header(conn, "Access-Control-Request-Method");
    const char *wanted = header(conn, "Access-Control-Request-Headers");
    const int explicit_origin = !c->any_origin || c->credentials;
    const int bad_origin = !origin_allowed(c, origin), bad_method = !method_allowed(c, method);
    const int bad_headers = wanted && !c->any_header && !headers_allowed(c, wanted);
    const int bad_network = header(conn, "Access-Control-Request-Private-Network") != NULL; /* never allowed */
    const char *failed[4];
    int n_failed = 0;
    if (bad_origin) failed[n_failed++] = "origin";
    if (bad_method) failed[n_failed++] = "method";
    if (bad_headers) failed[n_failed++] = "headers";
    if (bad_network) failed[n_failed++] = "private-network";
    char text[96] = "OK";
    if (n_failed) {
        strcpy(text, "Disallowed CORS ");
        for (int i = 0; i < n_failed; i++) strcat(strcat(text, i ? ", " : ""), failed[i]);
    }
    const unsigned status = n_failed ? 400 : 200;
    struct MHD_Response *r = MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_COPY);
    if (!r) return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/plain; charset=utf-8");
    MHD_add_response_header(r, "Vary", preflight_vary);
    if (!explicit_origin) MHD_add_response_header(r, "Access-Control-Allow-Origin", "*");
    else if (!bad_origin) MHD_add_response_header(r, "Access-Control-Allow-Origin", origin);
    MHD_add_response_header(r, "Access-Control-Allow-Methods", c->allow_methods);
    MHD_add_response_header(r, "Access-Control-Max-Age", CORS_MAX_AGE);
    if (c->any_header && wanted) MHD_add_response_header(r, "Access-Control-Allow-Headers", wanted);
    else if (!c->any_header) MHD_add_response_header(r, "Access-Control-Allow-Headers", c->allow_headers);
    if (c->credentials) MHD_add_response_header(r, "Access-Control-Allow-Credentials", "true");
    enum MHD_Result ret = MHD_queue_response(conn, status, r);
    MHD_destroy_response(r);
    sl_server_metrics_count_status(&s->metrics, status);
    return ret;
}
