#!/usr/bin/env python3
"""test_cuda_trace_report.py REPORT -- bench/cuda_trace_report.py on a timeline whose answer is known.

Two bursts of GPU work: a GEMM, a 50 us gap while the host copies, attention and a copy; then 10 ms
idle while the host waits in cudaStreamSynchronize, then one more GEMM. The report must find both
bursts, the gap with its neighbours and the host's call, the idle time before the second burst and
what the host did in it, and the totals. Standard library only.
"""
import os
import subprocess
import sys
import tempfile

TRACE = """\
R\t0\t100000\t1\tcudaLaunchKernel
K\t1000000\t2000000\t7\tgemm
R\t2000000\t2040000\t1\tcudaMemcpyAsync
K\t2050000\t3000000\t7\tattention
M\t3000000\t3100000\t7\tcopy kind 2, 4096 bytes
R\t3100000\t13000000\t1\tcudaStreamSynchronize
K\t13100000\t15100000\t7\tgemm
a line that is not a record
"""

EXPECTED = [
    "burst 0: 2.10 ms, GPU busy 2.05 ms (97.6%), 2 kernels, 1 copies/memsets; idle 0.00 ms before it",
    "  gap 50.0 us after gemm before attention (host: cudaMemcpyAsync 40 us)",
    "burst 1: 2.00 ms, GPU busy 2.00 ms (100.0%), 1 kernels, 0 copies/memsets; idle 10.00 ms before it",
    "  host during the idle time before it: cudaStreamSynchronize 9.90 ms",
    "all: 14.10 ms from the first GPU record to the last, GPU busy 4.05 ms (28.7%)",
    "kernels: 3.95 ms in all",
    "       3.00 ms  75.9%      2x   1500.00 us  gemm",
    "       0.95 ms  24.1%      1x    950.00 us  attention",
]

# --after attention: only the copy and the last gemm remain
EXPECTED_AFTER = [
    "all: 12.10 ms from the first GPU record to the last, GPU busy 2.10 ms (17.4%)",
    "kernels: 2.00 ms in all",
    "       2.00 ms 100.0%      1x   2000.00 us  gemm",
]


def main():
    report = sys.argv[1]
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "trace.tsv")
        with open(path, "w") as f:
            f.write(TRACE)
        out = subprocess.run([sys.executable, report, path], capture_output=True, text=True, timeout=60)
        lines = out.stdout.splitlines()
        missing = [e for e in EXPECTED if e not in lines]
        if out.returncode != 0 or missing:
            print(f"FAIL: exit {out.returncode}; missing lines:\n" + "\n".join(missing) + "\n--- report:\n" + out.stdout
                  + out.stderr)
            return 1
        out = subprocess.run([sys.executable, report, path, "--after", "atten"], capture_output=True, text=True,
                             timeout=60)
        missing = [e for e in EXPECTED_AFTER if e not in out.stdout.splitlines()]
        if out.returncode != 0 or missing:
            print(f"FAIL: --after: exit {out.returncode}; missing lines:\n" + "\n".join(missing) + "\n--- report:\n"
                  + out.stdout + out.stderr)
            return 1
        out = subprocess.run([sys.executable, report, path, "--after", "nothing-like-this"], capture_output=True,
                             text=True, timeout=60)
        if out.returncode == 0 or "no kernel matches" not in out.stderr:
            print(f"FAIL: --after with no match gives exit {out.returncode}: {out.stderr}")
            return 1
        empty = os.path.join(d, "empty.tsv")
        open(empty, "w").close()
        out = subprocess.run([sys.executable, report, empty], capture_output=True, text=True, timeout=60)
        if out.returncode == 0 or "no kernels, copies or memsets recorded" not in out.stderr:
            print(f"FAIL: an empty trace gives exit {out.returncode}: {out.stderr}")
            return 1
    print("cuda_trace_report: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
