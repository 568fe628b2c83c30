/* Sizes from a configuration and what synth writes: counts beyond 32 bits
 * exact, counts beyond 64 bits refused with their true magnitude (never
 * wrapped), checkpoints larger than the bound or the free disk refused
 * before anything is written, and a write that fails part way removes the
 * partial output. */
#include <signal.h>
#include <stdbool.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "minerva.h"
#include "test.h"

/* 3.9e12 parameters: every count past 32 bits, none past 64. */
static const char BIG[] =
    "{\"model_type\": \"llama\", \"hidden_size\": 65536, \"intermediate_size\": 262144,"
    " \"num_hidden_layers\": 64, \"num_attention_heads\": 512, \"num_key_value_heads\": 64,"
    " \"vocab_size\": 32000, \"tie_word_embeddings\": false, \"torch_dtype\": \"bfloat16\"}";
/* 3.46e19 parameters: past 64 bits (a wrapped count would look plausible). */
static const char ABSURD[] =
    "{\"model_type\": \"llama\", \"hidden_size\": 1073741824, \"intermediate_size\": 1073741824,"
    " \"num_hidden_layers\": 4, \"num_attention_heads\": 1048576, \"num_key_value_heads\": 1048576,"
    " \"vocab_size\": 1073741824, \"tie_word_embeddings\": false}";
/* 1.7 M parameters, 6.8 MB in f32. */
static const char SMALL[] =
    "{\"model_type\": \"llama\", \"hidden_size\": 256, \"intermediate_size\": 512,"
    " \"num_hidden_layers\": 2, \"num_attention_heads\": 8, \"num_key_value_heads\": 4,"
    " \"vocab_size\": 1024, \"tie_word_embeddings\": false}";

static char tmp[64];

/* tmp/name holding json; the path is static storage of one of 4 slots. */
static const char *write_config(const char *name, const char *json) {
    static char paths[4][128];
    static int next;
    char *path = paths[next++ % 4];
    snprintf(path, sizeof paths[0], "%s/%s", tmp, name);
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    if (f) {
        fputs(json, f);
        fclose(f);
    }
    return path;
}

static bool exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

static void test_estimate(void) {
    mnv_model_info info;
    CHECK(mnv_config_estimate(write_config("big.json", BIG), &info) == MNV_OK);
    const uint64_t H = 65536, F = 262144, L = 64, KVD = 64 * 128, V = 32000;
    uint64_t params = 2 * V * H + L * (2 * H + 2 * H * H + 2 * KVD * H + 3 * F * H) + H;
    CHECKF(info.n_params == params, "%llu parameters, expected %llu", (unsigned long long)info.n_params,
           (unsigned long long)params);
    CHECK(info.weight_bytes == 2 * params);
    CHECK(info.kv_bytes_per_token == 2 * L * KVD * sizeof(float));

    mnv_status st = mnv_config_estimate(write_config("absurd.json", ABSURD), &info);
    CHECK(st == MNV_ERR_RANGE);
    CHECKF(strstr(mnv_last_error(), "3.46e+19 parameters") && strstr(mnv_last_error(), "64 bits"), "%s",
           mnv_last_error());
    CHECK(info.n_params == 0 && info.weight_bytes == 0);
}

static mnv_status synth(const char *config, const char *out) {
    mnv_synth_params p = mnv_synth_params_default();
    p.config_path = config;
    p.out_dir = out;
    p.dtype = MNV_DTYPE_F32;
    return mnv_synthesize(&p);
}

/* A 1 MiB file-size limit (SIGXFSZ ignored: a write past it fails with
 * EFBIG), as a full disk would stop a writer; also keeps a regression of the
 * size checks from filling the disk. */
static struct rlimit saved_limit;
static void (*saved_handler)(int);
static void limit_file_size(bool on) {
    if (on) {
        CHECK(getrlimit(RLIMIT_FSIZE, &saved_limit) == 0);
        struct rlimit lim = saved_limit;
        lim.rlim_cur = 1 << 20;
        saved_handler = signal(SIGXFSZ, SIG_IGN);
        CHECK(setrlimit(RLIMIT_FSIZE, &lim) == 0);
    } else {
        CHECK(setrlimit(RLIMIT_FSIZE, &saved_limit) == 0);
        signal(SIGXFSZ, saved_handler);
    }
}

static void test_refused(void) {
    char out[128];
    snprintf(out, sizeof out, "%s/out", tmp);
    const char *absurd = write_config("absurd.json", ABSURD), *big = write_config("big.json", BIG);
    limit_file_size(true);
    mnv_status st = synth(absurd, out);
    limit_file_size(false);
    CHECK(st == MNV_ERR_RANGE);
    CHECKF(strstr(mnv_last_error(), "3.46e+19 parameters") && strstr(mnv_last_error(), "16 TiB"), "%s",
           mnv_last_error());
    CHECK(!exists(out));

    /* 7.1 TiB in bf16: below the bound, above the free space of any test machine */
    struct statvfs vfs;
    CHECK(statvfs(tmp, &vfs) == 0);
    if ((double)vfs.f_bavail * (double)vfs.f_frsize > 8e12) {
        printf("SKIP: the free-disk check (more than 8 TB free)\n");
        return;
    }
    mnv_synth_params p = mnv_synth_params_default();
    p.config_path = big;
    p.out_dir = out;
    limit_file_size(true);
    st = mnv_synthesize(&p);
    limit_file_size(false);
    CHECK(st == MNV_ERR_IO);
    CHECKF(strstr(mnv_last_error(), "GB free") && strstr(mnv_last_error(), "7.84e+03 GB"), "%s", mnv_last_error());
    CHECK(!exists(out));
}

/* A file-size limit makes the weights' write fail part way, as a full disk does. */
static void test_cleanup(void) {
    char out[128], weights[160], cfg[160];
    snprintf(out, sizeof out, "%s/partial", tmp);
    snprintf(weights, sizeof weights, "%s/model.safetensors", out);
    snprintf(cfg, sizeof cfg, "%s/config.json", out);
    const char *config = write_config("small.json", SMALL);
    CHECK(synth(config, out) == MNV_OK && exists(weights) && exists(cfg));
    CHECK(unlink(weights) == 0 && unlink(cfg) == 0 && rmdir(out) == 0);

    limit_file_size(true);
    mnv_status st = synth(config, out); /* the directory is new: all of it goes */
    bool gone = !exists(out);
    CHECK(mkdir(out, 0755) == 0);
    mnv_status st2 = synth(config, out); /* it existed: only the files go */
    bool files_gone = exists(out) && !exists(weights) && !exists(cfg);
    limit_file_size(false);
    CHECKF(st == MNV_ERR_IO && strstr(mnv_last_error(), "write failed"), "status %d: %s", (int)st, mnv_last_error());
    CHECK(gone);
    CHECK(st2 == MNV_ERR_IO && files_gone);
    rmdir(out);
}

int main(void) {
    t_seed();
    snprintf(tmp, sizeof tmp, "/tmp/mnv_synth_XXXXXX");
    if (!mkdtemp(tmp)) {
        perror("mkdtemp");
        return 1;
    }
    test_estimate();
    test_refused();
    test_cleanup();
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmp);
    if (system(cmd) != 0) fprintf(stderr, "cannot remove %s\n", tmp);
    return t_done();
}
