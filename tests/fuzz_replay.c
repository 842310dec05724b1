/* fuzz_replay.c -- runs a libFuzzer entry point over every file of corpus
 * folders, so that ctest replays the kept corpora on every build (with the
 * sanitizers in the Sanitize build) without needing libFuzzer.
 * Usage: REPLAY_BINARY CORPUS_DIR... */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/fs.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n_bytes);

static int replay_dir(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) {
        fprintf(stderr, "cannot open corpus %s\n", dir);
        return -1;
    }
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char *path = sl_path_join(dir, e->d_name), *buf = NULL;
        size_t n_bytes = 0;
        if (path && sl_file_read_all(path, &buf, &n_bytes, NULL) == 0) {
            /* a private copy of exactly n_bytes, so ASan sees any read past the end */
            uint8_t *copy = malloc(n_bytes ? n_bytes : 1);
            if (copy) {
                memcpy(copy, buf, n_bytes);
                LLVMFuzzerTestOneInput(copy, n_bytes);
                free(copy);
                n++;
            }
        }
        free(buf);
        free(path);
    }
    closedir(d);
    return n;
}

int main(int argc, char **argv) {
    int total = 0;
    for (int i = 1; i < argc; i++) {
        int n = replay_dir(argv[i]);
        if (n < 0) return 1;
        total += n;
    }
    printf("replayed %d inputs\n", total);
    return total > 0 ? 0 : 1;
}
