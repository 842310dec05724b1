#!/usr/bin/env bash
# gpu.sh -- on a machine with an NVIDIA GPU: the GPU tests, then the benchmarks
# of the Llama-3.1-8B shape beside the peers, in one run, ending with one table.
#
#   bench/gpu.sh [PARTS...]      PARTS: tests goldens python layouts nccl bench throughput serve structured preflight peers
#                                trace
#                                (default: all)
#
# layouts: every layout on the one GPU, ranks sharing it (tensors staged through
# pinned host memory over MPI): tests/parallel/test_layouts.py on the fixtures,
# as stored (bf16 weights, so bf16 activations and all-reduces) and with
# --dtype float32, greedy tokens equal to tp=1 (up to a near tie: the two tokens'
# logprobs within the tolerance) and top-5 logprobs within
# $LAYOUT_TOL_BF16 / $LAYOUT_TOL.
#
# goldens: tools/make_golden.py runs transformers in bfloat16 and in float32
# on this GPU over the five fixtures and the 8B shape (random weights), and
# test_golden holds shardlm on cuda (bf16 activations; bf16 and float32 KV) to
# both files, greedy tokens equal but at near ties. The logprob tolerance
# follows transformers' own bf16 error E, its bf16 golden against its float32
# one (tools/golden_diff.py): within max($GOLDEN_TOL_BF16, 1.5 E) of the
# float32 truth (as close as transformers' bf16, give or take half), and
# within max($GOLDEN_TOL_BF16, 2 E) of transformers' bf16 (two bf16 errors
# apart). $GOLDEN_TOL_BF16 defaults to 0.5; the fixtures with tied embeddings
# have five times larger logits and E near 1.
#
# nccl: NCCL's bf16 all-reduce at a decode step's sizes (rows 1..256 x $NCCL_HIDDEN, default 4096),
# each variant (default, NCCL_PROTO=LL/LL128/Simple, registered and symmetric buffers) eager and in
# CUDA graphs (bench/nccl_allreduce.c): one rank (a world of 1) into $RESULTS/nccl_allreduce.json; where
# several GPUs are visible, one rank on each too, into nccl_allreduce_np<N>.json.
#
# trace: a prefill of 2048 tokens, batch-1 decode steps and a short throughput
# run under bench/cuda_trace.c (a CUPTI timeline): where the GPU sat idle
# within and between steps, what the host was doing then, and each kernel's
# mean time (bench/cuda_trace_report.py).
#
# structured: bench/structured/bench_structured.py on the 8B shape, $STRUCTURED_SEQS
# (default 256) JSON-schema requests at once against as many unconstrained ones.
# preflight: a Qwen2.5-72B config (no weights, 145 GB in bf16) must be refused
# before loading with the layout that fits (--tensor-parallel-size 2 on a
# 141 GB H200, 3 on an 80 GB H100).
# serve: start to a ready /health, then `shardlm bench serve` against it at
# $REQUEST_RATE requests/s (default 8, near saturation for the 8B shape)
# for $SERVE_PROMPTS requests: TTFT, TPOT and ITL percentiles.
#
# Binaries come from $SHARDLM_BIN (a folder with shardlm, test_cuda_ops and
# test_golden: tools/gpu-bundle.sh makes one, with the libraries they need, for
# machines without the build dependencies), else from build/gpu, which is
# configured and built here when missing (-DSHARDLM_CUDA=ON, Hopper only). Models with random bf16 weights and
# the real config are written by tools/make_bench_model.py under $MODELS
# (default /tmp/shardlm-models) with the Llama 3.1 tokenizer from $TOKENIZERS
# (default ../shared/tokenizers). Figures go to $RESULTS (default
# bench/gpu-results) as JSON, one file per measurement, and the table to
# stdout. NVLink multicast stays off (see ../shared/DEVICE.md).
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 PYTHONUNBUFFERED=1
parts=${*:-tests goldens python layouts nccl bench throughput serve structured preflight peers}
want() { [[ " $parts " == *" $1 "* ]]; }
MODELS=${MODELS:-/tmp/shardlm-models}
TOKENIZERS=${TOKENIZERS:-$root/../shared/tokenizers}
RESULTS=${RESULTS:-$root/bench/gpu-results}
PY=${PYTHON:-python3}
GOLDEN_TOL_BF16=${GOLDEN_TOL_BF16:-0.5}
mkdir -p "$RESULTS" "$MODELS"

bin=${SHARDLM_BIN:-}
if [ -z "$bin" ]; then
  bin=$root/build/gpu
  if [ ! -x "$bin/shardlm" ]; then
    cmake -S . -B build/gpu -DCMAKE_BUILD_TYPE=Release -DSHARDLM_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90a-real >/dev/null &&
      cmake --build build/gpu -j "$(nproc)" --target gpu_tests >/dev/null || exit 1
  fi
fi
shardlm=$bin/shardlm
# a test program: beside shardlm in a bundle, under tests/<area>/ in a build folder
testbin() { if [ -x "$bin/$1" ]; then echo "$bin/$1"; else find "$bin/tests" -name "$1" -type f -perm -u+x | head -1; fi; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$RESULTS/gpu.txt"
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)

status=0
fx=$root/tests/fixtures
run_test() { # NAME COMMAND...
  local name=$1; shift
  if "$@" >"$RESULTS/test_$name.log" 2>&1; then echo "PASS $name $(grep -o 'worst.*' "$RESULTS/test_$name.log")"; else echo "FAIL $name"; tail -20 "$RESULTS/test_$name.log"; status=1; fi
}
# the Llama-3.1-8B shape with random bf16 weights under $MODELS (the tool keeps a complete one)
model=$MODELS/llama-3.1-8b
make_model() { $PY tools/make_bench_model.py --shape llama-3.1-8b --out "$model" --tokenizer "$TOKENIZERS/llama3.1"; }

# ---- the GPU tests (the same arguments ctest gives them) ----
if want tests; then
  run_test cuda_ops "$(testbin test_cuda_ops)"
  run_test cuda_ops_no_pdl env SHARDLM_PDL=0 "$(testbin test_cuda_ops)" # kernels launched without PDL too
  run_test tensor_comm_nccl "$(testbin test_tensor_comm_nccl)"
  # two ranks: over NCCL with a GPU each; where they share the one GPU, the MPI fallback and nccl refused
  command -v mpirun >/dev/null && run_test tensor_comm_nccl_2x1 env OMPI_ALLOW_RUN_AS_ROOT=1 \
    OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 mpirun -np 2 "$(testbin test_tensor_comm_nccl)" 2x1
  for f in llama_gqa llama3_tied qwen2_bias mistral_5layer llama_mha_bias; do
    for kv in float32 bfloat16; do
      run_test "golden_${f}_cuda_kv_$kv" "$(testbin test_golden)" "$fx/$f" "$fx/$f/golden.json" 0.5 medium $kv cuda
    done
    run_test "golden_${f}_cuda_f32" "$(testbin test_golden)" "$fx/$f" "$fx/$f/golden.json" 0.5 medium float32 cuda float32
  done
fi

# ---- transformers in bfloat16 on this GPU as the truth, made in this run: the fixtures and the 8B shape ----
if want goldens; then
  make_model >/dev/null || exit 1
  for dir in "$fx/llama_gqa" "$fx/llama3_tied" "$fx/qwen2_bias" "$fx/mistral_5layer" "$fx/llama_mha_bias" "$model"; do
    name=$(basename "$dir")
    gold=$RESULTS/golden_bf16_gpu_$name.json gold32=$RESULTS/golden_f32_gpu_$name.json
    run_test "make_golden_$name" $PY tools/make_golden.py "$dir" "$gold" --device cuda --dtype bfloat16 || continue
    run_test "make_golden_f32_$name" $PY tools/make_golden.py "$dir" "$gold32" --device cuda --dtype float32 || continue
    own=$($PY tools/golden_diff.py "$gold32" "$gold" --worst) || { echo "FAIL golden_diff $name"; status=1; continue; }
    tol32=$($PY -c "print(round(max($GOLDEN_TOL_BF16, 1.5 * $own), 3))")
    tol16=$($PY -c "print(round(max($GOLDEN_TOL_BF16, 2 * $own), 3))")
    echo "transformers' own bf16 error on $name: $own (tolerance $tol32 against its float32, $tol16 against its bf16)"
    for kv in bfloat16 float32; do
      run_test "golden_f32_gpu_${name}_kv_$kv" "$(testbin test_golden)" "$dir" "$gold32" "$tol32" medium $kv cuda
      run_test "golden_bf16_gpu_${name}_kv_$kv" "$(testbin test_golden)" "$dir" "$gold" "$tol16" medium $kv cuda
    done
  done
fi

# ---- the Python binding on the GPU: the fixtures' engines open on cuda by default there ----
if want python; then
  lib=$bin/libshardlm.so
  [ -f "$lib" ] || lib=$bin/../libshardlm.so
  skip=() # test modules whose checkers this machine lacks (no network here to install them), said aloud
  $PY -c "import jsonschema" 2>/dev/null ||
    { skip+=(--ignore=python/tests/test_structured.py); echo "python: no jsonschema here: test_structured.py not run"; }
  if SHARDLM_LIBRARY=$lib PYTHONPATH=$root/python SHARDLM_WORKER_EXE=$shardlm timeout 300 $PY -m pytest python/tests -q \
       -p no:cacheprovider "${skip[@]}" >"$RESULTS/test_python.log" 2>&1; then
    echo "PASS python binding (its engines on the default device, the GPU)"
  else
    echo "FAIL python binding (GPU): $(tail -1 "$RESULTS/test_python.log")"; grep -E "^FAILED" "$RESULTS/test_python.log" | head -20
    status=1
  fi
fi

# ---- every layout on the one GPU (the GPU twin of CI's CPU layout tests) ----
if want layouts; then
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
  layouts() { # NAME DTYPE_ARGS TOL FIXTURE LAYOUT...
    local name=$1 args=$2 tol=$3 f=$4; shift 4
    if SHARDLM_LAYOUT_ARGS="--device cuda $args" SHARDLM_LAYOUT_TOL=$tol SHARDLM_LAYOUT_TIE=$tol timeout 300 \
         $PY tests/parallel/test_layouts.py \
         "$shardlm" "$root/tests/fixtures/$f" "$@" >"$RESULTS/layouts_$name.log" 2>&1; then
      echo "PASS layouts $name: $(grep -c ': ok' "$RESULTS/layouts_$name.log") layouts equal to tp=1"
    else
      echo "FAIL layouts $name"; tail -15 "$RESULTS/layouts_$name.log"; status=1
    fi
  }
  layouts llama_gqa_bf16 "" "${LAYOUT_TOL_BF16:-0.1}" llama_gqa 2x1 1x2 2x2
  layouts mistral_5layer_bf16 "" "${LAYOUT_TOL_BF16:-0.1}" mistral_5layer 4x1 1x3
  layouts llama_mha_bias_bf16 "" "${LAYOUT_TOL_BF16:-0.1}" llama_mha_bias 3x1
  layouts llama_gqa_f32 "--dtype float32" "${LAYOUT_TOL:-2e-3}" llama_gqa 2x1 1x2 2x2
  # a worker rank on the GPU killed mid-stream: /health, the exit within seconds, the rank named
  for l in 2x1 1x3; do
    if SHARDLM_LAYOUT_ARGS="--device cuda" timeout 120 $PY tests/parallel/kill_worker_serve.py "$shardlm" \
         "$root/tests/fixtures/mistral_5layer" $l >"$RESULTS/kill_worker_serve_$l.log" 2>&1; then
      echo "PASS kill_worker_serve $l: $(head -1 "$RESULTS/kill_worker_serve_$l.log")"
    else
      echo "FAIL kill_worker_serve $l"; tail -8 "$RESULTS/kill_worker_serve_$l.log"; status=1
    fi
  done
fi

# ---- NCCL's all-reduce at the decode step's sizes: one rank, then one on each GPU where there are several ----
if want nccl; then
  rm -f "$RESULTS"/nccl_allreduce*.json # no figures of an earlier run's GPU count in this run's table
  nb=$bin/nccl_allreduce_bench
  [ -x "$nb" ] || nb=$bin/bench/nccl_allreduce_bench
  [ -x "$nb" ] || [ -n "${SHARDLM_BIN:-}" ] || cmake --build "$bin" -j "$(nproc)" --target nccl_allreduce_bench >/dev/null
  if [ ! -x "$nb" ]; then
    echo "FAIL nccl: no nccl_allreduce_bench in $bin (a build without NCCL?)"; status=1
  else
    timeout 300 "$nb" --hidden "${NCCL_HIDDEN:-4096}" --json "$RESULTS/nccl_allreduce.json" 2>&1 |
      tee "$RESULTS/nccl_allreduce.txt" || { echo "FAIL nccl (one rank)"; status=1; }
    ngpu=$(nvidia-smi -L | grep -c '^GPU')
    if [ "$ngpu" -gt 1 ] && command -v mpirun >/dev/null; then
      OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 timeout 600 mpirun --bind-to none -np "$ngpu" \
        "$nb" --hidden "${NCCL_HIDDEN:-4096}" --json "$RESULTS/nccl_allreduce_np$ngpu.json" 2>&1 |
        tee "$RESULTS/nccl_allreduce_np$ngpu.txt" || { echo "FAIL nccl ($ngpu ranks)"; status=1; }
    fi
  fi
fi

if want bench || want throughput || want serve || want structured || want peers || want trace; then
  make_model || exit 1
  # the GPU's read bandwidth, measured as DEVICE.md does (torch sum over 4 GiB of bf16), best of 10
  $PY - <<'EOF' >"$RESULTS/read_bw.json"
import json, torch
x = torch.empty(2 << 30, dtype=torch.bfloat16, device="cuda").normal_()
best = 0
for _ in range(12):
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    s.record(); x.sum(); e.record(); torch.cuda.synchronize()
    best = max(best, x.numel() * 2 / (s.elapsed_time(e) / 1e3) / 1e9)
print(json.dumps({"read_bw_gbs": round(best, 1)}))
EOF
fi

if want bench; then
  timeout 240 "$shardlm" bench latency "$model" --batch-size 1 --input-len 128 --output-len 256 --num-iters 5 \
      --output-json "$RESULTS/decode_b1.json" 2>&1 | grep -v "^iteration" || status=1
  timeout 120 "$shardlm" bench latency "$model" --batch-size 1 --input-len 2048 --output-len 1 --num-iters 5 \
      --output-json "$RESULTS/prefill_2048.json" 2>&1 | grep -v "^iteration" || status=1
fi
if want throughput; then
  timeout 300 "$shardlm" bench throughput "$model" --num-prompts "${NUM_PROMPTS:-1000}" --input-len 512 --output-len 256 \
      --output-json "$RESULTS/throughput.json" || status=1
fi
if want trace; then
  tracer=$bin/libcuda_trace.so
  [ -f "$tracer" ] || tracer=$bin/bench/libcuda_trace.so
  trace() { # NAME "REPORT-ARGS" SHARDLM-ARGS...: the run under the tracer, then its report
    local name=$1 report=$2; shift 2
    CUDA_INJECTION64_PATH=$tracer CUDA_TRACE_OUT=$RESULTS/trace_$name.tsv timeout 240 "$shardlm" "$@" 2>&1 |
      grep -v "^iteration" || status=1
    $PY bench/cuda_trace_report.py "$RESULTS/trace_$name.tsv" $report | tee "$RESULTS/trace_$name.txt"
  }
  trace prefill_2048 "--bursts 12" bench latency "$model" --batch-size 1 --input-len 2048 --output-len 1 --num-iters 3
  # batch-1 decode steps alone (after the last prefill): each step's kernels in its graph, their mean times
  trace decode_b1 "--after attention_prefill --burst-gap-ms 0.05 --bursts 3 --gaps 3" \
    bench latency "$model" --batch-size 1 --input-len 128 --output-len 128 --num-iters 2
  trace throughput "--bursts 12" bench throughput "$model" --num-prompts 512 --input-len 512 --output-len 64
fi
if want serve; then
  # start to a ready /health, page cache warm (the model was just read)
  port=8123
  t0=$(date +%s%N)
  "$shardlm" serve "$model" --port $port --max-model-len 4096 >"$RESULTS/serve.log" 2>&1 &
  pid=$!
  until $PY -c "import urllib.request as u; u.urlopen('http://localhost:$port/health', timeout=1)" 2>/dev/null; do
    kill -0 $pid 2>/dev/null || { echo "serve died:"; tail "$RESULTS/serve.log"; break; }
    sleep 0.05
  done
  t1=$(date +%s%N)
  echo "{\"start_to_ready_s\": $(( (t1 - t0) / 1000000 )).0e-3}" >"$RESULTS/serve_start.json"
  timeout 300 "$shardlm" bench serve --base-url "http://127.0.0.1:$port" --num-prompts "${SERVE_PROMPTS:-400}" \
      --request-rate "${REQUEST_RATE:-8}" --input-len 256 --output-len 256 | tee "$RESULTS/serve_bench.txt" || status=1
  kill $pid 2>/dev/null; wait $pid 2>/dev/null
fi
if want structured; then
  lib=$bin/libshardlm.so
  [ -f "$lib" ] || lib=$bin/../libshardlm.so
  seqs=${STRUCTURED_SEQS:-256}
  SHARDLM_LIBRARY=$lib PYTHONPATH=$root/python timeout 300 $PY bench/structured/bench_structured.py "$model" \
      tests/grammar/schemas/person.json --threads 8 --concurrency "$seqs" --runs "${STRUCTURED_RUNS:-2}" |
    tee "$RESULTS/structured.jsonl" || status=1
fi
if want preflight; then
  big=$MODELS/qwen2.5-72b-config
  $PY tools/make_bench_model.py --shape qwen2.5-72b --out "$big" --tokenizer "$TOKENIZERS/llama3.1" --config-only >/dev/null
  timeout 60 "$shardlm" serve "$big" --port 8124 >"$RESULTS/preflight.log" 2>&1
  rc=$?
  if [ $rc -ne 0 ] && [ $rc -ne 124 ] && grep -q -- "use --tensor-parallel-size [23] " "$RESULTS/preflight.log"; then
    echo "PASS preflight: $(tail -1 "$RESULTS/preflight.log")"
  else
    echo "FAIL preflight (exit $rc): $(tail -3 "$RESULTS/preflight.log")"; status=1
  fi
fi
if want peers; then
  peer=$root/../shared/peers/torch_static.py
  [ -f "${TORCH_STATIC:-}" ] && peer=$TORCH_STATIC
  timeout 240 $PY bench/peers/transformers_gpu.py --model "$model" --iters "${PEER_ITERS:-3}" 2>&1 | tail -1 |
    tee "$RESULTS/transformers.json"
  timeout "${TORCH_STATIC_TIMEOUT:-300}" $PY "$peer" 2>&1 | tail -5 | tee "$RESULTS/torch_static.txt"
fi

# ---- one table ----
$PY - "$RESULTS" "$commit" <<'EOF'
import json, os, re, sys
d, commit = sys.argv[1], sys.argv[2]
def load(name):
    try:
        with open(os.path.join(d, name)) as f: return json.load(f)
    except Exception: return {}
bw = load("read_bw.json").get("read_bw_gbs")
dec, pre, thr, srv = load("decode_b1.json"), load("prefill_2048.json"), load("throughput.json"), load("serve_start.json")
tf = load("transformers.json")
ts = ""
try: ts = open(os.path.join(d, "torch_static.txt")).read()
except Exception: pass
gpu = open(os.path.join(d, "gpu.txt")).read().strip() if os.path.exists(os.path.join(d, "gpu.txt")) else "?"
print(f"\n| Llama-3.1-8B shape, bf16 | shardlm ({commit}) | peers, same run |  ({gpu})")
print("| --- | --- | --- |")
if dec:
    w = dec.get("step_read_gb", 0)
    share = f", {100 * dec['decode_tok_s'] * w / bw:.0f}% of {bw:.0f} GB/s read" if bw and w else ""
    m = re.search(r'"decode_tokps_b1": ([\d.]+)', ts)
    print(f"| batch-1 decode (128 in, 256 out) | {dec['decode_tok_s']:.1f} tok/s{share} | "
          f"torch_static {m.group(1) if m else '?'}; transformers {tf.get('decode_tok_s', '?')} |")
if pre: print(f"| prefill, one 2048-token prompt | {pre['prefill_tok_s']:.0f} tok/s | transformers {tf.get('prefill_tok_s', '?')} |")
m64 = re.search(r'"decode_tokps_b64": ([\d.]+)', ts)
if thr: print(f"| throughput, {thr['num_prompts']} x (512 in, 256 out) | {thr['output_tok_s']:.0f} output tok/s | "
              f"torch_static b64 decode {m64.group(1) if m64 else '?'} |")
if srv: print(f"| serve: start to ready /health | {srv['start_to_ready_s']:.2f} s | |")
try:
    for line in open(os.path.join(d, "structured.jsonl")):
        r = json.loads(line)
        print(f"| {r['concurrency']} JSON-schema requests at once: guided / unconstrained output tok/s | "
              f"{r['guided_tok_s']:.0f} / {r['unconstrained_tok_s']:.0f} = {r['ratio']:.3f} | |")
except (OSError, ValueError, KeyError):
    pass
for name in sorted(n for n in os.listdir(d) if re.fullmatch(r"nccl_allreduce(_np\d+)?\.json", n)):
    nc = load(name)
    v = next((v for v in nc.get("variants", []) if v["name"] == "default" and v["status"] == "ok"), None)
    if not v: continue
    fmt = lambda s: f"{s['eager_median_us']:.2f}" + (f" / {s['graph_median_us']:.2f}" if s.get("graph_median_us") is not None else " / -")
    cells = ", ".join(f"{s['rows']} row{'s' if s['rows'] > 1 else ''} {fmt(s)}" for s in v["sizes"] if s["rows"] in (1, 8, 64, 256))
    print(f"| NCCL all-reduce, {nc['world_size']} rank{'s' if nc['world_size'] > 1 else ''}, bf16 x {nc['hidden']}: "
          f"eager / graph median (us a call) | {cells} | |")
try:
    sb = open(os.path.join(d, "serve_bench.txt")).read()
    get = lambda label: (re.search(re.escape(label) + r"\s+([\d.]+)", sb) or [None, "?"])[1]
    rate = os.environ.get("REQUEST_RATE", "8")
    print(f"| bench serve, {rate} req/s offered: output tok/s | {get('Output token throughput (tok/s):')} | |")
    print(f"| TTFT median / p99 (ms) | {get('Median TTFT (ms):')} / {get('P99 TTFT (ms):')} | |")
    print(f"| ITL median / p99 (ms) | {get('Median ITL (ms):')} / {get('P99 ITL (ms):')} | |")
except OSError:
    pass
EOF
exit $status
