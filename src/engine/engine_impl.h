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
    float *logits;                   /* [max_num_seqs][vocab] */
    float *raw_row;                  /* [vocab] a logits row before sampling changes it, for logprobs */
    /* the step being built (scheduler.c) */
    int32_t *b_tokens, *b_positions, *b_slots, *b_query_start, *b_context_len, *b_tables, *b_logits_rows;
    sl_seq **b_seqs;                 /* [max_num_seqs] sequence of each batch row */
    int *b_n_new;                    /* [max_num_seqs] tokens each computes this step */
    int b_n_seqs, b_n_tokens, b_n_logits;
    sl_seq **b_logit_seqs;           /* [max_num_seqs] sequence of each logits row */

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
    pthread_t thread;
    bool thread_started;
};

/* scheduler.c: choose this step's work and fill the batch arrays; returns
 * false when there is nothing to compute. */
bool sl_sched_build_step(sl_engine *e);
/* Frees a sequence's blocks and marks it waiting again (front of its arrival order). */
void sl_sched_preempt(sl_engine *e, sl_seq *s);
/* Takes a sequence out of the running/waiting lists and frees its blocks. */
void sl_sched_remove(sl_engine *e, sl_seq *s);
/* Adds a newly submitted request's sequences to the waiting list. */
int sl_sched_add_request(sl_engine *e, sl_req *r);
/* Checks the invariants of the step just built and of every block table
 * against the pool's reference counts. */
int sl_sched_check(sl_engine *e, sl_err *err);
/* Publishes the sequence's newly completed full blocks for prefix reuse. */
void sl_sched_publish_blocks(sl_engine *e, sl_seq *s);

/* output.c: sample the step's logits rows, update sequences, deliver outputs. */
void sl_output_process_step(sl_engine *e);
/* Finishes every choice of r with finish_reason ABORT (optionally an error). */
void sl_output_abort_request(sl_engine *e, sl_req *r, const char *error);
/* Frees a request whose choices have all finished. */
void sl_req_free(sl_engine *e, sl_req *r);

#endif
