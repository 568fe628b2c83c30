/* main.c - the `minerva` command-line tool: dispatch by subcommand. */
#include <stdio.h>
#include <string.h>

#include "cli_common.h"

typedef struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} command;

static const command COMMANDS[] = {
    {"generate", cmd_generate, "generate text from a prompt (streams to stdout)"},
    {"batch", cmd_batch, "many prompts through one engine (continuous batching)"},
    {"chat", cmd_chat, "chat with a gpt-oss model (Harmony format)"},
    {"serve", cmd_serve, "an OpenAI-compatible HTTP server (continuous batching)"},
    {"render-chat", cmd_render_chat, "the prompt a chat request renders to (chat template)"},
    {"tokenize", cmd_tokenize, "text to token ids, or ids to text with --decode"},
    {"logits", cmd_logits, "print the logits of a sequence of ids as JSON"},
    {"perplexity", cmd_perplexity, "perplexity of a text file"},
    {"inspect", cmd_inspect, "architecture, tensors and memory of a model directory"},
    {"bench", cmd_bench, "prefill and decode speed (tokens/s)"},
    {"synth", cmd_synth, "write a random-weight checkpoint for a config.json"},
    {"convert", cmd_convert, "convert a model to the MLX format, optionally quantized"},
};
#define N_COMMANDS (sizeof COMMANDS / sizeof COMMANDS[0])

static void print_help(FILE *f) {
    fprintf(f, "Usage: minerva COMMAND [OPTIONS]\n"
               "       minerva COMMAND --help\n"
               "       minerva --version\n\n"
               "A local LLM inference engine.\n\nCommands:\n");
    for (size_t i = 0; i < N_COMMANDS; i++)
        fprintf(f, "  %-12s %s\n", COMMANDS[i].name, COMMANDS[i].summary);
    fprintf(f, "\nWithout -m DIR, commands use the bundled model models/stories260K (found beside\n"
               "the executable, or named by $MINERVA_DEFAULT_MODEL).\n"
               "Exit status: 0 success, 1 runtime failure, 2 usage error.\n");
}

static const command *find_command(const char *name) {
    for (size_t i = 0; i < N_COMMANDS; i++)
        if (strcmp(COMMANDS[i].name, name) == 0) return &COMMANDS[i];
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        print_help(stderr);
        return CLI_EXIT_USAGE;
    }
    const char *name = argv[1];
    if (strcmp(name, "--help") == 0 || strcmp(name, "-h") == 0) {
        print_help(stdout);
        return CLI_EXIT_OK;
    }
    if (strcmp(name, "--version") == 0 || strcmp(name, "-V") == 0) {
        printf("minerva %d.%d.%d (libminerva %s)\n", MNV_VERSION_MAJOR, MNV_VERSION_MINOR,
               MNV_VERSION_PATCH, mnv_version());
        cli_print_cpu(stdout);
        return CLI_EXIT_OK;
    }
    if (strcmp(name, "help") == 0) { /* "minerva help CMD" == "minerva CMD --help" */
        if (argc < 3) {
            print_help(stdout);
            return CLI_EXIT_OK;
        }
        const command *c = find_command(argv[2]);
        char *help_argv[] = {argv[2], "--help", NULL};
        if (c) return c->run(2, help_argv);
        name = argv[2];
    }
    const command *c = find_command(name);
    if (!c) {
        fprintf(stderr, "minerva: unknown command '%s'\nTry 'minerva --help' for the list of commands.\n",
                name);
        return CLI_EXIT_USAGE;
    }
    return c->run(argc - 1, argv + 1);
}
