/* cmd_inspect.c - `minerva inspect`: what a model directory holds. */
#include <stdio.h>
#include <string.h>

#include <sys/stat.h>

#include "cli_common.h"

#define CMD "inspect"

static const char USAGE[] =
    "Usage: minerva inspect DIR\n\n"
    "Print the architecture and hyper-parameters of the model in DIR, every weight\n"
    "tensor (name, dtype, shape, bytes, shard file), the total weight bytes and the\n"
    "estimated memory: weights, KV cache bytes per token, and the KV block pool of\n"
    "one sequence at a context of --ctx tokens (default min(n_ctx_train, 4096)).\n\n"
    "Options:\n"
    "  -m, --model DIR   same as the DIR argument\n"
    "  -c, --ctx N       the context the estimate assumes\n"
    "      --kv-type T   KV cache element type: f32, f16, bf16, q8 or q4 (default f32)\n"
    "      --kv-type-k T the K cache's type alone; --kv-type-v T: the V cache's\n"
    "  -h, --help        show this help\n";

static const char *human(double bytes, char *buf, size_t cap) {
    const char *unit[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int u = 0;
    while (bytes >= 1024.0 && u < 4) {
        bytes /= 1024.0;
        u++;
    }
    snprintf(buf, cap, u ? "%.2f %s" : "%.0f %s", bytes, unit[u]);
    return buf;
}

static void print_hparams(const mnv_model *model, const mnv_model_info *in) {
    printf("architecture:    %s\n", in->arch ? in->arch : "?");
    printf("vocab:           %d\n", in->n_vocab);
    printf("n_ctx_train:     %d\n", in->n_ctx_train);
    printf("layers:          %d\n", in->n_layer);
    printf("hidden size:     %d\n", in->n_embd);
    printf("ffn size:        %d\n", in->n_ff);
    printf("heads:           %d (kv heads %d, head_dim %d)\n", in->n_head, in->n_head_kv,
           in->head_dim);
    printf("tied embeddings: %s\n", in->tied_embeddings ? "yes" : "no");
    printf("bos id:          %d\n", in->bos_id);
    printf("eos ids:        ");
    for (int i = 0; i < in->n_eos && i < 8; i++) printf(" %d", in->eos_ids[i]);
    printf(in->n_eos ? "\n" : " (none)\n");
    printf("parameters:      %llu (%.3f M)\n", (unsigned long long)in->n_params,
           (double)in->n_params / 1e6);
    const mnv_tokenizer *tok = model ? mnv_model_tokenizer(model) : NULL;
    if (!model)
        ;
    else if (tok)
        printf("tokenizer:       vocab %d, bos %d, eos %d, add_bos %d\n", mnv_tokenizer_n_vocab(tok),
               mnv_tokenizer_bos(tok), mnv_tokenizer_eos(tok), mnv_tokenizer_add_bos(tok));
    else
        printf("tokenizer:       none\n");
}

static void format_shape(const mnv_tensor_info *t, char *buf, size_t cap) {
    size_t off = (size_t)snprintf(buf, cap, "[");
    for (int d = 0; d < t->ndim && d < 8 && off < cap; d++)
        off += (size_t)snprintf(buf + off, cap - off, d ? ", %lld" : "%lld", (long long)t->shape[d]);
    if (off < cap) snprintf(buf + off, cap - off, "]");
}

/* Prints the tensor table; returns the summed bytes, or sets *rc on failure. */
static unsigned long long print_tensors(const mnv_model *model, int *rc) {
    size_t n = mnv_model_n_tensors(model), width = 4;
    mnv_tensor_info t;
    for (size_t i = 0; i < n; i++)
        if (mnv_model_tensor_info(model, i, &t) == MNV_OK && t.name && strlen(t.name) > width)
            width = strlen(t.name);
    printf("\ntensors: %zu\n  %-*s  %-5s  %-20s  %12s  %s\n", n, (int)width, "name", "dtype",
           "shape", "bytes", "file");
    unsigned long long total = 0;
    for (size_t i = 0; i < n; i++) {
        mnv_status st = mnv_model_tensor_info(model, i, &t);
        if (st != MNV_OK) {
            *rc = cli_lib_error(CMD, st, "cannot read tensor %zu", i);
            return total;
        }
        char shape[160];
        format_shape(&t, shape, sizeof shape);
        printf("  %-*s  %-5s  %-20s  %12llu  %s\n", (int)width, t.name ? t.name : "?",
               mnv_dtype_name(t.dtype), shape, (unsigned long long)t.nbytes, t.file ? t.file : "?");
        total += t.nbytes;
    }
    return total;
}

typedef struct {
    int ctx;             /* 0: the default */
    cli_kv_flags kv;
} mem_opts;

static int print_memory(const char *dir, const mnv_model_info *in, unsigned long long tensor_bytes,
                        const mem_opts *mo) {
    char a[32], b[32], c[32];
    mnv_session_params sp = mnv_session_params_default();
    sp.n_ctx = mo->ctx;
    if (cli_kv_types(CMD, &mo->kv, &sp.kv_type_k, &sp.kv_type_v) ||
        cli_kv_rotate(CMD, &mo->kv, &sp.kv_rotate))
        return CLI_EXIT_USAGE;
    char kvn[32];
    cli_kv_name(&mo->kv, kvn, sizeof kvn);
    mnv_memory_estimate est;
    mnv_status st = mnv_model_estimate_memory(dir, &sp, &est);
    if (st != MNV_OK) return cli_lib_error(CMD, st, "cannot estimate the memory of %s", dir);
    long long ctx = est.n_ctx;
    double kv = (double)est.kv_bytes;
    printf("\ntotal weight bytes: %llu (%s, %.2f GB)\n", tensor_bytes, human((double)tensor_bytes, a, sizeof a),
           (double)tensor_bytes / 1e9);
    if (tensor_bytes != in->weight_bytes)
        printf("  (model info reports %llu)\n", (unsigned long long)in->weight_bytes);
    printf("memory estimate (%s context %lld tokens, KV %s):\n", mo->ctx ? "a" : "default", ctx, kvn);
    printf("  weights:             %s\n", human((double)in->weight_bytes, a, sizeof a));
    printf("  read per decoded token: %.3f GB of weights\n", (double)in->active_bytes_per_token / 1e9);
    printf("  KV cache per token:  %llu bytes (f32, every layer)\n", (unsigned long long)in->kv_bytes_per_token);
    printf("  KV cache:            %llu bytes (%s: the block pool of one sequence; sliding-window layers\n"
           "                       keep only their window's blocks)\n",
           (unsigned long long)est.kv_bytes, human(kv, b, sizeof b));
    printf("  activations:         %s at most (a batch of %d tokens)\n", human((double)est.compute_bytes, c, sizeof c),
           est.n_batch);
    printf("  weights + KV cache:  %s\n", human((double)in->weight_bytes + kv, c, sizeof c));
    printf("  total:               %llu bytes (%s: weights, KV cache and activations)\n",
           (unsigned long long)est.total_bytes, human((double)est.total_bytes, c, sizeof c));
    return 0;
}

/* A directory with a config.json but no weights: estimate from the config. */
static int has_weights(const char *dir) {
    const char *names[] = {"model.safetensors", "model.safetensors.index.json"};
    char path[4096];
    for (int i = 0; i < 2; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        FILE *f = fopen(path, "rb");
        if (f) {
            fclose(f);
            return 1;
        }
    }
    return 0;
}

static int estimate_main(const char *model_dir, const mem_opts *mo) {
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", model_dir);
    mnv_model_info info;
    mnv_status st = mnv_config_estimate(path, &info);
    if (st != MNV_OK) return cli_lib_error(CMD, st, "cannot estimate the model of %s", path);
    printf("model:           %s (config only: estimated for the layout its quantization block describes)\n", model_dir);
    print_hparams(NULL, &info);
    return print_memory(model_dir, &info, info.weight_bytes, mo);
}

static int inspect_main(const char *model_dir, const mem_opts *mo) {
    struct stat sb;
    if (stat(model_dir, &sb) != 0) return cli_error(CMD, "%s does not exist", model_dir);
    if (!S_ISDIR(sb.st_mode)) return cli_error(CMD, "%s is not a directory", model_dir);
    if (!has_weights(model_dir)) return estimate_main(model_dir, mo);
    mnv_model *model = NULL;
    int rc = cli_load_model(CMD, model_dir, 0, &model);
    if (rc != 0) return rc;
    mnv_model_info info;
    mnv_status st = mnv_model_get_info(model, &info);
    if (st != MNV_OK) {
        rc = cli_lib_error(CMD, st, "cannot read model info");
    } else {
        printf("model:           %s\n", model_dir);
        print_hparams(model, &info);
        unsigned long long total = print_tensors(model, &rc);
        if (rc == 0) rc = print_memory(model_dir, &info, total, mo);
    }
    mnv_model_free(model);
    return rc;
}

int cmd_inspect(int argc, char **argv) {
    const char *model_dir = NULL;
    cli_strv pos = {0};
    mem_opts mo;
    memset(&mo, 0, sizeof mo);
    cli_opt opts[2 + CLI_KV_N_OPTS] = {{"-m", "--model", CLI_STR, &model_dir, 0, 0, NULL},
                                       {"-c", "--ctx", CLI_INT, &mo.ctx, 1, 1 << 30, NULL}};
    cli_kv_opts(&mo.kv, opts + 2);
    cli_spec spec = {CMD, USAGE, opts, 2 + CLI_KV_N_OPTS, &pos};
    int rc = 0;
    if (!cli_parse(&spec, argc, argv, &rc)) {
        if (pos.n == 1 && !model_dir) model_dir = pos.items[0];
        if (pos.n > 1 || (pos.n == 1 && model_dir != pos.items[0]))
            rc = cli_usage(CMD, "give one model directory");
        else if (!model_dir)
            rc = cli_usage(CMD, "missing the model directory DIR");
        else
            rc = inspect_main(model_dir, &mo);
    }
    cli_strv_free(&pos);
    return rc;
}
