/* An output directory that a writer (mnv_convert, mnv_synthesize) fills:
 * created if missing, every file made in it recorded, and on failure those
 * files and a directory it created removed, so a failed or interrupted run
 * leaves no truncated model behind. */
#ifndef MNV_CONVERT_OUTDIR_H
#define MNV_CONVERT_OUTDIR_H

#include "core/core.h"

typedef struct {
    const char *dir;  /* borrowed */
    char **created;   /* paths of the files made in dir */
    size_t n_created;
    bool made_dir;    /* dir did not exist before */
} mnv__outdir;

/* Create dir if missing. An existing one must be empty when require_empty
 * (MNV_ERR_INVALID_ARG otherwise). */
mnv_status mnv__outdir_open(mnv__outdir *o, const char *dir, bool require_empty);
/* Record a file about to be made (call before creating it). */
mnv_status mnv__outdir_track(mnv__outdir *o, const char *path);
/* Forget the records; when failed, first remove the recorded files and the
 * directory if this run created it. */
void mnv__outdir_close(mnv__outdir *o, bool failed);

/* MNV_ERR_IO naming both figures when the file system that holds dir (or,
 * dir missing, its nearest existing parent) has less than need bytes free
 * for an unprivileged writer. what says what needs the room. */
mnv_status mnv__check_free_space(const char *dir, uint64_t need, const char *what);

#endif
