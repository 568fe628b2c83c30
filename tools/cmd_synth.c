/* cmd_synth.c - `minerva synth`: a random-weight checkpoint for a config.json. */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "cli_common.h"

#define CMD "synth"

static const char USAGE_FMT[] =
    "Usage: minerva synth --config CONFIG.json --out DIR [OPTIONS]\n\n"
    "Write DIR/config.json and DIR/model.safetensors with random weights (normal,\n"
    "std 0.02, norms at 1) for the configuration, to benchmark at real sizes. No\n"
    "tokenizer is written: use --prompt-ids with the result.\n\n"
    "Options:\n"
    "      --config FILE   a config.json of a supported architecture (required)\n"
    "  -o, --out DIR       output directory, created if missing (required)\n"
    "      --dtype T       bf16, f16 or f32 (default %s)\n"
    "      --seed S        random seed (default %llu)\n"
    "  -h, --help          show this help\n";

static int parse_dtype(const char *s, mnv_dtype *out) {
    if (strcasecmp(s, "bf16") == 0) *out = MNV_DTYPE_BF16;
    else if (strcasecmp(s, "f16") == 0) *out = MNV_DTYPE_F16;
    else if (strcasecmp(s, "f32") == 0) *out = MNV_DTYPE_F32;
    else return cli_usage(CMD, "--dtype: expected bf16, f16 or f32, got '%s'", s);
    return 0;
}

int cmd_synth(int argc, char **argv) {
    mnv_synth_params p = mnv_synth_params_default();
    const char *dtype = NULL;
    const cli_opt opts[] = {
        {NULL, "--config", CLI_STR, &p.config_path, 0, 0, NULL},
        {"-o", "--out", CLI_STR, &p.out_dir, 0, 0, NULL},
        {NULL, "--dtype", CLI_STR, &dtype, 0, 0, NULL},
        {NULL, "--seed", CLI_U64, &p.seed, 0, 0, NULL},
    };
    char usage[sizeof USAGE_FMT + 64];
    const char *def_dtype = p.dtype == MNV_DTYPE_F32 ? "f32" : p.dtype == MNV_DTYPE_F16 ? "f16" : "bf16";
    snprintf(usage, sizeof usage, USAGE_FMT, def_dtype, (unsigned long long)p.seed);
    cli_spec spec = {CMD, usage, opts, sizeof opts / sizeof opts[0], NULL};
    int rc = 0;
    if (cli_parse(&spec, argc, argv, &rc)) return rc;
    if (!p.config_path) return cli_usage(CMD, "--config is required");
    if (!p.out_dir) return cli_usage(CMD, "--out is required");
    if (dtype && (rc = parse_dtype(dtype, &p.dtype)) != 0) return rc;
    double t0 = cli_now();
    mnv_status st = mnv_synthesize(&p);
    if (st != MNV_OK)
        return cli_lib_error(CMD, st, "cannot synthesize '%s' into '%s'", p.config_path, p.out_dir);
    fprintf(stderr, "wrote a random-weight checkpoint (float tensors %s) into %s in %.2f s\n",
            mnv_dtype_name(p.dtype), p.out_dir, cli_now() - t0);
    return 0;
}
