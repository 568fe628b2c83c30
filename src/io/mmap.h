/* Read-only file mappings (POSIX mmap, MAP_PRIVATE). */
#ifndef MNV_IO_MMAP_H
#define MNV_IO_MMAP_H

#include "core/core.h"

typedef struct {
    const uint8_t *data; /* NULL for an empty file */
    size_t size;
} mnv_mmap;

/* Map a whole regular file read-only. Errors (MNV_ERR_IO) name the path. */
mnv_status mnv_mmap_open(const char *path, mnv_mmap *out);
/* Unmap; a zeroed mnv_mmap is a no-op. */
void mnv_mmap_close(mnv_mmap *m);

#endif
