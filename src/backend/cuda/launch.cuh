/* launch.cuh -- how the CUDA backend's kernels are launched: every one with
 * programmatic dependent launch (PDL, sm_90+) where the device has it.
 *
 * A decode step is a chain of short kernels, each waiting for the one before:
 * between two of them the GPU drains the first grid, then launches and ramps
 * up the next. With PDL a kernel may be launched while the one before it in
 * the stream still runs: its blocks take the SM room the last blocks of the
 * earlier grid leave, and wait in wait_previous_kernel() until that grid has
 * ended and its writes are visible. So every kernel launched here calls
 * wait_previous_kernel() before it reads or writes memory another kernel
 * touches; only what no kernel writes (the weights) may be read before it,
 * which is how gemv.cu starts reading its rows early. The wait also lets the
 * kernel after this one be launched (launch_dependents), so at most two
 * grids are in flight and the waiting one holds only room the running one
 * no longer needs. The wait covers grids only: a kernel whose predecessor on
 * the stream is anything else (a copy, a memset, cuBLASLt's or NCCL's work, a
 * graph) is launched the ordinary way, so every site that enqueues such work
 * says so (cuda_enqueued_other, sl_cuda_backend_enqueued). CUDA graphs keep
 * these edges when captured.
 *
 * cuda_set_dependent_launch (kernels.h) turns it on for Hopper and later when
 * a backend opens its device unless SHARDLM_PDL=0; elsewhere the attribute is
 * not set and the wait does nothing. */
#ifndef SL_BACKEND_CUDA_LAUNCH_CUH
#define SL_BACKEND_CUDA_LAUNCH_CUH

#include <cuda_runtime.h>

#include "backend/cuda/kernels.h"

/* Waits until the kernel before this one in the stream has ended and its writes are visible, then lets the
 * next kernel launch. A no-op before sm_90 and for kernels launched without the attribute. */
__device__ __forceinline__ void wait_previous_kernel() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

/* Attribute A of the current device, asked once per attribute (0 if it cannot be read): launch shapes that
 * depend on the SM count or the shared memory a block may have. */
template <cudaDeviceAttr A> static inline int device_attribute() {
    static const int value = [] {
        int dev = 0, v = 0;
        if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&v, A, dev) != cudaSuccess) v = 0;
        return v;
    }();
    return value;
}

/* kernel<<<grid, block, smem, s>>>(args...), with programmatic dependent launch where it is on and the newest
 * work on s is another of these kernels. */
template <typename... Params, typename... Args>
static inline void launch(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t s,
                          Args... args) {
    cudaLaunchAttribute attr;
    attr.id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr.val.programmaticStreamSerializationAllowed = 1;
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = grid, cfg.blockDim = block, cfg.dynamicSmemBytes = smem, cfg.stream = s;
    cfg.attrs = &attr, cfg.numAttrs = cuda_dependent_launch_after(s) ? 1 : 0;
    cudaLaunchKernelEx(&cfg, kernel, static_cast<Params>(args)...);
}

#endif
