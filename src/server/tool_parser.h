/* tool_parser.h -- tool calls read out of a model's output, whole or while
 * it streams, in the formats vLLM's tool parsers read.
 *
 * One reader serves both: sl_tool_stream takes the output piece by piece and
 * says what can be sent so far (content text, the start of a call with its
 * name and id, pieces of a call's arguments); sl_tool_parse feeds the whole
 * output at once through the same reader. Text that may be the start of a
 * call (a partial "<tool_call>", whitespace before a call) is held back until
 * known, so the pieces sent always concatenate to what the whole output
 * gives, wherever it was split.
 *
 * A call's arguments are the JSON text of its "arguments" (or "parameters")
 * value exactly as the model wrote it ("{}" when it has none); pythonic calls
 * are Python, so their keyword arguments are written out as the JSON object
 * Python's json.dumps gives ({"k": v, ...}). A call that
 * turns out malformed (bad JSON, no name, an output cut short) makes the
 * whole output plain content for sl_tool_parse, as vLLM's parsers answer; a
 * stream has sent what it sent, and sends the rest as content. */
#ifndef SL_SERVER_TOOL_PARSER_H
#define SL_SERVER_TOOL_PARSER_H

#include <stddef.h>

typedef enum {
    SL_TOOL_HERMES,      /* text <tool_call>{"name": .., "arguments": ..}</tool_call> ... (Hermes, Qwen2.5) */
    SL_TOOL_LLAMA3_JSON, /* [<|python_tag|>]{"name": .., "parameters": ..}; {..} (Llama 3.x) */
    SL_TOOL_MISTRAL,     /* text [TOOL_CALLS][{"name": .., "arguments": ..}, ..] */
    SL_TOOL_PYTHONIC,    /* the whole output is [f(a="x", b=[1, None]), g()] (Llama 3.2, Llama 4) */
    SL_TOOL_REQUIRED,    /* the whole output is [{"name": .., "parameters": ..}, ..] (tool_choice "required") */
    SL_TOOL_NAMED,       /* the whole output is the arguments of one call (tool_choice names the function) */
} sl_tool_format;

/* The --tool-call-parser names: 0 and *out set, or -1 for an unknown name. */
int sl_tool_format_from_name(const char *name, sl_tool_format *out);
#define SL_TOOL_PARSER_NAMES "hermes, llama3_json, mistral or pythonic"

typedef enum {
    SL_TOOL_DELTA_CONTENT, /* text: content */
    SL_TOOL_DELTA_CALL,    /* a call starts: call, id, text = its function name */
    SL_TOOL_DELTA_ARGS,    /* text: the next piece of call `call`'s arguments */
} sl_tool_delta_kind;

typedef struct sl_tool_delta {
    sl_tool_delta_kind kind;
    int call;         /* CALL, ARGS: the call's index in the output */
    const char *id;   /* CALL: "chatcmpl-tool-<32 hex>" (mistral: 9 letters and digits, as its templates need) */
    const char *text; /* not NUL-terminated */
    size_t n;
} sl_tool_delta;

typedef struct sl_tool_stream sl_tool_stream;

/* function: the called function's name for SL_TOOL_NAMED (copied), else NULL.
 * first_only (parallel_tool_calls false): every call is still read (a
 * malformed later one still makes the output content), but only the first is
 * returned or streamed, as vLLM filters them. NULL when out of memory. */
sl_tool_stream *sl_tool_stream_new(sl_tool_format format, const char *function, int first_only);
void sl_tool_stream_free(sl_tool_stream *s);
/* Adds n bytes of output (final: the output ended with them). *deltas, valid
 * until the next call, is what can be sent now. 0, or SL_ENOMEM. */
int sl_tool_stream_feed(sl_tool_stream *s, const char *text, size_t n, int final, const sl_tool_delta **deltas,
                        int *n_deltas);
/* Calls started so far (SL_TOOL_DELTA_CALL sent; at most 1 with first_only). */
int sl_tool_stream_calls(const sl_tool_stream *s);
/* 1 once a call turned out malformed (the rest went out as content). */
int sl_tool_stream_failed(const sl_tool_stream *s);

/* ---- the whole output --------------------------------------------------------------- */
typedef struct sl_tool_call {
    char *id, *name, *arguments;
} sl_tool_call;

typedef struct sl_tool_result {
    char *content;    /* NULL: none (the output was calls only) */
    size_t content_len;
    sl_tool_call *calls;
    int n_calls;
} sl_tool_result;

/* Reads the whole output. 0, or SL_ENOMEM. */
int sl_tool_parse(sl_tool_format format, const char *function, int first_only, const char *text, size_t n,
                  sl_tool_result *out);
/* Appends deltas to r as a client assembles a stream (content concatenated,
 * arguments per call); r starts zeroed. 0, or SL_ENOMEM. */
int sl_tool_result_add(sl_tool_result *r, const sl_tool_delta *deltas, int n_deltas);
void sl_tool_result_free(sl_tool_result *r);

#endif
