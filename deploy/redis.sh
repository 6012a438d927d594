#!/usr/bin/env bash
# A real Redis on 127.0.0.1 from Debian's redis-server package.
#
#   deploy/redis.sh install   apt-get install redis-server when it is missing
#   deploy/redis.sh start     install if needed, start, wait for PING
#   deploy/redis.sh stop      shut it down, flushing and fsyncing the append-only file first
#   deploy/redis.sh status
#
# Settings: STREAMRANK_REDIS_PORT (6379), STREAMRANK_RUN_DIR (<repo>/.run),
# STREAMRANK_REDIS_MAXMEMORY (2gb).
#
# Durability: Redis holds state that exists nowhere else (the registry's versions, the active
# pointer, the audit log, learner checkpoints and click statistics, idempotency markers), so it
# runs with the append-only file on and fsync once a second: a crash (kill -9, power loss)
# loses at most about the last second of writes, a restart loses nothing. The AOF lives in the
# run directory (appendonlydir/); RDB snapshots stay off, the AOF is the one copy.
#
# Memory: maxmemory bounds Redis so that it cannot take the machine's memory. The policy is
# noeviction: when full, writes fail with an OOM error that the caller sees and logs. Any
# evicting policy would drop keys silently, and among them could be the registry, a
# checkpoint or an idempotency marker (a replayed request then ranked twice); an error is
# loud and recoverable, a silently missing key is neither.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
port="${STREAMRANK_REDIS_PORT:-6379}"
maxmemory="${STREAMRANK_REDIS_MAXMEMORY:-2gb}"
run_dir="${STREAMRANK_RUN_DIR:-$repo/.run}/redis"
pid_file="$run_dir/redis.pid"

say() { echo "redis: $*" >&2; }

install() {
  command -v redis-server >/dev/null && return 0
  say "installing Debian's redis-server"
  local sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq redis-server >/dev/null
}

ping() { redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null | grep -q PONG; }

start() {
  install
  if ping; then
    say "already running on 127.0.0.1:$port"
    warn_if_not_durable
    return 0
  fi
  mkdir -p "$run_dir"
  redis-server --bind 127.0.0.1 --port "$port" --daemonize yes --dir "$run_dir" \
    --pidfile "$pid_file" --logfile "$run_dir/redis.log" --save "" \
    --appendonly yes --appendfsync everysec \
    --maxmemory "$maxmemory" --maxmemory-policy noeviction
  for _ in $(seq 1 100); do
    if ping; then say "started on 127.0.0.1:$port"; return 0; fi
    sleep 0.1
  done
  say "did not answer PING in 10s; log:"; tail -n 20 "$run_dir/redis.log" >&2; return 1
}

# A Redis started by an older version of this script (no AOF) keeps running as it was.
warn_if_not_durable() {
  local aof
  aof="$(redis-cli -h 127.0.0.1 -p "$port" config get appendonly 2>/dev/null | tail -n 1)"
  if [ "$aof" = "no" ]; then
    say "warning: it runs without the append-only file (appendonly no): a restart loses" \
      "every key; stop and start it to run it durably"
  fi
}

stop() {
  if ! ping; then say "not running"; return 0; fi
  # Plain SHUTDOWN flushes and fsyncs the AOF before exiting (never NOSAVE: that is the state).
  redis-cli -h 127.0.0.1 -p "$port" shutdown >/dev/null 2>&1 || true
  for _ in $(seq 1 100); do ping || { say "stopped"; return 0; }; sleep 0.1; done
  say "did not stop in 10s"; return 1
}

status() {
  if ping; then echo "redis: running on 127.0.0.1:$port"; else echo "redis: stopped"; return 3; fi
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 install|start|stop|status" >&2; exit 2 ;;
esac
