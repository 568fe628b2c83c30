/* cli_common.h - shared helpers of the `minerva` command-line tool.
 *
 * The tool links only the public library (minerva.h) and libc. Exit codes:
 *   0  success
 *   1  a runtime failure (library error, unreadable file)
 *   2  a usage error (unknown option, missing value, bad number)
 * Functions below that print an error return the exit code to use, so a
 * command reads `if (bad) return cli_usage(cmd, "...");`.
 */
#ifndef MNV_CLI_COMMON_H
#define MNV_CLI_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "minerva.h"

#define CLI_EXIT_OK 0
#define CLI_EXIT_FAIL 1
#define CLI_EXIT_USAGE 2

/* ---- commands (one file each) --------------------------------------------- */
int cmd_generate(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_logits(int argc, char **argv);
int cmd_perplexity(int argc, char **argv);
int cmd_inspect(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_synth(int argc, char **argv);
int cmd_convert(int argc, char **argv);
int cmd_chat(int argc, char **argv);
int cmd_batch(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_render_chat(int argc, char **argv);

/* ---- option parsing --------------------------------------------------------- */

/* A growable list of borrowed strings (they point into argv). */
typedef struct {
    const char **items;
    size_t n, cap;
} cli_strv;
void cli_strv_free(cli_strv *v);

typedef enum {
    CLI_FLAG,  /* dst: int*, set to 1 when present */
    CLI_INT,   /* dst: int*, range [min, max] */
    CLI_U64,   /* dst: uint64_t*, any non-negative decimal */
    CLI_FLOAT, /* dst: float*, finite, range [min, max] */
    CLI_STR,   /* dst: const char**, the last occurrence wins */
    CLI_MULTI  /* dst: cli_strv*, every occurrence is appended */
} cli_kind;

typedef struct {
    const char *short_name; /* "-m" or NULL */
    const char *long_name;  /* "--model" */
    cli_kind kind;
    void *dst;
    double min, max;        /* inclusive range for CLI_INT / CLI_FLOAT */
    int *seen;              /* optional: set to 1 when the option is given */
} cli_opt;

typedef struct {
    const char *cmd;        /* "generate": used in messages */
    const char *usage;      /* the full --help text */
    const cli_opt *opts;
    size_t n_opts;
    cli_strv *positional;   /* NULL: positional arguments are a usage error */
} cli_spec;

/* Parse argv[1..argc-1] (argv[0] is the command name). "-h"/"--help" prints
 * the usage to stdout. Accepts "--name value", "--name=value" and "--" to end
 * options. Returns 1 when the command must stop now with exit code *rc
 * (help: 0; usage error: 2, message already printed), else 0. */
int cli_parse(const cli_spec *spec, int argc, char **argv, int *rc);

/* Print "minerva CMD: MESSAGE" and a hint to --help to stderr; returns 2. */
int cli_usage(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Print "minerva CMD: MESSAGE" to stderr; returns 1. */
int cli_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Print "minerva CMD: MESSAGE: <mnv_status_str(st)>: <mnv_last_error()>"; returns 1. */
int cli_lib_error(const char *cmd, mnv_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Value parsers with full validation; each prints a usage error naming the
 * option and returns 2 on failure, 0 on success. */
int cli_parse_int(const char *cmd, const char *opt, const char *s, long long min, long long max,
                  int *out);
int cli_parse_u64(const char *cmd, const char *opt, const char *s, uint64_t *out);
int cli_parse_float(const char *cmd, const char *opt, const char *s, double min, double max,
                    float *out);
/* "ID ID ..." (blanks, newlines or commas between ids; each in [0, INT32_MAX]).
 * On success *ids is a heap array (NULL when empty) of *n ids. Returns 0, 2
 * (usage error printed) or 1 (out of memory, printed). */
int cli_parse_ids(const char *cmd, const char *opt, const char *s, int32_t **ids, size_t *n);

/* ---- options shared by the commands that generate (generate, batch) --------- */

/* Generation: -n, the sampler, --seed, --stop and --ignore-eos. */
typedef struct {
    mnv_generate_params gp; /* max_tokens and the sampler are set by the options */
    int seed_given, ignore_eos;
    cli_strv stops;
} cli_gen_flags;

#define CLI_GEN_N_OPTS 10
void cli_gen_flags_init(cli_gen_flags *f); /* the library's defaults */
void cli_gen_flags_free(cli_gen_flags *f);
/* Write the CLI_GEN_N_OPTS option entries of f into out (an option table). */
void cli_gen_opts(cli_gen_flags *f, cli_opt *out);
/* Append the help lines of those options, with their defaults, to buf. */
void cli_gen_usage(char *buf, size_t cap, const cli_gen_flags *f);
/* After parsing: a seed from the clock (printed on stderr) unless --seed was
 * given; the stop strings and --ignore-eos into f->gp. */
void cli_gen_flags_finish(cli_gen_flags *f);

/* The KV cache's element types: --kv-type T (K and V), --kv-type-k T and
 * --kv-type-v T (one side, over --kv-type); T: f32, f16, bf16, q8, q4; and
 * --kv-rotate auto|on|off (mnv_kv_rotate). */
typedef struct {
    const char *all, *k, *v; /* NULL: not given (f32) */
    const char *rotate;      /* NULL: not given (auto) */
} cli_kv_flags;

#define CLI_KV_N_OPTS 4
void cli_kv_opts(cli_kv_flags *f, cli_opt *out);
/* Append their help lines to buf. */
void cli_kv_usage(char *buf, size_t cap);
/* The K and V types (mnv_kv_type) the options name; 0, or a usage error
 * printed and non-zero. */
int cli_kv_types(const char *cmd, const cli_kv_flags *f, int32_t *k, int32_t *v);
/* The rotation (mnv_kv_rotate) --kv-rotate names; 0, or a usage error
 * printed and non-zero. */
int cli_kv_rotate(const char *cmd, const cli_kv_flags *f, int32_t *rot);
/* "q8" or "q8/q4": the types as given, for reports. */
void cli_kv_name(const cli_kv_flags *f, char *buf, size_t cap);
/* The sides the options rotate (mnv_kv_rotate's rule: auto turns the q4
 * sides): "K and V", "K", "V" or "none", for reports. */
const char *cli_kv_rotated(const cli_kv_flags *f);

/* The runtime: --threads, --ctx, the KV types, --exact-quant and --deterministic. */
typedef struct {
    int n_threads, n_ctx, exact_quant, deterministic;
    cli_kv_flags kv;
    const char *device;  /* NULL: the library's default (cpu) */
} cli_run_flags;

#define CLI_RUN_N_OPTS (5 + CLI_KV_N_OPTS)
void cli_run_opts(cli_run_flags *f, cli_opt *out);
/* Append their help lines to buf; ctx_what says what --ctx sizes. */
void cli_run_usage(char *buf, size_t cap, const char *ctx_what);

/* "max tokens", "end of sequence", ... */
const char *cli_stop_reason_str(mnv_stop_reason r);

/* ---- files, models, text ----------------------------------------------------- */

/* Read a whole file ("-" = stdin) into a NUL-terminated heap buffer.
 * Returns 0 or 1 after printing "minerva CMD: cannot read 'PATH': reason". */
int cli_read_file(const char *cmd, const char *path, char **data, size_t *len);

/* Find the bundled default model directory (see resolve order in
 * cli_common.c). Writes it to buf; returns 0, or 1 after printing the
 * candidates that were tried. */
int cli_default_model_dir(const char *cmd, char *buf, size_t cap);

/* One line naming the CPU path in use (level and kernels) and the default
 * thread count. */
void cli_print_cpu(FILE *f);

/* Load the model in dir (NULL: the bundled default). Returns 0 or 1 (printed). */
int cli_load_model(const char *cmd, const char *dir, int n_threads, mnv_model **out);
/* Copy the weights to the device of the session s (or else the engine e)
 * now, with progress on a terminal; nothing on the CPU. */
int cli_load_weights(const char *cmd, mnv_session *s, mnv_engine *e);

/* Tokenize into a heap array. Returns the library status (message not printed). */
mnv_status cli_tokenize(const mnv_tokenizer *tok, const char *text, size_t len, int add_bos,
                        int32_t **ids, size_t *n);
/* The ids of a text prompt as `generate -p` makes them: BOS alone for an
 * empty text, else the tokenized text, with BOS when the tokenizer asks for
 * it. *ids is a heap array of *n >= 1 ids. Returns 0 or 1 (printed). */
int cli_prompt_ids(const char *cmd, const mnv_model *model, const char *text, int32_t **ids, size_t *n);
/* Decode into a NUL-terminated heap string. Returns the library status. */
mnv_status cli_detokenize(const mnv_tokenizer *tok, const int32_t *ids, size_t n,
                          int skip_special, char **text, size_t *len);

/* Evaluate n ids in slices of at most batch tokens; logits (may be NULL)
 * receives n rows of n_vocab floats. */
mnv_status cli_eval(mnv_session *s, const int32_t *ids, size_t n, float *logits, size_t n_vocab,
                    size_t batch);

/* Print text to stdout exactly, adding a final newline only when stdout is a
 * terminal and text does not already end in one (keeps pipes byte-exact). */
void cli_print_text_end(int last_char);

/* Write s (len bytes) as a JSON string, quotes included; bytes that are not
 * valid UTF-8 are written as U+FFFD. */
void cli_json_string(FILE *f, const char *s, size_t len);

/* ---- measurement ------------------------------------------------------------ */
double cli_now(void);         /* monotonic seconds */
double cli_peak_rss_mb(void); /* peak resident set size in MiB (getrusage) */


#endif
