#!/usr/bin/env bash
# Starts the real servers the mirror tests need, on 127.0.0.1 only:
#   PostgreSQL on port 25432 (trust auth, a throwaway cluster under $STATE_DIR)
#   Redis on port 26379 (no persistence)
# Both ports are below the kernel's ephemeral range (32768-60999), so a client socket left by an
# earlier test or benchmark on 127.0.0.1 can never hold them.
# Installs the Debian packages first when they are missing (postgresql, redis-server, and a
# Java runtime for the interoperability test). Idempotent: servers already answering are left
# alone. Prints the two `export` lines the tests read, so use it as:
#   eval "$(scripts/start-test-services.sh)"
# Everything else goes to stderr.
set -euo pipefail

PG_PORT="${GRIDRAFT_TEST_PG_PORT:-25432}"
REDIS_PORT="${GRIDRAFT_TEST_REDIS_PORT:-26379}"
STATE_DIR="${GRIDRAFT_TEST_SERVICES_DIR:-/tmp/gridraft-test-services}"

log() { echo "start-test-services: $*" >&2; }
pg_bindir() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }

missing=()
[ -x "$(pg_bindir)/initdb" ] || missing+=(postgresql)
command -v redis-server >/dev/null || missing+=(redis-server)
command -v java >/dev/null || missing+=(default-jre-headless)
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    log "missing ${missing[*]}; install them (apt-get needs root)"
    exit 1
  fi
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi
BIN="$(pg_bindir)"
mkdir -p "$STATE_DIR"

# Postgres refuses to run as root: run it as the `postgres` user the package creates.
as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

PGDATA="$STATE_DIR/pg"
if "$BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT"; then
  log "postgres already answers on 127.0.0.1:$PG_PORT"
else
  mkdir -p "$PGDATA" "$STATE_DIR/pg-socket"
  [ "$(id -u)" = 0 ] && chown postgres: "$PGDATA" "$STATE_DIR/pg-socket"
  chmod 700 "$PGDATA"
  if [ ! -f "$PGDATA/PG_VERSION" ]; then
    log "initdb in $PGDATA"
    as_pg "$BIN/initdb" -D "$PGDATA" -U postgres -A trust --no-sync >/dev/null
  fi
  log "starting postgres on 127.0.0.1:$PG_PORT"
  as_pg "$BIN/pg_ctl" -D "$PGDATA" -l "$PGDATA/server.log" -w -t 60 start -o \
    "-p $PG_PORT -c listen_addresses=127.0.0.1 -k $STATE_DIR/pg-socket -c fsync=off -c max_connections=300" >/dev/null
fi

if redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping >/dev/null 2>&1; then
  log "redis already answers on 127.0.0.1:$REDIS_PORT"
else
  log "starting redis on 127.0.0.1:$REDIS_PORT"
  redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save '' --appendonly no \
    --databases 64 --daemonize yes --dir "$STATE_DIR" --logfile "$STATE_DIR/redis.log" \
    --pidfile "$STATE_DIR/redis.pid"
  for _ in $(seq 1 100); do
    redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping >/dev/null 2>&1 && break
    sleep 0.1
  done
  redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping >/dev/null
fi

echo "export GRIDRAFT_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:$PG_PORT/postgres"
echo "export GRIDRAFT_TEST_REDIS_URL=redis://127.0.0.1:$REDIS_PORT"
