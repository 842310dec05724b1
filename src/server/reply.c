/* reply.c -- HTTP replies: JSON bodies, vLLM-shaped errors, ids.
 *
 * Every error leaves as {"error": {"message", "type", "param", "code"}}
 * with `code` the HTTP status (as vLLM sends it) and `type` the name the
 * OpenAI SDK's exception classes carry for that status. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "server/server_internal.h"

/* ---- replies ----------------------------------------------------------------- */

enum MHD_Result sl_server_reply_text(sl_server *s, struct MHD_Connection *c, unsigned status, const char *type,
                                     const char *text, size_t n) {
    struct MHD_Response *r = MHD_create_response_from_buffer(n, (void *)text, MHD_RESPMEM_MUST_COPY);
    if (!r) return MHD_NO;
    if (type) MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    sl_cors_add_headers(&s->cors, c, r);
    enum MHD_Result ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    sl_server_metrics_count_status(&s->metrics, status);
    return ret;
}

enum MHD_Result sl_server_reply_json(sl_server *s, struct MHD_Connection *c, unsigned status, json_t *body) {
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    if (!text) {
        static const char oom[] = "{\"error\":{\"message\":\"out of memory\",\"type\":\"InternalServerError\","
                                  "\"param\":null,\"code\":500}}";
        return sl_server_reply_text(s, c, 500, "application/json", oom, sizeof oom - 1);
    }
    enum MHD_Result ret = sl_server_reply_text(s, c, status, "application/json", text, strlen(text));
    free(text);
    return ret;
}

static const char *error_type(unsigned status) {
    switch (status) {
    case 400: return "BadRequestError";
    case 401: return "AuthenticationError";
    case 403: return "PermissionDeniedError";
    case 404: return "NotFoundError";
    case 405: return "MethodNotAllowed";
    case 413: return "RequestEntityTooLarge";
    case 422: return "UnprocessableEntityError";
    case 503: return "ServiceUnavailableError";
    default: return status >= 500 ? "InternalServerError" : "BadRequestError";
    }
}

json_t *sl_server_error_json(unsigned status, const char *param, const char *message) {
    return json_pack("{s:{s:s, s:s, s:s?, s:i}}", "error", "message", message, "type", error_type(status), "param",
                     param, "code", (int)status);
}

enum MHD_Result sl_server_reply_error(sl_server *s, struct MHD_Connection *c, unsigned status, const char *param,
                                      const char *fmt, ...) {
    char msg[SL_ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return sl_server_reply_json(s, c, status, sl_server_error_json(status, param, msg));
}

unsigned sl_server_status_of(int code) {
    switch (code) {
    case SL_EINVAL: case SL_EFORMAT: case SL_ENOSPACE: return 400;
    case SL_EPERM: return 401;
    case SL_ENOTFOUND: return 404;
    case SL_ENOTSUP: return 400;
    case SL_EABORT: return 503;
    default: return 500;
    }
}

void sl_server_make_id(char *out, size_t n, const char *prefix) {
    unsigned char r[16];
    if (getrandom(r, sizeof r, 0) != (ssize_t)sizeof r) {
        static atomic_uint_fast64_t counter;
        uint64_t v = atomic_fetch_add(&counter, 1) ^ (uint64_t)time(NULL) << 20;
        memcpy(r, &v, sizeof v);
        memcpy(r + 8, &v, sizeof v);
    }
    int k = snprintf(out, n, "%s", prefix);
    for (size_t i = 0; i < sizeof r && k + 2 < (int)n; i++) k += snprintf(out + k, n - (size_t)k, "%02x", r[i]);
}

double sl_server_finite_logprob(float lp) {
    if (isnan(lp)) return -9999.0;
    return lp < -9999.0f ? -9999.0 : (double)lp;
}
