/* memory_plan.c -- per-rank memory of a layout, and the smallest layout that fits.
 *
 * A rank's weights are counted from its shard plan exactly as the loader
 * slices them, so uneven head splits and the first/last pipeline stages'
 * embedding and LM head are where they will be. */
#include "model/memory_plan.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "model/shard_plan.h"

static double rank_weight_elems(const sl_model_config *c, const sl_shard_plan *p) {
    const double h = c->hidden_size, hd = c->head_dim, nq = sl_shard_plan_n_heads(p), nkv = sl_shard_plan_n_kv_heads(p);
    const double ffn = p->ffn_end - p->ffn_begin, vocab = p->vocab_end - p->vocab_begin;
    double layer = h * nq * hd * 2 + h * nkv * hd * 2 + 3 * h * ffn + 2 * h;
    if (c->attention_bias) layer += nq * hd + 2 * nkv * hd + (c->o_proj_bias ? h : 0);
    if (c->mlp_bias) layer += 2 * ffn + h;
    double n = layer * sl_shard_plan_n_layers(p);
    if (p->pp_rank == 0) n += vocab * h;
    if (p->pp_rank == p->pp_size - 1) n += h + (c->tie_word_embeddings && p->pp_size == 1 ? 0 : vocab * h);
    return n;
}

double sl_mem_total_weight_bytes(const sl_model_config *cfg) {
    return (double)sl_model_config_n_params(cfg) * (double)sl_dtype_n_bytes(cfg->dtype);
}

void sl_mem_layout_eval(const sl_model_config *c, int tp, int pp, const sl_mem_limits *lim, sl_mem_layout *out) {
    memset(out, 0, sizeof *out);
    out->tp = tp;
    out->pp = pp;
    const double elem = (double)sl_dtype_n_bytes(c->dtype), kv_elem = lim->kv_bytes_per_elem > 0 ? lim->kv_bytes_per_elem : 2;
    const double act = lim->act_bytes_per_elem > 0 ? lim->act_bytes_per_elem : 4;
    const double len = lim->max_model_len > 0 ? lim->max_model_len : c->max_position_embeddings;
    const double T = lim->max_num_batched_tokens > 0 ? lim->max_num_batched_tokens : 2048;
    const double S = lim->max_num_seqs > 0 ? lim->max_num_seqs : 256;
    for (int pr = 0; pr < pp; pr++)
        for (int tr = 0; tr < tp; tr++) {
            sl_shard_plan p;
            sl_err err = {0};
            if (sl_shard_plan_make(c, tr, tp, pr, pp, &p, &err)) return;
            double w = rank_weight_elems(c, &p) * elem;
            double q = sl_shard_plan_n_heads(&p) * c->head_dim, kv = sl_shard_plan_n_kv_heads(&p) * c->head_dim;
            double ffn = p.ffn_end - p.ffn_begin, vocab = p.vocab_end - p.vocab_begin;
            /* one step's activations as model.c sizes them: x (float32); xb, q, k, v, att, gate, up and
             * the LM head's input rows (the activation dtype); the logits (float32); the token masks */
            double ws = T * c->hidden_size * 4 + T * (c->hidden_size + 2 * q + 2 * kv + 2 * ffn) * act +
                        S * (c->hidden_size * act + vocab * 4) + S * ((c->vocab_size + 31) / 32) * 4.0;
            double kv_token = 2.0 * kv * kv_elem * sl_shard_plan_n_layers(&p);
            double need = w + ws + kv_token * len;
            if (need > out->need_bytes) {
                out->weight_bytes = w;
                out->workspace_bytes = ws;
                out->kv_bytes_per_token = kv_token;
                out->min_kv_bytes = kv_token * len;
                out->need_bytes = need;
            }
        }
    out->valid = true;
}

bool sl_mem_smallest_layout(const sl_model_config *c, int max_devices, int per_node, double device_bytes,
                            const sl_mem_limits *lim, sl_mem_layout *out) {
    for (int n = 1; n <= max_devices; n++) {
        /* largest tensor-parallel size first: it cuts memory and latency; pipeline stages only across nodes */
        for (int tp = n < per_node ? n : per_node; tp >= 1; tp--) {
            if (n % tp) continue;
            int pp = n / tp;
            if (pp > c->n_layers) continue;
            sl_mem_layout l;
            sl_mem_layout_eval(c, tp, pp, lim, &l);
            if (l.valid && l.need_bytes <= device_bytes) {
                *out = l;
                return true;
            }
        }
    }
    return false;
}

bool sl_mem_weights_fit(const sl_model_config *c, int max_devices, int per_node, double device_bytes,
                        const sl_mem_limits *lim) {
    for (int n = 1; n <= max_devices; n++)
        for (int tp = n < per_node ? n : per_node; tp >= 1; tp--) {
            if (n % tp || n / tp > c->n_layers) continue;
            sl_mem_layout l;
            sl_mem_layout_eval(c, tp, n / tp, lim, &l);
            if (l.valid && l.weight_bytes <= device_bytes) return true;
        }
    return false;
}

int sl_mem_max_model_len(const sl_mem_layout *l, double device_bytes) {
    const double room = device_bytes - l->weight_bytes - l->workspace_bytes;
    if (room <= 0 || l->kv_bytes_per_token <= 0) return 0;
    const double tokens = room / l->kv_bytes_per_token;
    return tokens > 1e9 ? 1000000000 : (int)tokens;
}

bool sl_mem_smallest_layout_any_context(const sl_model_config *c, int max_devices, int per_node, double device_bytes,
                                        const sl_mem_limits *lim, sl_mem_layout *out) {
    sl_mem_limits one_token = *lim;
    one_token.max_model_len = 1;
    if (!sl_mem_smallest_layout(c, max_devices, per_node, device_bytes, &one_token, out)) return false;
    sl_mem_layout_eval(c, out->tp, out->pp, lim, out); /* its figures at the context asked for */
    return true;
}

static void layout_flags(char *buf, size_t n, const sl_mem_layout *l) {
    if (l->pp == 1) snprintf(buf, n, "--tensor-parallel-size %d", l->tp);
    else if (l->tp == 1) snprintf(buf, n, "--pipeline-parallel-size %d", l->pp);
    else snprintf(buf, n, "--tensor-parallel-size %d --pipeline-parallel-size %d", l->tp, l->pp);
}

/* "65.5 GB", "2.71 GB", "270.3 MB": enough figures to act on at any size. */
static const char *gb(char *buf, double bytes) {
    if (bytes < 1e9) snprintf(buf, 16, "%.1f MB", bytes / 1e6);
    else snprintf(buf, 16, bytes >= 10e9 ? "%.1f GB" : "%.2f GB", bytes / 1e9);
    return buf;
}

/* printf onto the end of buf[0..n), *len long so far; never past n. */
static void append(char *buf, size_t n, size_t *len, const char *fmt, ...) {
    if (*len >= n) return;
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(buf + *len, n - *len, fmt, ap);
    va_end(ap);
    if (k > 0) *len = *len + (size_t)k < n ? *len + (size_t)k : n;
}

void sl_mem_advice(char *buf, size_t n, const char *model_name, const sl_model_config *cfg, const sl_mem_layout *tried,
                   double device_bytes, const char *device, int max_devices, const sl_mem_limits *lim) {
    char a[16], b[16];
    size_t len = 0;
    buf[0] = '\0';
    append(buf, n, &len, "%s needs %s of weights", model_name, gb(a, sl_mem_total_weight_bytes(cfg)));
    if (tried->tp * tried->pp > 1)
        append(buf, n, &len, " (%s on the largest of %d ranks)", gb(a, tried->weight_bytes), tried->tp * tried->pp);
    append(buf, n, &len, " plus %s for one %d-token sequence's KV cache; one %s has %s", gb(a, tried->min_kv_bytes),
           lim->max_model_len > 0 ? lim->max_model_len : cfg->max_position_embeddings, device, gb(b, device_bytes));
    /* the weights fit this layout: only the context is too long for its KV cache */
    const int shorter = sl_mem_max_model_len(tried, device_bytes);
    if (shorter >= 1) append(buf, n, &len, "; lower --max-model-len to %d or less", shorter);
    sl_mem_layout fit;
    if (sl_mem_smallest_layout(cfg, max_devices, 8, device_bytes, lim, &fit)) {
        char flags[96];
        layout_flags(flags, sizeof flags, &fit);
        append(buf, n, &len, "%s use %s (%s of weights and %s of KV cache per %s)", shorter >= 1 ? ", or" : ";", flags,
               gb(a, fit.weight_bytes), gb(b, device_bytes - fit.weight_bytes - fit.workspace_bytes), device);
    } else if (shorter < 1 && sl_mem_smallest_layout_any_context(cfg, max_devices, 8, device_bytes, lim, &fit)) {
        append(buf, n, &len, "; no layout of up to %d %ss holds a full-length sequence: lower --max-model-len or use "
               "more or larger devices", max_devices, device);
    } else if (shorter < 1 && sl_mem_weights_fit(cfg, max_devices, 8, device_bytes, lim)) {
        /* the weights fit somewhere; the step's activations on top of them do not */
        append(buf, n, &len, "; the weights and one step's workspace (%s at %d tokens and %d sequences a step) "
               "exceed every layout of up to %d %ss: lower --max-num-batched-tokens or --max-num-seqs, or use more "
               "or larger devices", gb(a, tried->workspace_bytes),
               lim->max_num_batched_tokens > 0 ? lim->max_num_batched_tokens : 2048,
               lim->max_num_seqs > 0 ? lim->max_num_seqs : 256, max_devices, device);
    } else if (shorter < 1) {
        append(buf, n, &len, "; the weights alone exceed every layout of up to %d %ss: use more or larger devices "
               "(a shorter --max-model-len cannot help)", max_devices, device);
    }
}
