#!/usr/bin/env bash
# A real Redis on 127.0.0.1 from Debian's redis-server package.
#
#   deploy/redis.sh install   apt-get install redis-server when it is missing
#   deploy/redis.sh start     install if needed, start, wait for PING
#   deploy/redis.sh stop      shut it down (SHUTDOWN NOSAVE: it holds caches and test state)
#   deploy/redis.sh status
#
# Settings: STREAMRANK_REDIS_PORT (6379), STREAMRANK_RUN_DIR (<repo>/.run).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
port="${STREAMRANK_REDIS_PORT:-6379}"
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
  if ping; then say "already running on 127.0.0.1:$port"; return 0; fi
  mkdir -p "$run_dir"
  redis-server --bind 127.0.0.1 --port "$port" --daemonize yes --dir "$run_dir" \
    --pidfile "$pid_file" --logfile "$run_dir/redis.log" --save "" --appendonly no
  for _ in $(seq 1 100); do
    if ping; then say "started on 127.0.0.1:$port"; return 0; fi
    sleep 0.1
  done
  say "did not answer PING in 10s; log:"; tail -n 20 "$run_dir/redis.log" >&2; return 1
}

stop() {
  if ! ping; then say "not running"; return 0; fi
  redis-cli -h 127.0.0.1 -p "$port" shutdown nosave >/dev/null 2>&1 || true
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
