#!/usr/bin/env bash
# Runs a command with a fresh redis-server on a free loopback port, exporting
# COURIER_BACKEND=redis and COURIER_REDIS_URL so every courier-server the command starts uses
# it; stops Redis afterwards. Used by `make test-sdk-redis`.
set -euo pipefail
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
dir=$(mktemp -d)
redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$dir" >"$dir/redis.log" 2>&1 &
redis_pid=$!
trap 'kill $redis_pid 2>/dev/null || true; wait $redis_pid 2>/dev/null || true; rm -rf "$dir"' EXIT
for _ in $(seq 50); do
  redis-cli -p "$port" ping >/dev/null 2>&1 && break
  sleep 0.1
done
export COURIER_BACKEND=redis COURIER_REDIS_URL="redis://127.0.0.1:$port/"
"$@"
