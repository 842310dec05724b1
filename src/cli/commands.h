/* commands.h -- the subcommands of `shardlm`; each takes the words after its
 * name and returns the process exit status. */
#ifndef SL_CLI_COMMANDS_H
#define SL_CLI_COMMANDS_H

int sl_cmd_serve(int argc, char **argv);
int sl_cmd_generate(int argc, char **argv);
int sl_cmd_bench(int argc, char **argv);
int sl_cmd_plan(int argc, char **argv);
int sl_cmd_bench_serve(int argc, char **argv);

#endif
