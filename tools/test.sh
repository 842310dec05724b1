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

build() { # build DIR TYPE
  cmake -S . -B "$1" -DCMAKE_BUILD_TYPE="$2" -DSHARDLM_CUDA=OFF \
        -DSHARDLM_TEST_PYTHON="$root/build/venv/bin/python" >/dev/null
  cmake --build "$1" -j "$jobs"
}

build build/sanitize Sanitize
build build/release Release

status=0
# The sanitizer run covers the C tests (label "c"); Python-driven tests run once, below.
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
  ctest --test-dir build/sanitize -L c -j "$jobs" --output-on-failure || status=1
ctest --test-dir build/release -j "$jobs" --output-on-failure || status=1
exit $status
