/* replay_main.c -- runs the fuzz target over every file of the corpus
 * directories given as arguments, so CI replays the corpus without
 * libFuzzer (and under ASan/UBSan in the Sanitize build). */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "util/fs.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int main(int argc, char **argv) {
    int files = 0;
    for (int i = 1; i < argc; i++) {
        DIR *d = opendir(argv[i]);
        if (!d) {
            fprintf(stderr, "replay: cannot open %s\n", argv[i]);
            return 1;
        }
        struct dirent *e;
        while ((e = readdir(d))) {
            if (e->d_name[0] == '.') continue;
            char *path = sl_path_join(argv[i], e->d_name);
            char *buf;
            size_t n;
            sl_err err;
            if (path && !sl_file_read_all(path, &buf, &n, &err)) {
                LLVMFuzzerTestOneInput((const uint8_t *)buf, n);
                free(buf);
                files++;
            }
            free(path);
        }
        closedir(d);
    }
    printf("replayed %d inputs\n", files);
    return files ? 0 : 1;
}
