/* test_hub.c -- the hub client's offline parts: SHA-256 / SHA-1 against the
 * FIPS 180 vectors and git's blob ids, hub id syntax, and resolution from a
 * cache laid out as huggingface_hub writes it (complete, incomplete, absent,
 * offline), plus an unreachable endpoint. Downloads are tested against the
 * mock hub by test_hub_mock.py. */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hub/hub.h"
#include "hub/hub_digest.h"
#include "test.h"

static void sha256_hex(const char *s, size_t n, size_t chunk, char out[65]) {
    sl_hub_sha256 h;
    sl_hub_sha256_init(&h);
    for (size_t off = 0; off < n; off += chunk) sl_hub_sha256_update(&h, s + off, n - off < chunk ? n - off : chunk);
    sl_hub_sha256_final_hex(&h, out);
}

static void test_sha256_vectors(void) {
    char hex[65];
    sha256_hex("", 0, 1, hex);
    CHECK_STR(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    sha256_hex("abc", 3, 3, hex);
    CHECK_STR(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    const char *two = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    for (size_t chunk = 1; chunk <= 64; chunk += 7) {
        sha256_hex(two, strlen(two), chunk, hex);
        CHECK_STR(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    }
    char *million = malloc(1000000);
    memset(million, 'a', 1000000);
    sha256_hex(million, 1000000, 4099, hex);
    CHECK_STR(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
    free(million);
}

static void test_sha1_vectors(void) {
    char hex[41];
    sl_hub_sha1 h;
    sl_hub_sha1_init(&h);
    sl_hub_sha1_final_hex(&h, hex);
    CHECK_STR(hex, "da39a3ee5e6b4b0d3255bfef95601890afd80709");
    sl_hub_sha1_init(&h);
    sl_hub_sha1_update(&h, "abc", 3);
    sl_hub_sha1_final_hex(&h, hex);
    CHECK_STR(hex, "a9993e364706816aba3e25717850c26c9cd0d89d");
    /* `printf 'hello\n' | git hash-object --stdin` */
    sl_hub_sha1_init(&h);
    sl_hub_sha1_update(&h, "blob 6\0hello\n", 13);
    sl_hub_sha1_final_hex(&h, hex);
    CHECK_STR(hex, "ce013625030ba8dba906f756967f9e9ca394464a");
}

static void test_repo_id_syntax(void) {
    CHECK(sl_hub_looks_like_repo_id("Qwen/Qwen2.5-32B-Instruct"));
    CHECK(sl_hub_looks_like_repo_id("HuggingFaceTB/SmolLM2-135M-Instruct@main"));
    CHECK(sl_hub_looks_like_repo_id("org/name@refs/pr/1"));
    CHECK(!sl_hub_looks_like_repo_id("gpt2"));
    CHECK(!sl_hub_looks_like_repo_id("/abs/path"));
    CHECK(!sl_hub_looks_like_repo_id("./org/name"));
    CHECK(!sl_hub_looks_like_repo_id("a/b/c"));
    CHECK(!sl_hub_looks_like_repo_id("org/na--me"));
    CHECK(!sl_hub_looks_like_repo_id("org/na..me"));
    CHECK(!sl_hub_looks_like_repo_id("org/name@"));
    CHECK(!sl_hub_looks_like_repo_id("org/"));
    CHECK(!sl_hub_looks_like_repo_id("org/na me"));
    CHECK(!sl_hub_looks_like_repo_id(NULL));
}

/* ---- a fake cache ---- */

static char root[64];
#define COMMIT "0123456789abcdef0123456789abcdef01234567"

static void write_file(const char *rel, const char *text) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", root, rel);
    FILE *fp = fopen(path, "wb");
    CHECK(fp != NULL);
    if (!fp) return;
    fputs(text, fp);
    fclose(fp);
}

static void make_dir(const char *rel) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", root, rel);
    mkdir(path, 0777);
}

/* snapshots/<commit>/<name> -> ../../blobs/<blob>, with the blob's text. */
static void add_file(const char *name, const char *blob, const char *text) {
    char rel[256], link[512], target[256];
    snprintf(rel, sizeof rel, "hub/models--org--tiny/blobs/%s", blob);
    write_file(rel, text);
    snprintf(link, sizeof link, "%s/hub/models--org--tiny/snapshots/" COMMIT "/%s", root, name);
    snprintf(target, sizeof target, "../../blobs/%s", blob);
    CHECK(symlink(target, link) == 0);
}

static void make_cache(void) {
    snprintf(root, sizeof root, "/tmp/sl_hub_test_XXXXXX");
    CHECK(mkdtemp(root) != NULL);
    const char *dirs[] = {"hub", "hub/models--org--tiny", "hub/models--org--tiny/refs", "hub/models--org--tiny/blobs",
                          "hub/models--org--tiny/snapshots", ("hub/models--org--tiny/snapshots/" COMMIT)};
    for (size_t i = 0; i < sizeof dirs / sizeof *dirs; i++) make_dir(dirs[i]);
    write_file("hub/models--org--tiny/refs/main", COMMIT);
    add_file("config.json", "aaaa", "{}");
    add_file("model.safetensors.index.json", "bbbb",
             "{\"weight_map\": {\"a\": \"model-00001-of-00002.safetensors\", \"b\": \"model-00002-of-00002.safetensors\"}}");
    add_file("model-00001-of-00002.safetensors", "cccc", "x");
}

static void remove_cache(void) {
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", root);
    CHECK(system(cmd) == 0);
}

static int resolve(const char *model, int offline, char **dir, sl_err *err) {
    char cache[128];
    snprintf(cache, sizeof cache, "%s/hub", root);
    sl_hub_options o = {.cache_dir = cache, .offline = offline, .endpoint = "http://127.0.0.1:1"};
    return sl_hub_resolve(model, &o, dir, err);
}

static void test_cache_resolution(void) {
    make_cache();
    char *dir = NULL, want[256];
    sl_err err = {0};
    snprintf(want, sizeof want, "%s/hub/models--org--tiny/snapshots/" COMMIT, root);

    /* One shard of two: incomplete, offline says so. */
    CHECK(resolve("org/tiny", 1, &dir, &err) == SL_ENOTFOUND);
    CHECK_CONTAINS(err.msg, "incomplete");
    CHECK_CONTAINS(err.msg, "model-00002-of-00002.safetensors");

    add_file("model-00002-of-00002.safetensors", "dddd", "y");
    CHECK_EQ_INT(resolve("org/tiny", 1, &dir, &err), 0);
    CHECK_STR(dir, want);
    free(dir);
    /* Complete: online too, without a request (the endpoint is unreachable). */
    CHECK_EQ_INT(resolve("org/tiny", 0, &dir, &err), 0);
    CHECK_STR(dir, want);
    free(dir);
    /* A commit hash needs no ref. */
    CHECK_EQ_INT(resolve("org/tiny@" COMMIT, 1, &dir, &err), 0);
    CHECK_STR(dir, want);
    free(dir);

    CHECK(resolve("org/other", 1, &dir, &err) == SL_ENOTFOUND);
    CHECK_CONTAINS(err.msg, "HF_HUB_OFFLINE is set and model org/other (revision main) is not in the cache");
    CHECK(resolve("org/tiny@v2", 1, &dir, &err) == SL_ENOTFOUND);
    CHECK_CONTAINS(err.msg, "revision v2");

    /* Online with the hub unreachable: says so and points at offline mode. */
    CHECK(resolve("org/other", 0, &dir, &err) == SL_EIO);
    CHECK_CONTAINS(err.msg, "cannot reach the hub at http://127.0.0.1:1");
    CHECK_CONTAINS(err.msg, "HF_HUB_OFFLINE=1");
    CHECK(dir == NULL);

    /* A local path is returned as is; neither path nor id is named as such. */
    CHECK_EQ_INT(resolve(root, 1, &dir, &err), 0);
    CHECK_STR(dir, root);
    free(dir);
    CHECK(resolve("no-such-folder", 1, &dir, &err) == SL_ENOTFOUND);
    CHECK_CONTAINS(err.msg, "neither an existing local path nor a hub id");

    sl_hub_options conflict = {.revision = "v1", .offline = 1};
    CHECK(sl_hub_resolve("org/tiny@v2", &conflict, &dir, &err) == SL_EINVAL);
    CHECK_CONTAINS(err.msg, "--revision");
    remove_cache();
}

static void test_env_settings(void) {
    make_cache();
    add_file("model-00002-of-00002.safetensors", "dddd", "y");
    char home[128], *dir = NULL;
    snprintf(home, sizeof home, "%s", root); /* HF_HOME/hub is the cache */
    unsetenv("HF_HUB_CACHE");
    unsetenv("HUGGINGFACE_HUB_CACHE");
    setenv("HF_HOME", home, 1);
    setenv("HF_HUB_OFFLINE", "yes", 1);
    setenv("HF_ENDPOINT", "http://127.0.0.1:1/", 1);
    sl_err err = {0};
    sl_hub_options o = {.offline = -1};
    CHECK_EQ_INT(sl_hub_resolve("org/tiny", &o, &dir, &err), 0);
    CHECK(dir && strstr(dir, "/hub/models--org--tiny/snapshots/" COMMIT));
    free(dir);
    CHECK(sl_hub_resolve("org/absent", &o, &dir, &err) == SL_ENOTFOUND);
    CHECK_CONTAINS(err.msg, "HF_HUB_OFFLINE is set");
    unsetenv("HF_HUB_OFFLINE");
    CHECK(sl_hub_resolve("org/absent", &o, &dir, &err) == SL_EIO);
    CHECK_CONTAINS(err.msg, "http://127.0.0.1:1 "); /* trailing slash dropped */
    unsetenv("HF_HOME");
    unsetenv("HF_ENDPOINT");
    remove_cache();
}

int main(void) {
    TEST_RUN(test_sha256_vectors);
    TEST_RUN(test_sha1_vectors);
    TEST_RUN(test_repo_id_syntax);
    TEST_RUN(test_cache_resolution);
    TEST_RUN(test_env_settings);
    TEST_EXIT();
}
