/* sample.c -- the host reference of the sampling rule (sample.h): the
 * CPU backend's sample op, and the engine's for rows it samples itself.
 *
 * Nothing is sorted: top-k and top-p are linear-time selections (by count,
 * then by mass) that leave the kept prefix of the descending order in
 * order[0..n) unsorted, min-p a threshold over it; the prefix's last id in
 * that order is the cutoff, and the draw walks the ids in ascending order,
 * taking those that come no later than the cutoff. The exponentials are
 * computed 16 at a time. A mask zeroes the probabilities of the ids it
 * leaves out (what e^-inf gives), so everything after the exponentials is
 * the same with or without one: a row with a mask picks the token its
 * logits with -inf at the masked ids pick, bit for bit. */
#include "backend/sample.h"

#include <stdbool.h>

#include "util/simd.h"

int32_t sl_argmax(const float *x, int n) {
    int32_t best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

static inline bool allowed(const uint32_t *mask, int i) { return !mask || (mask[i >> 5] >> (i & 31)) & 1u; }

/* sl_argmax over the ids the mask allows; -1 when it allows none. */
static int32_t masked_argmax(const float *x, int n, const uint32_t *mask) {
    if (!mask) return sl_argmax(x, n);
    int32_t best = -1;
    for (int i = 0; i < n; i++)
        if (allowed(mask, i) && (best < 0 || x[i] > x[best])) best = i;
    return best;
}

/* Lanes i..i+15 (i a multiple of 16) that the mask allows: all ones, else zeros. */
static inline vi allowed_lanes(const uint32_t *mask, int i) {
    const vu bits = (vu){0} + (mask[i >> 5] >> (i & 31));
    const vu lane = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
    return ((bits >> lane) & 1u) != 0;
}

/* Descending by probability, ties by id: a total order, so the descending
 * order is the same however it is built. */
static inline bool before(const float *probs, int32_t x, int32_t y) {
    return probs[x] > probs[y] || (probs[x] == probs[y] && x < y);
}

/* Moves the k ids of order[0..n) that come first in the total order to
 * order[0..k) (unsorted), in O(n): quickselect. */
static void select_first_k(int32_t *order, int n, int k, const float *probs) {
    int lo = 0, hi = n - 1;
    while (lo < hi) {
        const int32_t pivot = order[(lo + hi) / 2];
        int i = lo, j = hi;
        while (i <= j) {
            while (before(probs, order[i], pivot)) i++;
            while (before(probs, pivot, order[j])) j--;
            if (i <= j) {
                int32_t t = order[i];
                order[i++] = order[j];
                order[j--] = t;
            }
        }
        if (k - 1 <= j) hi = j;
        else if (k - 1 >= i) lo = i;
        else break;
    }
}

/* Moves to order[0..m) the ids of the shortest prefix of order[0..n)'s
 * descending order whose mass reaches `target`, unsorted, and returns m: a
 * quickselect that follows the mass instead of a count, O(n). */
static int select_mass(int32_t *order, int n, double target, const float *probs) {
    int lo = 0, hi = n; /* the last id kept lies in [lo, hi); order[0..lo) is kept, with mass `kept` */
    double kept = 0;
    while (hi - lo > 1) {
        const int mid = lo + (hi - lo) / 2;
        const int32_t pivot = order[mid];
        order[mid] = order[hi - 1], order[hi - 1] = pivot;
        int i = lo;
        double mass_before = 0;
        for (int k = lo; k < hi - 1; k++)
            if (before(probs, order[k], pivot)) {
                const int32_t t = order[i];
                order[i++] = order[k], order[k] = t;
                mass_before += probs[order[i - 1]];
            }
        order[hi - 1] = order[i], order[i] = pivot;
        if (kept + mass_before >= target) {
            hi = i;
        } else if (kept + mass_before + probs[pivot] >= target) {
            return i + 1;
        } else {
            kept += mass_before + probs[pivot];
            lo = i + 1;
        }
    }
    return lo + 1 < n ? lo + 1 : n;
}

/* probs[i] = e^((logits[i] - max) / temperature), 0 where the mask (if any)
 * leaves i out, 16 at a time; returns their sum. */
static double scaled_exp(float *probs, const float *logits, int vocab, float max, float temperature,
                         const uint32_t *mask) {
    const float inv_t = 1.0f / temperature;
    double sum = 0;
    int i = 0;
    for (; i + LANES <= vocab; i += LANES) {
        vf e = vexp((load_f(logits + i) - max) * inv_t);
        if (mask) e = select_f(allowed_lanes(mask, i), e, splat(0.0f));
        store_f(probs + i, e);
        sum += lane_sum(e);
    }
    for (; i < vocab; i++) { /* the tail through the same code */
        const vf e = vexp(splat((logits[i] - max) * inv_t));
        probs[i] = allowed(mask, i) ? e[0] : 0.0f;
        sum += probs[i];
    }
    return sum;
}

/* The last of order[0..n) in the descending order: the kept prefix's cutoff. */
static int32_t last_kept(const int32_t *order, int n, const float *probs) {
    int32_t last = order[0];
    for (int i = 1; i < n; i++)
        if (before(probs, last, order[i])) last = order[i];
    return last;
}

int32_t sl_sample_pick(const float *logits, int vocab, const sl_sample_row *p, const uint32_t *mask, float *probs,
                       int32_t *order) {
    const int32_t best = masked_argmax(logits, vocab, mask);
    if (best < 0 || p->temperature < SL_SAMPLE_GREEDY_BELOW) return best;
    const double sum = scaled_exp(probs, logits, vocab, logits[best], p->temperature, mask);
    if ((p->top_k <= 0 || p->top_k >= vocab) && p->top_p >= 1.0f && p->min_p <= 0.0f) {
        /* nothing filtered: every id is kept */
        const double u = (double)p->u * sum;
        double acc = 0;
        int32_t last = 0; /* the draw falls past the end only by rounding: the last id that can be drawn */
        for (int i = 0; i < vocab; i++) {
            if (probs[i] > 0) last = i;
            if (u < (acc += probs[i])) return i;
        }
        return last;
    }
    /* probs stay unnormalised: every filter and the draw are ratios */
    for (int i = 0; i < vocab; i++) order[i] = i;
    int n = vocab; /* the candidates: order[0..n), in no particular order */
    if (p->top_k > 0 && p->top_k < vocab) {
        select_first_k(order, vocab, p->top_k, probs);
        n = p->top_k;
    }
    if (p->top_p < 1.0f) { /* shortest prefix with mass >= top_p, renormalised over the top-k survivors */
        double total = 0;
        for (int i = 0; i < n; i++) total += probs[order[i]];
        n = select_mass(order, n, p->top_p * total, probs);
    }
    if (p->min_p > 0.0f) { /* at least min_p times the most probable */
        float top = 0;
        for (int i = 0; i < n; i++) top = probs[order[i]] > top ? probs[order[i]] : top;
        int keep = 0;
        for (int i = 0; i < n; i++)
            if (probs[order[i]] >= p->min_p * top) order[keep++] = order[i];
        n = keep;
    }
    double total = 0;
    for (int i = 0; i < n; i++) total += probs[order[i]];
    const int32_t cut = last_kept(order, n, probs);
    const double u = (double)p->u * total;
    double acc = 0;
    int32_t last = order[0];
    for (int32_t i = 0; i < vocab; i++) {
        if (i != cut && !before(probs, i, cut)) continue;
        if (probs[i] > 0) last = i;
        if (u < (acc += probs[i])) return i;
    }
    return last;
}
