/* hub_digest.h -- SHA-256 and SHA-1, streaming, for verifying hub downloads.
 *
 * The hub names a Git LFS file by the SHA-256 of its bytes and any other file
 * by its Git blob id, the SHA-1 of "blob <size>\0" followed by its bytes.
 * Both digests are computed while a file streams in, so a download is
 * verified without reading it twice. Internal to src/hub. */
#ifndef SL_HUB_DIGEST_H
#define SL_HUB_DIGEST_H

#include <stddef.h>
#include <stdint.h>

typedef struct sl_hub_sha256 {
    uint32_t state[8];
    uint64_t n_bytes;
    uint8_t block[64];
    size_t n_block;
} sl_hub_sha256;

void sl_hub_sha256_init(sl_hub_sha256 *s);
void sl_hub_sha256_update(sl_hub_sha256 *s, const void *data, size_t n);
/* Writes 64 lowercase hex digits and a NUL into hex. */
void sl_hub_sha256_final_hex(sl_hub_sha256 *s, char hex[65]);

typedef struct sl_hub_sha1 {
    uint32_t state[5];
    uint64_t n_bytes;
    uint8_t block[64];
    size_t n_block;
} sl_hub_sha1;

void sl_hub_sha1_init(sl_hub_sha1 *s);
void sl_hub_sha1_update(sl_hub_sha1 *s, const void *data, size_t n);
/* Writes 40 lowercase hex digits and a NUL into hex. */
void sl_hub_sha1_final_hex(sl_hub_sha1 *s, char hex[41]);

#endif
