/* test_tensor_comm.c -- choosing the tensor communicator, on the CPU.
 *
 * The rule every rank applies to what all ranks told each other (NCCL unless
 * a rank asks for MPI or two ranks share a GPU of one machine), and the
 * factory's answers that need no second rank: SHARDLM_TENSOR_COMM checked,
 * NCCL asked for on the CPU backend refused in one sentence, MPI otherwise.
 * tests/parallel/test_tensor_comm_nccl.c opens NCCL itself on a GPU. */
#include "backend/backend.h"
#include "parallel/tensor_comm.h"
#include "test.h"

static sl_tensor_comm_rank rank_on(const char *host, const char *gpu) {
    sl_tensor_comm_rank r = {.want = SL_TENSOR_COMM_AUTO};
    snprintf(r.host, sizeof r.host, "%s", host);
    snprintf(r.gpu, sizeof r.gpu, "%s", gpu);
    return r;
}

static void test_own_gpus(void) {
    char why[256] = "";
    sl_tensor_comm_rank one[] = {rank_on("a", "0000:19:00.0")};
    CHECK(sl__tensor_comm_can_nccl(one, 1, why, sizeof why));
    sl_tensor_comm_rank four[] = {rank_on("a", "0000:19:00.0"), rank_on("a", "0000:3B:00.0"),
                                  rank_on("b", "0000:19:00.0"), rank_on("b", "0000:3B:00.0")};
    CHECK(sl__tensor_comm_can_nccl(four, 4, why, sizeof why)); /* the same bus id on two machines is two GPUs */
    four[2].want = SL_TENSOR_COMM_NCCL;
    CHECK(sl__tensor_comm_can_nccl(four, 4, why, sizeof why));
}

static void test_shared_gpu(void) {
    char why[256] = "";
    sl_tensor_comm_rank two[] = {rank_on("a", "0000:19:00.0"), rank_on("a", "0000:19:00.0")};
    CHECK(!sl__tensor_comm_can_nccl(two, 2, why, sizeof why));
    CHECK_STR(why, "ranks 0 and 1 share GPU 0000:19:00.0 on a, and NCCL cannot run two ranks of one communicator "
                   "on one GPU");
    sl_tensor_comm_rank three[] = {rank_on("a", "0000:19:00.0"), rank_on("b", "0000:3B:00.0"),
                                   rank_on("b", "0000:3B:00.0")};
    CHECK(!sl__tensor_comm_can_nccl(three, 3, why, sizeof why));
    CHECK_CONTAINS(why, "ranks 1 and 2 share GPU 0000:3B:00.0 on b");
}

static void test_asks_for_mpi(void) {
    char why[256] = "";
    sl_tensor_comm_rank two[] = {rank_on("a", "0000:19:00.0"), rank_on("a", "0000:3B:00.0")};
    two[1].want = SL_TENSOR_COMM_MPI;
    CHECK(!sl__tensor_comm_can_nccl(two, 2, why, sizeof why));
    CHECK_STR(why, "rank 1 asks for MPI (SHARDLM_TENSOR_COMM=mpi)");
}

/* The factory on the CPU backend, for one rank (opening MPI's communicator sends nothing). */
static void test_factory_cpu(void) {
    sl_backend cpu;
    sl_err err = {0};
    sl_backend_options o = {.n_threads = 1, .device_index = -1};
    if (sl_backend_create("cpu", &o, &cpu, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        CHECK(0);
        return;
    }
    sl_dist d = {.tp_size = 1, .pp_size = 1, .prev_stage = -1, .next_stage = -1, .timeout_s = 5};
    sl_tensor_comm t = {0};
    setenv("SHARDLM_TENSOR_COMM", "gloo", 1);
    CHECK_EQ_INT(sl_tensor_comm_open(&d, &cpu, 1024, &t, &err), SL_EINVAL);
    CHECK_STR(err.msg, "SHARDLM_TENSOR_COMM is \"gloo\": use mpi or nccl (or leave it unset)");
    setenv("SHARDLM_TENSOR_COMM", "nccl", 1);
    CHECK_EQ_INT(sl_tensor_comm_open(&d, &cpu, 1024, &t, &err), SL_ENOTSUP);
    CHECK_CONTAINS(err.msg, "SHARDLM_TENSOR_COMM=nccl, but rank 0 has the cpu backend in a build");
    setenv("SHARDLM_TENSOR_COMM", "mpi", 1);
    CHECK_EQ_INT(sl_tensor_comm_open(&d, &cpu, 1024, &t, &err), SL_OK);
    CHECK(t.iface && !t.iface->wait);
    CHECK_EQ_INT(sl_tensor_comm_wait(&t, &err), SL_OK);
    sl_tensor_comm_close(&t);
    unsetenv("SHARDLM_TENSOR_COMM");
    CHECK_EQ_INT(sl_tensor_comm_open(&d, &cpu, 1024, &t, &err), SL_OK);
    sl_tensor_comm_close(&t);
    cpu.iface->destroy(cpu.ctx);
}

int main(void) {
    TEST_RUN(test_own_gpus);
    TEST_RUN(test_shared_gpu);
    TEST_RUN(test_asks_for_mpi);
    TEST_RUN(test_factory_cpu);
    TEST_EXIT();
}
