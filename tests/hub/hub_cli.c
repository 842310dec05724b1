/* hub_cli.c -- a small driver of sl_hub_resolve for the Python hub tests:
 *
 *   hub_cli MODEL [--revision R] [--cache-dir D] [--endpoint URL] [--token T]
 *                 [--offline 0|1] [--parallel N]
 *
 * Unset options come from the environment as in shardlm itself. Prints the
 * resolved folder on stdout, or "error: <message>" on stderr and exits 2. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hub/hub.h"

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s MODEL [--revision R] [--cache-dir D] [--endpoint URL] [--token T] "
                        "[--offline 0|1] [--parallel N]\n", argv[0]);
        return 1;
    }
    sl_hub_options o = {.offline = -1};
    for (int i = 2; i + 1 < argc; i += 2) {
        const char *k = argv[i], *v = argv[i + 1];
        if (strcmp(k, "--revision") == 0) o.revision = v;
        else if (strcmp(k, "--cache-dir") == 0) o.cache_dir = v;
        else if (strcmp(k, "--endpoint") == 0) o.endpoint = v;
        else if (strcmp(k, "--token") == 0) o.token = v;
        else if (strcmp(k, "--offline") == 0) o.offline = atoi(v);
        else if (strcmp(k, "--parallel") == 0) o.max_parallel = atoi(v);
        else {
            fprintf(stderr, "unknown option %s\n", k);
            return 1;
        }
    }
    char *dir = NULL;
    sl_err err = {0};
    if (sl_hub_resolve(argv[1], &o, &dir, &err) != 0) {
        fprintf(stderr, "error: %s\n", err.msg);
        return 2;
    }
    printf("%s\n", dir);
    free(dir);
    return 0;
}
