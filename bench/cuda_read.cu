/* How long one kernel takes to read S bytes of device memory once, for
 * the sizes of a decode step's products (a few MB to the lm_head's
 * ~600 MB): the floor a product of that size can reach, which for small
 * ones is not S / bandwidth. Each size runs as a CUDA graph of 64 launches
 * back to back (as a decode step replays them), each launch reading its own
 * region of a buffer far larger than the L2 cache; prints microseconds a
 * launch and GB/s. The grid is two blocks of 512 threads an SM, each
 * thread with eight 16-byte loads in flight.
 *
 * Then the decode experts' access pattern against a plain read of the same
 * bytes by the same grid: 4 experts' weights of N rows of R bytes (mxfp4,
 * gpt-oss: 2,880 rows of 1,440), a block of 128 threads a tile of 16 rows
 * of one expert. "tile" reads as k_moe_dmma_i8 does: each warp takes every
 * fourth quad (64 bytes of a row), lane (g, q) 16 bytes of rows g and
 * g + 8; "linear" reads the tile's 16 x R bytes front to back, 16 bytes a
 * thread. Both keep all of a thread's loads in flight. Then each with the
 * e8m0 scales (a byte a group of 32 codes, R / 16 a row): "tile" reading
 * them as the kernel does from their own array (rows R / 16 bytes apart,
 * lane (g, q) four bytes a quad: groups 2(q & 1) and 2(q & 1) + 1 of rows
 * g and g + 8), "linear" with the tile's 16 rows' scales side by side
 * (16 x R / 16 bytes, read front to back as the weights).
 * Usage: bench_cuda_read [device] */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <cuda_runtime.h>

#define THREADS 512
#define UNROLL 8

static __global__ void __launch_bounds__(THREADS, 2) k_read(const uint4 *p, size_t n, unsigned *out) {
    const size_t step = (size_t)gridDim.x * THREADS;
    unsigned acc = 0;
    for (size_t i0 = (size_t)blockIdx.x * THREADS + threadIdx.x; i0 < n; i0 += step * UNROLL) {
        uint4 v[UNROLL];
#pragma unroll
        for (int u = 0; u < UNROLL; u++) v[u] = i0 + u * step < n ? __ldg(p + i0 + u * step) : make_uint4(0, 0, 0, 0);
#pragma unroll
        for (int u = 0; u < UNROLL; u++) acc ^= v[u].x ^ v[u].y ^ v[u].z ^ v[u].w;
    }
    if (acc == 0x9e3779b9u) out[blockIdx.x] = acc; /* never, as far as the compiler knows */
}

#define TQ 8 /* quads a warp's loads in flight (R up to 4 * TQ * 64 bytes, a multiple of 16) */

/* SC: the scales too, at sc (R / 16 bytes a row; in rows for the tile,
 * side by side a tile for linear). */
template <bool TILE, bool SC>
static __global__ void __launch_bounds__(128) k_tile(const uint8_t *w, const uint8_t *sc, int64_t rows, int64_t rb,
                                                     unsigned *out) {
    const int64_t r0 = (int64_t)blockIdx.y * rows + (int64_t)blockIdx.x * 16, sb = rb / 16;
    const uint8_t *t = w + r0 * rb, *ts = sc + r0 * sb;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, q = lane & 3;
    unsigned acc = 0;
    uint4 v[2 * TQ];
    uint32_t s4[TQ][4];
    if (TILE) {
#pragma unroll
        for (int i = 0; i < TQ; i++) {
            const int64_t at = (warp + 4 * i) * 64 + 16 * q; /* a row's last quad may be part of one */
            v[2 * i] = at < rb ? __ldg((const uint4 *)(t + g * rb + at)) : make_uint4(0, 0, 0, 0);
            v[2 * i + 1] = at < rb ? __ldg((const uint4 *)(t + (g + 8) * rb + at)) : make_uint4(0, 0, 0, 0);
            if (SC) {
                const int64_t gs = 4 * (warp + 4 * i) + 2 * (q & 1); /* groups past the row: none read */
#pragma unroll
                for (int u = 0; u < 4; u++)
                    s4[i][u] = gs + (u & 1) < sb ? __ldg(ts + (g + 8 * (u >> 1)) * sb + gs + (u & 1)) : 0u;
            }
        }
    } else {
        const int64_t n16 = 16 * rb / 16;
#pragma unroll
        for (int i = 0; i < 2 * TQ; i++) {
            const int64_t j = threadIdx.x + 128 * i;
            v[i] = j < n16 ? __ldg((const uint4 *)t + j) : make_uint4(0, 0, 0, 0);
        }
        if (SC) {
            const uint4 z = threadIdx.x < sb ? __ldg((const uint4 *)ts + threadIdx.x) : make_uint4(0, 0, 0, 0);
            s4[0][0] = z.x, s4[0][1] = z.y, s4[0][2] = z.z, s4[0][3] = z.w;
        }
    }
#pragma unroll
    for (int i = 0; i < 2 * TQ; i++) acc ^= v[i].x ^ v[i].y ^ v[i].z ^ v[i].w;
    if (SC)
#pragma unroll
        for (int i = 0; i < (TILE ? TQ : 1); i++) acc ^= s4[i][0] ^ s4[i][1] ^ s4[i][2] ^ s4[i][3];
    if (acc == 0x9e3779b9u) out[blockIdx.x] = acc;
}

#define LAUNCHES 64 /* a graph's launches */

/* LAUNCHES launches, launch(s, l) issuing the l-th, captured once as a
 * graph and replayed four times; returns the best replay's microseconds
 * a launch (the first replay not counted), or -1 if the graph fails. */
template <typename F> static double graph_us(cudaStream_t s, cudaEvent_t e0, cudaEvent_t e1, F launch) {
    cudaGraph_t g;
    cudaGraphExec_t ge;
    cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal);
    for (int l = 0; l < LAUNCHES; l++) launch(s, l);
    if (cudaStreamEndCapture(s, &g) != cudaSuccess) return -1.0;
    if (cudaGraphInstantiate(&ge, g, 0) != cudaSuccess) {
        cudaGraphDestroy(g);
        return -1.0;
    }
    float best = 1e30f;
    for (int r = 0; r < 4; r++) {
        cudaEventRecord(e0, s);
        cudaGraphLaunch(ge, s);
        cudaEventRecord(e1, s);
        cudaEventSynchronize(e1);
        float ms;
        cudaEventElapsedTime(&ms, e0, e1);
        if (r > 0 && ms < best) best = ms;
    }
    cudaGraphExecDestroy(ge);
    cudaGraphDestroy(g);
    return best * 1e3 / LAUNCHES;
}

/* regions of `bytes` the launches take in turn within `total` */
static size_t slots_of(size_t total, size_t bytes) {
    return total / bytes < (size_t)LAUNCHES ? total / bytes : (size_t)LAUNCHES;
}

/* The pattern over 4 experts, each launch its own (weights, then their
 * scales); microseconds a launch. */
template <bool TILE, bool SC>
static double tile_run(cudaStream_t s, const uint8_t *buf, size_t total, int64_t rows, int64_t rb, unsigned *out,
                       cudaEvent_t e0, cudaEvent_t e1) {
    const size_t wb = (size_t)(4 * rows * rb), bytes = wb + wb / 16, slots = slots_of(total, bytes);
    return graph_us(s, e0, e1, [&](cudaStream_t st, int l) {
        const uint8_t *w = buf + (l % slots) * bytes;
        k_tile<TILE, SC><<<dim3((unsigned)(rows / 16), 4), 128, 0, st>>>(w, w + wb, rows, rb, out);
    });
}

int main(int argc, char **argv) {
    int dev = argc > 1 ? atoi(argv[1]) : 0;
    struct cudaDeviceProp pr;
    if (cudaSetDevice(dev) != cudaSuccess || cudaGetDeviceProperties(&pr, dev) != cudaSuccess) {
        fprintf(stderr, "bench_cuda_read: no CUDA device %d\n", dev);
        return 1;
    }
    const size_t total = (size_t)4 << 30;
    void *buf = NULL;
    unsigned *out = NULL;
    if (cudaMalloc(&buf, total) != cudaSuccess || cudaMalloc(&out, 4096 * sizeof(unsigned)) != cudaSuccess) {
        fprintf(stderr, "bench_cuda_read: cannot allocate %zu MiB\n", total >> 20);
        return 1;
    }
    cudaMemset(buf, 1, total);
    cudaStream_t s;
    cudaStreamCreate(&s);
    cudaEvent_t e0, e1;
    cudaEventCreate(&e0);
    cudaEventCreate(&e1);
    const double sizes_mb[] = {1, 4, 8, 12.6, 15.7, 32, 64, 128, 615};
    printf("%s (sm_%d%d, %d SMs): one kernel reading S bytes, %d launches a graph\n", pr.name, pr.major, pr.minor,
           pr.multiProcessorCount, LAUNCHES);
    for (size_t z = 0; z < sizeof sizes_mb / sizeof sizes_mb[0]; z++) {
        const size_t bytes = ((size_t)(sizes_mb[z] * 1e6) + 15) & ~(size_t)15, n = bytes / 16;
        const size_t slots = slots_of(total, bytes);
        size_t want = (n + THREADS - 1) / THREADS, cap = 2 * (size_t)pr.multiProcessorCount;
        const unsigned grid = (unsigned)(want < cap ? want : cap);
        const double us = graph_us(s, e0, e1, [&](cudaStream_t st, int l) {
            k_read<<<grid, THREADS, 0, st>>>((const uint4 *)((const char *)buf + (l % slots) * bytes), n, out);
        });
        if (us < 0) {
            fprintf(stderr, "bench_cuda_read: graph: %s\n", cudaGetErrorString(cudaGetLastError()));
            return 1;
        }
        printf("  %8.1f MB: %8.2f us a launch, %6.0f GB/s%s\n", bytes / 1e6, us, bytes / (us * 1e-6) / 1e9,
               slots < (size_t)LAUNCHES ? " (regions reused)" : "");
    }
    printf("the decode experts' pattern, 4 experts of N rows of R bytes, a block a tile of 16 rows:\n");
    const int64_t shapes[][2] = {{2880, 1440}, {2880, 1152}, {5760, 1440}};
    for (size_t z = 0; z < sizeof shapes / sizeof shapes[0]; z++) {
        const int64_t rows = shapes[z][0], rb = shapes[z][1];
        const double bytes = 4.0 * (double)rows * (double)rb, bs = bytes + bytes / 16;
        const double ut = tile_run<true, false>(s, (const uint8_t *)buf, total, rows, rb, out, e0, e1),
                     ul = tile_run<false, false>(s, (const uint8_t *)buf, total, rows, rb, out, e0, e1),
                     uts = tile_run<true, true>(s, (const uint8_t *)buf, total, rows, rb, out, e0, e1),
                     uls = tile_run<false, true>(s, (const uint8_t *)buf, total, rows, rb, out, e0, e1);
        if (ut < 0 || ul < 0 || uts < 0 || uls < 0) {
            fprintf(stderr, "bench_cuda_read: graph: %s\n", cudaGetErrorString(cudaGetLastError()));
            return 1;
        }
        printf("  N %5lld R %5lld (%5.1f MB): tile %7.2f us (%4.0f GB/s), linear %7.2f us (%4.0f GB/s)\n",
               (long long)rows, (long long)rb, bytes / 1e6, ut, bytes / (ut * 1e-6) / 1e9, ul,
               bytes / (ul * 1e-6) / 1e9);
        printf("    with scales (%5.1f MB): tile %7.2f us (%4.0f GB/s), linear %7.2f us (%4.0f GB/s)\n", bs / 1e6, uts,
               bs / (uts * 1e-6) / 1e9, uls, bs / (uls * 1e-6) / 1e9);
    }
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) {
        fprintf(stderr, "bench_cuda_read: %s\n", cudaGetErrorString(e));
        return 1;
    }
    return 0;
}
