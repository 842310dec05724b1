/* peak_flops.c -- this machine's float32 FMA peak: every thread runs
 * independent chains of 16-lane fused multiply-adds that stay in registers,
 * so the figure is what the cores can do, the ceiling for the GEMM's
 * GFLOP/s in bench/RESULTS.md. Usage: peak_flops (OMP_NUM_THREADS threads). */
#include <omp.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

typedef float vf __attribute__((vector_size(64)));

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int main(void) {
    const long iters = 200000000L / 16;
    double best = 0;
    for (int rep = 0; rep < 3; rep++) {
        double t0 = now_s(), sink = 0;
#pragma omp parallel reduction(+ : sink)
        {
            vf a[12], m, c;
            for (int i = 0; i < 16; i++) m[i] = 0.999999f, c[i] = 1e-7f;
            for (int j = 0; j < 12; j++) a[j] = m * (float)(j + 1);
            for (long i = 0; i < iters; i++)
                for (int j = 0; j < 12; j++) a[j] = a[j] * m + c;
            for (int j = 0; j < 12; j++) sink += a[j][0];
        }
        double dt = now_s() - t0;
        double gflops = 2.0 * 16 * 12 * iters * omp_get_max_threads() / dt / 1e9;
        if (gflops > best && sink != 0) best = gflops;
    }
    printf("peak float32 FMA: %.1f GFLOP/s on %d threads\n", best, omp_get_max_threads());
    return 0;
}
