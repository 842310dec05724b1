#!/usr/bin/env bash
# gpu-bundle.sh DIR -- a self-contained bundle for running bench/gpu.sh and
# bench/gpu_check.sh on a GPU machine that lacks shardlm's build dependencies
# (libmicrohttpd, jansson, libcurl, utf8proc...): the Hopper build of shardlm,
# its GPU tests (test_cuda_ops, test_golden, test_tensor_comm_nccl), NCCL's
# all-reduce benchmark (nccl_allreduce_bench) and the CUPTI timeline library
# (libcuda_trace.so; CUPTI itself goes to DIR/lib) in DIR/bin,
# the shared libraries they need beyond glibc, CUDA and NCCL in DIR/lib, the
# Llama 3.1 tokenizer and the PyTorch peer beside them. Built
# here (Debian 12: glibc 2.36, so it runs on newer distributions too); there:
#
#   LD_LIBRARY_PATH=DIR/lib SHARDLM_BIN=DIR/bin TOKENIZERS=DIR/tokenizers \
#     TORCH_STATIC=DIR/peers/torch_static.py bench/gpu.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:?usage: tools/gpu-bundle.sh DIR}
shared=${SHARED:-$root/../shared}
cd "$root"
cmake -S . -B build/gpu-bundle -DCMAKE_BUILD_TYPE=Release -DSHARDLM_CUDA=ON -DSHARDLM_NATIVE=OFF \
      -DCMAKE_CUDA_ARCHITECTURES=90a-real >/dev/null
cmake --build build/gpu-bundle -j "$(nproc)" --target shardlm_cli shardlm test_cuda_ops test_golden \
      test_tensor_comm_nccl nccl_allreduce_bench cuda_trace >/dev/null
mkdir -p "$out/bin" "$out/lib" "$out/tokenizers" "$out/peers"
cp build/gpu-bundle/shardlm build/gpu-bundle/tests/backend/test_cuda_ops build/gpu-bundle/tests/model/test_golden \
   build/gpu-bundle/tests/parallel/test_tensor_comm_nccl build/gpu-bundle/bench/nccl_allreduce_bench "$out/bin/"
cp build/gpu-bundle/libshardlm.so build/gpu-bundle/bench/libcuda_trace.so "$out/bin/"
ldd build/gpu-bundle/bench/libcuda_trace.so | awk '/libcupti/{print $3}' | xargs -r -I{} cp -L {} "$out/lib/"
# every library the binary loads but glibc's, the compiler runtime's, CUDA's and NCCL's (the GPU machine has its
# own, NCCL 2.28 in /lib/x86_64-linux-gnu; this one is over 200 MB)
ldd build/gpu-bundle/shardlm | awk '/=> \//{print $3}' |
  grep -vE '/(libc|libm|libpthread|libdl|librt|libresolv|ld-linux[^/]*|libgcc_s|libstdc\+\+|libcuda|libcudart|libcublas[^/]*|libnccl)\.so' |
  while read -r lib; do cp -L "$lib" "$out/lib/"; done
cp -r "$shared/tokenizers/llama3.1" "$out/tokenizers/"
cp "$shared/peers/torch_static.py" "$out/peers/"
du -sh "$out"
