/* fuzz_safetensors.c -- libFuzzer entry: any bytes as a safetensors image.
 * The parser must return an error or a consistent index, never crash or read
 * outside the buffer. Every tensor it accepts must lie inside the image. */
#include <stdint.h>
#include <stdlib.h>

#include "model/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n_bytes);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n_bytes) {
    sl_safetensors *st = sl_safetensors_new();
    if (!st) return 0;
    sl_err err = {0};
    if (sl_safetensors_parse(st, data, n_bytes, "fuzz.safetensors", &err) == 0) {
        for (size_t i = 0; i < sl_safetensors_count(st); i++) {
            const sl_st_tensor *t = sl_safetensors_at(st, i);
            const uint8_t *p = t->data;
            if (p < data || p + t->n_bytes > data + n_bytes) abort();
        }
    }
    sl_safetensors_close(st);
    return 0;
}
