/* cmd_generate.c -- `shardlm generate`: offline generation through the engine.
 *
 * One prompt (--prompt TEXT, streamed to stdout as it is generated, or
 * --prompt-ids 1,2,3, printing the generated ids) or many (--prompts-file
 * F.jsonl: one JSON object per line with "prompt", "prompt_token_ids" or
 * "messages", and optional per-line sampling fields; all are submitted at
 * once so the engine batches them, and results are written as JSONL in input
 * order, with a progress bar on a terminal). */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/commands.h"
#include "cli/engine_flags.h"
#include "util/progress.h"

typedef struct gen_flags {
    const char *prompt, *prompt_ids, *prompts_file, *output, *stop;
    int max_tokens, top_k, n, chat, ignore_eos, print_ids, logprobs;
    double temperature, top_p, min_p, repetition_penalty;
} gen_flags;

static int parse_ids(const char *s, int32_t **ids, int *n, sl_err *err) {
    *n = 0;
    *ids = malloc(sizeof(int32_t) * (strlen(s) / 2 + 2));
    if (!*ids) return sl_err_set(err, SL_ENOMEM, "out of memory");
    for (const char *p = s; *p;) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || v < 0 || v > INT32_MAX) return sl_err_set(err, SL_EINVAL, "--prompt-ids expects ids like 1,2,3; got \"%s\"", s);
        (*ids)[(*n)++] = (int32_t)v;
        p = end;
        while (*p == ',' || *p == ' ') p++;
    }
    return *n ? SL_OK : sl_err_set(err, SL_EINVAL, "--prompt-ids is empty");
}

static void apply_flags(const gen_flags *f, sl_sampling *p) {
    p->max_tokens = f->max_tokens;
    if (!isnan(f->temperature)) p->temperature = (float)f->temperature;
    if (!isnan(f->top_p)) p->top_p = (float)f->top_p;
    if (!isnan(f->min_p)) p->min_p = (float)f->min_p;
    if (!isnan(f->repetition_penalty)) p->repetition_penalty = (float)f->repetition_penalty;
    if (f->top_k != SL_UNSET) p->top_k = f->top_k;
    p->n = f->n;
    p->ignore_eos = f->ignore_eos;
    p->logprobs = f->logprobs;
}

/* A chat prompt from one user message or a messages array. */
static int chat_prompt(sl_engine *e, const char *messages_json, char **prompt, sl_err *err) {
    char msg[1024];
    int rc = sl_engine_apply_chat_template(e, messages_json, NULL, prompt, msg, sizeof msg);
    return rc ? sl_err_set(err, rc, "%s", msg) : SL_OK;
}

/* ---- one prompt ---- */

static int run_one(sl_engine *e, const gen_flags *f, sl_err *err) {
    sl_request r;
    sl_request_init(&r);
    apply_flags(f, &r.params);
    int32_t *ids = NULL;
    char *chat = NULL;
    int rc = SL_OK, n_ids = 0;
    if (f->prompt_ids) {
        rc = parse_ids(f->prompt_ids, &ids, &n_ids, err);
        r.prompt_ids = ids;
        r.n_prompt_ids = n_ids;
    } else if (f->chat) {
        json_t *m = json_pack("[{ssss}]", "role", "user", "content", f->prompt);
        char *mj = json_dumps(m, 0);
        rc = chat_prompt(e, mj, &chat, err);
        free(mj);
        json_decref(m);
        r.prompt = chat;
        r.add_special_tokens = 0; /* the template wrote the special tokens */
    } else {
        r.prompt = f->prompt;
    }
    const char *stops[1] = {f->stop};
    if (f->stop) r.params.stop = stops, r.params.n_stop = 1;
    char msg[1024];
    uint64_t id;
    if (!rc && (rc = sl_engine_submit(e, &r, NULL, NULL, &id, msg, sizeof msg))) sl_err_set(err, rc, "%s", msg);
    int done = 0, n_choices = r.params.n;
    sl_output *o;
    while (!rc && done < n_choices && sl_engine_poll(e, id, -1, &o) == 0) {
        if (f->prompt_ids || f->print_ids) {
            for (int i = 0; i < o->n_tokens; i++) printf("%s%d", o->n_output_tokens - o->n_tokens + i ? "," : "", o->token_ids[i]);
        } else {
            fwrite(o->text, 1, o->text_len, stdout);
        }
        fflush(stdout);
        if (o->finished) {
            static const char *why[] = {"", "stop", "length", "abort"};
            done++;
            printf("\n");
            fprintf(stderr, "[%d prompt + %d generated tokens, finish_reason %s]\n", o->n_prompt_tokens,
                    o->n_output_tokens, why[o->finish_reason]);
            if (o->error) rc = sl_err_set(err, SL_EIO, "%s", o->error);
        }
        sl_output_free(o);
    }
    free(ids);
    free(chat);
    return rc;
}

/* ---- a JSONL file of prompts ---- */

/* --prompts-file and --output, opened before the model loads. */
typedef struct files {
    FILE *in, *out; /* NULL: not given */
} files;

static int open_files(const gen_flags *f, files *io, sl_err *err) {
    if (f->prompts_file) {
        io->in = strcmp(f->prompts_file, "-") == 0 ? stdin : fopen(f->prompts_file, "r");
        if (!io->in) return sl_err_set(err, SL_ENOTFOUND, "--prompts-file %s: %s", f->prompts_file, strerror(errno));
        struct stat st; /* a folder opens, then every read fails: say so now, not after the model loads */
        if (fstat(fileno(io->in), &st) == 0 && S_ISDIR(st.st_mode))
            return sl_err_set(err, SL_EINVAL, "--prompts-file %s: %s (give a JSONL file)", f->prompts_file,
                              strerror(EISDIR));
    }
    if (f->output && f->prompts_file) {
        io->out = fopen(f->output, "w");
        if (!io->out) return sl_err_set(err, SL_EIO, "--output %s: %s", f->output, strerror(errno));
    }
    return SL_OK;
}

static void close_files(files *io) {
    if (io->in && io->in != stdin) fclose(io->in);
    if (io->out) fclose(io->out);
    *io = (files){0};
}

typedef struct job {
    uint64_t id;
    int n_choices;
    json_t *result;
} job;

static int submit_line(sl_engine *e, const gen_flags *f, json_t *line, job *j, int lineno, sl_err *err) {
    sl_request r;
    sl_request_init(&r);
    apply_flags(f, &r.params);
    const json_t *v;
    if ((v = json_object_get(line, "max_tokens")) && json_is_integer(v)) r.params.max_tokens = (int)json_integer_value(v);
    if ((v = json_object_get(line, "temperature")) && json_is_number(v)) r.params.temperature = (float)json_number_value(v);
    if ((v = json_object_get(line, "top_p")) && json_is_number(v)) r.params.top_p = (float)json_number_value(v);
    if ((v = json_object_get(line, "top_k")) && json_is_integer(v)) r.params.top_k = (int)json_integer_value(v);
    if ((v = json_object_get(line, "seed")) && json_is_integer(v)) r.params.seed = json_integer_value(v);
    if ((v = json_object_get(line, "n")) && json_is_integer(v)) r.params.n = (int)json_integer_value(v);
    if ((v = json_object_get(line, "logprobs")) && json_is_integer(v)) r.params.logprobs = (int)json_integer_value(v);
    const char *stops[16];
    v = json_object_get(line, "stop");
    if (json_is_string(v)) stops[r.params.n_stop++] = json_string_value(v);
    for (size_t i = 0; json_is_array(v) && i < json_array_size(v) && i < 16; i++)
        if (json_is_string(json_array_get(v, i))) stops[r.params.n_stop++] = json_string_value(json_array_get(v, i));
    r.params.stop = stops;
    int32_t *ids = NULL;
    char *chat = NULL;
    int rc = SL_OK;
    const json_t *ids_json = json_object_get(line, "prompt_token_ids"), *messages = json_object_get(line, "messages");
    if (json_is_string(json_object_get(line, "prompt"))) {
        r.prompt = json_string_value(json_object_get(line, "prompt"));
    } else if (json_is_array(ids_json)) {
        ids = malloc(sizeof(int32_t) * (json_array_size(ids_json) + 1));
        for (size_t i = 0; ids && i < json_array_size(ids_json); i++) ids[i] = (int32_t)json_integer_value(json_array_get(ids_json, i));
        r.prompt_ids = ids;
        r.n_prompt_ids = (int)json_array_size(ids_json);
    } else if (json_is_array(messages)) {
        char *mj = json_dumps(messages, 0);
        rc = chat_prompt(e, mj, &chat, err);
        free(mj);
        r.prompt = chat;
        r.add_special_tokens = 0;
    } else {
        rc = sl_err_set(err, SL_EINVAL, "%s:%d: needs \"prompt\", \"prompt_token_ids\" or \"messages\"",
                        f->prompts_file, lineno);
    }
    char msg[1024];
    if (!rc && (rc = sl_engine_submit(e, &r, NULL, NULL, &j->id, msg, sizeof msg)))
        sl_err_set(err, rc, "%s:%d: %s", f->prompts_file, lineno, msg);
    j->n_choices = r.params.n;
    free(ids);
    free(chat);
    return rc;
}

/* The job's outputs as one JSON result; the first failure of one (the engine died) goes to err. */
static json_t *collect_job(sl_engine *e, job *j, int index, sl_err *err) {
    json_t *outs = json_array();
    for (int i = 0; i < j->n_choices; i++)
        json_array_append_new(outs, json_pack("{sis:s,s:[],s:n}", "index", i, "text", "", "token_ids", "finish_reason"));
    bool with_logprobs = false;
    int done = 0, n_prompt = 0, n_out = 0;
    sl_output *o;
    while (done < j->n_choices && sl_engine_poll(e, j->id, -1, &o) == 0) {
        json_t *c = json_array_get(outs, (size_t)o->index);
        json_t *text = json_object_get(c, "text");
        size_t old = json_string_length(text);
        char *joined = malloc(old + o->text_len + 1);
        memcpy(joined, json_string_value(text), old);
        memcpy(joined + old, o->text, o->text_len);
        json_object_set_new(c, "text", json_stringn(joined, old + o->text_len));
        free(joined);
        for (int i = 0; i < o->n_tokens; i++) json_array_append_new(json_object_get(c, "token_ids"), json_integer(o->token_ids[i]));
        if (o->logprobs && !with_logprobs) {
            with_logprobs = true;
            for (int k = 0; k < j->n_choices; k++) {
                json_object_set_new(json_array_get(outs, (size_t)k), "logprobs", json_array());
                json_object_set_new(json_array_get(outs, (size_t)k), "top_logprobs", json_array());
            }
        }
        for (int i = 0; o->logprobs && i < o->n_tokens; i++) {
            json_array_append_new(json_object_get(c, "logprobs"), json_real(o->logprobs[i]));
            json_t *top = json_array();
            for (int k = 0; k < o->n_top; k++)
                json_array_append_new(top, json_pack("[if]", o->top_ids[i * o->n_top + k],
                                                     (double)o->top_logprobs[i * o->n_top + k]));
            json_array_append_new(json_object_get(c, "top_logprobs"), top);
        }
        if (o->error && !err->code) sl_err_set(err, SL_EIO, "prompt %d: %s", index, o->error);
        if (o->finished) {
            static const char *why[] = {NULL, "stop", "length", "abort"};
            json_object_set_new(c, "finish_reason", json_string(why[o->finish_reason]));
            n_prompt = o->n_prompt_tokens;
            n_out += o->n_output_tokens;
            done++;
        }
        sl_output_free(o);
    }
    return json_pack("{sosisi}", "outputs", outs, "prompt_tokens", n_prompt, "completion_tokens", n_out);
}

static int run_file(sl_engine *e, const gen_flags *f, const files *io, sl_err *err) {
    FILE *in = io->in, *out = io->out ? io->out : stdout;
    job *jobs = NULL;
    int n = 0, cap = 0, rc = SL_OK;
    char *line = NULL;
    size_t line_cap = 0;
    int lineno = 1;
    for (; !rc && getline(&line, &line_cap, in) > 0; lineno++) {
        if (line[strspn(line, " \t\r\n")] == '\0') continue;
        json_error_t jerr;
        json_t *obj = json_loads(line, 0, &jerr);
        if (!json_is_object(obj)) {
            rc = sl_err_set(err, SL_EINVAL, "%s:%d: not a JSON object: %s", f->prompts_file, lineno, obj ? "" : jerr.text);
        } else {
            if (n == cap) jobs = realloc(jobs, sizeof *jobs * (size_t)(cap = cap ? cap * 2 : 64));
            jobs[n] = (job){0};
            rc = submit_line(e, f, obj, &jobs[n], lineno, err);
            if (!rc) n++;
        }
        json_decref(obj);
    }
    if (!rc && ferror(in)) /* a read that failed is not the end of the prompts */
        rc = sl_err_set(err, SL_EIO, "%s:%d: cannot read: %s", f->prompts_file, lineno, strerror(errno));
    free(line);
    sl_err failed = {0}; /* a prompt that ended in an error: every output is written, then the exit is non-zero */
    sl_progress bar;
    sl_progress_start(&bar, stderr, "generate", (uint64_t)n, "prompts");
    for (int i = 0; i < n; i++) {
        if (rc) { /* a bad line: stop what was queued */
            sl_engine_abort(e, jobs[i].id);
        }
        json_t *res = collect_job(e, &jobs[i], i, &failed);
        json_object_set_new(res, "index", json_integer(i));
        if (!rc) {
            char *s = json_dumps(res, JSON_COMPACT);
            fprintf(out, "%s\n", s);
            free(s);
        }
        json_decref(res);
        sl_progress_update(&bar, (uint64_t)i + 1);
    }
    sl_progress_finish(&bar);
    free(jobs);
    if (!rc && failed.code) *err = failed, rc = failed.code;
    return rc;
}

int sl_cmd_generate(int argc, char **argv) {
    sl_engine_options o;
    sl_engine_options_init(&o);
    sl_engine_flag_values v;
    gen_flags f = {.temperature = NAN, .top_p = NAN, .min_p = NAN, .repetition_penalty = NAN, .top_k = SL_UNSET,
                   .max_tokens = 64, .n = 1, .logprobs = -1};
    sl_flag flags[64];
    int n = sl_engine_flags(&o, &v, flags, 64);
    const sl_flag mine[] = {
        {"--prompt", SL_FLAG_STRING, &f.prompt, "Input", "prompt text", "TEXT"},
        {"--prompt-ids", SL_FLAG_STRING, &f.prompt_ids, "Input", "prompt token ids, e.g. 1,2,3 (prints generated ids)", "IDS"},
        {"--prompts-file", SL_FLAG_STRING, &f.prompts_file, "Input", "JSONL prompts (\"prompt\" | \"prompt_token_ids\" | \"messages\"); - for stdin", "FILE"},
        {"--chat", SL_FLAG_BOOL, &f.chat, "Input", "wrap --prompt as a user message in the model's chat template", NULL},
        {"--output", SL_FLAG_STRING, &f.output, "Input", "write JSONL results here instead of stdout", "FILE"},
        {"--max-tokens", SL_FLAG_INT, &f.max_tokens, "SamplingParams", "tokens to generate per prompt (64)", NULL},
        {"--temperature", SL_FLAG_FLOAT, &f.temperature, "SamplingParams", "0 is greedy (default: the model's, else 1)", NULL},
        {"--top-p", SL_FLAG_FLOAT, &f.top_p, "SamplingParams", "nucleus sampling mass (1: off)", NULL},
        {"--top-k", SL_FLAG_INT, &f.top_k, "SamplingParams", "sample among the k most likely tokens (0: off)", NULL},
        {"--min-p", SL_FLAG_FLOAT, &f.min_p, "SamplingParams", "drop tokens below min_p x the top probability", NULL},
        {"--repetition-penalty", SL_FLAG_FLOAT, &f.repetition_penalty, "SamplingParams", "penalize tokens already seen (1: off)", NULL},
        {"--n", SL_FLAG_INT, &f.n, "SamplingParams", "completions per prompt (1)", NULL},
        {"--stop", SL_FLAG_STRING, &f.stop, "SamplingParams", "stop string", "STR"},
        {"--ignore-eos", SL_FLAG_BOOL, &f.ignore_eos, "SamplingParams", "keep generating past end-of-sequence", NULL},
        {"--logprobs", SL_FLAG_INT, &f.logprobs, "SamplingParams", "top logprobs per token (JSONL output)", NULL},
        {"--print-ids", SL_FLAG_BOOL, &f.print_ids, "SamplingParams", "print token ids instead of text", NULL},
    };
    memcpy(flags + n, mine, sizeof mine);
    n += (int)(sizeof mine / sizeof mine[0]);
    const char *positional[1];
    int n_pos, help;
    sl_err err = {0};
    int rc = sl_flags_parse(flags, n, argc, argv, positional, 1, &n_pos, &help, &err);
    if (!rc && help) {
        sl_flags_print_help(stdout, "shardlm generate [MODEL] (--prompt TEXT | --prompt-ids IDS | --prompts-file FILE) [flags]", flags, n);
        return 0;
    }
    if (!rc) rc = sl_engine_flags_finish(&o, &v, n_pos ? positional[0] : NULL, &err);
    if (!rc && !!f.prompt + !!f.prompt_ids + !!f.prompts_file != 1)
        rc = sl_err_set(&err, SL_EINVAL, "give exactly one of --prompt, --prompt-ids, --prompts-file");
    if (!rc && (f.max_tokens < 1 || f.n < 1)) /* as vLLM's SamplingParams */
        rc = sl_err_set(&err, SL_EINVAL, "%s must be at least 1, got %d", f.n < 1 ? "--n" : "--max-tokens",
                        f.n < 1 ? f.n : f.max_tokens);
    if (!rc && f.logprobs < -1)
        rc = sl_err_set(&err, SL_EINVAL, "--logprobs must be 0 or more, got %d", f.logprobs);
    if (rc) {
        fprintf(stderr, "shardlm generate: %s\n", err.msg);
        return 2;
    }
    files io = {0};
    if ((rc = open_files(&f, &io, &err))) { /* before the model loads: a wrong path costs no load */
        fprintf(stderr, "shardlm generate: %s\n", err.msg);
        close_files(&io);
        return 1;
    }
    sl_engine *e;
    char msg[1024];
    if ((rc = sl_engine_open(&o, &e, msg, sizeof msg))) {
        fprintf(stderr, "shardlm generate: %s\n", msg);
        close_files(&io);
        return 1;
    }
    sl_engine_flags_warn(&v, e);
    rc = f.prompts_file ? run_file(e, &f, &io, &err) : run_one(e, &f, &err);
    sl_engine_close(e);
    close_files(&io);
    if (rc) fprintf(stderr, "shardlm generate: %s\n", err.msg);
    return rc ? 1 : 0;
}
