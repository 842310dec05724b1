/* hub.h -- models by Hugging Face hub id: the shared HF cache, and downloads
 * into it when a model is missing.
 *
 * `shardlm serve org/name` resolves the id to a snapshot folder in the cache
 * that huggingface_hub, transformers and vLLM use (models--org--name/refs,
 * snapshots/<commit>/ of relative symlinks into blobs/<etag>), so every tool
 * shares one copy on disk. A complete cached snapshot is used without any
 * request; otherwise the hub API lists the repository, and the config,
 * tokenizer files and safetensors shards are downloaded (parallel, resumed
 * from blobs/<etag>.incomplete, verified by sha256 / git blob sha1) before
 * the snapshot is returned. Errors name the model and say what to do (set
 * HF_TOKEN for a gated model, HF_HUB_OFFLINE=1 to stay off the network). */
#ifndef SL_HUB_H
#define SL_HUB_H

#include <stdbool.h>
#include <stdio.h>

#include "util/error.h"

typedef struct sl_hub_options {
    const char *revision;      /* NULL: "main" (or the @rev in the id) */
    const char *cache_dir;     /* NULL: $HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub; --download-dir sets it */
    const char *token;         /* NULL: $HF_TOKEN, else the token file $HF_HOME/token as huggingface_hub does */
    const char *endpoint;      /* NULL: $HF_ENDPOINT, else https://huggingface.co */
    int offline;               /* -1: from $HF_HUB_OFFLINE; 0/1 force */
    FILE *progress;            /* NULL: stderr */
    int max_parallel;          /* parallel shard downloads, 0: default 4 */
} sl_hub_options;

/* MODEL is a local folder if one exists (returned as is); otherwise
 * org/name[@revision] resolved in the HF cache, downloaded when missing.
 * *out_dir: a snapshot folder path the caller frees. A zeroed options struct
 * is valid except `offline`, which callers set to -1 for the environment's
 * choice. Several processes may resolve the same model at once: one
 * downloads each file and the others wait for it (file locks in the cache). */
int sl_hub_resolve(const char *model, const sl_hub_options *opts, char **out_dir, sl_err *err);

/* True for "org/name" or "org/name@revision" with the hub's name rules
 * (letters, digits, '-', '_', '.'; no "--" or ".."; at most 96 characters a
 * part). Says nothing about whether the repository exists. */
bool sl_hub_looks_like_repo_id(const char *model);

#endif
