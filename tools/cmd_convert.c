/* cmd_convert.c - `minerva convert`: a model directory to the MLX format,
 * optionally quantized (or dequantized), as mlx_lm.convert writes it. */
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "cli_common.h"

#define CMD "convert"

static const char USAGE[] =
    "Usage: minerva convert SRC DST [OPTIONS]\n\n"
    "Convert the model in SRC (config.json and safetensors, single or sharded;\n"
    "Hugging Face or MLX layout) into the MLX format in DST, the way mlx_lm.convert\n"
    "does: the same tensor names, packing and dtypes, shards of at most 5 GiB with\n"
    "model.safetensors.index.json, config.json with a \"quantization\" block, and the\n"
    "tokenizer and generation files copied. DST is created and must be empty.\n\n"
    "Options:\n"
    "  -q, --quantize          quantize every Linear and Embedding weight whose input\n"
    "                          dimension divides by the group size (affine unless\n"
    "                          --q-mode says otherwise)\n"
    "      --q-mode MODE       affine, mxfp4, mxfp8 or nvfp4 (implies -q)\n"
    "      --q-bits B          bits per weight (affine: 2, 3, 4, 5, 6, 8; default: the\n"
    "                          mode's, affine 4) (implies -q)\n"
    "      --q-group-size G    group size (affine: 32, 64, 128; default: the mode's,\n"
    "                          affine 64) (implies -q)\n"
    "      --q-experts MODE    quantize mixture-of-experts stacks with MODE (at its\n"
    "                          default bits and group size) and the rest as above:\n"
    "                          --q-bits 8 --q-experts mxfp4 gives gpt-oss MXFP4-Q8\n"
    "      --dtype T           bf16, f16 or f32: unquantized tensors and affine scales\n"
    "                          (default: the source config's torch_dtype)\n"
    "      --dequantize        turn a quantized model back into float weights\n"
    "      --max-shard-bytes N largest shard in bytes (default 5368709120)\n"
    "  -h, --help              show this help\n";

typedef struct {
    int tty;
    int last_pct;
} progress_state;

static void on_progress(void *user, uint64_t done, uint64_t total) {
    progress_state *ps = user;
    if (!ps->tty) return;
    int pct = total ? (int)(done * 100 / total) : 100;
    if (pct == ps->last_pct) return;
    ps->last_pct = pct;
    fprintf(stderr, "\rconverting: %3d%% (%.1f of %.1f MiB)", pct, (double)done / (1 << 20), (double)total / (1 << 20));
    fflush(stderr);
}

static int parse_dtype(const char *s, mnv_dtype *out) {
    if (strcasecmp(s, "bf16") == 0 || strcasecmp(s, "bfloat16") == 0) *out = MNV_DTYPE_BF16;
    else if (strcasecmp(s, "f16") == 0 || strcasecmp(s, "float16") == 0) *out = MNV_DTYPE_F16;
    else if (strcasecmp(s, "f32") == 0 || strcasecmp(s, "float32") == 0) *out = MNV_DTYPE_F32;
    else return cli_usage(CMD, "--dtype: expected bf16, f16 or f32, got '%s'", s);
    return 0;
}

static int check_mode(const char *m) {
    const char *modes[] = {"affine", "mxfp4", "mxfp8", "nvfp4"};
    for (size_t i = 0; i < 4; i++)
        if (strcmp(m, modes[i]) == 0) return 0;
    return cli_usage(CMD, "--q-mode: expected affine, mxfp4, mxfp8 or nvfp4, got '%s'", m);
}

int cmd_convert(int argc, char **argv) {
    mnv_convert_params p = mnv_convert_params_default();
    const char *dtype = NULL, *mode = NULL, *xmode = NULL;
    int quantize = 0, bits = 0, group = 0, seen_bits = 0, seen_group = 0;
    cli_strv pos = {0};
    const cli_opt opts[] = {
        {"-q", "--quantize", CLI_FLAG, &quantize, 0, 0, NULL},
        {NULL, "--q-mode", CLI_STR, &mode, 0, 0, NULL},
        {NULL, "--q-bits", CLI_INT, &bits, 1, 16, &seen_bits},
        {NULL, "--q-group-size", CLI_INT, &group, 1, 1 << 20, &seen_group},
        {NULL, "--q-experts", CLI_STR, &xmode, 0, 0, NULL},
        {NULL, "--dtype", CLI_STR, &dtype, 0, 0, NULL},
        {NULL, "--dequantize", CLI_FLAG, &p.dequantize, 0, 0, NULL},
        {NULL, "--max-shard-bytes", CLI_U64, &p.max_shard_bytes, 0, 0, NULL},
    };
    cli_spec spec = {CMD, USAGE, opts, sizeof opts / sizeof opts[0], &pos};
    int rc = 0;
    if (cli_parse(&spec, argc, argv, &rc)) {
        cli_strv_free(&pos);
        return rc;
    }
    if (pos.n != 2) rc = cli_usage(CMD, "expected SRC and DST, got %zu argument%s", pos.n, pos.n == 1 ? "" : "s");
    if (!rc && dtype) rc = parse_dtype(dtype, &p.dtype);
    if (!rc && mode) rc = check_mode(mode);
    if (!rc && xmode) rc = check_mode(xmode);
    if (xmode) quantize = 1;
    if (!rc && (quantize || mode || seen_bits || seen_group) && p.dequantize)
        rc = cli_usage(CMD, "choose either quantization or --dequantize, not both");
    if (rc) {
        cli_strv_free(&pos);
        return rc;
    }
    if (quantize || mode || seen_bits || seen_group) p.q_mode = mode ? mode : "affine";
    p.q_experts_mode = xmode;
    p.q_bits = bits;
    p.q_group_size = group;
    p.src_dir = pos.items[0];
    p.dst_dir = pos.items[1];
    progress_state ps = {isatty(fileno(stderr)), -1};
    p.progress = on_progress;
    p.user_data = &ps;
    double t0 = cli_now();
    mnv_status st = mnv_convert(&p);
    if (ps.tty && ps.last_pct >= 0) fputc('\n', stderr);
    if (st != MNV_OK) rc = cli_lib_error(CMD, st, "cannot convert '%s' into '%s'", p.src_dir, p.dst_dir);
    else
        fprintf(stderr, "converted %s -> %s (%s) in %.2f s\n", p.src_dir, p.dst_dir,
                p.q_mode ? p.q_mode : p.dequantize ? "dequantized" : "unquantized", cli_now() - t0);
    cli_strv_free(&pos);
    return rc;
}
