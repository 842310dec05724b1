/* engine_impl.h -- the engine's own structures, shared by engine.c (API,
 * thread, loop), scheduler.c (what each step computes) and output.c (tokens
 * to text, stops, delivery). Nothing outside src/engine/ includes it. */
#ifndef SL_ENGINE_IMPL_H
#define SL_ENGINE_IMPL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "backend/backend.h"
#include "engine/block_pool.h"
#include "engine/rank.h"
#include "engine/engine.h"
#include "engine/sampler.h"
#include "engine/sequence.h"
#include "model/model.h"
#include "shardlm.h"

/* Outputs of a request submitted without a callback, waiting for sl_engine_poll. */
typedef struct sl_poll_item {
    sl_output *out;
    struct sl_poll_item *next;
} sl_poll_item;

typedef struct sl_stream {
    uint64_t id;
    int n_choices, n_choices_done;   /* finished outputs handed to the poller */
    sl_poll_item *head, *tail;
    bool engine_done;                /* every choice's final output is queued */
    struct sl_stream *next;
} sl_stream;

/* One step (a micro-batch): the flattened arrays the model reads, which
 * sequence each row and logits row belongs to, and its logits. A sequence
 * in an in-flight step is in no other step, is never preempted, and keeps
 * its KV blocks until the step completes, even when its request is aborted
 * (the step is still writing them). */
typedef struct sl_step {
    int32_t *tokens, *positions, *slots, *query_start, *context_len, *tables, *logits_rows;
    sl_seq **seqs;                   /* [max_num_seqs] sequence of each batch row */
    int *n_new;                      /* [max_num_seqs] tokens each computes this step */
    sl_seq **logit_seqs;             /* [max_num_seqs] sequence of each logits row */
    int n_seqs, n_tokens, n_logits;
    int table_width;                 /* row length of tables: the most blocks a row holds, rounded up to a power of two */
    float *logits;                   /* [max_num_seqs][vocab] */
    /* Sampling on the backend (one process): each logits row's settings and
     * token, guided rows with their grammar's mask; the rows the host
     * samples itself (penalties, logprobs, min_tokens masks) come back whole
     * instead. */
    bool backend_samples;
    sl_sample_row *sample;           /* [max_num_seqs] */
    int32_t *sampled;                /* [max_num_seqs], backend host memory; -1: the host samples the row */
    int32_t *full_rows;              /* [max_num_seqs] */
    int n_full_rows;
    sl_guide_state **guided;         /* [max_num_seqs] grammar states of the rows with structured output */
    int n_guided;
    sl_guide_state **masked;         /* [max_num_seqs] those of guided rows the backend samples, in mask order */
    int n_masked;
    sl_guides *guides;               /* the engine's (sl_output_fill_masks reads the states through it) */
    bool in_flight;                  /* submitted, not yet completed */
    int64_t order;                   /* submission order (oldest completes first) */
    sl_exec_ticket ticket;
} sl_step;

typedef struct sl_req {
    uint64_t id;
    int64_t arrival;                 /* submission order: FCFS and preemption victims */
    sl_sampling params;              /* resolved: nothing unset */
    sl_sampling_params sp;
    bool seeded;
    char **stop;                     /* owned copies */
    int n_stop, max_stop_len;
    int32_t *stop_ids;
    int n_stop_ids;
    uint8_t *prompt_mask;            /* [vocab] for repetition_penalty, or NULL */
    sl_guide_grammar *grammar;       /* structured output (a reference into e->guides' cache), or NULL */
    sl_output_fn fn;
    void *user;
    sl_seq *seqs;                    /* [params.n] */
    int n_finished;
    bool abort;
    const char *abort_error;         /* static text, or NULL */
    struct sl_req *next;
} sl_req;

struct sl_engine {
    sl_engine_options opts;
    char *model_dir, *model_name, *default_chat_template_path;
    sl_rank rank;                    /* this process's shard, backend and executor (rank 0 of the job) */
    sl_tokenizer *tok;
    sl_chat_template *chat_template;
    char *bos_token, *eos_token;
    int vocab;                       /* rows of the LM head (config vocab_size) */
    int max_model_len, block_size, max_blocks_per_seq;
    sl_sampling defaults;            /* from generation_config.json */
    int32_t eos_ids[16];
    int n_eos_ids;

    sl_block_pool *pool;
    sl_sampler sampler;
    sl_guides *guides;               /* structured output: grammars, the vocabulary's trie, the mask worker */
    float *raw_row;                  /* [vocab] a logits row before sampling changes it, for logprobs */
    /* Micro-batch slots: one without pipeline parallelism (built, run and
     * completed in one turn of the loop), pp with it (up to pp in flight). */
    sl_step *steps;                  /* [n_slots] */
    int n_slots, n_in_flight;
    int64_t n_submitted;             /* steps submitted so far: their order */

    /* loop-owned */
    sl_req *active;                  /* requests with unfinished choices */
    sl_seq **running;                /* running sequences, arrival order */
    int n_running;
    sl_seq **waiting;                /* waiting sequences, arrival order (preempted ones keep theirs) */
    int n_waiting, cap_seqs;
    int64_t next_arrival;

    /* shared with submitting threads, under mu */
    pthread_mutex_t mu;
    pthread_cond_t wake, polled;
    sl_req *incoming, *incoming_tail;
    uint64_t *aborts;
    int n_aborts, cap_aborts;
    sl_stream *streams;
    uint64_t next_id;
    bool stopping, dead;
    char dead_reason[SL_ERR_MSG_MAX];
    sl_engine_stats stats;
    sl_rng seed_rng;                 /* seeds of requests without one, under an engine seed (opts.seed) */
    pthread_t thread;
    bool thread_started;
};

/* scheduler.c: choose a step's work and fill st's arrays; returns false
 * when there is nothing to compute. With several slots a step takes its
 * share of the work (1/n_slots of the sequences and of the token budget,
 * rounded up) and leaves sequences of in-flight steps alone. */
bool sl_sched_build_step(sl_engine *e, sl_step *st);
/* Frees a sequence's blocks and marks it waiting again (front of its arrival order). */
void sl_sched_preempt(sl_engine *e, sl_seq *s);
/* Takes a sequence out of the running/waiting lists and frees its blocks
 * (once its in-flight step, if any, has completed: call it again then). */
void sl_sched_remove(sl_engine *e, sl_seq *s);
/* Adds a newly submitted request's sequences to the waiting list. */
int sl_sched_add_request(sl_engine *e, sl_req *r);
/* Checks the invariants of the step st just built, of the in-flight steps,
 * and of every block table against the pool's reference counts. */
int sl_sched_check(sl_engine *e, const sl_step *st, sl_err *err);
/* Publishes the sequence's newly completed full blocks for prefix reuse. */
void sl_sched_publish_blocks(sl_engine *e, sl_seq *s);

/* output.c: a completed step (no longer in flight): update its sequences,
 * free the blocks of those aborted meanwhile, sample its logits rows,
 * deliver outputs. */
void sl_output_process_step(sl_engine *e, sl_step *st);
/* Before a step the backend samples: each logits row's settings (with its
 * sequence's next draw), and the rows the host must sample itself. */
void sl_output_plan_sampling(sl_engine *e, sl_step *st);
/* Finishes every choice of r with finish_reason ABORT (optionally an error). */
void sl_output_abort_request(sl_engine *e, sl_req *r, const char *error);
/* Hands the masks of the step's guided rows to the mask worker (before the step runs). */
int sl_output_begin_masks(sl_engine *e, sl_step *st, sl_err *err);
/* sl_batch's fill_masks for a step (an sl_step *): waits for the mask
 * worker, then writes the masks of the guided rows the backend samples. */
void sl_output_fill_masks(void *step, uint32_t *masks, int vocab);
/* Frees a request whose choices have all finished. */
void sl_req_free(sl_engine *e, sl_req *r);

#endif
