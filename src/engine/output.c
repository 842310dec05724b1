/* output.c -- from a step's logits to what the caller sees.
 *
 * Before a step, the settings of each row the backend samples (most rows:
 * a backend op, so only tokens cross to the host), guided rows with their
 * grammar's mask, which the forward pass asks for (sl_output_fill_masks)
 * once it has issued the layers; after it, for every sequence that reached
 * the end of its tokens: the backend's token, or, for rows that came back
 * whole, logprobs from the raw logits, the grammar's mask, penalties and the
 * min_tokens mask, and a draw here; a grammar that allows no token ends the
 * choice either way; then append the token, turn it into text with the incremental
 * detokenizer, and decide whether the choice is finished (EOS, a stop token,
 * a stop string, max_tokens, max_model_len). Text that could be the start of
 * a stop string is held back until it is known not to be one, so a stop
 * string never reaches the caller, even split across tokens. Outputs go to
 * the request's callback, or are copied into its poll stream. */
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine_impl.h"
#include "util/log.h"

#define MAX_TOP_LOGPROBS 20

/* ---- delivery ---- */

static sl_output *copy_output(const sl_output *o) {
    size_t n_top = (size_t)o->n_tokens * (size_t)(o->n_top > 0 ? o->n_top : 0);
    size_t size = sizeof *o + o->text_len + 1 + sizeof(int32_t) * (size_t)o->n_tokens +
                  (o->logprobs ? sizeof(float) * (size_t)o->n_tokens : 0) + (sizeof(int32_t) + sizeof(float)) * n_top +
                  (o->stop_reason ? strlen(o->stop_reason) + 1 : 0) + (o->error ? strlen(o->error) + 1 : 0) + 16;
    sl_output *c = malloc(size);
    if (!c) return NULL;
    *c = *o;
    char *p = (char *)(c + 1);
    /* arrays first (aligned), strings last */
    c->token_ids = memcpy(p, o->token_ids, sizeof(int32_t) * (size_t)o->n_tokens);
    p += sizeof(int32_t) * (size_t)o->n_tokens;
    if (o->logprobs) {
        c->logprobs = memcpy(p, o->logprobs, sizeof(float) * (size_t)o->n_tokens);
        p += sizeof(float) * (size_t)o->n_tokens;
    }
    if (n_top) {
        c->top_ids = memcpy(p, o->top_ids, sizeof(int32_t) * n_top);
        p += sizeof(int32_t) * n_top;
        c->top_logprobs = memcpy(p, o->top_logprobs, sizeof(float) * n_top);
        p += sizeof(float) * n_top;
    }
    c->text = memcpy(p, o->text, o->text_len);
    p[o->text_len] = '\0';
    p += o->text_len + 1;
    if (o->stop_reason) c->stop_reason = strcpy(p, o->stop_reason), p += strlen(o->stop_reason) + 1;
    if (o->error) c->error = strcpy(p, o->error);
    return c;
}

static void deliver(sl_engine *e, sl_req *r, const sl_output *o) {
    if (r->fn) {
        r->fn(o, r->user);
        return;
    }
    sl_poll_item *item = malloc(sizeof *item);
    sl_output *c = copy_output(o);
    pthread_mutex_lock(&e->mu);
    sl_stream *st = e->streams;
    while (st && st->id != r->id) st = st->next;
    if (st && item && c) {
        item->out = c;
        item->next = NULL;
        if (st->tail) st->tail->next = item;
        else st->head = item;
        st->tail = item;
        if (o->finished && r->n_finished + 1 == r->params.n) st->engine_done = true;
        item = NULL;
        c = NULL;
    }
    pthread_cond_broadcast(&e->polled);
    pthread_mutex_unlock(&e->mu);
    free(item);
    free(c);
}

/* ---- text and stop strings ---- */

static int text_append(sl_seq *s, const char *piece, size_t n) {
    if (s->text_len + n + 1 > s->text_cap) {
        size_t cap = (s->text_len + n + 1) * 2;
        char *grown = realloc(s->text, cap);
        if (!grown) return SL_ENOMEM;
        s->text = grown;
        s->text_cap = cap;
    }
    memcpy(s->text + s->text_len, piece, n);
    s->text_len += n;
    s->text[s->text_len] = '\0';
    return SL_OK;
}

/* Earliest stop string in the unsent text; truncates the text before it, or after it where the request
 * includes stop strings in its output. No text yet (or none ever: a model without a tokenizer) matches
 * nothing. */
static bool match_stop_string(sl_req *r, sl_seq *s) {
    const char *best = NULL;
    int best_i = -1;
    for (int i = 0; s->text && i < r->n_stop; i++) {
        const char *hit = memmem(s->text, s->text_len, r->stop[i], strlen(r->stop[i]));
        if (hit && (!best || hit < best)) {
            best = hit;
            best_i = i;
        }
    }
    if (!best) return false;
    s->text_len = (size_t)(best - s->text) + (r->params.include_stop_str_in_output ? strlen(r->stop[best_i]) : 0);
    s->text[s->text_len] = '\0';
    s->stop_reason = r->stop[best_i];
    return true;
}

/* How much of the unsent text can go now: all of it when finished, else all
 * but a tail that could still grow into a stop string (kept whole UTF-8). */
static size_t sendable(const sl_req *r, const sl_seq *s, bool finished) {
    if (finished || r->max_stop_len <= 1) return s->text_len;
    size_t keep = (size_t)r->max_stop_len - 1, n = s->text_len > keep ? s->text_len - keep : 0;
    while (n > 0 && ((unsigned char)s->text[n] & 0xc0) == 0x80) n--;
    return n;
}

/* ---- logprobs ---- */

typedef struct logprob_info {
    float chosen;
    int32_t top_ids[MAX_TOP_LOGPROBS];
    float top[MAX_TOP_LOGPROBS];
    int n_top;
} logprob_info;

static void compute_logprobs(const float *logits, int vocab, int32_t chosen_id, int k, logprob_info *info) {
    float mx = logits[sl_argmax(logits, vocab)];
    double sum = 0;
    for (int i = 0; i < vocab; i++) sum += exp((double)logits[i] - mx);
    const float lse = mx + (float)log(sum);
    info->chosen = logits[chosen_id] - lse;
    info->n_top = k < vocab ? k : vocab;
    for (int j = 0; j < info->n_top; j++) info->top_ids[j] = -1;
    for (int i = 0; i < vocab; i++) { /* insertion into a sorted top-k: k <= 20 */
        if (info->n_top == 0) break;
        float v = logits[i];
        int pos = info->n_top;
        while (pos > 0 && (info->top_ids[pos - 1] < 0 || v > logits[info->top_ids[pos - 1]])) pos--;
        if (pos == info->n_top) continue;
        memmove(info->top_ids + pos + 1, info->top_ids + pos, sizeof(int32_t) * (size_t)(info->n_top - pos - 1));
        info->top_ids[pos] = i;
    }
    for (int j = 0; j < info->n_top; j++) info->top[j] = logits[info->top_ids[j]] - lse;
}

/* ---- finishing ---- */

static void finish_seq(sl_engine *e, sl_seq *s, sl_finish_reason why) {
    s->finish = why;
    s->state = SL_SEQ_FINISHED;
    sl_sched_remove(e, s);
    s->req->n_finished++;
    e->stats.requests_finished += s->req->n_finished == s->req->params.n;
}

static bool is_stop_token(const sl_engine *e, const sl_req *r, int32_t tok) {
    for (int i = 0; i < r->n_stop_ids; i++)
        if (r->stop_ids[i] == tok) return true;
    if (r->params.ignore_eos) return false;
    for (int i = 0; i < e->n_eos_ids; i++)
        if (e->eos_ids[i] == tok) return true;
    return false;
}

/* Before min_tokens, stop tokens and EOS may not be drawn (unless a grammar allows nothing else). */
static void mask_early_stops(const sl_engine *e, const sl_req *r, const sl_seq *s, float *logits) {
    if (s->n_tokens - s->n_prompt >= r->params.min_tokens) return;
    if (s->guide.matcher) {
        int others = 0;
        for (int i = 0; i < e->vocab && !others; i++) others = logits[i] != -INFINITY && !is_stop_token(e, r, i);
        if (!others) return;
    }
    for (int i = 0; i < r->n_stop_ids; i++) logits[r->stop_ids[i]] = -INFINITY;
    if (!r->params.ignore_eos)
        for (int i = 0; i < e->n_eos_ids; i++) logits[e->eos_ids[i]] = -INFINITY;
}

static void emit(sl_engine *e, sl_seq *s, int32_t tok, const logprob_info *lp, bool with_token) {
    sl_req *r = s->req;
    bool finished = s->state == SL_SEQ_FINISHED;
    size_t n = sendable(r, s, finished);
    sl_output o = {
        .request_id = r->id,
        .index = s->index,
        .text = s->text ? s->text : "",
        .text_len = n,
        .token_ids = &tok,
        .n_tokens = with_token ? 1 : 0,
        .logprobs = lp && with_token ? &lp->chosen : NULL,
        .top_ids = lp && with_token && lp->n_top ? lp->top_ids : NULL,
        .top_logprobs = lp && with_token && lp->n_top ? lp->top : NULL,
        .n_top = lp && with_token ? lp->n_top : 0,
        .finished = finished,
        .finish_reason = finished ? s->finish : SL_FINISH_NONE,
        .stop_reason = s->stop_reason,
        .stop_token = s->stop_token,
        .n_prompt_tokens = s->n_prompt,
        .n_output_tokens = s->n_tokens - s->n_prompt,
        .n_cached_tokens = s->n_cached,
        .error = r->abort_error,
    };
    if (n == 0 && !with_token && !finished) return;
    deliver(e, r, &o);
    if (s->text) { /* drop what was sent */
        memmove(s->text, s->text + n, s->text_len - n + 1);
        s->text_len -= n;
    }
}

/* Appends the text of tok (tok < 0: nothing) and, with flush, what the
 * detokenizer still holds. */
static void detokenize(sl_seq *s, int32_t tok, bool flush) {
    if (!s->detok) return;
    char *piece;
    size_t n;
    sl_err err = {0};
    if (tok >= 0 && sl_detokenizer_push(s->detok, tok, &piece, &n, &err) == 0 && n) text_append(s, piece, n);
    if (flush && sl_detokenizer_finish(s->detok, &piece, &n, &err) == 0 && n) text_append(s, piece, n);
    if (err.code) SL_WARN("detokenizing token %d: %s", tok, err.msg);
}

/* Whether the host must see the row whole: logprobs come from the raw row,
 * and the penalties and min_tokens' masks change it before the draw (a
 * grammar's mask alone the backend applies itself). */
static bool host_samples(const sl_engine *e, const sl_req *r, const sl_seq *s) {
    const bool masked = s->n_tokens - s->n_prompt < r->params.min_tokens &&
                        (r->n_stop_ids > 0 || (!r->params.ignore_eos && e->n_eos_ids > 0));
    return r->params.logprobs >= 0 || r->prompt_mask || s->output_counts || masked;
}

int sl_output_begin_masks(sl_engine *e, sl_step *st, sl_err *err) {
    st->n_guided = 0;
    for (int i = 0; i < st->n_logits; i++)
        if (st->logit_seqs[i]->guide.matcher) st->guided[st->n_guided++] = &st->logit_seqs[i]->guide;
    return sl_guides_begin_masks(e->guides, st->guided, st->n_guided, err);
}

void sl_output_plan_sampling(sl_engine *e, sl_step *st) {
    st->n_full_rows = 0;
    st->n_masked = 0;
    for (int i = 0; i < st->n_logits; i++) {
        sl_seq *s = st->logit_seqs[i];
        if (host_samples(e, s->req, s)) {
            st->full_rows[st->n_full_rows++] = i;
            /* cheapest; its token is not used */
            st->sample[i] = (sl_sample_row){.temperature = 0, .mask = SL_SAMPLE_NO_MASK};
            continue;
        }
        st->sample[i] = sl_sample_row_of(&s->req->sp, &s->rng);
        if (s->guide.matcher) {
            st->sample[i].mask = st->n_masked;
            st->masked[st->n_masked++] = &s->guide;
        }
    }
}

void sl_output_fill_masks(void *step, uint32_t *masks, int vocab) {
    const sl_step *st = step;
    sl_guides_wait_masks(st->guides);
    const size_t words = sl_sample_mask_words(vocab);
    for (int k = 0; k < st->n_masked; k++)
        sl_guide_copy_mask(st->guides, st->masked[k], masks + (size_t)k * words, vocab);
}

/* The row's token drawn here from the whole row. */
static int32_t host_sample(sl_engine *e, sl_seq *s, float *logits, logprob_info *lp) {
    sl_req *r = s->req;
    const bool want_logprobs = r->params.logprobs >= 0;
    /* logprobs describe the model's own distribution: before masks, penalties and temperature */
    if (want_logprobs) memcpy(e->raw_row, logits, sizeof(float) * (size_t)e->vocab);
    if (s->guide.matcher) sl_guide_apply_mask(e->guides, &s->guide, logits, e->vocab);
    mask_early_stops(e, r, s, logits);
    sl_token_history hist = {.prompt_mask = r->prompt_mask, .output_counts = s->output_counts};
    sl_sampler_apply_penalties(&r->sp, &hist, logits, e->vocab);
    int32_t tok = sl_sampler_sample(&e->sampler, &r->sp, logits, &s->rng);
    if (want_logprobs) compute_logprobs(e->raw_row, e->vocab, tok, r->params.logprobs, lp);
    return tok;
}

/* A grammar that allows no next token ends its choice: complete output stops
 * there, anything else (the grammar's state bound, a token it cannot take) is
 * the request's error. */
static bool guide_dead_end(sl_engine *e, sl_seq *s, int32_t tok) {
    sl_err err = {0};
    int rc = tok < 0 ? 0 : sl_guide_accept(e->guides, &s->guide, tok, &err);
    if (rc == 1) return false;
    if (tok < 0 && !s->guide.mask_rc && sl_guide_complete(&s->guide)) {
        detokenize(s, -1, true);
        finish_seq(e, s, SL_FINISH_STOP);
        emit(e, s, -1, NULL, false);
        return true;
    }
    SL_WARN("request %" PRIu64 ": structured output stopped: %s", s->req->id,
            rc < 0 ? err.msg : tok < 0 ? "the grammar allows no next token" : "a token outside the grammar was drawn");
    sl_output_abort_request(e, s->req, rc < 0 || s->guide.mask_rc ? "structured output: the grammar's state outgrew its bound"
                                                                   : "structured output: the grammar allows no next token");
    return true;
}

static void process_logits_row(sl_engine *e, sl_seq *s, float *logits, int32_t sampled) {
    sl_req *r = s->req;
    logprob_info lp;
    const bool want_logprobs = r->params.logprobs >= 0; /* such rows are always sampled here */
    /* the backend's token (sampled >= 0) or one drawn here; -1 where the grammar allows none */
    const bool dead_end = s->guide.matcher && s->guide.n_allowed == 0;
    const int32_t tok = dead_end ? -1 : sampled >= 0 ? sampled : host_sample(e, s, logits, &lp);
    if (s->guide.matcher && guide_dead_end(e, s, tok)) return;
    s->tokens[s->n_tokens++] = tok;
    if (s->output_counts) s->output_counts[tok]++;
    e->stats.generation_tokens++;
    const int n_out = s->n_tokens - s->n_prompt;
    const bool stop_tok = is_stop_token(e, r, tok); /* its text is not part of the output */
    if (stop_tok) s->stop_token = tok;
    else detokenize(s, tok, false);
    const bool length = n_out >= r->params.max_tokens || s->n_tokens >= e->max_model_len;
    if (stop_tok || length) detokenize(s, -1, true);
    const bool stop_str = r->n_stop && n_out >= r->params.min_tokens && match_stop_string(r, s);
    if (stop_tok || stop_str) finish_seq(e, s, SL_FINISH_STOP);
    else if (length) finish_seq(e, s, SL_FINISH_LENGTH);
    emit(e, s, tok, want_logprobs ? &lp : NULL, true);
}

void sl_output_process_step(sl_engine *e, sl_step *st) {
    for (int row = 0; row < st->n_seqs; row++) {
        sl_seq *s = st->seqs[row];
        if (s->state == SL_SEQ_FINISHED) { /* aborted while the step ran: its blocks are free to go now */
            sl_sched_remove(e, s);
            continue;
        }
        s->n_computed += st->n_new[row];
        sl_sched_publish_blocks(e, s);
    }
    if (st->backend_samples)
        for (int j = 0; j < st->n_full_rows; j++) st->sampled[st->full_rows[j]] = -1;
    if (st->n_guided) sl_guides_wait_masks(e->guides);
    for (int i = 0; i < st->n_logits; i++) {
        sl_seq *s = st->logit_seqs[i];
        if (s->state == SL_SEQ_RUNNING && !s->req->abort)
            process_logits_row(e, s, st->logits + (size_t)i * (size_t)e->vocab, st->backend_samples ? st->sampled[i] : -1);
    }
}

void sl_output_abort_request(sl_engine *e, sl_req *r, const char *error) {
    r->abort_error = error;
    for (int i = 0; i < r->params.n; i++) {
        sl_seq *s = &r->seqs[i];
        if (s->state == SL_SEQ_FINISHED) continue;
        finish_seq(e, s, SL_FINISH_ABORT);
        int32_t none = -1;
        emit(e, s, none, NULL, false);
    }
}

void sl_req_free(sl_engine *e, sl_req *r) {
    if (r->grammar) sl_guides_wait_masks(e->guides); /* the worker may still read its states */
    for (int i = 0; i < r->params.n && r->seqs; i++) {
        sl_seq *s = &r->seqs[i];
        free(s->tokens);
        free(s->blocks);
        free(s->output_counts);
        free(s->text);
        sl_detokenizer_free(s->detok);
        sl_guide_state_destroy(&s->guide);
    }
    sl_guides_release(e->guides, r->grammar);
    for (int i = 0; i < r->n_stop; i++) free(r->stop[i]);
    free(r->stop);
    free(r->stop_ids);
    free(r->prompt_mask);
    free(r->seqs);
    free(r);
}
