/* fuzz_tokenizer.c -- libFuzzer target for the tokenizer.json loader and
 * for encode/decode.
 *
 * The first input byte picks the mode: below 0x80 the rest is a
 * tokenizer.json (loaded, then used to encode and decode a fixed text and
 * itself); otherwise the rest is text encoded by a built-in byte-level
 * tokenizer (Split regex + ByteLevel + added tokens), which must decode
 * back to the same text and stream to the same text. Any error return is
 * fine; crashes, sanitizer reports and a broken round trip are findings.
 * replay_main.c runs the same function over the corpus without libFuzzer. */
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tokenizer/tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char tmp_path[64];

static int load_from_memory(const void *json, size_t n, sl_tokenizer **t) {
    if (!tmp_path[0]) snprintf(tmp_path, sizeof tmp_path, "/tmp/sl_tok_fuzz_%d.json", (int)getpid());
    FILE *f = fopen(tmp_path, "wb");
    if (!f) return -1;
    fwrite(json, 1, n, f);
    fclose(f);
    sl_err err;
    int rc = sl_tokenizer_load_file(tmp_path, t, &err);
    unlink(tmp_path);
    return rc;
}

/* A byte-level BPE with every byte char in the vocabulary, so that any
 * valid UTF-8 text must round-trip. */
static sl_tokenizer *builtin(void) {
    static sl_tokenizer *t;
    if (t) return t;
    json_t *vocab = json_object(), *merges = json_array();
    int n = 0;
    char chars[256][4];
    for (int b = 0; b < 256; b++) {
        bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
        unsigned cp = printable ? (unsigned)b : 256u + (unsigned)n++;
        if (cp < 0x80) snprintf(chars[b], 4, "%c", cp);
        else snprintf(chars[b], 4, "%c%c", 0xC0 | (cp >> 6), 0x80 | (cp & 0x3F));
        json_object_set_new(vocab, chars[b], json_integer(b));
    }
    const char *pairs[][2] = {{"t", "h"}, {"th", "e"}, {"\xC4\xA0", "the"}, {"e", "r"}, {"\xC4\xA0", "t"}};
    int id = 256;
    for (size_t i = 0; i < sizeof pairs / sizeof *pairs; i++) {
        char joined[16], m[32];
        snprintf(joined, sizeof joined, "%s%s", pairs[i][0], pairs[i][1]);
        snprintf(m, sizeof m, "%s %s", pairs[i][0], pairs[i][1]);
        json_object_set_new(vocab, joined, json_integer(id++));
        json_array_append_new(merges, json_string(m));
    }
    json_t *root = json_pack(
        "{s:{s:s,s:o,s:o},s:{s:s,s:[{s:s,s:{s:s},s:s,s:b},{s:s,s:b},{s:s,s:b,s:b}]},s:{s:s},s:[{s:i,s:s,s:b,s:b,s:b,s:b,s:b},{s:i,s:s,s:b,s:b,s:b,s:b,s:b}]}",
        "model", "type", "BPE", "vocab", vocab, "merges", merges,
        "pre_tokenizer", "type", "Sequence", "pretokenizers",
        "type", "Split", "pattern", "Regex", "(?i:'s|'t)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
        "behavior", "Isolated", "invert", 0,
        "type", "Digits", "individual_digits", 1,
        "type", "ByteLevel", "add_prefix_space", 0, "use_regex", 0,
        "decoder", "type", "ByteLevel",
        "added_tokens", "id", id, "content", "<|x|>", "special", 1, "lstrip", 0, "rstrip", 0, "normalized", 0, "single_word", 0,
        "id", id + 1, "content", "word", "special", 0, "lstrip", 0, "rstrip", 0, "normalized", 1, "single_word", 1);
    char *text = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    if (!text || load_from_memory(text, strlen(text), &t)) abort(); /* the harness itself is broken */
    free(text);
    return t;
}

static void roundtrip(const sl_tokenizer *t, const char *text, size_t n, bool must_match) {
    int32_t *ids;
    size_t n_ids;
    sl_err err;
    if (sl_tokenizer_encode(t, text, n, true, &ids, &n_ids, &err)) return;
    char *out;
    size_t len;
    if (!sl_tokenizer_decode(t, ids, n_ids, false, &out, &len, &err)) {
        if (must_match && (len != n || memcmp(out, text, n))) abort();
        sl_detokenizer *d;
        if (!sl_detokenizer_create(t, false, &d, &err)) {
            size_t at = 0;
            for (size_t i = 0; i <= n_ids; i++) {
                char *piece;
                size_t k;
                int rc = i < n_ids ? sl_detokenizer_push(d, ids[i], &piece, &k, &err) : sl_detokenizer_finish(d, &piece, &k, &err);
                if (rc) break;
                if (must_match && (at + k > len || memcmp(out + at, piece, k))) abort();
                at += k;
            }
            sl_detokenizer_free(d);
        }
        free(out);
    }
    free(ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size == 0) return 0;
    const char *rest = (const char *)data + 1;
    size_t n = size - 1;
    if (data[0] < 0x80) {
        sl_tokenizer *t;
        if (load_from_memory(rest, n, &t) == 0) {
            static const char sample[] = "Hello  world! 123 caf\xC3\xA9 \xE4\xB8\xAD <s>\n\t";
            roundtrip(t, sample, sizeof sample - 1, false);
            roundtrip(t, rest, n, false);
            sl_tokenizer_free(t);
        }
        return 0;
    }
    roundtrip(builtin(), rest, n, true);
    return 0;
}
