/* cuda_backend.h -- the CUDA backend's constructor and its stream (cuda_backend.c). */
#ifndef SL_BACKEND_CUDA_CUDA_BACKEND_H
#define SL_BACKEND_CUDA_CUDA_BACKEND_H

#include <cuda_runtime_api.h>

#include "backend/backend.h"

/* GPUs this process can see (0 when there is no driver or no device). */
int sl_cuda_device_count(void);
/* Total memory of GPU `device`, without starting a context on it (0 if it cannot be read). */
size_t sl_cuda_device_memory(int device);
int sl_cuda_backend_create(const sl_backend_options *o, sl_backend *out, sl_err *err);
/* The stream every op of b is issued on: work enqueued there (NCCL's) runs in order with the ops. */
cudaStream_t sl_cuda_backend_stream(const sl_backend *b);
/* Others (NCCL) enqueued work there: b's next kernel waits for it the ordinary way, not programmatically. */
void sl_cuda_backend_enqueued(const sl_backend *b);
/* Pairs of projections b's matmul has run as one batched GEMM (tests: that the pairing happens). */
long sl_cuda_backend_gemm_pairs(const sl_backend *b);

#endif
