"""layout_check.py -- what the layout tests share: run `shardlm generate
--prompts-file` at one tensor/pipeline layout, compare a layout's outputs
with the single-process run (the same tokens, top-5 logprobs within 1e-4 or
$SHARDLM_LAYOUT_TOL),
and start `shardlm serve` at a layout until it answers /health."""
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

TOL = float(os.environ.get("SHARDLM_LAYOUT_TOL", "1e-4"))
# Where 16-bit activations are summed in other groupings (a GPU's tp > 1), tokens may part at a near
# tie: $SHARDLM_LAYOUT_TIE (default 0: never) is how close the two tokens' logprobs must be there.
TIE = float(os.environ.get("SHARDLM_LAYOUT_TIE", "0"))


def arguments():
    """SHARDLM MODEL_DIR [LAYOUT...] from the command line; exit 77 (skip) without the model."""
    shardlm, model_dir, rest = sys.argv[1], sys.argv[2], sys.argv[3:]
    if not os.path.isdir(model_dir):
        print(f"SKIP: no model at {model_dir}")
        sys.exit(77)
    return shardlm, model_dir, rest


def run(shardlm, model_dir, prompts, tp, pp, extra_args=()):
    """The outputs of `shardlm generate` on prompts (dicts, one JSONL line each) at tp x pp."""
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
        for p in prompts:
            f.write(json.dumps(p) + "\n")
        path = f.name
    env = dict(os.environ, SHARDLM_COMM_TIMEOUT="60")
    staged = tp * pp > 1 and os.environ.get("SHARDLM_DEBUG_STAGE_COMM") == "1"
    if staged:  # each rank then says at debug level that its tensors go through host buffers
        env["SHARDLM_LOG_LEVEL"] = "debug"
    cmd = [shardlm, "generate", model_dir, "--prompts-file", path, "--ignore-eos", "--kv-cache-memory", "256M",
           "--tensor-parallel-size", str(tp), "--pipeline-parallel-size", str(pp), *extra_args]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    os.unlink(path)
    if out.returncode != 0:
        sys.exit(f"tp={tp} pp={pp}: shardlm generate failed ({out.returncode}):\n{out.stderr[-3000:]}")
    if staged and out.stderr.count("through pinned host buffers") != tp * pp:
        sys.exit(f"tp={tp} pp={pp}: SHARDLM_DEBUG_STAGE_COMM=1, but {out.stderr.count('through pinned host buffers')} "
                 f"of {tp * pp} ranks staged their tensors through host buffers")
    return [json.loads(line)["outputs"][0] for line in out.stdout.splitlines() if line.strip()]


def near_tie(a, b, tie):
    """The step where two runs' tokens first differ if the first run had the second's token within tie
    of its own there (a near tie, which rounding may decide either way), else None."""
    if tie <= 0 or len(a["token_ids"]) != len(b["token_ids"]):
        return None
    step = next(j for j, (x, y) in enumerate(zip(a["token_ids"], b["token_ids"])) if x != y)
    top = dict((tok, lp) for tok, lp in (a.get("top_logprobs") or [])[step]) if a.get("top_logprobs") else {}
    want, other = top.get(a["token_ids"][step]), top.get(b["token_ids"][step])
    return step if want is not None and other is not None and want - other <= tie else None


def compare(base, got, what):
    """Differences between two runs' outputs, printed; their count."""
    if len(base) != len(got):
        print(f"{what}: {len(got)} results, expected {len(base)}")
        return 1
    bad = 0
    for i, (a, b) in enumerate(zip(base, got)):
        n = len(a["token_ids"])
        if a["token_ids"] != b["token_ids"]:
            n = near_tie(a, b, TIE)
            if n is None:
                print(f"{what}: prompt {i}: tokens {b['token_ids']} != {a['token_ids']}")
                bad += 1
                continue
            print(f"{what}: prompt {i}: a near tie at step {n} (within {TIE:g}): compared up to it")
        for step, (ta, tb) in enumerate(zip((a.get("top_logprobs") or [])[:n], (b.get("top_logprobs") or [])[:n])):
            want = {tok: lp for tok, lp in ta}
            for tok, lp in tb:
                if tok in want and abs(want[tok] - lp) > TOL:
                    print(f"{what}: prompt {i} step {step}: logprob of {tok} {lp:.7f} vs {want[tok]:.7f}")
                    bad += 1
    return bad


def check_layouts(shardlm, model_dir, prompts, base, layouts, extra_args=()):
    """Runs every layout ("TPxPP") and compares it with base; the number of differences."""
    bad = 0
    for layout in layouts:
        tp, pp = (int(x) for x in layout.split("x"))
        got = run(shardlm, model_dir, prompts, tp, pp, extra_args)
        n = compare(base, got, f"tp={tp} pp={pp}")
        print(f"tp={tp} pp={pp}: {'ok' if n == 0 else f'{n} differences'} ({len(got)} prompts at once)")
        bad += n
    return bad


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serving(shardlm, model_dir, tp, pp, extra_args=()):
    """`shardlm serve` at tp x pp on a free local port, once /health answers; yields the port."""
    port = free_port()
    env = dict(os.environ, SHARDLM_COMM_TIMEOUT="60")
    server = subprocess.Popen([shardlm, "serve", model_dir, "--host", "127.0.0.1", "--port", str(port),
                               "--tensor-parallel-size", str(tp), "--pipeline-parallel-size", str(pp),
                               "--log-level", "warning", *extra_args],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except OSError:
                if server.poll() is not None:
                    sys.exit(f"tp={tp} pp={pp}: the server exited: {server.stderr.read().decode()[-2000:]}")
                time.sleep(0.2)
        yield port
    finally:
        server.terminate()
        server.wait(timeout=60)
