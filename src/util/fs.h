/* fs.h -- files: read whole, map read-only, join paths, test existence.
 *
 * Model weights are never copied into memory: sl_mapped_file maps a file
 * read-only and the loaders hand out pointers into that mapping. */
#ifndef SL_UTIL_FS_H
#define SL_UTIL_FS_H

#include <stdbool.h>
#include <stddef.h>

#include "util/error.h"

typedef struct sl_mapped_file {
    void *data;     /* NULL when empty */
    size_t n_bytes;
    char *path;     /* owned copy, for error messages */
} sl_mapped_file;

int sl_file_map(sl_mapped_file *out, const char *path, sl_err *err);
void sl_file_unmap(sl_mapped_file *f);

/* Reads a whole file into a NUL-terminated heap buffer the caller frees. */
int sl_file_read_all(const char *path, char **out, size_t *out_n_bytes, sl_err *err);

bool sl_path_exists(const char *path);
bool sl_path_is_dir(const char *path);
/* Writes dir + "/" + name into a fresh heap string (NULL when out of memory). */
char *sl_path_join(const char *dir, const char *name);

#endif
