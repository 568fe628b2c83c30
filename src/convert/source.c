/* The checkpoint a conversion reads (source.h). The shards are mapped and
 * parsed in place (mnv_st_parse): no aligned heap copies as mnv_st_open_dir
 * makes for MLX-written files, so an MLX source is never held in memory;
 * every reader goes through memcpy. Shards: the index's weight_map, else
 * model.safetensors, else model*.safetensors (the order mnv_st_open_dir
 * uses). */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "convert/source.h"

static bool is_safetensors(const char *name) {
    size_t n = strlen(name), m = strlen(".safetensors");
    return n >= m && strcmp(name + n - m, ".safetensors") == 0;
}

static mnv_status add_file(mnv__source *s, const char *name) {
    for (int32_t i = 0; i < s->n_files; i++)
        if (!strcmp(s->file_names[i], name)) return MNV_OK;
    if (!name[0] || name[0] == '/' || strstr(name, ".."))
        return mnv_set_error(MNV_ERR_FORMAT, "%s: bad shard name '%s'", s->dir, name);
    mnv_mmap *m = realloc(s->maps, ((size_t)s->n_files + 1) * sizeof *m);
    char **nm = m ? realloc(s->file_names, ((size_t)s->n_files + 1) * sizeof *nm) : NULL;
    if (m) s->maps = m;
    if (nm) s->file_names = nm;
    char *path = mnv_path_join(s->dir, name);
    if (!m || !nm || !path || !(s->file_names[s->n_files] = mnv_strdup(name))) {
        free(path);
        return mnv_set_error(MNV_ERR_NOMEM, "out of memory");
    }
    memset(&s->maps[s->n_files], 0, sizeof *s->maps);
    int32_t fi = s->n_files++;
    mnv_st_tensor *t = NULL;
    size_t n = 0;
    mnv_status st = mnv_mmap_open(path, &s->maps[fi]);
    if (!st) st = mnv_st_parse(s->maps[fi].data, s->maps[fi].size, path, &t, &n);
    mnv_st_tensor *all = st ? NULL : realloc(s->tensors, (s->n_tensors + n + 1) * sizeof *all);
    if (!st && !all) st = mnv_set_error(MNV_ERR_NOMEM, "%s: out of memory", path);
    if (!st) {
        for (size_t i = 0; i < n; i++) t[i].file_index = fi;
        memcpy(all + s->n_tensors, t, n * sizeof *t); /* the names change owner */
        s->tensors = all;
        s->n_tensors += n;
        free(t);
    } else {
        mnv_st_free_tensors(t, n);
    }
    free(path);
    return st;
}

static mnv_status add_index_files(mnv__source *s, const char *ipath) {
    char *text = NULL;
    size_t len = 0;
    mnv_status st = mnv_read_file(ipath, &text, &len);
    cJSON *root = st ? NULL : cJSON_ParseWithLength(text, len);
    free(text);
    const cJSON *wm = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
    if (!st && !cJSON_IsObject(wm)) st = mnv_set_error(MNV_ERR_FORMAT, "%s: no 'weight_map' object", ipath);
    for (const cJSON *e = wm ? wm->child : NULL; e && !st; e = e->next)
        st = cJSON_IsString(e) ? add_file(s, e->valuestring)
                               : mnv_set_error(MNV_ERR_FORMAT, "%s: weight_map entry '%s' is not a string", ipath,
                                               e->string);
    cJSON_Delete(root);
    return st;
}

static int cmp_cstr(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static mnv_status add_glob_files(mnv__source *s) {
    DIR *d = opendir(s->dir);
    if (!d) return mnv_set_error(MNV_ERR_IO, "%s: cannot open directory: %s", s->dir, strerror(errno));
    char **names = NULL;
    size_t n = 0;
    mnv_status st = MNV_OK;
    for (struct dirent *e; !st && (e = readdir(d)) != NULL;) {
        if (strncmp(e->d_name, "model", 5) || !is_safetensors(e->d_name)) continue;
        char **nn = realloc(names, (n + 1) * sizeof *nn);
        if (!nn || !(nn[n] = mnv_strdup(e->d_name))) st = mnv_set_error(MNV_ERR_NOMEM, "out of memory");
        if (nn) names = nn;
        if (!st) n++;
    }
    closedir(d);
    if (!st && !n)
        st = mnv_set_error(MNV_ERR_IO, "%s: no model.safetensors.index.json, model.safetensors or model*.safetensors",
                           s->dir);
    if (n) qsort(names, n, sizeof *names, cmp_cstr);
    for (size_t i = 0; i < n; i++) {
        if (!st) st = add_file(s, names[i]);
        free(names[i]);
    }
    free(names);
    return st;
}

static int cmp_tensor(const void *a, const void *b) {
    return strcmp(((const mnv_st_tensor *)a)->name, ((const mnv_st_tensor *)b)->name);
}

mnv_status mnv__source_open(mnv__source *s, const char *dir) {
    memset(s, 0, sizeof *s);
    s->dir = dir;
    char *ipath = mnv_path_join(s->dir, "model.safetensors.index.json");
    char *single = mnv_path_join(s->dir, "model.safetensors");
    struct stat sb;
    mnv_status st = !ipath || !single ? mnv_set_error(MNV_ERR_NOMEM, "out of memory")
                    : stat(ipath, &sb) == 0  ? add_index_files(s, ipath)
                    : stat(single, &sb) == 0 ? add_file(s, "model.safetensors")
                                             : add_glob_files(s);
    free(ipath);
    free(single);
    if (st) return st;
    qsort(s->tensors, s->n_tensors, sizeof *s->tensors, cmp_tensor);
    for (size_t i = 1; i < s->n_tensors; i++)
        if (!strcmp(s->tensors[i - 1].name, s->tensors[i].name))
            return mnv_set_error(MNV_ERR_FORMAT, "%s: tensor '%s' appears in both %s and %s", s->dir,
                                 s->tensors[i].name, s->file_names[s->tensors[i - 1].file_index],
                                 s->file_names[s->tensors[i].file_index]);
    return MNV_OK;
}

void mnv__source_release(const mnv_st_tensor *t) {
    const size_t page = (size_t)sysconf(_SC_PAGESIZE);
    uintptr_t a = (uintptr_t)t->data, e = a + (uintptr_t)t->nbytes;
    a = (a + page - 1) / page * page;
    e = e / page * page;
    if (e > a) madvise((void *)a, (size_t)(e - a), MADV_DONTNEED);
}

void mnv__source_close(mnv__source *s) {
    for (size_t i = 0; i < s->n_tensors; i++) free(s->tensors[i].name);
    free(s->tensors);
    for (int32_t i = 0; i < s->n_files; i++) {
        mnv_mmap_close(&s->maps[i]);
        free(s->file_names[i]);
    }
    free(s->maps);
    free(s->file_names);
    memset(s, 0, sizeof *s);
}
