/* Output directories with removal of partial output on failure (outdir.h). */
#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "convert/outdir.h"

mnv_status mnv__outdir_open(mnv__outdir *o, const char *dir, bool require_empty) {
    memset(o, 0, sizeof *o);
    o->dir = dir;
    if (mkdir(dir, 0755) == 0) {
        o->made_dir = true;
        return MNV_OK;
    }
    if (errno != EEXIST) return mnv_set_error(MNV_ERR_IO, "%s: cannot create directory: %s", dir, strerror(errno));
    DIR *d = opendir(dir);
    if (!d) return mnv_set_error(MNV_ERR_IO, "%s: not a readable directory: %s", dir, strerror(errno));
    struct dirent *e;
    bool empty = true;
    while (require_empty && empty && (e = readdir(d)) != NULL)
        empty = !strcmp(e->d_name, ".") || !strcmp(e->d_name, "..");
    closedir(d);
    return empty ? MNV_OK : mnv_set_error(MNV_ERR_INVALID_ARG, "%s: the output directory exists and is not empty", dir);
}

mnv_status mnv__outdir_track(mnv__outdir *o, const char *path) {
    char **p = realloc(o->created, (o->n_created + 1) * sizeof *p);
    if (!p) return mnv_set_error(MNV_ERR_NOMEM, "out of memory");
    o->created = p;
    if (!(o->created[o->n_created] = mnv_strdup(path))) return mnv_set_error(MNV_ERR_NOMEM, "out of memory");
    o->n_created++;
    return MNV_OK;
}

void mnv__outdir_close(mnv__outdir *o, bool failed) {
    for (size_t i = 0; i < o->n_created; i++) {
        if (failed) unlink(o->created[i]);
        free(o->created[i]);
    }
    free(o->created);
    if (failed && o->made_dir) rmdir(o->dir);
    memset(o, 0, sizeof *o);
}

mnv_status mnv__check_free_space(const char *dir, uint64_t need, const char *what) {
    char *path = mnv_strdup(dir && *dir ? dir : ".");
    if (!path) return mnv_set_error(MNV_ERR_NOMEM, "out of memory");
    struct statvfs vfs;
    int rc;
    while ((rc = statvfs(path, &vfs)) != 0 && errno == ENOENT) { /* the nearest existing parent */
        char *slash = strrchr(path, '/');
        if (!slash) {
            strcpy(path, ".");
        } else if (slash == path) {
            path[1] = 0;
        } else {
            *slash = 0;
        }
        if (!strcmp(path, ".") || !strcmp(path, "/")) {
            rc = statvfs(path, &vfs);
            break;
        }
    }
    mnv_status st = MNV_OK;
    if (rc != 0) {
        st = mnv_set_error(MNV_ERR_IO, "%s: cannot read the free space: %s", path, strerror(errno));
    } else {
        double avail = (double)vfs.f_bavail * (double)vfs.f_frsize;
        if ((double)need > avail)
            st = mnv_set_error(MNV_ERR_IO, "%s: %s needs %.3g GB but the file system of %s has %.3g GB free", dir,
                               what, (double)need / 1e9, path, avail / 1e9);
    }
    free(path);
    return st;
}
