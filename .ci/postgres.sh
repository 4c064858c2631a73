#!/usr/bin/env bash
# Start a throwaway PostgreSQL for the tests: 127.0.0.1:55432, trust auth on loopback, database caviar_test.
#   URL: postgresql+psycopg2://postgres@127.0.0.1:55432/caviar_test
# Idempotent: if a server already answers there, only makes sure the database exists.
# Installs the Debian package when no PostgreSQL is found (needs root). `postgres.sh stop` stops it.
# Prints nothing on success; on failure says why on stderr (with the server log's tail) and exits 1.
set -euo pipefail

PORT="${CAVIAR_PG_PORT:-55432}"
HOST=127.0.0.1
DB=caviar_test
DATA="${CAVIAR_PG_DIR:-${TMPDIR:-/tmp}/caviar-pg-$PORT}"
LOG="$DATA.log"

die() { echo "postgres.sh: $*" >&2; exit 1; }

find_bin() {
  local d
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    [ -x "$d/initdb" ] && { echo "$d"; return 0; }
  done
  command -v initdb >/dev/null 2>&1 && { dirname "$(command -v initdb)"; return 0; }
  return 1
}

install_pg() {
  [ "$(id -u)" = 0 ] || die "PostgreSQL is not installed and installing it needs root (apt-get install postgresql)"
  command -v apt-get >/dev/null 2>&1 || die "PostgreSQL is not installed and apt-get is not available"
  apt-get update -qq >/dev/null || die "apt-get update failed"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null || die "apt-get install postgresql failed"
}

BIN="$(find_bin || true)"
if [ -z "$BIN" ]; then
  install_pg
  BIN="$(find_bin)" || die "PostgreSQL installed but initdb not found under /usr/lib/postgresql/*/bin"
fi

# Root cannot run the server: run as the postgres system user; anyone else runs it as themselves.
if [ "$(id -u)" = 0 ]; then
  id postgres >/dev/null 2>&1 || die "root needs the 'postgres' system user to run the server"
  as_pg() { runuser -u postgres -- "$@"; }
else
  as_pg() { "$@"; }
fi

psql_pg() { as_pg "$BIN/psql" -h "$HOST" -p "$PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 -qtA "$@"; }
answers() { "$BIN/pg_isready" -q -h "$HOST" -p "$PORT" >/dev/null 2>&1; }

if [ "${1:-}" = stop ]; then
  [ -f "$DATA/PG_VERSION" ] && as_pg "$BIN/pg_ctl" -D "$DATA" -m fast -w stop >/dev/null 2>&1 || true
  exit 0
fi

if ! answers; then
  if [ ! -f "$DATA/PG_VERSION" ]; then
    rm -rf "$DATA"
    mkdir -p "$DATA"
    [ "$(id -u)" = 0 ] && chown postgres: "$DATA"
    chmod 700 "$DATA"
    as_pg "$BIN/initdb" -D "$DATA" -U postgres --auth=trust -E UTF8 >"$LOG.init" 2>&1 \
      || die "initdb failed: $(tail -n 3 "$LOG.init" | tr '\n' ' ')"
  fi
  touch "$LOG"
  [ "$(id -u)" = 0 ] && chown postgres: "$LOG"
  as_pg "$BIN/pg_ctl" -D "$DATA" -l "$LOG" -w -t 60 \
    -o "-c listen_addresses=$HOST -p $PORT -c unix_socket_directories='$DATA' -c fsync=off" start >/dev/null \
    || die "server did not start on $HOST:$PORT: $(tail -n 3 "$LOG" | tr '\n' ' ')"
fi

answers || die "no server answers on $HOST:$PORT"
if [ "$(psql_pg -c "SELECT 1 FROM pg_database WHERE datname = '$DB'")" != 1 ]; then
  psql_pg -c "CREATE DATABASE $DB" >/dev/null 2>&1 \
    || [ "$(psql_pg -c "SELECT 1 FROM pg_database WHERE datname = '$DB'")" = 1 ] \
    || die "could not create database $DB"
fi
