/* shard_plan.c -- split heads, MLP columns, vocabulary and layers over ranks.
 *
 * Heads: with tp <= n_kv_heads the KV heads are dealt out as evenly as
 * possible, the first ranks taking one more (tp=3 on 8 KV heads: 3/3/2), and
 * each rank takes the query heads of its KV heads. With tp > n_kv_heads every
 * KV head is replicated on tp / n_kv_heads ranks, which share its query heads.
 * The MLP follows the query-head shares so that work stays proportional. */
#include "model/shard_plan.h"

#include <stdio.h>

/* [begin, end) of part `i` when `n` items are dealt to `parts`, first ones larger. */
static void deal(int n, int parts, int i, int *begin, int *end) {
    int base = n / parts, extra = n % parts;
    *begin = i * base + (i < extra ? i : extra);
    *end = *begin + base + (i < extra ? 1 : 0);
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

static void plan_layers(const sl_model_config *c, int pp_rank, int pp, sl_shard_plan *p) {
    deal(c->n_layers, pp, pp_rank, &p->layer_begin, &p->layer_end);
}

int sl_shard_plan_make(const sl_model_config *c, int tp_rank, int tp_size, int pp_rank, int pp_size,
                       sl_shard_plan *p, sl_err *err) {
    if (tp_size < 1 || tp_rank < 0 || tp_rank >= tp_size || pp_size < 1 || pp_rank < 0 || pp_rank >= pp_size)
        return sl_err_set(err, SL_EINVAL, "invalid rank %d/%d (tp) x %d/%d (pp)", tp_rank, tp_size, pp_rank, pp_size);
    if (pp_size > c->n_layers)
        return sl_err_set(err, SL_EINVAL, "--pipeline-parallel-size %d exceeds the model's %d layers", pp_size, c->n_layers);
    *p = (sl_shard_plan){.tp_rank = tp_rank, .tp_size = tp_size, .pp_rank = pp_rank, .pp_size = pp_size};
    int rc = plan_heads(c, tp_rank, tp_size, p, err);
    if (rc) return rc;
    /* MLP columns in proportion to this rank's query heads (disjoint across ranks). */
    int64_t ffn = c->intermediate_size;
    p->ffn_begin = (int)(ffn * p->q_head_begin / c->n_heads);
    p->ffn_end = (int)(ffn * p->q_head_end / c->n_heads);
    deal(c->vocab_size, tp_size, tp_rank, &p->vocab_begin, &p->vocab_end);
    plan_layers(c, pp_rank, pp_size, p);
    return SL_OK;
}
