#!/usr/bin/env bash
# test.sh -- the whole test suite, from a fresh machine: installs what is
# missing, builds once in Release and once under ASan/UBSan, fetches and
# converts the default model, and runs ctest on both builds. The last line is
# ctest's summary of the Release run.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
jobs=$(nproc)

tools/install-deps.sh
tools/venv.sh
tools/get-default-model.sh

build() { # build DIR TYPE (the compiler is $CC, gcc by default)
  cmake -S . -B "$1" -DCMAKE_BUILD_TYPE="$2" -DSHARDLM_CUDA=OFF \
        -DSHARDLM_TEST_PYTHON="$root/build/venv/bin/python" >/dev/null
  cmake --build "$1" -j "$jobs"
}

build build/sanitize Sanitize
build build/release Release
# clang must compile the tree warning-free too (-Werror); its binaries are not run again
CC=clang build build/clang Release

# Tests start many processes (servers, MPI ranks, clients) on few cores: OpenMP
# threads that spin between parallel regions would starve them, so tests let
# idle threads sleep. (Benchmarks choose their own policy; see bench/run_cpu.sh.)
export OMP_WAIT_POLICY=passive

status=0
# The sanitizer run covers the C tests (label "c"); Python-driven tests run once, below.
# Slow variants (random-seed differential runs, long fuzzing) are their own targets: label "slow".
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
  ctest --test-dir build/sanitize -L c -LE slow -j "$jobs" --output-on-failure || status=1
ctest --test-dir build/release -LE slow -j "$jobs" --output-on-failure || status=1
exit $status
