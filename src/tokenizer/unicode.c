/* unicode.c -- the character facts the tokenizer needs, matching Rust's
 * std as `tokenizers` uses it: UTF-8 decoding and validation, lossy
 * conversion with U+FFFD per maximal invalid subpart (String::from_utf8_lossy),
 * char::is_whitespace / is_numeric, the regex crate's \w, and the GPT-2
 * byte <-> char table of the ByteLevel components.
 *
 * Categories come from utf8proc; properties utf8proc lacks (White_Space,
 * the few So letters that are Alphabetic) are spelled out here. */
#include <pthread.h>
#include <string.h>
#include <utf8proc.h>

#include "tokenizer/tokenizer_internal.h"

int sl_tok_utf8_len(unsigned char c) {
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF) return 2;
    if (c >= 0xE0 && c <= 0xEF) return 3;
    if (c >= 0xF0 && c <= 0xF4) return 4;
    return 1;
}

int sl_tok_utf8_next(const char *s, size_t len, uint32_t *cp) {
    const unsigned char *u = (const unsigned char *)s;
    int n = sl_tok_utf8_len(u[0]);
    if ((size_t)n > len) n = 1;
    switch (n) {
    case 1: *cp = u[0]; break;
    case 2: *cp = ((uint32_t)(u[0] & 0x1F) << 6) | (u[1] & 0x3F); break;
    case 3: *cp = ((uint32_t)(u[0] & 0x0F) << 12) | ((uint32_t)(u[1] & 0x3F) << 6) | (u[2] & 0x3F); break;
    default:
        *cp = ((uint32_t)(u[0] & 0x07) << 18) | ((uint32_t)(u[1] & 0x3F) << 12) |
              ((uint32_t)(u[2] & 0x3F) << 6) | (u[3] & 0x3F);
    }
    return n;
}

/* Length of the valid sequence at s[i], or -(bytes of the invalid subpart). */
static int utf8_step(const unsigned char *s, size_t len, size_t i) {
    unsigned char b = s[i];
    if (b < 0x80) return 1;
    int w = sl_tok_utf8_len(b);
    if (w == 1) return -1;
    unsigned char lo = 0x80, hi = 0xBF;
    if (b == 0xE0) lo = 0xA0;
    else if (b == 0xED) hi = 0x9F;
    else if (b == 0xF0) lo = 0x90;
    else if (b == 0xF4) hi = 0x8F;
    if (i + 1 >= len || s[i + 1] < lo || s[i + 1] > hi) return -1;
    for (int k = 2; k < w; k++)
        if (i + (size_t)k >= len || (s[i + k] & 0xC0) != 0x80) return -k;
    return w;
}

bool sl_tok_utf8_valid(const char *s, size_t len) {
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < len;) {
        if (u[i] < 0x80) {
            i++;
            continue;
        }
        int n = utf8_step(u, len, i);
        if (n < 0) return false;
        i += (size_t)n;
    }
    return true;
}

int sl_tok_utf8_lossy(const char *s, size_t len, sl_tok_buf *out) {
    const unsigned char *u = (const unsigned char *)s;
    if (sl_tok_buf_reserve(out, len)) return SL_ENOMEM;
    size_t run = 0; /* start of the pending valid run */
    for (size_t i = 0; i < len;) {
        if (u[i] < 0x80) {
            i++;
            continue;
        }
        int n = utf8_step(u, len, i);
        if (n > 0) {
            i += (size_t)n;
            continue;
        }
        if (sl_tok_buf_append(out, s + run, i - run) || sl_tok_buf_append(out, "\xEF\xBF\xBD", 3))
            return SL_ENOMEM;
        i += (size_t)-n;
        run = i;
    }
    return sl_tok_buf_append(out, s + run, len - run);
}

bool sl_tok_is_whitespace(uint32_t c) {
    if (c <= 0x20) return c == 0x20 || (c >= 0x09 && c <= 0x0D);
    if (c < 0x85) return false;
    return c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 ||
           c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

bool sl_tok_is_numeric(uint32_t c) {
    if (c < 0x80) return c >= '0' && c <= '9';
    utf8proc_category_t k = utf8proc_category((utf8proc_int32_t)c);
    return k == UTF8PROC_CATEGORY_ND || k == UTF8PROC_CATEGORY_NL || k == UTF8PROC_CATEGORY_NO;
}

bool sl_tok_is_word(uint32_t c) {
    if (c < 0x80) return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
    if (c == 0x200C || c == 0x200D || (c >= 0x24B6 && c <= 0x24E9) || (c >= 0x1F130 && c <= 0x1F149) ||
        (c >= 0x1F150 && c <= 0x1F169) || (c >= 0x1F170 && c <= 0x1F189))
        return true;
    switch (utf8proc_category((utf8proc_int32_t)c)) {
    case UTF8PROC_CATEGORY_LU: case UTF8PROC_CATEGORY_LL: case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM: case UTF8PROC_CATEGORY_LO: case UTF8PROC_CATEGORY_NL:
    case UTF8PROC_CATEGORY_MN: case UTF8PROC_CATEGORY_MC: case UTF8PROC_CATEGORY_ME:
    case UTF8PROC_CATEGORY_ND: case UTF8PROC_CATEGORY_PC:
        return true;
    default:
        return false;
    }
}

/* ---- GPT-2 byte-level table --------------------------------------------- */

static sl_tok_bytelevel bytelevel;
static pthread_once_t bytelevel_once = PTHREAD_ONCE_INIT;

static bool printable_byte(int b) {
    return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
}

static void bytelevel_build(void) {
    memset(bytelevel.dec, 0xff, sizeof bytelevel.dec);
    int extra = 0;
    for (int b = 0; b < 256; b++) {
        uint32_t cp = printable_byte(b) ? (uint32_t)b : (uint32_t)(256 + extra++);
        bytelevel.enc_len[b] = (uint8_t)sl_utf8_encode(cp, bytelevel.enc[b]);
        bytelevel.dec[cp] = (int16_t)b;
    }
}

const sl_tok_bytelevel *sl_tok_bytelevel_table(void) {
    pthread_once(&bytelevel_once, bytelevel_build);
    return &bytelevel;
}
