/* cmd_tokenize.c - `minerva tokenize`: text to ids, or ids to text. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli_common.h"

#define CMD "tokenize"

static const char USAGE[] =
    "Usage: minerva tokenize [-m DIR | --tokenizer FILE] [--text-file F | TEXT...] [OPTIONS]\n\n"
    "Print the token ids of TEXT separated by spaces, or with --decode read ids\n"
    "(\"ID ID ...\") and print their text. Several TEXT arguments are joined by single\n"
    "spaces.\n\n"
    "Options:\n"
    "  -m, --model DIR      use DIR/tokenizer.json (default: the bundled model's)\n"
    "      --tokenizer FILE use this tokenizer.json\n"
    "  -f, --text-file F    read the input from file F ('-' = stdin)\n"
    "      --decode         the input is token ids; print their text\n"
    "      --bos            prepend the BOS token (default: off)\n"
    "      --skip-special   with --decode, drop special tokens such as BOS/EOS (default: off)\n"
    "  -h, --help           show this help\n";

typedef struct {
    const char *model_dir, *tokenizer, *text_file;
    int decode, bos, skip_special;
    cli_strv words;
} tok_opts;

static int load_tokenizer(const tok_opts *o, mnv_tokenizer **tok) {
    char path[PATH_MAX + 128], dir[PATH_MAX + 64];
    if (o->tokenizer) {
        snprintf(path, sizeof path, "%s", o->tokenizer);
    } else {
        struct stat sb;
        if (o->model_dir && stat(o->model_dir, &sb) != 0)
            return cli_error(CMD, "model directory '%s' does not exist", o->model_dir);
        if (o->model_dir) snprintf(dir, sizeof dir, "%s", o->model_dir);
        else if (cli_default_model_dir(CMD, dir, sizeof dir) != 0) return CLI_EXIT_FAIL;
        snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    }
    mnv_status st = mnv_tokenizer_load(path, tok);
    if (st != MNV_OK) return cli_lib_error(CMD, st, "cannot load tokenizer '%s'", path);
    return 0;
}

/* The input: the file's contents or the positional words joined by spaces. */
static int read_input(const tok_opts *o, char **text, size_t *len) {
    if (o->text_file) return cli_read_file(CMD, o->text_file, text, len);
    size_t total = 1;
    for (size_t i = 0; i < o->words.n; i++) total += strlen(o->words.items[i]) + 1;
    char *buf = malloc(total), *p = buf;
    if (!buf) return cli_error(CMD, "out of memory");
    for (size_t i = 0; i < o->words.n; i++) {
        size_t l = strlen(o->words.items[i]);
        if (i > 0) *p++ = ' ';
        memcpy(p, o->words.items[i], l);
        p += l;
    }
    *p = '\0';
    *text = buf;
    *len = (size_t)(p - buf);
    return 0;
}

static int encode(const tok_opts *o, const mnv_tokenizer *tok, const char *text, size_t len) {
    int32_t *ids = NULL;
    size_t n = 0;
    mnv_status st = cli_tokenize(tok, text, len, o->bos, &ids, &n);
    if (st != MNV_OK) return cli_lib_error(CMD, st, "cannot tokenize the input");
    for (size_t i = 0; i < n; i++) printf(i ? " %d" : "%d", (int)ids[i]);
    putchar('\n');
    free(ids);
    return 0;
}

static int decode(const tok_opts *o, const mnv_tokenizer *tok, const char *input) {
    int32_t *ids = NULL;
    size_t n = 0;
    int rc = cli_parse_ids(CMD, o->text_file ? "--text-file" : "TEXT", input, &ids, &n);
    if (rc) return rc;
    char *text = NULL;
    size_t len = 0;
    mnv_status st = cli_detokenize(tok, ids, n, o->skip_special, &text, &len);
    free(ids);
    if (st != MNV_OK) return cli_lib_error(CMD, st, "cannot decode the ids");
    fwrite(text, 1, len, stdout);
    cli_print_text_end(len ? (unsigned char)text[len - 1] : -1);
    free(text);
    return 0;
}

static int tokenize_main(const tok_opts *o) {
    if (o->model_dir && o->tokenizer) return cli_usage(CMD, "give either -m or --tokenizer, not both");
    if (o->text_file && o->words.n) return cli_usage(CMD, "give either --text-file or TEXT, not both");
    if (!o->text_file && !o->words.n) return cli_usage(CMD, "no input: give TEXT or --text-file F");
    mnv_tokenizer *tok = NULL;
    int rc = load_tokenizer(o, &tok);
    if (rc) return rc;
    char *text = NULL;
    size_t len = 0;
    rc = read_input(o, &text, &len);
    if (rc == 0) rc = o->decode ? decode(o, tok, text) : encode(o, tok, text, len);
    free(text);
    mnv_tokenizer_free(tok);
    return rc;
}

int cmd_tokenize(int argc, char **argv) {
    tok_opts o;
    memset(&o, 0, sizeof o);
    const cli_opt opts[] = {
        {"-m", "--model", CLI_STR, &o.model_dir, 0, 0, NULL},
        {NULL, "--tokenizer", CLI_STR, &o.tokenizer, 0, 0, NULL},
        {"-f", "--text-file", CLI_STR, &o.text_file, 0, 0, NULL},
        {NULL, "--decode", CLI_FLAG, &o.decode, 0, 0, NULL},
        {NULL, "--bos", CLI_FLAG, &o.bos, 0, 0, NULL},
        {NULL, "--skip-special", CLI_FLAG, &o.skip_special, 0, 0, NULL},
    };
    cli_spec spec = {CMD, USAGE, opts, sizeof opts / sizeof opts[0], &o.words};
    int rc = 0;
    if (!cli_parse(&spec, argc, argv, &rc)) rc = tokenize_main(&o);
    cli_strv_free(&o.words);
    return rc;
}
