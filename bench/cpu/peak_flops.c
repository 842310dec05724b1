/* peak_flops.c -- this machine's float32 FMA peak: every thread runs
 * independent chains of 16-lane fused multiply-adds that stay in registers,
 * so the figure is what the cores can do, the ceiling for the GEMM's
 * GFLOP/s in bench/RESULTS.md. Where the build and the CPU have AMX, also
 * its bf16 peak: four independent tdpbf16ps on tiles that stay loaded (the
 * ceiling of the matmul's tile path). Usage: peak_flops (OMP_NUM_THREADS threads). */
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#if defined(__AMX_TILE__) && defined(__AMX_BF16__) && defined(__linux__)
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>
#define HAVE_AMX 1
#endif

typedef float vf __attribute__((vector_size(64)));

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

#ifdef HAVE_AMX
/* GFLOP/s of bf16 tile multiply-adds on every thread; 0 where Linux refuses the tiles. */
static double amx_peak(void) {
    if (syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XTILEDATA */) != 0) return 0;
    const long iters = 2000000;
    double best = 0;
    for (int rep = 0; rep < 3; rep++) {
        double t0 = now_s();
#pragma omp parallel
        {
            struct {
                uint8_t palette, start_row, reserved[14];
                uint16_t colsb[16];
                uint8_t rows[16];
            } cfg = {.palette = 1, .colsb = {64, 64, 64, 64, 64, 64, 64, 64}, .rows = {16, 16, 16, 16, 16, 16, 16, 16}};
            static const uint16_t zeros[16 * 32];
            __asm__ volatile("" : : "r"(&cfg) : "memory"); /* gcc 12 drops the stores ldtilecfg reads */
            _tile_loadconfig(&cfg);
            _tile_loadd(4, zeros, 64);
            _tile_loadd(5, zeros, 64);
            _tile_loadd(6, zeros, 64);
            _tile_loadd(7, zeros, 64);
            for (long i = 0; i < iters; i++) {
                _tile_dpbf16ps(0, 4, 6);
                _tile_dpbf16ps(1, 4, 7);
                _tile_dpbf16ps(2, 5, 6);
                _tile_dpbf16ps(3, 5, 7);
            }
            _tile_release();
        }
        double dt = now_s() - t0, gflops = 4.0 * 2 * 16 * 16 * 32 * iters * omp_get_max_threads() / dt / 1e9;
        if (gflops > best) best = gflops;
    }
    return best;
}
#endif

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
#ifdef HAVE_AMX
    const double amx = amx_peak();
    if (amx > 0) printf("peak bf16 AMX: %.1f GFLOP/s on %d threads\n", amx, omp_get_max_threads());
#endif
    return 0;
}
