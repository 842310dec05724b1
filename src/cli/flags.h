/* flags.h -- command-line flags, declared as a table.
 *
 * Each subcommand lists its flags (vLLM's names, grouped as vLLM's --help
 * groups them) and calls sl_flags_parse. `--name value` and `--name=value`
 * both work, `--max_model_len` as `--max-model-len` (as vLLM's parser);
 * booleans take `--name` / `--no-name`; vLLM's other names of a flag (`-tp`,
 * `--kv-cache-memory-bytes`) work wherever the flag does. An unknown flag
 * is an error naming the flags it most likely meant (an alias, a close
 * misspelling, a prefix or whole words of a name), or none when nothing is
 * close. */
#ifndef SL_CLI_FLAGS_H
#define SL_CLI_FLAGS_H

#include <stdint.h>
#include <stdio.h>

#include "util/error.h"

typedef enum {
    SL_FLAG_STRING, /* dest: const char ** (points into argv) */
    SL_FLAG_INT,    /* dest: int * */
    SL_FLAG_FLOAT,  /* dest: double * */
    SL_FLAG_BOOL,   /* dest: int * (1 / 0) */
    SL_FLAG_BYTES,  /* dest: int64_t *; a size, as sl_parse_bytes reads it */
    SL_FLAG_INT64,  /* dest: int64_t * (seeds) */
} sl_flag_type;

typedef struct sl_flag {
    const char *name;     /* "--max-model-len" */
    sl_flag_type type;
    void *dest;
    const char *group;    /* help section, e.g. "ModelConfig" */
    const char *help;
    const char *metavar;  /* NULL: derived from the type */
} sl_flag;

/* Parses argv[0..argc) (no program name). Non-flag words go to positional
 * (up to max_positional; more is an error). `--help`/`-h` sets *help. */
int sl_flags_parse(const sl_flag *flags, int n_flags, int argc, char **argv, const char **positional,
                   int max_positional, int *n_positional, int *help, sl_err *err);

/* Usage line, then the flags by group in table order. */
void sl_flags_print_help(FILE *out, const char *usage, const sl_flag *flags, int n_flags);

/* A size in bytes, the one syntax of every size flag: a number (integer or
 * decimal), then optionally K, M, G or T, then optionally B or iB, in any
 * case, a space allowed before the unit: "48G", "48GB", "48 gb", "1.5GiB",
 * "512Ki", "1000". K/M/G/T are powers of 1000 and Ki/Mi/Gi/Ti powers of 1024
 * (as shardlm prints GB and GiB; unlike vLLM's human_readable_int, where an
 * upper-case K/M/G is binary). Refuses anything else, negatives and overflow. */
int sl_parse_bytes(const char *s, int64_t *out);

/* The model given as the positional MODEL (NULL: none) or as --model (NULL:
 * none), as vLLM takes both; an error when both are given and differ. */
int sl_model_arg(const char *positional, const char *flag, const char **model, sl_err *err);

#endif
