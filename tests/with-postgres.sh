#!/usr/bin/env bash
# Runs a command with a throwaway PostgreSQL cluster on a free loopback port, exporting
# COURIER_POSTGRES_URL (and COURIER_TEST_POSTGRES_URL for the tests that start servers
# themselves) pointing at an empty database; stops and deletes the cluster afterwards.
# PostgreSQL refuses to run as root: as root, the cluster runs as the `postgres` user (Debian's
# package creates it) in a directory it owns. Used by `make test-postgres`.
set -euo pipefail
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -x "$bin/initdb" ] || { echo "with-postgres.sh: PostgreSQL is not installed (make tools-postgres)" >&2; exit 1; }
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
dir=$(mktemp -d /tmp/courier-pg.XXXXXX)
as_owner=()
if [ "$(id -u)" = 0 ]; then
  chown postgres:postgres "$dir"
  as_owner=(runuser -u postgres --)
fi
run() { "${as_owner[@]}" "$@"; }
run "$bin/initdb" -D "$dir/data" -U courier --auth=trust --no-sync -E UTF8 >"$dir/initdb.log" 2>&1 \
  || { cat "$dir/initdb.log" >&2; exit 1; }
# Loopback TCP only (no Unix socket outside the temp dir), and no durability: throwaway.
run "$bin/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 30 \
  -o "-p $port -c listen_addresses=127.0.0.1 -k $dir -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
  start >/dev/null
trap 'run "$bin/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT
run "$bin/createdb" -h 127.0.0.1 -p "$port" -U courier courier
export COURIER_POSTGRES_URL="postgres://courier@127.0.0.1:$port/courier"
export COURIER_TEST_POSTGRES_URL="$COURIER_POSTGRES_URL"
"$@"
