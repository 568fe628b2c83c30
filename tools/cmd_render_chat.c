/* cmd_render_chat.c - `minerva render-chat`: the prompt an OpenAI chat
 * request renders to with a model's chat template. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_common.h"

#define CMD "render-chat"

static const char USAGE[] =
    "Usage: minerva render-chat -m DIR --request FILE.json [--no-generation-prompt]\n\n"
    "Print the prompt text that an OpenAI chat request body (\"messages\", optional\n"
    "\"tools\" and \"chat_template_kwargs\", e.g. {\"enable_thinking\": false}) renders to\n"
    "with the model's Jinja chat template (chat_template.jinja, or \"chat_template\" in\n"
    "tokenizer_config.json), as transformers' apply_chat_template renders it. For\n"
    "checking templates by hand; gpt-oss models use Harmony (minerva chat) instead.\n\n"
    "Options:\n"
    "  -m, --model DIR           the model directory\n"
    "  -r, --request FILE        the request body, JSON ('-' = stdin)\n"
    "      --no-generation-prompt  do not end with the assistant's turn header\n"
    "  -h, --help                show this help\n";

int cmd_render_chat(int argc, char **argv) {
    const char *model_dir = NULL, *request = NULL;
    int no_gen = 0;
    const cli_opt opts[] = {
        {"-m", "--model", CLI_STR, &model_dir, 0, 0, NULL},
        {"-r", "--request", CLI_STR, &request, 0, 0, NULL},
        {NULL, "--no-generation-prompt", CLI_FLAG, &no_gen, 0, 0, NULL},
    };
    cli_spec spec = {CMD, USAGE, opts, sizeof opts / sizeof opts[0], NULL};
    int rc = 0;
    if (cli_parse(&spec, argc, argv, &rc)) return rc;
    if (!model_dir) return cli_usage(CMD, "no model: give -m DIR");
    if (!request) return cli_usage(CMD, "no request: give --request FILE.json");
    char *body = NULL;
    size_t len = 0;
    rc = cli_read_file(CMD, request, &body, &len);
    if (rc) return rc;
    if (strlen(body) != len) {
        free(body);
        return cli_error(CMD, "%s: the request holds a NUL byte", request);
    }
    char *prompt = NULL;
    mnv_status st = mnv_chat_template_render(model_dir, body, !no_gen, &prompt);
    free(body);
    if (st != MNV_OK) return cli_lib_error(CMD, st, "cannot render '%s'", request);
    fputs(prompt, stdout);
    mnv_chat_prompt_free(prompt);
    return fflush(stdout) == 0 ? CLI_EXIT_OK : cli_error(CMD, "cannot write the prompt");
}
