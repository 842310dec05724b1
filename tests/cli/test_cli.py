#!/usr/bin/env python3
"""test_cli.py SHARDLM FIXTURES CONFIGS CASE -- the `shardlm` command line as a vLLM user types it.

Each CASE is one ctest (cli_CASE): vLLM's short flags (-tp, -pp), "did you mean" on a table of
typos, --model beside the positional MODEL, `plan` (weights over one 48 GB GPU, the default model,
sizes), --gpu-memory-utilization on the CPU (a warning; no effect), the CPU's memory check (its KV
cache included), --max-model-len past the model's positions, counts below 1, and a missing
--prompts-file. Models are the tiny fixtures (they load at once); `plan` reads the published
configs of tests/model/configs. Standard library only.
"""
import os
import re
import subprocess
import sys

EXE, FIXTURES, CONFIGS, CASE = sys.argv[1:5]
MODEL = os.path.join(FIXTURES, "llama_gqa")          # 3 layers, 2 KV heads, max_position_embeddings 256
QWEN32B = os.path.join(CONFIGS, "qwen2.5-32b-instruct.json")  # 65.5 GB of bfloat16 weights
GEN = ["--prompt-ids", "1,2,3", "--max-tokens", "2", "--temperature", "0"]
failures = []


def run(*args, env=None):
    e = dict(os.environ)
    for k in ("SHARDLM_ALLOW_LONG_MAX_MODEL_LEN", "VLLM_ALLOW_LONG_MAX_MODEL_LEN"):
        e.pop(k, None)
    e.update(env or {})
    r = subprocess.run([EXE, *args], capture_output=True, text=True, env=e, timeout=120)
    return r.returncode, r.stdout, r.stderr


def check(ok, what, out=""):
    if not ok:
        failures.append(f"{what}\n    output: {out.strip()[-600:]}")


def engine_commands(model_args):
    """Every command that takes the engine's flags, with the words that name the model."""
    return [["generate", *model_args, *GEN], ["serve", *model_args, "--port", "0"],
            ["bench", "latency", *model_args], ["bench", "throughput", *model_args]]


# ---- 1. -tp N and -pp N, as vLLM takes them, wherever the long flags are ----
def case_short_flags():
    for cmd in engine_commands([MODEL]):
        # layouts the fixture refuses before any worker starts: the message shows the value arrived
        for flag, value, want in (("-tp", "5", "--tensor-parallel-size 5 does not work"),
                                  ("-pp", "9", "--pipeline-parallel-size 9 exceeds the model's 3 layers")):
            for words in ([flag, value], [f"{flag}={value}"]):
                rc, out, err = run(*cmd, *words)
                check(rc != 0 and want in err, f"{cmd[0]} {' '.join(words)}: want '{want}'", err)
        rc, out, err = run(*cmd[:2] if cmd[0] == "bench" else cmd[:1], "--help")
        check(rc == 0 and "--tensor-parallel-size, -tp" in out and "--pipeline-parallel-size, -pp" in out,
              f"{cmd[0]} --help names -tp and -pp beside the long flags", out)


# ---- 1b. every command's --help: on stdout, exit 0, naming what comes next ----
def case_help():
    for cmd in (["--help"], ["serve", "--help"], ["generate", "--help"], ["plan", "--help"], ["bench", "--help"],
                ["bench", "latency", "--help"], ["bench", "throughput", "--help"], ["bench", "serve", "--help"]):
        rc, out, err = run(*cmd)
        check(rc == 0 and out.startswith("usage: shardlm") and not err, f"shardlm {' '.join(cmd)}", out + err)
    rc, out, err = run("bench", "--help")
    check(all(w in out for w in ("latency", "throughput", "serve", "`shardlm bench latency --help`")),
          "bench --help names its three benchmarks and where their flags are listed", out)
    rc, out, err = run("bench")
    check(rc == 2 and "usage: shardlm bench" in err, "bare bench: usage on stderr, exit 2", out + err)


# ---- 2. "did you mean": the flag meant, or nothing rather than a wrong one ----
TYPOS = [  # (command, typed flag, the suggestion wanted; None: no suggestion at all)
    ("plan", "--seed", None),
    ("serve", "--quiet", None),
    ("serve", "--temperature", None),
    ("serve", "--tp", "--tensor-parallel-size"),
    ("serve", "--pp", "--pipeline-parallel-size"),
    ("generate", "--tp", "--tensor-parallel-size"),
    ("serve", "--prot", "--port"),
    ("serve", "--max-model-length", "--max-model-len"),
    ("serve", "--max-len", "--max-log-len or --max-model-len"),  # both vLLM flags, one edit away
    ("serve", "--tensor-paralel-size", "--tensor-parallel-size"),
    ("serve", "--gpu-memory-utilisation", "--gpu-memory-utilization"),
    ("serve", "--utilization", "--gpu-memory-utilization"),
    ("serve", "--no-enable-prefix-cache", "--no-enable-prefix-caching"),
    ("serve", "--served-model", "--served-model-name"),
    ("serve", "-max-model-len", "--max-model-len"),
    ("serve", "--kv-cache-memory-byte", "--kv-cache-memory"),
    ("generate", "--temprature", "--temperature"),
    ("generate", "--seeds", "--seed"),
    ("generate", "--top", "--top-p or --top-k"),
    ("generate", "--prompt-file", "--prompts-file"),
    ("generate", "--parallel-size", "--tensor-parallel-size or --pipeline-parallel-size"),
    ("plan", "--tp", None),
    ("plan", "--gpu", "--gpus, --gpus-per-node, --gpu-memory or --gpu-memory-utilization"),
    ("plan", "--gpu-mem", "--gpu-memory or --gpu-memory-utilization"),
    ("serve", "--xyzzy", None),
    ("serve", "-x", None),
]


def case_suggestions():
    for cmd, typed, want in TYPOS:
        rc, out, err = run(*cmd.split(), typed, "1")
        line = err.strip().splitlines()[-1] if err.strip() else ""
        ok = rc == 2 and f"unknown flag {typed}" in line
        if want is None:
            ok = ok and "did you mean" not in line
        else:
            ok = ok and line.endswith(f"did you mean {want}?")
        check(ok, f"{cmd} {typed}: want {want or 'no suggestion'}", line)
    # vLLM's parser reads --max_model_len as --max-model-len: so does shardlm's
    rc, out, err = run("generate", MODEL, *GEN, "--max_model_len", "64")
    check(rc == 0 and "max_model_len 64" in err, "--max_model_len is --max-model-len", err)


# ---- 3. --model X beside the positional MODEL ----
def case_model_flag():
    rc, out, err = run("generate", "--model", MODEL, *GEN)
    check(rc == 0 and "llama_gqa (LlamaForCausalLM)" in err, "generate --model MODEL generates", err)
    rc, out, err = run("generate", MODEL, "--model", MODEL, *GEN)
    check(rc == 0, "generate MODEL --model MODEL (the same) generates", err)
    rc, out, err = run("generate", MODEL, "--model", os.path.join(FIXTURES, "qwen2_bias"), *GEN)
    check(rc == 2 and "given twice" in err, "generate MODEL --model OTHER is an error", err)
    for cmd in engine_commands(["--model", MODEL])[1:]:
        # the fixture's 3 layers prove --model was the model opened (the default model has 30)
        rc, out, err = run(*cmd, "-pp", "9")
        check(rc != 0 and "exceeds the model's 3 layers" in err, f"{cmd[0]} --model MODEL opens MODEL", err)
    rc, out, err = run("plan", "--model", QWEN32B, "--gpus", "2", "--gpu-memory", "80G")
    check(rc == 0 and out.startswith(QWEN32B + ":"), "plan --model CONFIG plans it", out + err)


# ---- 4a. the weights alone over one 48 GB GPU: say so, and name the smallest layout that fits ----
def case_plan_weights_exceed_one_gpu():
    rc, out, err = run("plan", QWEN32B, "--gpus", "1", "--gpu-memory", "48GB")
    last = out.strip().splitlines()[-1] if out.strip() else err
    check(rc == 1 and "the weights alone exceed every layout of up to 1 device of 48 GB" in last
          and "the smallest layout that fits is --tensor-parallel-size 2 --pipeline-parallel-size 1 (2 devices" in last
          and "--max-model-len" not in last.replace("a shorter --max-model-len cannot help", ""),
          "plan 32B on one 48 GB GPU: the weights do not fit; tp=2 does", out + err)


# ---- 4b. plan without a model plans the default model, as every other command ----
def case_plan_default_model():
    rc, out, err = run("plan", "--gpus", "1", "--gpu-memory", "1G", env={"SHARDLM_DEFAULT_MODEL": MODEL})
    check(rc == 0 and out.startswith(MODEL + ":"), "plan with no model plans $SHARDLM_DEFAULT_MODEL", out + err)
    rc, out, err = run("generate", *GEN, env={"SHARDLM_DEFAULT_MODEL": MODEL})
    check(rc == 0 and "llama_gqa (LlamaForCausalLM)" in err, "generate with no model opens the same default", err)


# ---- 4c. one size syntax for every size flag ----
def case_sizes():
    for size in ("48G", "48GB", "48gb", "48 GB", "48", "44.7GiB", "48000M", "48.0G"):
        rc, out, err = run("plan", QWEN32B, "--gpus", "1", "--gpu-memory", size)
        check(rc == 1 and "device of 48 GB" in out, f"plan --gpu-memory {size!r} is 48 GB", out + err)
    for bad in ("48x", "-48G", "1e9", "G", "4..8G", "48GBB"):
        rc, out, err = run("plan", QWEN32B, "--gpu-memory", bad)
        check(rc == 2 and "--gpu-memory expects a size" in err, f"plan --gpu-memory {bad!r} is refused", err)
    for flag in ("--kv-cache-memory", "--kv-cache-memory-bytes"):
        for size in ("512MiB", "0.5GiB", "0.5 gib", "524288KiB", "536870912"):
            rc, out, err = run("generate", MODEL, *GEN, flag, size)
            check(rc == 0 and "KV cache 0.50 GiB" in err, f"generate {flag} {size!r} is 0.5 GiB", err)
    for size in ("48G", "48GB", "48 GB", "44.7GiB"):
        rc, out, err = run("generate", MODEL, *GEN, "--device-memory", size)
        check(rc == 0, f"generate --device-memory {size!r} is accepted", err)
    rc, out, err = run("generate", MODEL, *GEN, "--device-memory", "48Gx")
    check(rc == 2 and "--device-memory expects a size like 48G, 48GB" in err, "--device-memory 48Gx is refused", err)
    rc, out, err = run("generate", MODEL, *GEN, "--seed", "1K")
    check(rc == 2 and "--seed expects an integer" in err, "a seed is an integer, not a size", err)


# ---- 5. --gpu-memory-utilization does nothing on the CPU: the help and a warning say so ----
def case_gpu_memory_utilization_cpu():
    rc, out, err = run("generate", "--help")
    check(rc == 0 and "no effect on the CPU" in out, "--help: --gpu-memory-utilization has no effect on the CPU", out)
    rc, out, err = run("generate", MODEL, *GEN, "--device", "cpu", "--gpu-memory-utilization", "0.5")
    check(rc == 0 and "--gpu-memory-utilization has no effect on the CPU" in err, "a warning when it is given on the CPU", err)
    rc, out, err = run("generate", MODEL, *GEN, "--device", "cpu")
    check(rc == 0 and "gpu-memory-utilization" not in err, "no warning when it is not given", err)
    # nor does it shrink the CPU's memory check: a rank has all of --device-memory (the fixture needs ~6 MB)
    rc, out, err = run("generate", MODEL, *GEN, "--device", "cpu", "--device-memory", "8M", "--gpu-memory-utilization", "0.1")
    check(rc == 0, "--gpu-memory-utilization 0.1 leaves the CPU's 8M --device-memory whole", err)


# ---- 5b. the memory check names what does not fit: the weights, or the step's workspace beside them ----
def case_memory_check():
    rc, out, err = run("generate", MODEL, *GEN, "--device", "cpu", "--device-memory", "2M")
    check(rc == 1 and "one CPU rank has 2.0 MB" in err and "the weights and one step's workspace (5.3 MB" in err
          and "lower --max-num-batched-tokens or --max-num-seqs" in err and "weights alone" not in err,
          "0.4 MB of weights in 2 MB: the workspace is what does not fit, and the flags that size it are named", err)
    rc, out, err = run("generate", MODEL, *GEN, "--device", "cpu", "--device-memory", "2M", "--max-num-batched-tokens",
                       "64", "--max-num-seqs", "8")
    check(rc == 0, "a smaller step fits 2M", err)
    rc, out, err = run("generate", MODEL, *GEN, "--device", "cpu", "--device-memory", "10K")
    check(rc == 1 and "the weights alone exceed every layout of up to 8 CPU ranks" in err, "10K: the weights alone", err)
    # a CPU KV cache larger than the rank's memory is refused with the largest that fits (the system would
    # hand it out and kill the process once the pages are touched); the 1 GiB default shrinks to fit
    rc, out, err = run("generate", MODEL, *GEN, "--device", "cpu", "--device-memory", "64M", "--kv-cache-memory", "1GiB")
    m = re.search(r"--kv-cache-memory 1\.00 GiB does not fit: this rank has 0\.06 GiB \(--device-memory\), of which "
                  r"its weights and one step's workspace take 0\.01 GiB; give --kv-cache-memory (0\.0\d) GiB or less", err)
    check(rc == 1 and m, "--kv-cache-memory 1GiB in 64M: refused, naming what fits", err)
    rc, out, err = run("generate", MODEL, *GEN, "--device", "cpu", "--device-memory", "64M", "--kv-cache-memory",
                       f"{float(m.group(1)) if m else 0.05}GiB")
    check(rc == 0, "the size the message gives is accepted", err)
    rc, out, err = run("generate", MODEL, *GEN, "--device", "cpu", "--device-memory", "64M")
    check(rc == 0 and "KV cache 0.05 GiB" in err, "the 1 GiB default shrinks to what 64M leaves", err)


# ---- 6. --max-model-len past max_position_embeddings: refused unless allowed, as vLLM ----
def case_max_model_len():
    rc, out, err = run("generate", MODEL, *GEN, "--max-model-len", "1024")
    check(rc != 0 and "max_position_embeddings" in err and "256" in err and "SHARDLM_ALLOW_LONG_MAX_MODEL_LEN" in err,
          "--max-model-len 1024 over 256 positions is refused, naming the limit and the way round it", err)
    for var in ("SHARDLM_ALLOW_LONG_MAX_MODEL_LEN", "VLLM_ALLOW_LONG_MAX_MODEL_LEN"):
        rc, out, err = run("generate", MODEL, *GEN, "--max-model-len", "1024", env={var: "1"})
        check(rc == 0 and "max_model_len 1024" in err, f"{var}=1 allows it", err)
    rc, out, err = run("generate", MODEL, *GEN, "--max-model-len", "256")
    check(rc == 0, "--max-model-len equal to max_position_embeddings is fine", err)


# ---- 6b. counts below 1: refused by name (the engine reads 0 as "the default", and -1 became it) ----
def case_counts():
    for flag in ("--max-model-len", "--block-size", "--max-num-seqs", "--max-num-batched-tokens", "--threads"):
        for value in ("0", "-5"):
            for cmd in engine_commands([MODEL])[:2]:
                rc, out, err = run(*cmd, flag, value)
                check(rc == 2 and f"{flag} must be at least 1, got {value}" in err, f"{cmd[0]} {flag} {value}", err)
    for flag in ("--max-tokens", "--n"):
        for value in ("0", "-1"):
            rc, out, err = run("generate", MODEL, *GEN, flag, value)
            check(rc == 2 and f"{flag} must be at least 1, got {value}" in err, f"generate {flag} {value}", err)
    rc, out, err = run("generate", MODEL, *GEN, "--logprobs", "-3")
    check(rc == 2 and "--logprobs must be 0 or more, got -3" in err, "generate --logprobs -3", err)
    rc, out, err = run("generate", MODEL, *GEN, "--max-model-len", "64", "--max-num-seqs", "2", "--threads", "1", "--n", "2")
    check(rc == 0 and "max_model_len 64" in err, "counts of 1 or more still work", err)


# ---- 6b. vLLM's --enable-chunked-prefill: always so here; turning it off is refused with the way out ----
def case_chunked_prefill():
    rc, out, err = run("generate", MODEL, *GEN, "--enable-chunked-prefill")
    check(rc == 0 and out.strip(), "generate --enable-chunked-prefill generates", err)
    for cmd in engine_commands([MODEL]):
        rc, out, err = run(*cmd, "--no-enable-chunked-prefill")
        check(rc == 2 and "--no-enable-chunked-prefill: shardlm always prefills long prompts in chunks of "
              "--max-num-batched-tokens" in err, f"{cmd[0]} --no-enable-chunked-prefill refused", err)


# ---- 7. a missing --prompts-file: said before the model loads, with the reason ----
def case_prompts_file():
    missing = "/nonexistent-shardlm-dir/missing.jsonl"
    rc, out, err = run("generate", MODEL, "--prompts-file", missing)
    check(rc == 1 and f"--prompts-file {missing}: No such file or directory" in err
          and "LlamaForCausalLM" not in err, "a missing --prompts-file is reported with strerror, before loading", err)
    folder = os.path.dirname(os.path.abspath(__file__))  # a folder opens as a file, then every read fails
    rc, out, err = run("generate", MODEL, "--prompts-file", folder)
    check(rc == 1 and f"--prompts-file {folder}: Is a directory" in err and "LlamaForCausalLM" not in err,
          "a folder given as --prompts-file is refused before loading, not read as no prompts", err)
    prompts = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"shardlm_cli_prompts_{os.getpid()}.jsonl")
    with open(prompts, "w") as f:
        f.write('{"prompt_token_ids": [1, 2, 3], "max_tokens": 2}\n')
    try:
        rc, out, err = run("generate", MODEL, "--prompts-file", prompts, "--output", "/nonexistent-shardlm-dir/out.jsonl")
        check(rc == 1 and "--output /nonexistent-shardlm-dir/out.jsonl: No such file or directory" in err
              and "LlamaForCausalLM" not in err, "an unwritable --output is reported before loading", err)
        rc, out, err = run("generate", MODEL, "--prompts-file", prompts, "--temperature", "0")
        check(rc == 0 and '"completion_tokens":2' in out, "a present --prompts-file still generates", out + err)
        with open(prompts, "a") as f:
            f.write('{"max_tokens": 2}\n')
        rc, out, err = run("generate", MODEL, "--prompts-file", prompts)
        check(rc == 1 and f'{prompts}:2: needs "prompt", "prompt_token_ids" or "messages"' in err,
              "a line without a prompt is named by file and line", err)
    finally:
        os.unlink(prompts)


CASES = {name[5:]: fn for name, fn in globals().items() if name.startswith("case_")}
if CASE not in CASES:
    sys.exit(f"unknown case {CASE}; cases: {' '.join(CASES)}")
CASES[CASE]()
for f in failures:
    print("FAIL:", f)
print(f"{CASE}: {'ok' if not failures else f'{len(failures)} failed'}")
sys.exit(1 if failures else 0)
