/* cuda_trace.c -- a GPU timeline of any CUDA program, without Nsight Systems:
 * a CUPTI injection library. CUDA loads it into the program when the program
 * first touches CUDA, with
 *
 *   CUDA_INJECTION64_PATH=libcuda_trace.so CUDA_TRACE_OUT=trace.tsv PROGRAM ...
 *
 * and it writes one line per kernel, copy, memset and CUDA runtime or driver
 * call until the program exits:
 *
 *   K|M|S|R|D  start_ns  end_ns  stream (K, M, S) or thread id (R, D)  name
 *
 * All on one clock (CUPTI's), so the kernels' union says how long the GPU
 * was busy and the R/D lines what the host was doing in the gaps (waiting in
 * a synchronize, or not calling CUDA at all). bench/cuda_trace_report.py
 * reads the file. Nothing is printed while the program runs; the records are
 * written as CUPTI hands its buffers back and at exit. */
#include <cupti.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define BUFFER_SIZE (8u << 20)

static FILE *out;

static void CUPTIAPI buffer_requested(uint8_t **buffer, size_t *size, size_t *max_records) {
    *buffer = aligned_alloc(8, BUFFER_SIZE);
    *size = *buffer ? BUFFER_SIZE : 0;
    *max_records = 0;
}

static const char *api_name(CUpti_CallbackDomain domain, CUpti_CallbackId cbid) {
    const char *name = NULL;
    return cuptiGetCallbackName(domain, cbid, &name) == CUPTI_SUCCESS && name ? name : "?";
}

static void write_record(const CUpti_Activity *r) {
    switch (r->kind) {
    case CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL:
    case CUPTI_ACTIVITY_KIND_KERNEL: {
        const CUpti_ActivityKernel10 *k = (const CUpti_ActivityKernel10 *)r;
        fprintf(out, "K\t%" PRIu64 "\t%" PRIu64 "\t%u\t%s\n", k->start, k->end, k->streamId, k->name);
        break;
    }
    case CUPTI_ACTIVITY_KIND_MEMCPY: {
        const CUpti_ActivityMemcpy6 *m = (const CUpti_ActivityMemcpy6 *)r;
        fprintf(out, "M\t%" PRIu64 "\t%" PRIu64 "\t%u\tcopy kind %u, %" PRIu64 " bytes\n", m->start, m->end,
                m->streamId, m->copyKind, m->bytes);
        break;
    }
    case CUPTI_ACTIVITY_KIND_MEMSET: {
        const CUpti_ActivityMemset4 *m = (const CUpti_ActivityMemset4 *)r;
        fprintf(out, "S\t%" PRIu64 "\t%" PRIu64 "\t%u\tmemset %" PRIu64 " bytes\n", m->start, m->end, m->streamId,
                m->bytes);
        break;
    }
    case CUPTI_ACTIVITY_KIND_RUNTIME:
    case CUPTI_ACTIVITY_KIND_DRIVER: {
        const CUpti_ActivityAPI *a = (const CUpti_ActivityAPI *)r;
        int runtime = r->kind == CUPTI_ACTIVITY_KIND_RUNTIME;
        fprintf(out, "%c\t%" PRIu64 "\t%" PRIu64 "\t%u\t%s\n", runtime ? 'R' : 'D', a->start, a->end, a->threadId,
                api_name(runtime ? CUPTI_CB_DOMAIN_RUNTIME_API : CUPTI_CB_DOMAIN_DRIVER_API, a->cbid));
        break;
    }
    default:
        break;
    }
}

static void CUPTIAPI buffer_completed(CUcontext ctx, uint32_t stream, uint8_t *buffer, size_t size, size_t valid) {
    (void)ctx, (void)stream, (void)size;
    CUpti_Activity *r = NULL;
    while (cuptiActivityGetNextRecord(buffer, valid, &r) == CUPTI_SUCCESS) write_record(r);
    free(buffer);
}

static void flush_at_exit(void) {
    cuptiActivityFlushAll(1);
    if (out) fclose(out);
    out = NULL;
}

/* Called by CUDA once, in the program's first CUDA call, when CUDA_INJECTION64_PATH names this library; found
 * by name, so exported past the project's hidden visibility (ctest cuda_trace_exports). */
__attribute__((visibility("default"))) int InitializeInjection(void) {
    const char *path = getenv("CUDA_TRACE_OUT");
    out = fopen(path ? path : "cuda_trace.tsv", "w");
    if (!out) {
        fprintf(stderr, "cuda_trace: cannot write %s\n", path ? path : "cuda_trace.tsv");
        return 0;
    }
    static const CUpti_ActivityKind kinds[] = {CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL, CUPTI_ACTIVITY_KIND_MEMCPY,
                                               CUPTI_ACTIVITY_KIND_MEMSET, CUPTI_ACTIVITY_KIND_RUNTIME,
                                               CUPTI_ACTIVITY_KIND_DRIVER};
    if (cuptiActivityRegisterCallbacks(buffer_requested, buffer_completed) != CUPTI_SUCCESS) {
        fprintf(stderr, "cuda_trace: CUPTI refused its buffer callbacks; no trace\n");
        return 0;
    }
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
        if (cuptiActivityEnable(kinds[i]) != CUPTI_SUCCESS) fprintf(stderr, "cuda_trace: activity kind %d not traced\n", kinds[i]);
    atexit(flush_at_exit);
    return 1;
}
