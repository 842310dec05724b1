#!/usr/bin/env python3
"""cuda_trace_report.py TRACE -- where a CUDA program's GPU time went, from the
timeline bench/cuda_trace.c writes (CUDA_INJECTION64_PATH=libcuda_trace.so).

The GPU's work (kernels, copies, memsets) is cut into bursts wherever the GPU
sat idle longer than --burst-gap-ms; for the longest bursts (in time order:
a benchmark's steps, not the weights' upload) it prints the span, how
much of it the GPU was busy, the idle time before it and what the host was
doing then (its CUDA calls, by name), and the longest idle gaps inside it with
the kernels on either side. Then the kernels' total time by name, with
their count and mean.

--after REGEX keeps only what starts after the last kernel whose name matches:
`--after attention_prefill` on a `bench latency` run leaves its decode steps.
"""
import argparse
import collections
import re


def load(path):
    device, host = [], []
    with open(path, errors="replace") as f:
        for line in f:
            parts = line.rstrip("\n").split("\t", 4)
            if len(parts) != 5:
                continue
            kind, start, end, where, name = parts
            rec = (int(start), int(end), kind, where, name)
            (device if kind in "KMS" else host).append(rec)
    device.sort()
    host.sort()
    return device, host


def bursts(device, gap_ns):
    """Runs of device records with no idle stretch longer than gap_ns between them."""
    out, cur, cur_end = [], [], 0
    for rec in device:
        if cur and rec[0] - cur_end > gap_ns:
            out.append(cur)
            cur = []
        cur_end = max(cur_end, rec[1]) if cur else rec[1]
        cur.append(rec)
    if cur:
        out.append(cur)
    return out


def busy_and_gaps(recs):
    """The union of the records' intervals, and the idle gaps between them (length, before, after)."""
    busy, gaps = 0, []
    lo, hi, last = recs[0][0], recs[0][1], recs[0]
    for rec in recs[1:]:
        if rec[0] > hi:
            busy += hi - lo
            gaps.append((rec[0] - hi, last[4], rec[4], hi))
            lo, hi = rec[0], rec[1]
        elif rec[1] > hi:
            hi = rec[1]
        last = rec if rec[1] >= last[1] else last
    busy += hi - lo
    return busy, gaps


def host_calls(host, lo, hi):
    """The host's CUDA calls overlapping [lo, hi): time inside the window by name."""
    by_name = collections.Counter()
    for start, end, _, _, name in host:
        if end > lo and start < hi:
            by_name[name] += min(end, hi) - max(start, lo)
    return by_name


def short(name, n=70):
    return name if len(name) <= n else name[: n - 3] + "..."


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("trace")
    ap.add_argument("--burst-gap-ms", type=float, default=2.0, help="idle time that ends a burst (default 2 ms)")
    ap.add_argument("--gaps", type=int, default=5, help="idle gaps listed per burst (default 5)")
    ap.add_argument("--min-burst-ms", type=float, default=1.0, help="bursts shorter than this are counted, not listed")
    ap.add_argument("--bursts", type=int, default=20, help="bursts listed at most, the longest (default 20)")
    ap.add_argument("--after", metavar="REGEX", help="only records after the last kernel whose name matches")
    args = ap.parse_args()
    device, host = load(args.trace)
    if not device:
        raise SystemExit(f"{args.trace}: no kernels, copies or memsets recorded")
    if args.after:
        ends = [r[1] for r in device if r[2] == "K" and re.search(args.after, r[4])]
        if not ends:
            raise SystemExit(f"{args.trace}: no kernel matches --after {args.after!r}")
        device = [r for r in device if r[0] >= max(ends)]
        host = [r for r in host if r[0] >= max(ends)]
        if not device:
            raise SystemExit(f"{args.trace}: nothing on the GPU after the last {args.after!r}")
    all_bursts = bursts(device, int(args.burst_gap_ms * 1e6))
    spans = [(max(r[1] for r in recs) - recs[0][0], i) for i, recs in enumerate(all_bursts)]
    shown = {i for span, i in sorted(spans, reverse=True)[: args.bursts] if span >= args.min_burst_ms * 1e6}
    prev_end = device[0][0]
    for i, recs in enumerate(all_bursts):
        lo, hi = recs[0][0], max(r[1] for r in recs)
        lead, prev_end = lo - prev_end, hi
        if i not in shown:
            continue
        busy, gaps = busy_and_gaps(recs)
        n_kernels = sum(r[2] == "K" for r in recs)
        print(f"burst {i}: {(hi - lo) / 1e6:.2f} ms, GPU busy {busy / 1e6:.2f} ms ({100 * busy / (hi - lo):.1f}%), "
              f"{n_kernels} kernels, {len(recs) - n_kernels} copies/memsets; idle {lead / 1e6:.2f} ms before it")
        if lead > 0:
            calls = host_calls(host, lo - lead, lo)
            top = ", ".join(f"{n} {t / 1e6:.2f} ms" for n, t in calls.most_common(4))
            print(f"  host during the idle time before it: {top or 'no CUDA calls'}")
        for length, before, after, at in sorted(gaps, reverse=True)[: args.gaps]:
            calls = host_calls(host, at, at + length)
            top = ", ".join(f"{n} {t / 1e3:.0f} us" for n, t in calls.most_common(2))
            print(f"  gap {length / 1e3:.1f} us after {short(before, 50)} before {short(after, 50)}"
                  f" (host: {top or 'no CUDA calls'})")
        if gaps:
            print(f"  {len(gaps)} gaps, {sum(g[0] for g in gaps) / 1e6:.2f} ms in all")
    skipped = len(all_bursts) - len(shown)
    if skipped:
        print(f"{skipped} bursts not listed (under {args.min_burst_ms} ms, or shorter than the {args.bursts} listed)")
    lo, hi = device[0][0], max(r[1] for r in device)
    busy, _ = busy_and_gaps(device)
    print(f"all: {(hi - lo) / 1e6:.2f} ms from the first GPU record to the last, GPU busy {busy / 1e6:.2f} ms "
          f"({100 * busy / (hi - lo):.1f}%)")
    totals = collections.Counter()
    counts = collections.Counter()
    for start, end, kind, _, name in device:
        if kind == "K":
            totals[name] += end - start
            counts[name] += 1
    all_k = sum(totals.values())
    print(f"kernels: {all_k / 1e6:.2f} ms in all")
    for name, t in totals.most_common(15):
        print(f"  {t / 1e6:9.2f} ms {100 * t / all_k:5.1f}% {counts[name]:6d}x {t / counts[name] / 1e3:9.2f} us  "
              f"{short(name, 90)}")


if __name__ == "__main__":
    main()
