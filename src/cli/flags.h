/* flags.h -- command-line flags, declared as a table.
 *
 * Each subcommand lists its flags (vLLM's names, grouped as vLLM's --help
 * groups them) and calls sl_flags_parse. `--name value` and `--name=value`
 * both work; booleans take `--name` / `--no-name`. An unknown flag is an
 * error naming the closest known one. */
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
    SL_FLAG_BYTES,  /* dest: int64_t *; accepts 512M, 4G, 1.5GiB, 1000 */
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

/* Parses "512M", "4GiB", "1.5G", "1000" as bytes. */
int sl_parse_bytes(const char *s, int64_t *out);

#endif
