/* How long one kernel takes to read S bytes of device memory once, for
 * the sizes of a decode step's products (a few MB to the lm_head's
 * ~600 MB): the floor a product of that size can reach, which for small
 * ones is not S / bandwidth. Each size runs as a CUDA graph of 64 launches
 * back to back (as a decode step replays them), each launch reading its own
 * region of a buffer far larger than the L2 cache; prints microseconds a
 * launch and GB/s. The grid is two blocks of 512 threads an SM, each
 * thread with eight 16-byte loads in flight.
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
    printf("%s (sm_%d%d, %d SMs): one kernel reading S bytes, 64 launches a graph\n", pr.name, pr.major, pr.minor,
           pr.multiProcessorCount);
    for (size_t z = 0; z < sizeof sizes_mb / sizeof sizes_mb[0]; z++) {
        const size_t bytes = ((size_t)(sizes_mb[z] * 1e6) + 15) & ~(size_t)15, n = bytes / 16;
        const int launches = 64;
        const size_t slots = total / bytes < (size_t)launches ? total / bytes : (size_t)launches;
        size_t want = (n + THREADS - 1) / THREADS, cap = 2 * (size_t)pr.multiProcessorCount;
        const unsigned grid = (unsigned)(want < cap ? want : cap);
        cudaGraph_t g;
        cudaGraphExec_t ge;
        cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal);
        for (int l = 0; l < launches; l++)
            k_read<<<grid, THREADS, 0, s>>>((const uint4 *)((const char *)buf + (l % slots) * bytes), n, out);
        cudaStreamEndCapture(s, &g);
        if (cudaGraphInstantiate(&ge, g, 0) != cudaSuccess) {
            fprintf(stderr, "bench_cuda_read: graph: %s\n", cudaGetErrorString(cudaGetLastError()));
            return 1;
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
        const double us = best * 1e3 / launches;
        printf("  %8.1f MB: %8.2f us a launch, %6.0f GB/s%s\n", bytes / 1e6, us, bytes / (us * 1e-6) / 1e9,
               slots < (size_t)launches ? " (regions reused)" : "");
        cudaGraphExecDestroy(ge);
        cudaGraphDestroy(g);
    }
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) {
        fprintf(stderr, "bench_cuda_read: %s\n", cudaGetErrorString(e));
        return 1;
    }
    return 0;
}
