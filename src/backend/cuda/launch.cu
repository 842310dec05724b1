/* launch.cu -- whether a kernel goes with programmatic dependent launch (launch.cuh): one switch for the
 * process, set when a backend opens its device, and, per stream, whether the newest work there is a kernel
 * launched through launch(). */
#include <stdlib.h>
#include <string.h>

#include "backend/cuda/kernels.h"

static int dependent_launch;
/* The stream whose newest work is one of launch()'s kernels, or NULL; per thread, since a stream is issued to
 * from one thread (its engine's loop) and two engines' threads must not race on it. A thread that switches
 * streams forgets the other's state, which only costs that kernel the attribute. */
static thread_local cudaStream_t kernel_last;

/* On unless SHARDLM_PDL=0 (the GPU tests run both ways: bench/gpu.sh). */
void cuda_set_dependent_launch(int compute_major) {
    const char *v = getenv("SHARDLM_PDL");
    dependent_launch = compute_major >= 9 && !(v && strcmp(v, "0") == 0);
}

int cuda_dependent_launch_after(cudaStream_t s) {
    const int yes = dependent_launch && kernel_last == s;
    kernel_last = s;
    return yes;
}

void cuda_enqueued_other(cudaStream_t s) {
    if (kernel_last == s) kernel_last = NULL;
}
