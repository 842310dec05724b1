/* replay.c -- runs every file of the fuzz corpus through the fuzz entry
 * point, so ctest (and the sanitizer build) re-checks each saved input. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/fs.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s CORPUS_DIR\n", argv[0]);
        return 2;
    }
    DIR *dir = opendir(argv[1]);
    if (!dir) {
        fprintf(stderr, "cannot open corpus %s\n", argv[1]);
        return 1;
    }
    int count = 0;
    struct dirent *e;
    while ((e = readdir(dir))) {
        if (e->d_name[0] == '.') continue;
        char *path = sl_path_join(argv[1], e->d_name);
        char *data = NULL;
        size_t n = 0;
        sl_err err;
        if (path && sl_file_read_all(path, &data, &n, &err) == 0) {
            LLVMFuzzerTestOneInput((const uint8_t *)data, n);
            count++;
        }
        free(data);
        free(path);
    }
    closedir(dir);
    fprintf(stderr, "replayed %d corpus inputs\n", count);
    return count ? 0 : 1;
}
