#!/usr/bin/env bash
# test.sh -- the whole test suite, from a fresh machine: installs what is
# missing, fetches and converts the default model, builds in Release, under
# ASan/UBSan, with clang (warnings only), for valgrind and with the CUDA
# backend (where nvcc is; its GPU tests skip without a GPU), and runs the C
# tests under the sanitizers and valgrind, then every test on the Release
# build. The last line is ctest's summary of the Release run.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
jobs=$(nproc)

tools/install-deps.sh
tools/venv.sh
tools/get-default-model.sh

build() { # build DIR TYPE [CMAKE OPTIONS...] (the compiler is $CC, gcc by default)
  cmake -S . -B "$1" -DCMAKE_BUILD_TYPE="$2" -DSHARDLM_CUDA=OFF \
        -DSHARDLM_TEST_PYTHON="$root/build/venv/bin/python" "${@:3}" >/dev/null
  cmake --build "$1" -j "$jobs" ${targets:+--target $targets}
}

build build/sanitize Sanitize
build build/release Release
# clang must compile the tree warning-free too (-Werror); its binaries are not run again
CC=clang build build/clang Release
# valgrind memcheck runs the C tests once more, built for a generic x86-64 (valgrind does
# not know every AVX-512 instruction -march=native may emit)
build build/valgrind RelWithDebInfo -DSHARDLM_NATIVE=OFF -DSHARDLM_VALGRIND=ON

# With a CUDA toolkit, the CUDA backend is compiled (every architecture the release build
# targets) with the GPU tests; they run below and skip, saying so, where no GPU is visible.
cuda=0
if command -v nvcc >/dev/null || [ -x /usr/local/cuda/bin/nvcc ]; then
  cuda=1
  targets=gpu_tests build build/cuda Release -DSHARDLM_CUDA=ON
else
  echo "test.sh: no CUDA toolkit (nvcc): the CUDA backend is not compiled"
fi

status=0
# The sanitizer run covers the C tests (label "c"); Python-driven tests run once, below.
# Slow variants (random-seed differential runs, long fuzzing) are their own targets: label "slow".
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
  ctest --test-dir build/sanitize -L c -LE slow -j "$jobs" --output-on-failure || status=1
# Under valgrind, leave out what takes minutes there and is covered above: the
# randomized scheduler run (test_engine, and test_engine_padded, the same program: 718 s
# alone there), the 135M-parameter default model (the fixtures take its paths)
# the 16-bit KV cache goldens (test_kernels takes those kernels' paths under valgrind) and
# the sampler's 190 000 draws.
ctest --test-dir build/valgrind -L c -LE slow -E '^(test_engine|test_engine_padded|test_sampler|test_guide|golden_smollm2.*|golden_.*_kv_.*)$' -j "$jobs" \
  --output-on-failure || status=1
if [ $cuda = 1 ]; then
  ctest --test-dir build/cuda -L gpu -j "$jobs" --output-on-failure || status=1
  # a skipped test's reason, once: "SKIP: no GPU visible ..." (nothing when a GPU ran them)
  "$root/build/cuda/tests/backend/test_cuda_ops" 2>&1 | grep '^SKIP' || true
fi
ctest --test-dir build/release -LE slow -j "$jobs" --output-on-failure || status=1
exit $status
