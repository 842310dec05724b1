#!/usr/bin/env bash
# two_nodes.sh -- a model served across two "machines": two network
# namespaces joined by a veth pair, ranks started by mpirun over TCP (its
# remote-shell agent enters the other namespace instead of ssh'ing), the
# server on rank 0 answering a chat request with the answer of one process.
# Where namespaces cannot be made (no root, no iproute2), it says so and runs
# the same layout on loopback.
# usage: two_nodes.sh SHARDLM MODEL_DIR
set -euo pipefail
shardlm=$1 model=$2
[ -d "$model" ] || { echo "SKIP: no model at $model"; exit 77; }
here=$(cd "$(dirname "$0")" && pwd)
port=$((18000 + RANDOM % 1000))
tag=sl$$
ns_a=${tag}a ns_b=${tag}b ip_a=10.231.$((RANDOM % 200)).1
ip_b=${ip_a%.1}.2
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 SHARDLM_COMM_TIMEOUT=30
question='{"messages": [{"role": "user", "content": "What is the capital of France?"}], "max_tokens": 12, "temperature": 0}'

cleanup() {
  if [ -n "${server:-}" ]; then kill "$server" 2>/dev/null; wait "$server" 2>/dev/null || true; fi
  ip netns del "$ns_a" 2>/dev/null || true
  ip netns del "$ns_b" 2>/dev/null || true
  rm -f "$agent"
}
agent=$(mktemp)
trap cleanup EXIT

# the reference: one process
expected=$("$shardlm" generate "$model" --chat --prompt "What is the capital of France?" --max-tokens 12 --temperature 0 2>/dev/null)

in_ns=()
hosts="localhost:2"
mca=(--mca btl tcp,self --mca btl_tcp_if_include lo --mca oob_tcp_if_include lo)
host_ip=127.0.0.1
if ip netns add "$ns_a" 2>/dev/null && ip netns add "$ns_b" 2>/dev/null &&
   ip link add "${tag}va" type veth peer name "${tag}vb" 2>/dev/null; then
  ip link set "${tag}va" netns "$ns_a"
  ip link set "${tag}vb" netns "$ns_b"
  ip netns exec "$ns_a" ip addr add "$ip_a/24" dev "${tag}va"
  ip netns exec "$ns_b" ip addr add "$ip_b/24" dev "${tag}vb"
  for ns in "$ns_a" "$ns_b"; do ip netns exec "$ns" ip link set lo up; done
  ip netns exec "$ns_a" ip link set "${tag}va" up
  ip netns exec "$ns_b" ip link set "${tag}vb" up
  cat > "$agent" <<AGENT
#!/bin/sh
host=\$1; shift
case "\$host" in $ip_a) ns=$ns_a ;; $ip_b) ns=$ns_b ;; *) echo "unknown host \$host" >&2; exit 1 ;; esac
exec ip netns exec "\$ns" sh -c "\$*"
AGENT
  chmod +x "$agent"
  in_ns=(ip netns exec "$ns_a")
  hosts="$ip_a:1,$ip_b:1"
  mca=(--mca plm_rsh_agent "$agent" --mca btl tcp,self --mca btl_tcp_if_include "${ip_a%.1}.0/24"
       --mca oob_tcp_if_include "${ip_a%.1}.0/24")
  host_ip=$ip_a
  echo "two namespaces: rank 0 at $ip_a ($ns_a), rank 1 at $ip_b ($ns_b)"
else
  echo "network namespaces cannot be made here: running the same layout (2 ranks over TCP) on loopback"
fi

"${in_ns[@]}" mpirun -np 2 -H "$hosts" "${mca[@]}" -x SHARDLM_COMM_TIMEOUT \
  "$shardlm" serve "$model" --pipeline-parallel-size 2 --host "$host_ip" --port "$port" --log-level warning &
server=$!
for _ in $(seq 150); do
  "${in_ns[@]}" curl -sf "http://$host_ip:$port/health" >/dev/null 2>&1 && break
  sleep 0.2
done
answer=$("${in_ns[@]}" curl -sf "http://$host_ip:$port/v1/chat/completions" -H 'Content-Type: application/json' -d "$question" |
         "${SHARDLM_TEST_PYTHON:-python3}" -c 'import json,sys; print(json.load(sys.stdin)["choices"][0]["message"]["content"])')
echo "one process: $expected"
echo "two nodes:   $answer"
[ "$answer" = "$expected" ]
