/* A set of mapped safetensors files: one file, an indexed set of shards, or
 * every model*.safetensors of a directory. Tensors of all files are merged
 * and sorted by name; unaligned tensors get an aligned heap copy. */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "io/mmap.h"
#include "io/safetensors.h"

#define ST_COPY_ALIGN 64

typedef struct {
    char *name; /* file name as given (not a path) */
    mnv_mmap map;
} st_file;

struct mnv_st_set {
    mnv_st_tensor *t; /* (n) sorted by name */
    void **copy;      /* (n) aligned heap copy of tensor i, or NULL when zero-copy */
    size_t n;
    st_file *files;   /* (n_files) */
    int32_t n_files;
};

static mnv_st_set *set_new(void) { return calloc(1, sizeof(mnv_st_set)); }

void mnv_st_close(mnv_st_set *set) {
    if (!set) return;
    for (size_t i = 0; i < set->n; i++) {
        free(set->t[i].name);
        if (set->copy) mnv_aligned_free(set->copy[i]);
    }
    free(set->t);
    free(set->copy);
    for (int32_t i = 0; i < set->n_files; i++) {
        free(set->files[i].name);
        mnv_mmap_close(&set->files[i].map);
    }
    free(set->files);
    free(set);
}

/* Map path, parse it and append its tensors (name is the shard's file name). */
static mnv_status set_add_file(mnv_st_set *set, const char *path, const char *name) {
    st_file *f = realloc(set->files, ((size_t)set->n_files + 1) * sizeof *f);
    if (!f) return mnv_set_error(MNV_ERR_NOMEM, "%s: out of memory", path);
    set->files = f;
    f = &set->files[set->n_files];
    memset(f, 0, sizeof *f);
    f->name = mnv_strdup(name);
    if (!f->name) return mnv_set_error(MNV_ERR_NOMEM, "%s: out of memory", path);
    set->n_files++;
    mnv_status st = mnv_mmap_open(path, &f->map);
    if (st != MNV_OK) return st;
    mnv_st_tensor *t;
    size_t n;
    st = mnv_st_parse(f->map.data, f->map.size, path, &t, &n);
    if (st != MNV_OK) return st;
    mnv_st_tensor *all = realloc(set->t, (set->n + n + 1) * sizeof *all);
    if (!all) {
        mnv_st_free_tensors(t, n);
        return mnv_set_error(MNV_ERR_NOMEM, "%s: out of memory", path);
    }
    for (size_t i = 0; i < n; i++) t[i].file_index = set->n_files - 1;
    memcpy(all + set->n, t, n * sizeof *t); /* names change owner */
    free(t);
    set->t = all;
    set->n += n;
    return MNV_OK;
}

static int cmp_name(const void *a, const void *b) {
    return strcmp(((const mnv_st_tensor *)a)->name, ((const mnv_st_tensor *)b)->name);
}

/* Sort, reject names found twice, then make every data pointer aligned.
 * `where` (the file or directory) prefixes messages. */
static mnv_status set_finish(mnv_st_set *set, const char *where) {
    qsort(set->t, set->n, sizeof *set->t, cmp_name);
    for (size_t i = 1; i < set->n; i++) {
        const mnv_st_tensor *a = &set->t[i - 1], *b = &set->t[i];
        if (strcmp(a->name, b->name) == 0)
            return mnv_set_error(MNV_ERR_FORMAT, "%s: tensor '%s' appears in both %s and %s", where,
                                 a->name,
                                 set->files[a->file_index].name, set->files[b->file_index].name);
    }
    set->copy = calloc(set->n ? set->n : 1, sizeof *set->copy);
    if (!set->copy) return mnv_set_error(MNV_ERR_NOMEM, "%s: out of memory", where);
    for (size_t i = 0; i < set->n; i++) {
        mnv_st_tensor *t = &set->t[i];
        size_t esz = mnv_dtype_size(t->dtype);
        if ((uintptr_t)t->data % esz == 0) continue;
        /* MLX writes tensors at arbitrary offsets; keep an aligned copy. */
        void *c = mnv_aligned_alloc(ST_COPY_ALIGN, (size_t)t->nbytes);
        if (!c)
            return mnv_set_error(MNV_ERR_NOMEM, "%s: %s: tensor '%s': cannot allocate %llu bytes",
                                 where, set->files[t->file_index].name, t->name,
                                 (unsigned long long)t->nbytes);
        memcpy(c, t->data, (size_t)t->nbytes);
        set->copy[i] = c;
        t->data = c;
    }
    return MNV_OK;
}

static const char *base_name(const char *path) {
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

mnv_status mnv_st_open_file(const char *path, mnv_st_set **out) {
    if (!out) return mnv_set_error(MNV_ERR_INVALID_ARG, "mnv_st_open_file: NULL output");
    *out = NULL;
    if (!path) return mnv_set_error(MNV_ERR_INVALID_ARG, "mnv_st_open_file: NULL path");
    mnv_st_set *set = set_new();
    if (!set) return mnv_set_error(MNV_ERR_NOMEM, "%s: out of memory", path);
    mnv_status st = set_add_file(set, path, base_name(path));
    if (st == MNV_OK) st = set_finish(set, path);
    if (st != MNV_OK) {
        mnv_st_close(set);
        return st;
    }
    *out = set;
    return MNV_OK;
}

size_t mnv_st_count(const mnv_st_set *set) { return set ? set->n : 0; }

const mnv_st_tensor *mnv_st_get(const mnv_st_set *set, size_t i) {
    return set && i < set->n ? &set->t[i] : NULL;
}

const mnv_st_tensor *mnv_st_find(const mnv_st_set *set, const char *name) {
    if (!set || !name) return NULL;
    size_t lo = 0, hi = set->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(set->t[mid].name, name);
        if (c == 0) return &set->t[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

const char *mnv_st_file_name(const mnv_st_set *set, int32_t i) {
    return set && i >= 0 && i < set->n_files ? set->files[i].name : NULL;
}

int32_t mnv_st_n_files(const mnv_st_set *set) { return set ? set->n_files : 0; }

uint64_t mnv_st_copied_bytes(const mnv_st_set *set) {
    uint64_t b = 0;
    for (size_t i = 0; set && set->copy && i < set->n; i++)
        if (set->copy[i]) b += set->t[i].nbytes;
    return b;
}

/* ---- directories ----------------------------------------------------------- */

static bool file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

/* Shard names come from a JSON file: keep them inside the model directory. */
static bool safe_shard_name(const char *s) {
    if (!s[0] || s[0] == '/') return false;
    for (const char *p = s; *p;) {
        const char *e = strchr(p, '/');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len == 2 && p[0] == '.' && p[1] == '.') return false;
        if (!e) break;
        p = e + 1;
    }
    return true;
}

typedef struct {
    const char *tensor, *shard; /* borrowed from the index JSON */
} st_map_entry;

static int cmp_entry_shard(const void *a, const void *b) {
    const st_map_entry *x = a, *y = b;
    int c = strcmp(x->shard, y->shard);
    return c ? c : strcmp(x->tensor, y->tensor);
}

/* Collect weight_map into entries sorted by shard. */
static mnv_status read_weight_map(const cJSON *root, const char *ipath, st_map_entry **out,
                                  size_t *n_out) {
    *out = NULL;
    *n_out = 0;
    const cJSON *wm = cJSON_IsObject(root) ? cJSON_GetObjectItemCaseSensitive(root, "weight_map") : NULL;
    if (!cJSON_IsObject(root)) return mnv_set_error(MNV_ERR_FORMAT, "%s: not a JSON object", ipath);
    if (!cJSON_IsObject(wm))
        return mnv_set_error(MNV_ERR_FORMAT, "%s: key 'weight_map': %s", ipath,
                             wm ? "expected an object" : "missing");
    size_t n = (size_t)cJSON_GetArraySize(wm), i = 0;
    st_map_entry *e = calloc(n ? n : 1, sizeof *e);
    if (!e) return mnv_set_error(MNV_ERR_NOMEM, "%s: out of memory", ipath);
    for (const cJSON *c = wm->child; c; c = c->next, i++) {
        mnv_status st = MNV_OK;
        if (!cJSON_IsString(c))
            st = mnv_set_error(MNV_ERR_FORMAT, "%s: weight_map entry '%s' is not a string", ipath,
                               c->string);
        else if (!safe_shard_name(c->valuestring))
            st = mnv_set_error(MNV_ERR_FORMAT, "%s: weight_map entry '%s': bad shard name '%s'",
                               ipath, c->string, c->valuestring);
        if (st != MNV_OK) {
            free(e);
            return st;
        }
        e[i].tensor = c->string;
        e[i].shard = c->valuestring;
    }
    qsort(e, n, sizeof *e, cmp_entry_shard);
    *out = e;
    *n_out = n;
    return MNV_OK;
}

/* Every tensor the index lists must be in the shard it names. */
static mnv_status check_listed(const mnv_st_set *set, const st_map_entry *e, size_t n,
                               const char *ipath) {
    for (size_t i = 0; i < n; i++) {
        const mnv_st_tensor *t = mnv_st_find(set, e[i].tensor);
        if (!t)
            return mnv_set_error(MNV_ERR_FORMAT,
                                 "%s: tensor '%s' is listed in weight_map for %s but no shard holds it",
                                 ipath, e[i].tensor, e[i].shard);
        if (strcmp(set->files[t->file_index].name, e[i].shard) != 0)
            return mnv_set_error(MNV_ERR_FORMAT,
                                 "%s: tensor '%s' is listed in weight_map for %s but is in %s", ipath,
                                 e[i].tensor, e[i].shard, set->files[t->file_index].name);
    }
    return MNV_OK;
}

static mnv_status open_shards(mnv_st_set *set, const char *dir, const st_map_entry *e, size_t n,
                              const char *ipath) {
    for (size_t i = 0; i < n; i++) {
        if (i > 0 && strcmp(e[i].shard, e[i - 1].shard) == 0) continue;
        char *path = mnv_path_join(dir, e[i].shard);
        if (!path) return mnv_set_error(MNV_ERR_NOMEM, "out of memory");
        mnv_status st = MNV_OK;
        if (!file_exists(path))
            st = mnv_set_error(MNV_ERR_IO, "%s: shard %s (listed for tensor '%s') not found: %s",
                               ipath, e[i].shard, e[i].tensor, path);
        else
            st = set_add_file(set, path, e[i].shard);
        free(path);
        if (st != MNV_OK) return st;
    }
    return MNV_OK;
}

static mnv_status open_index(mnv_st_set *set, const char *dir, const char *ipath) {
    char *text;
    size_t len;
    mnv_status st = mnv_read_file(ipath, &text, &len);
    if (st != MNV_OK) return st;
    cJSON *root = cJSON_ParseWithLength(text, len);
    free(text);
    if (!root) return mnv_set_error(MNV_ERR_FORMAT, "%s: not valid JSON", ipath);
    st_map_entry *e = NULL;
    size_t n = 0;
    st = read_weight_map(root, ipath, &e, &n);
    if (st == MNV_OK) st = open_shards(set, dir, e, n, ipath);
    if (st == MNV_OK) st = set_finish(set, dir);
    if (st == MNV_OK) st = check_listed(set, e, n, ipath);
    free(e);
    cJSON_Delete(root);
    return st;
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static bool is_model_shard(const char *name) {
    size_t n = strlen(name), sfx = strlen(".safetensors");
    return n > sfx && strncmp(name, "model", 5) == 0 && strcmp(name + n - sfx, ".safetensors") == 0;
}

/* List model*.safetensors in dir, sorted. */
static mnv_status glob_shards(const char *dir, char ***out, size_t *n_out) {
    *out = NULL;
    *n_out = 0;
    DIR *d = opendir(dir);
    if (!d) return mnv_set_error(MNV_ERR_IO, "%s: cannot open directory: %s", dir, strerror(errno));
    char **names = NULL;
    size_t n = 0, cap = 0;
    mnv_status st = MNV_OK;
    for (struct dirent *de; st == MNV_OK && (de = readdir(d));) {
        if (!is_model_shard(de->d_name)) continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 8;
            char **nn = realloc(names, cap * sizeof *nn);
            if (!nn) st = mnv_set_error(MNV_ERR_NOMEM, "out of memory");
            else names = nn;
        }
        if (st == MNV_OK && !(names[n++] = mnv_strdup(de->d_name)))
            st = mnv_set_error(MNV_ERR_NOMEM, "out of memory");
    }
    closedir(d);
    if (st != MNV_OK) {
        for (size_t i = 0; i < n; i++) free(names[i]);
        free(names);
        return st;
    }
    if (n) qsort(names, n, sizeof *names, cmp_str);
    *out = names;
    *n_out = n;
    return MNV_OK;
}

static mnv_status open_glob(mnv_st_set *set, const char *dir) {
    char **names;
    size_t n;
    mnv_status st = glob_shards(dir, &names, &n);
    if (st != MNV_OK) return st;
    if (n == 0)
        st = mnv_set_error(MNV_ERR_IO,
                           "%s: no model.safetensors.index.json, model.safetensors or "
                           "model*.safetensors found",
                           dir);
    for (size_t i = 0; i < n; i++) {
        char *path = st == MNV_OK ? mnv_path_join(dir, names[i]) : NULL;
        if (st == MNV_OK && !path) st = mnv_set_error(MNV_ERR_NOMEM, "out of memory");
        if (st == MNV_OK) st = set_add_file(set, path, names[i]);
        free(path);
        free(names[i]);
    }
    free(names);
    return st == MNV_OK ? set_finish(set, dir) : st;
}

mnv_status mnv_st_open_dir(const char *dir, mnv_st_set **out) {
    if (!out) return mnv_set_error(MNV_ERR_INVALID_ARG, "mnv_st_open_dir: NULL output");
    *out = NULL;
    if (!dir) return mnv_set_error(MNV_ERR_INVALID_ARG, "mnv_st_open_dir: NULL directory");
    mnv_st_set *set = set_new();
    char *ipath = mnv_path_join(dir, "model.safetensors.index.json");
    char *single = mnv_path_join(dir, "model.safetensors");
    mnv_status st = MNV_OK;
    if (!set || !ipath || !single) st = mnv_set_error(MNV_ERR_NOMEM, "%s: out of memory", dir);
    else if (file_exists(ipath)) st = open_index(set, dir, ipath);
    else if (file_exists(single)) {
        st = set_add_file(set, single, "model.safetensors");
        if (st == MNV_OK) st = set_finish(set, single);
    } else st = open_glob(set, dir);
    free(ipath);
    free(single);
    if (st != MNV_OK) {
        mnv_st_close(set);
        return st;
    }
    *out = set;
    return MNV_OK;
}
