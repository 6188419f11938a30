/* loratune.c - the command-line entry point: dispatches to apps/cmd_<name>.c, after applying
 * LORATUNE_CPU=baseline|avx2|avx512 (a cap on the SIMD kernels' level, lt_cpu_set_max_level). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "commands.h"
#include "loratune/hwinfo.h"

typedef struct {
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *help;
} command;

static const command k_commands[] = {
    {"info", cmd_info, "hardware and build features"},
    {"inspect", cmd_inspect, "architecture, parameters, dtypes, tokenizer of a model"},
    {"tokenize", cmd_tokenize, "text to token ids (or ids to text with --decode)"},
    {"generate", cmd_generate, "generate text from a prompt or a chat message"},
    {"plan", cmd_plan, "memory budget of a training run (from the config alone)"},
    {"fuse", cmd_fuse, "merge an adapter into a model; write it as an HF folder or GGUF"},
    {"train", cmd_train, "fine-tune a model: LoRA, DoRA, QLoRA or full (docs/TRAIN_CLI.md)"},
    {"eval", cmd_eval, "loss and perplexity of a model (+ adapter) on data"},
    {"data", cmd_data, "check and summarize data (data check), version it for DVC (data add)"},
    {"runs", cmd_runs, "tracked runs: list, show, compare, delete, reproduce, push"},
    {"models", cmd_models, "model registry: register, list, show, promote"},
    {"serve", cmd_serve, "REST API server: datasets, train jobs, live events (docs/SERVER.md)"},
    {"study", cmd_study, "ask/tell hyperparameter study: create, ask, tell, show (docs/TUNE.md)"},
    {"tune", cmd_tune, "hyperparameter search over training runs (GP-BO, pruning; docs/TUNE.md)"},
    {"compare", cmd_compare, "tune LoRA / DoRA / QLoRA / full under one budget, compare them"},
};

static void usage(FILE *f) {
    fprintf(f, "usage: loratune COMMAND [options]   (loratune COMMAND --help for details)\n\n"
               "commands:\n");
    for (size_t i = 0; i < sizeof k_commands / sizeof k_commands[0]; i++)
        fprintf(f, "  %-10s %s\n", k_commands[i].name, k_commands[i].help);
    fprintf(f, "\nMODEL is a Hugging Face folder, a .gguf file, or a llama2.c .bin (with "
               "--tokenizer).\n"
               "LORATUNE_CPU=baseline|avx2|avx512 in the environment caps the SIMD kernels' level\n"
               "(default: the best this CPU runs; `loratune info` shows what is used).\n");
}

/* Generation forks and joins OpenMP threads ~130 times a token, each for ~50 us of work. With
 * libgomp's default wait policy a thread that reaches a barrier spins for ~0.3 ms; on a machine
 * whose cores other processes share, the spinning thread holds the core its peer (still working,
 * or waiting to be scheduled) needs, and a decode step with 2 threads took 2.5-15x longer than
 * with one (bench/RESULTS.md "Inference vs llama.cpp"). Waiting passively (sleeping in the
 * kernel) removes that: 2 threads are then faster than one on a loaded machine too. libgomp
 * reads OMP_WAIT_POLICY once, when it is loaded, before main: so `generate` sets it and runs
 * itself again, unless the user set OMP_WAIT_POLICY or GOMP_SPINCOUNT (kept as given). */
static void passive_wait_reexec(char **argv) {
    if (getenv("OMP_WAIT_POLICY") || getenv("GOMP_SPINCOUNT")) return;
    if (setenv("OMP_WAIT_POLICY", "passive", 1)) return;
    execv("/proc/self/exe", argv);
    /* no /proc (or exec refused): go on with the default policy */
}

int main(int argc, char **argv) {
    if (argc >= 2 && !strcmp(argv[1], "generate")) passive_wait_reexec(argv);
    const char *cpu = getenv("LORATUNE_CPU");
    if (cpu && *cpu) {
        lt_cpu_level max;
        if (lt_cpu_level_parse(cpu, &max) != LT_OK) {
            fprintf(stderr, "loratune: LORATUNE_CPU: %s\n", lt_errmsg());
            return 2;
        }
        lt_cpu_set_max_level(max);
    }
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    for (size_t i = 0; i < sizeof k_commands / sizeof k_commands[0]; i++)
        if (!strcmp(argv[1], k_commands[i].name)) return k_commands[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "loratune: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return 2;
}
