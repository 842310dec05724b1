/* token_trie.c -- building the vocabulary trie (see token_trie.h).
 *
 * Sort the eligible token ids by their bytes; then walk them in order: a
 * token shares its first k bytes with the previous one, so the nodes deeper
 * than k are finished (their `skip` is the current node count) and new nodes
 * are appended for the rest of its bytes. The result is the trie in
 * depth-first preorder, with each node's tokens contiguous in ids[]. */
#include "grammar/token_trie.h"

#include <stdlib.h>
#include <string.h>

#define TRIE_MAX_TOKEN_BYTES 65535

static int cmp_tokens(const void *a, const void *b, void *ctx) {
    const sl_token_trie *t = ctx;
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    uint32_t nx, ny;
    const uint8_t *bx = sl_token_trie_bytes(t, x, &nx), *by = sl_token_trie_bytes(t, y, &ny);
    int c = memcmp(bx, by, nx < ny ? nx : ny);
    if (c) return c;
    if (nx != ny) return nx < ny ? -1 : 1;
    return (x > y) - (x < y);
}

/* Copies every token's bytes and lists the ids that go into the trie. */
static int copy_tokens(sl_token_trie *t, const sl_token_bytes *tokens, uint32_t n_tokens, sl_err *err) {
    uint64_t total = 0;
    for (uint32_t i = 0; i < n_tokens; i++) {
        if (tokens[i].n_bytes > TRIE_MAX_TOKEN_BYTES)
            return sl_err_set(err, SL_EINVAL, "token trie: token %u is %u bytes long (at most %d)", i,
                              tokens[i].n_bytes, TRIE_MAX_TOKEN_BYTES);
        total += tokens[i].n_bytes;
    }
    if (total >= UINT32_MAX) return sl_err_set(err, SL_EINVAL, "token trie: vocabulary over 4 GiB of bytes");
    t->bytes = malloc(total ? total : 1);
    t->off = malloc(((size_t)n_tokens + 1) * sizeof *t->off);
    t->ids = malloc((n_tokens ? n_tokens : 1) * sizeof *t->ids);
    t->nodes = malloc((total + 1) * sizeof *t->nodes);
    if (!t->bytes || !t->off || !t->ids || !t->nodes) return sl_err_set(err, SL_ENOMEM, "token trie: out of memory");
    uint32_t at = 0;
    for (uint32_t i = 0; i < n_tokens; i++) {
        t->off[i] = at;
        if (tokens[i].n_bytes) memcpy(t->bytes + at, tokens[i].bytes, tokens[i].n_bytes);
        at += tokens[i].n_bytes;
        if (tokens[i].special || !tokens[i].n_bytes) continue;
        t->ids[t->n_ids++] = (int32_t)i;
        if (tokens[i].n_bytes > t->max_depth) t->max_depth = tokens[i].n_bytes;
    }
    t->off[n_tokens] = at;
    t->n_tokens = n_tokens;
    return 0;
}

static int build_nodes(sl_token_trie *t, sl_err *err) {
    uint32_t *stack = malloc((t->max_depth + 1) * sizeof *stack); /* node per depth on the path */
    if (!stack) return sl_err_set(err, SL_ENOMEM, "token trie: out of memory");
    uint32_t depth = 0, prev_n = 0;
    const uint8_t *prev = NULL;
    t->nodes[0] = (sl_trie_node){0};
    t->n_nodes = 1;
    stack[0] = 0;
    for (uint32_t k = 0; k < t->n_ids; k++) {
        uint32_t n;
        const uint8_t *b = sl_token_trie_bytes(t, t->ids[k], &n);
        uint32_t common = 0;
        while (common < n && common < prev_n && b[common] == prev[common]) common++;
        for (; depth > common; depth--) t->nodes[stack[depth]].skip = t->n_nodes;
        for (; depth < n; depth++) {
            stack[depth + 1] = t->n_nodes;
            t->nodes[t->n_nodes++] = (sl_trie_node){.byte = b[depth], .depth = (uint16_t)(depth + 1), .tok_first = k};
        }
        sl_trie_node *node = &t->nodes[stack[n]];
        if (node->n_tok == 0) node->tok_first = k;
        node->n_tok++;
        prev = b;
        prev_n = n;
    }
    for (; depth > 0; depth--) t->nodes[stack[depth]].skip = t->n_nodes;
    t->nodes[0].skip = t->n_nodes;
    free(stack);
    return 0;
}

int sl_token_trie_create(const sl_token_bytes *tokens, uint32_t n_tokens, const int32_t *eos_ids,
                         uint32_t n_eos, sl_token_trie **out, sl_err *err) {
    *out = NULL;
    sl_token_trie *t = calloc(1, sizeof *t);
    if (!t) return sl_err_set(err, SL_ENOMEM, "token trie: out of memory");
    int rc = copy_tokens(t, tokens, n_tokens, err);
    t->eos_ids = rc ? NULL : malloc((n_eos ? n_eos : 1) * sizeof *t->eos_ids);
    if (!rc && !t->eos_ids) rc = sl_err_set(err, SL_ENOMEM, "token trie: out of memory");
    for (uint32_t i = 0; !rc && i < n_eos; i++) {
        if (eos_ids[i] < 0 || (uint32_t)eos_ids[i] >= n_tokens)
            rc = sl_err_set(err, SL_EINVAL, "token trie: EOS id %d outside the vocabulary of %u", eos_ids[i], n_tokens);
        else t->eos_ids[t->n_eos++] = eos_ids[i];
    }
    if (!rc) {
        qsort_r(t->ids, t->n_ids, sizeof *t->ids, cmp_tokens, t);
        rc = build_nodes(t, err);
    }
    if (rc) {
        sl_token_trie_free(t);
        return rc;
    }
    *out = t;
    return 0;
}

void sl_token_trie_free(sl_token_trie *t) {
    if (!t) return;
    free(t->nodes);
    free(t->ids);
    free(t->eos_ids);
    free(t->bytes);
    free(t->off);
    free(t);
}
