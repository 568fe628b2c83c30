/* Backend buffers: the checked calls through which host code reaches
 * backend memory. Arguments are validated here, once, so a backend's
 * upload/download/copy only move bytes. */
#include "backend/backend.h"

/* [off, off + size) inside a buffer of n bytes, without overflow. */
static bool in_range(size_t n, size_t off, size_t size) { return off <= n && size <= n - off; }

mnv_status mnv_buffer_alloc(mnv_backend *b, size_t size, mnv_buffer **out) {
    if (!out) return mnv_set_error(MNV_ERR_INVALID_ARG, "buffer alloc: out is NULL");
    *out = NULL;
    if (!b) return mnv_set_error(MNV_ERR_INVALID_ARG, "buffer alloc: backend is NULL");
    if (size == 0) return mnv_set_error(MNV_ERR_INVALID_ARG, "buffer alloc: a buffer of 0 bytes on %s", b->iface->name);
    mnv_status st = b->iface->buffer_alloc(b, size, out);
    if (st != MNV_OK) *out = NULL;
    return st;
}

void mnv_buffer_free(mnv_buffer *buf) {
    if (buf) buf->backend->iface->buffer_free(buf->backend, buf);
}

bool mnv_backend_host_memory(mnv_backend *b) { return b->iface->host_memory(b); }

mnv_status mnv_buffer_upload(mnv_buffer *dst, size_t off, const void *src, size_t size) {
    if (!dst || (!src && size))
        return mnv_set_error(MNV_ERR_INVALID_ARG, "buffer upload: %s is NULL", dst ? "the source" : "the buffer");
    if (!in_range(dst->size, off, size))
        return mnv_set_error(MNV_ERR_INVALID_ARG,
                             "buffer upload: %zu bytes at offset %zu pass the end of a %zu-byte buffer", size, off,
                             dst->size);
    if (size == 0) return MNV_OK;
    return dst->backend->iface->upload(dst->backend, dst, off, src, size);
}

mnv_status mnv_buffer_download(void *dst, const mnv_buffer *src, size_t off, size_t size) {
    if (!src || (!dst && size))
        return mnv_set_error(MNV_ERR_INVALID_ARG, "buffer download: %s is NULL",
                             src ? "the destination" : "the buffer");
    if (!in_range(src->size, off, size))
        return mnv_set_error(MNV_ERR_INVALID_ARG,
                             "buffer download: %zu bytes at offset %zu pass the end of a %zu-byte buffer", size, off,
                             src->size);
    if (size == 0) return MNV_OK;
    return src->backend->iface->download(src->backend, dst, src, off, size);
}

mnv_status mnv_buffer_copy(mnv_buffer *dst, size_t dst_off, const mnv_buffer *src, size_t src_off, size_t size) {
    if (!dst || !src)
        return mnv_set_error(MNV_ERR_INVALID_ARG, "buffer copy: the %s buffer is NULL", dst ? "source" : "destination");
    if (dst->backend != src->backend)
        return mnv_set_error(MNV_ERR_INVALID_ARG, "buffer copy: between buffers of two backends (%s and %s)",
                             src->backend->iface->name, dst->backend->iface->name);
    if (!in_range(src->size, src_off, size) || !in_range(dst->size, dst_off, size))
        return mnv_set_error(MNV_ERR_INVALID_ARG,
                             "buffer copy: %zu bytes from offset %zu of a %zu-byte buffer to offset %zu of a %zu-byte "
                             "buffer pass an end",
                             size, src_off, src->size, dst_off, dst->size);
    if (size == 0) return MNV_OK;
    if (dst == src && src_off < dst_off + size && dst_off < src_off + size)
        return mnv_set_error(MNV_ERR_INVALID_ARG, "buffer copy: %zu bytes from offset %zu to %zu of one buffer overlap",
                             size, src_off, dst_off);
    return dst->backend->iface->copy(dst->backend, dst, dst_off, src, src_off, size);
}
