/* hub_digest.c -- SHA-256 (FIPS 180-4) and SHA-1, written out here so the
 * hub client verifies downloads without pulling a crypto library into
 * libshardlm. Both share the 64-byte block buffering and the big-endian
 * length padding; only the compression functions differ. */
#include "hub/hub_digest.h"

#include <stdio.h>
#include <string.h>

static uint32_t rotr(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }
static uint32_t rotl(uint32_t x, int n) { return (x << n) | (x >> (32 - n)); }

static uint32_t load_be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

static const uint32_t sha256_k[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

static void sha256_block(uint32_t st[8], const uint8_t *p) {
    uint32_t w[64];
    for (int i = 0; i < 16; i++) w[i] = load_be32(p + 4 * i);
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = st[0], b = st[1], c = st[2], d = st[3], e = st[4], f = st[5], g = st[6], h = st[7];
    for (int i = 0; i < 64; i++) {
        uint32_t t1 = h + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + sha256_k[i] + w[i];
        uint32_t t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        h = g; g = f; f = e; e = d + t1;
        d = c; c = b; b = a; a = t1 + t2;
    }
    st[0] += a; st[1] += b; st[2] += c; st[3] += d;
    st[4] += e; st[5] += f; st[6] += g; st[7] += h;
}

static void sha1_block(uint32_t st[5], const uint8_t *p) {
    uint32_t w[80];
    for (int i = 0; i < 16; i++) w[i] = load_be32(p + 4 * i);
    for (int i = 16; i < 80; i++) w[i] = rotl(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
    uint32_t a = st[0], b = st[1], c = st[2], d = st[3], e = st[4];
    for (int i = 0; i < 80; i++) {
        uint32_t f, k;
        if (i < 20) { f = (b & c) | (~b & d); k = 0x5a827999; }
        else if (i < 40) { f = b ^ c ^ d; k = 0x6ed9eba1; }
        else if (i < 60) { f = (b & c) | (b & d) | (c & d); k = 0x8f1bbcdc; }
        else { f = b ^ c ^ d; k = 0xca62c1d6; }
        uint32_t t = rotl(a, 5) + f + e + k + w[i];
        e = d; d = c; c = rotl(b, 30); b = a; a = t;
    }
    st[0] += a; st[1] += b; st[2] += c; st[3] += d; st[4] += e;
}

/* Shared block buffering: feeds whole 64-byte blocks to `compress`. */
static void feed(uint32_t *st, uint8_t block[64], size_t *n_block, uint64_t *n_bytes, const uint8_t *p,
                 size_t n, void (*compress)(uint32_t *, const uint8_t *)) {
    *n_bytes += n;
    if (*n_block) {
        size_t take = 64 - *n_block < n ? 64 - *n_block : n;
        memcpy(block + *n_block, p, take);
        *n_block += take;
        p += take;
        n -= take;
        if (*n_block < 64) return;
        compress(st, block);
        *n_block = 0;
    }
    for (; n >= 64; p += 64, n -= 64) compress(st, p);
    memcpy(block, p, n);
    *n_block = n;
}

/* Appends 0x80, zeros and the bit length (big-endian) and runs the last blocks. */
static void pad(uint32_t *st, uint8_t block[64], size_t n_block, uint64_t n_bytes,
                void (*compress)(uint32_t *, const uint8_t *)) {
    block[n_block++] = 0x80;
    if (n_block > 56) {
        memset(block + n_block, 0, 64 - n_block);
        compress(st, block);
        n_block = 0;
    }
    memset(block + n_block, 0, 56 - n_block);
    uint64_t bits = n_bytes * 8;
    for (int i = 0; i < 8; i++) block[56 + i] = (uint8_t)(bits >> (56 - 8 * i));
    compress(st, block);
}

static void to_hex(const uint32_t *st, int n_words, char *hex) {
    for (int i = 0; i < n_words; i++) snprintf(hex + 8 * i, 9, "%08x", (unsigned)st[i]);
}

void sl_hub_sha256_init(sl_hub_sha256 *s) {
    static const uint32_t iv[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                   0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    memset(s, 0, sizeof *s);
    memcpy(s->state, iv, sizeof iv);
}

void sl_hub_sha256_update(sl_hub_sha256 *s, const void *data, size_t n) {
    feed(s->state, s->block, &s->n_block, &s->n_bytes, data, n, sha256_block);
}

void sl_hub_sha256_final_hex(sl_hub_sha256 *s, char hex[65]) {
    pad(s->state, s->block, s->n_block, s->n_bytes, sha256_block);
    to_hex(s->state, 8, hex);
}

void sl_hub_sha1_init(sl_hub_sha1 *s) {
    static const uint32_t iv[5] = {0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476, 0xc3d2e1f0};
    memset(s, 0, sizeof *s);
    memcpy(s->state, iv, sizeof iv);
}

void sl_hub_sha1_update(sl_hub_sha1 *s, const void *data, size_t n) {
    feed(s->state, s->block, &s->n_block, &s->n_bytes, data, n, sha1_block);
}

void sl_hub_sha1_final_hex(sl_hub_sha1 *s, char hex[41]) {
    pad(s->state, s->block, s->n_block, s->n_bytes, sha1_block);
    to_hex(s->state, 5, hex);
}
