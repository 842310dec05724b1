#!/usr/bin/env python3
"""check_cuda_launch.py SRC_DIR -- every kernel of the CUDA backend goes
through launch.cuh: no <<<>>> launch, and every __global__ function's body
calls wait_previous_kernel(). launch() sets programmatic dependent launch,
which lets a kernel start before the one before it has ended; a kernel
without the wait would then read or write memory that one still uses.
The wait covers kernels only, so every copy, memset, cuBLASLt call and graph
launch the backend enqueues is followed by cuda_enqueued_other(), after which
the next kernel is launched the ordinary way.
First checks itself on sources it must refuse and one it must accept."""
import pathlib
import re
import sys


KERNEL = re.compile(r"__global__\s[^;{]*?\b(\w+)\s*\([^;{]*?\)\s*\{")  # a kernel's definition, up to its body
OTHER = re.compile(r"\b(cudaMemcpyAsync|cudaMemsetAsync|cublasLtMatmul|cudaGraphLaunch)\s*\(")  # non-kernel work
NOTE_WITHIN = 400  # characters after such a call in which cuda_enqueued_other must follow


def problems(name, text):
    out = []
    for m in re.finditer(r"<<<", text):
        out.append(f"{name}:{text.count(chr(10), 0, m.start()) + 1}: a <<<>>> launch (use launch(), launch.cuh)")
    for m in KERNEL.finditer(text):
        depth, i = 1, m.end()
        while depth and i < len(text):
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        if "wait_previous_kernel()" not in text[m.end():i]:
            line = text.count("\n", 0, m.start()) + 1
            out.append(f"{name}:{line}: kernel {m.group(1)} never calls wait_previous_kernel()")
    for m in OTHER.finditer(text):
        if "cuda_enqueued_other(" not in text[m.end():m.end() + NOTE_WITHIN]:
            line = text.count("\n", 0, m.start()) + 1
            out.append(f"{name}:{line}: {m.group(1)} not followed by cuda_enqueued_other()")
    return out


def main():
    good = "__global__ void k(int *x) {\n    wait_previous_kernel();\n    if (x) { *x = 1; }\n}\n"
    no_wait = "__global__ void k(int *x) {\n    if (x) { *x = 1; }\n}\n"
    chevrons = good + "void f() { k<<<1, 1>>>(0); }\n"
    copy = "void g(cudaStream_t s) {\n    cudaMemcpyAsync(d, h, n, cudaMemcpyHostToDevice, s);\n"
    noted = good + copy + "    cuda_enqueued_other(s);\n}\n"
    unnoted = good + copy + "}\n"
    assert not problems("good", noted), problems("good", noted)
    assert all(problems(n, t) for n, t in [("no_wait", no_wait), ("chevrons", chevrons), ("unnoted", unnoted)]), \
        "the check accepts what it must refuse"
    src = pathlib.Path(sys.argv[1])
    files = sorted(src.glob("*.cu")) + sorted(src.glob("*.c"))
    found = [p for f in files for p in problems(str(f), f.read_text())]
    kernels = sum(len(KERNEL.findall(f.read_text())) for f in files)
    for p in found:
        print(p)
    print(f"{len(files)} files, {kernels} kernels: {'FAIL' if found or not kernels else 'ok'}")
    return 1 if found or not kernels else 0


if __name__ == "__main__":
    sys.exit(main())
