#!/usr/bin/env bash
# `make demo`: the reference server, the browser dashboard, the Node subscriber and the Python
# publisher, all on 127.0.0.1. Ctrl-C stops everything this script started.
# DEMO_RUNS=N stops after N backtests (0, the default, runs until Ctrl-C); DEMO_PORT picks the
# server's port (default 8766, or any free port when that one is taken).
set -euo pipefail
cd "$(dirname "$0")/.."

server=target/debug/courier-server
py=.venv/bin/python
runs=${DEMO_RUNS:-0}
port=${DEMO_PORT:-8766}
work=$(mktemp -d)
pids=()

cleanup() {
  trap - EXIT INT TERM
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'echo; echo "demo: stopping"; exit 0' INT TERM

if ! "$py" - "$port" <<'PY' 2>/dev/null; then port=0; fi
import socket, sys
s = socket.socket(); s.bind(("127.0.0.1", int(sys.argv[1]))); s.close()
PY

# Under tests/with-postgres.sh (as `make demo` runs it) the history lives in PostgreSQL, kept
# 7 days, and the admin console pages through it.
if [ -n "${COURIER_POSTGRES_URL:-}" ]; then
  export COURIER_HISTORY__BACKEND=postgres
  history="PostgreSQL at ${COURIER_POSTGRES_URL}"
else
  history="memory"
fi

"$server" serve --listen "127.0.0.1:$port" >"$work/server.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
  addr=$(sed -n 's/.*listening on \([0-9.:]*\).*/\1/p' "$work/server.log" | head -n1)
  [ -n "$addr" ] && break
  sleep 0.1
done
[ -n "${addr:-}" ] || { echo "demo: the server did not start:"; cat "$work/server.log"; exit 1; }

publisher_token=$("$server" token --sub demo-publisher --role service --ttl 86400)
viewer_token=$("$server" token --sub demo-viewer --role user --channels 'backtest.*' --ttl 86400)
admin_token=$("$server" token --sub demo-admin --role admin --ttl 86400)

node examples/browser-dashboard/serve.mjs --ws "ws://$addr/ws" --token "$viewer_token" >"$work/dashboard.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do
  url=$(sed -n 's/^dashboard at \(.*\)$/\1/p' "$work/dashboard.log")
  [ -n "$url" ] && break
  sleep 0.1
done

echo "demo: courier-server on $addr (history in $history)"
echo "demo: open the dashboard at ${url:-(dashboard failed: see $work/dashboard.log)}"
echo "demo: admin console at http://$addr/admin (log in with this admin token):"
echo "      $admin_token"
echo "demo: Ctrl-C stops everything"
echo

node examples/node-subscriber/subscriber.mjs --url "ws://$addr/ws" --token "$viewer_token" &
pids+=($!)
sleep 0.5
"$py" examples/python-publisher/publisher.py --url "http://$addr" --token "$publisher_token" --runs "$runs"
sleep 0.5
