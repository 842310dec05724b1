/* fs.c -- file helpers: read-only mappings for weights, whole-file reads for
 * configs and tokenizers, path utilities. */
#include "util/fs.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

int sl_file_map(sl_mapped_file *out, const char *path, sl_err *err) {
    memset(out, 0, sizeof *out);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return sl_err_set(err, errno == ENOENT ? SL_ENOTFOUND : SL_EIO,
                                  "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return sl_err_set(err, SL_EIO, "%s: cannot stat: %s", path, strerror(e));
    }
    out->path = strdup(path);
    out->n_bytes = (size_t)st.st_size;
    if (!out->path) {
        close(fd);
        return sl_err_set(err, SL_ENOMEM, "%s: out of memory", path);
    }
    if (out->n_bytes > 0) {
        void *p = mmap(NULL, out->n_bytes, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED) {
            int e = errno;
            close(fd);
            free(out->path);
            out->path = NULL;
            return sl_err_set(err, SL_EIO, "%s: cannot map: %s", path, strerror(e));
        }
        out->data = p;
    }
    close(fd);
    return SL_OK;
}

void sl_file_unmap(sl_mapped_file *f) {
    if (f->data) munmap(f->data, f->n_bytes);
    free(f->path);
    memset(f, 0, sizeof *f);
}

int sl_file_read_all(const char *path, char **out, size_t *out_n_bytes, sl_err *err) {
    *out = NULL;
    FILE *fp = fopen(path, "rb");
    if (!fp) return sl_err_set(err, errno == ENOENT ? SL_ENOTFOUND : SL_EIO,
                               "%s: cannot open: %s", path, strerror(errno));
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap + 1);
    while (buf) {
        size_t got = fread(buf + n, 1, cap - n, fp);
        n += got;
        if (n < cap) break;
        cap *= 2;
        char *grown = realloc(buf, cap + 1);
        if (!grown) { free(buf); buf = NULL; }
        buf = grown;
    }
    int failed = ferror(fp);
    fclose(fp);
    if (!buf) return sl_err_set(err, SL_ENOMEM, "%s: out of memory reading the file", path);
    if (failed) {
        free(buf);
        return sl_err_set(err, SL_EIO, "%s: read error", path);
    }
    buf[n] = '\0';
    *out = buf;
    if (out_n_bytes) *out_n_bytes = n;
    return SL_OK;
}

bool sl_path_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

bool sl_path_is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

char *sl_path_join(const char *dir, const char *name) {
    size_t a = strlen(dir), b = strlen(name);
    char *s = malloc(a + b + 2);
    if (!s) return NULL;
    memcpy(s, dir, a);
    size_t n = a;
    if (a > 0 && dir[a - 1] != '/') s[n++] = '/';
    memcpy(s + n, name, b + 1);
    return s;
}
