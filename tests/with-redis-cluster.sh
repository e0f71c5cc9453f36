#!/usr/bin/env bash
# Runs a command with a fresh three-master Redis Cluster on free loopback ports (no replicas,
# AOF off, each node in its own temporary directory), exporting COURIER_BACKEND=redis-cluster
# and COURIER_REDIS_URL (the nodes, comma-separated) so every courier-server the command
# starts uses it; stops the nodes afterwards. Used by `make test-sdk-cluster`.
set -euo pipefail
read -r -a ports <<<"$(python3 -c '
import socket
socks = [socket.socket() for _ in range(6)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))')"
root=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$root"
}
trap cleanup EXIT
nodes=()
urls=()
for i in 0 1 2; do
  port=${ports[$i]} bus=${ports[$((i + 3))]}
  mkdir -p "$root/$i"
  # The cluster bus on a port of its own: the default (port + 10000) may be taken.
  redis-server --port "$port" --bind 127.0.0.1 --cluster-enabled yes \
    --cluster-config-file nodes.conf --cluster-port "$bus" --cluster-node-timeout 5000 \
    --save '' --appendonly no --dir "$root/$i" >"$root/$i/redis.log" 2>&1 &
  pids+=($!)
  nodes+=("127.0.0.1:$port")
  urls+=("redis://127.0.0.1:$port/")
done
for i in 0 1 2; do
  for _ in $(seq 100); do
    redis-cli -p "${ports[$i]}" ping >/dev/null 2>&1 && break
    sleep 0.05
  done
done
redis-cli --cluster create "${nodes[@]}" --cluster-replicas 0 --cluster-yes >"$root/create.log" 2>&1 || {
  cat "$root/create.log" >&2
  exit 1
}
for _ in $(seq 300); do
  ok=0
  for i in 0 1 2; do
    redis-cli -p "${ports[$i]}" cluster info 2>/dev/null | grep -q 'cluster_state:ok' && ok=$((ok + 1))
  done
  [ "$ok" = 3 ] && break
  sleep 0.1
done
[ "$ok" = 3 ] || { echo "the Redis Cluster did not become ok" >&2; exit 1; }
export COURIER_BACKEND=redis-cluster
COURIER_REDIS_URL=$(IFS=,; echo "${urls[*]}")
export COURIER_REDIS_URL
"$@"
