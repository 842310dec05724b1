/* main.c -- the `shardlm` command: dispatches to the subcommands. */
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv) {
    if (argc < 2 || strcmp(argv[1], "--help") == 0) {
        printf("usage: shardlm <generate|serve|bench|plan> ...\n");
        return argc < 2 ? 2 : 0;
    }
    fprintf(stderr, "shardlm: unknown command '%s'\n", argv[1]);
    return 2;
}
