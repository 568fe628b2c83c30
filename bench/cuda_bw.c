/* Device memory bandwidth of the CUDA card: a device-to-device copy of a
 * buffer far larger than the L2 cache (each byte read once and written
 * once), timed with events; prints the card's name and the best of a few
 * runs in GB/s of bytes moved (read + write). The ceiling the decode
 * figures are compared with. Usage: bench_cuda_bw [MiB] [device] */
#include <stdio.h>
#include <stdlib.h>

#include <cuda_runtime_api.h>

int main(int argc, char **argv) {
    size_t mib = argc > 1 ? strtoul(argv[1], NULL, 10) : 2048;
    int dev = argc > 2 ? atoi(argv[2]) : 0;
    struct cudaDeviceProp p;
    if (cudaSetDevice(dev) != cudaSuccess || cudaGetDeviceProperties(&p, dev) != cudaSuccess) {
        fprintf(stderr, "bench_cuda_bw: no CUDA device %d\n", dev);
        return 1;
    }
    size_t bytes = mib << 20;
    void *a = NULL, *b = NULL;
    if (cudaMalloc(&a, bytes) != cudaSuccess || cudaMalloc(&b, bytes) != cudaSuccess) {
        fprintf(stderr, "bench_cuda_bw: cannot allocate 2 x %zu MiB\n", mib);
        return 1;
    }
    cudaMemset(a, 1, bytes);
    cudaEvent_t e0, e1;
    cudaEventCreate(&e0);
    cudaEventCreate(&e1);
    float best = 1e30f;
    for (int r = 0; r < 6; r++) {
        cudaEventRecord(e0, 0);
        cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, 0);
        cudaEventRecord(e1, 0);
        cudaEventSynchronize(e1);
        float ms;
        cudaEventElapsedTime(&ms, e0, e1);
        if (r > 0 && ms < best) best = ms; /* the first run warms up */
    }
    printf("%s (sm_%d%d, %.1f GiB): device-to-device copy of %zu MiB: %.0f GB/s (read + write)\n", p.name, p.major,
           p.minor, (double)p.totalGlobalMem / (1 << 30), mib, 2.0 * (double)bytes / (best * 1e-3) / 1e9);
    cudaFree(a);
    cudaFree(b);
    return 0;
}
