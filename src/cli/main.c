/* main.c -- the `shardlm` command: dispatches to a subcommand. Every
 * subcommand returns an exit status; only here does the process end. */
#include <stdio.h>
#include <string.h>

#include "cli/commands.h"
#include "shardlm.h"

static void usage(FILE *out) {
    fprintf(out,
            "usage: shardlm <command> [MODEL] [flags]\n\n"
            "commands:\n"
            "  serve      an OpenAI-compatible HTTP server\n"
            "  generate   generate from prompts (text, token ids or a JSONL file)\n"
            "  bench      latency | throughput: measure the engine; serve: measure a running server\n"
            "  plan       the smallest tensor/pipeline layout that fits a model on N devices\n"
            "  version    print the version\n\n"
            "MODEL is a Hugging Face model folder or a hub id (org/name); without it the default model,\n"
            "SmolLM2-135M-Instruct, is used. `shardlm <command> --help` lists a command's flags.\n");
}

static int run_worker(void) {
    char err[1024];
    if (sl_worker_main(err, sizeof err) == 0) return 0;
    fprintf(stderr, "shardlm worker: %s\n", err);
    return 1;
}

int main(int argc, char **argv) {
    /* under mpirun/srun every rank runs this command: ranks > 0 serve rank 0 */
    if (sl_launched_as_worker()) return run_worker();
    if (argc >= 2 && strcmp(argv[1], "worker") == 0) return run_worker();
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "serve") == 0) return sl_cmd_serve(argc - 2, argv + 2);
    if (strcmp(cmd, "generate") == 0) return sl_cmd_generate(argc - 2, argv + 2);
    if (strcmp(cmd, "bench") == 0) return sl_cmd_bench(argc - 2, argv + 2);
    if (strcmp(cmd, "plan") == 0) return sl_cmd_plan(argc - 2, argv + 2);
    if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
        printf("shardlm %s\n", sl_version());
        return 0;
    }
    fprintf(stderr, "shardlm: unknown command \"%s\"\n", cmd);
    usage(stderr);
    return 2;
}
