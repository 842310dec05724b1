/* launch.cu -- whether kernels go with programmatic dependent launch (launch.cuh): one switch for the
 * process, set when a backend opens its device. */
#include <stdlib.h>
#include <string.h>

#include "backend/cuda/kernels.h"

static int dependent_launch;

void cuda_set_dependent_launch(int compute_major) {
    const char *v = getenv("SHARDLM_PDL");
    dependent_launch = compute_major >= 9 && !(v && strcmp(v, "0") == 0);
}

int cuda_dependent_launch(void) { return dependent_launch; }
