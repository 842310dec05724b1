/* shard_plan.c -- split heads, MLP columns, vocabulary and layers over ranks.
 *
 * Heads: with tp <= n_kv_heads the KV heads are dealt out as evenly as
 * possible, the first ranks taking one more (tp=3 on 8 KV heads: 3/3/2), and
 * each rank takes the query heads of its KV heads. With tp > n_kv_heads every
 * KV head is replicated on tp / n_kv_heads ranks, which share its query heads.
 * The MLP follows the query-head shares so that work stays proportional.
 * Layers: see balance_layers. */
#include "model/shard_plan.h"

#include <stdio.h>
#include <stdlib.h>

/* [begin, end) of part `i` when `n` items are dealt to `parts`, first ones larger. */
static void deal(int n, int parts, int i, int *begin, int *end) {
    int base = n / parts, extra = n % parts;
    *begin = i * base + (i < extra ? i : extra);
    *end = *begin + base + (i < extra ? 1 : 0);
}

void sl_shard_plan_vocab_slice(int vocab_size, int tp_size, int tp_rank, int *begin, int *end) {
    deal(vocab_size, tp_size, tp_rank, begin, end);
}

static int plan_heads(const sl_model_config *c, int rank, int tp, sl_shard_plan *p, sl_err *err) {
    int group = c->n_heads / c->n_kv_heads;
    if (tp <= c->n_kv_heads) {
        deal(c->n_kv_heads, tp, rank, &p->kv_head_begin, &p->kv_head_end);
        p->q_head_begin = p->kv_head_begin * group;
        p->q_head_end = p->kv_head_end * group;
        return SL_OK;
    }
    if (tp % c->n_kv_heads != 0) {
        char sizes[256];
        int used = 0;
        for (int t = 1; t <= 4 * c->n_kv_heads && used < (int)sizeof sizes - 8; t++)
            if (t <= c->n_kv_heads || t % c->n_kv_heads == 0)
                used += snprintf(sizes + used, sizeof sizes - (size_t)used, used ? ", %d" : "%d", t);
        return sl_err_set(err, SL_EINVAL, "--tensor-parallel-size %d does not work for this model's %d KV heads: "
                          "above %d it must be a multiple of %d (valid sizes: %s, ...)",
                          tp, c->n_kv_heads, c->n_kv_heads, c->n_kv_heads, sizes);
    }
    int replicas = tp / c->n_kv_heads, kv = rank / replicas, share = rank % replicas;
    if (group < replicas)
        return sl_err_set(err, SL_EINVAL, "--tensor-parallel-size %d gives some ranks no query head (%d heads); "
                          "use at most %d", tp, c->n_heads, c->n_heads);
    p->kv_head_begin = kv;
    p->kv_head_end = kv + 1;
    int qb, qe;
    deal(group, replicas, share, &qb, &qe);
    p->q_head_begin = kv * group + qb;
    p->q_head_end = kv * group + qe;
    return SL_OK;
}

/* SHARDLM_PP_LAYER_PARTITION="8,8,7,7": layers per stage, first stage first. */
static int parse_partition(const char *spec, const sl_model_config *c, int pp, int *counts, sl_err *err) {
    int n = 0, total = 0;
    for (const char *p = spec; *p && n <= pp;) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || v < 1) break;
        if (n < pp) counts[n] = (int)v;
        n++;
        total += (int)v;
        p = end + (*end == ',');
    }
    if (n != pp || total != c->n_layers)
        return sl_err_set(err, SL_EINVAL, "SHARDLM_PP_LAYER_PARTITION=\"%s\" must list %d positive layer counts "
                          "adding up to the model's %d layers", spec, pp, c->n_layers);
    return SL_OK;
}

/* Contiguous layer ranges minimizing the largest stage, counted in weights:
 * every stage holds its layers, the first also the embedding, the last also
 * the LM head (a copy of it when tied), so an even layer count is not an
 * even load. Weights are what a stage stores and, for decode, what it reads
 * every step. Dynamic programming over (stages, layers): tiny. */
static int balance_layers(const sl_model_config *c, int pp, int *counts, sl_err *err) {
    const int L = c->n_layers;
    const double table = (double)c->vocab_size * c->hidden_size / (double)sl_model_config_layer_params(c); /* in layers */
    /* best[s][l]: the smallest possible largest load of stages 0..s holding layers 0..l-1; cut: where stage s starts */
    double *best = malloc(sizeof(double) * (size_t)pp * (size_t)(L + 1));
    int *cut = malloc(sizeof(int) * (size_t)pp * (size_t)(L + 1));
    if (!best || !cut) {
        free(best);
        free(cut);
        return sl_err_set(err, SL_ENOMEM, "out of memory");
    }
#define AT(a, s, l) (a)[(size_t)(s) * (size_t)(L + 1) + (size_t)(l)]
    for (int s = 0; s < pp; s++)
        for (int l = 0; l <= L; l++) {
            AT(best, s, l) = 1e300;
            AT(cut, s, l) = s;
            for (int k = s; k < l; k++) { /* stage s holds layers k..l-1 */
                if (s == 0 && k != 0) break;
                double load = (double)(l - k) + (s == 0 ? table : 0) + (s == pp - 1 ? table : 0);
                double worst = s == 0 ? load : (AT(best, s - 1, k) > load ? AT(best, s - 1, k) : load);
                if (worst < AT(best, s, l)) {
                    AT(best, s, l) = worst;
                    AT(cut, s, l) = k;
                }
            }
        }
    for (int s = pp - 1, l = L; s >= 0; s--) {
        counts[s] = l - AT(cut, s, l);
        l = AT(cut, s, l);
    }
#undef AT
    free(best);
    free(cut);
    return SL_OK;
}

static int plan_layers(const sl_model_config *c, int pp_rank, int pp, sl_shard_plan *p, sl_err *err) {
    int counts[64];
    if (pp > 64 || c->n_layers > 1024) return sl_err_set(err, SL_ENOTSUP, "at most 64 pipeline stages of 1024 layers");
    const char *spec = getenv("SHARDLM_PP_LAYER_PARTITION");
    int rc = spec && *spec ? parse_partition(spec, c, pp, counts, err) : balance_layers(c, pp, counts, err);
    if (rc) return rc;
    p->layer_begin = 0;
    for (int s = 0; s < pp_rank; s++) p->layer_begin += counts[s];
    p->layer_end = p->layer_begin + counts[pp_rank];
    return SL_OK;
}

int sl_shard_plan_make(const sl_model_config *c, int tp_rank, int tp_size, int pp_rank, int pp_size,
                       sl_shard_plan *p, sl_err *err) {
    if (tp_size < 1 || tp_rank < 0 || tp_rank >= tp_size || pp_size < 1 || pp_rank < 0 || pp_rank >= pp_size)
        return sl_err_set(err, SL_EINVAL, "invalid rank %d/%d (tp) x %d/%d (pp)", tp_rank, tp_size, pp_rank, pp_size);
    if (tp_size > 64) return sl_err_set(err, SL_ENOTSUP, "--tensor-parallel-size is at most 64");
    if (pp_size > c->n_layers)
        return sl_err_set(err, SL_EINVAL, "--pipeline-parallel-size %d exceeds the model's %d layers", pp_size, c->n_layers);
    *p = (sl_shard_plan){.tp_rank = tp_rank, .tp_size = tp_size, .pp_rank = pp_rank, .pp_size = pp_size};
    int rc = plan_heads(c, tp_rank, tp_size, p, err);
    if (rc) return rc;
    /* MLP columns in proportion to this rank's query heads (disjoint across ranks). */
    int64_t ffn = c->intermediate_size;
    p->ffn_begin = (int)(ffn * p->q_head_begin / c->n_heads);
    p->ffn_end = (int)(ffn * p->q_head_end / c->n_heads);
    sl_shard_plan_vocab_slice(c->vocab_size, tp_size, tp_rank, &p->vocab_begin, &p->vocab_end);
    return plan_layers(c, pp_rank, pp_size, p, err);
}
