/* tensor_comm.c -- which tensor communicator a rank gets (tensor_comm.h).
 *
 * One place decides: today MPI for every backend, staged through pinned host
 * buffers where the backend's memory is not the host's (MPI reads host
 * memory); NCCL for GPU ranks comes here next. */
#include "parallel/tensor_comm.h"

#include <stdlib.h>

#include "util/log.h"

int sl_tensor_comm_open(const sl_dist *d, const sl_backend *b, size_t max_bytes, sl_tensor_comm *out, sl_err *err) {
    const char *debug = getenv("SHARDLM_DEBUG_STAGE_COMM");
    const int stage = !b->iface->host_memory || (debug && atoi(debug) > 0);
    SL_DEBUG("tensors between ranks: MPI%s", stage ? ", through pinned host buffers" : "");
    return sl__tensor_comm_mpi_open(d, b, max_bytes, stage, out, err);
}

void sl_tensor_comm_close(sl_tensor_comm *t) {
    if (t->iface) t->iface->destroy(t->ctx);
    t->iface = NULL;
    t->ctx = NULL;
}
