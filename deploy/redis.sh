#!/usr/bin/env bash
# A real Redis on 127.0.0.1 from Debian's redis-server package.
#
#   deploy/redis.sh install   apt-get install redis-server when it is missing
#   deploy/redis.sh start     install if needed, start, wait for PING
#   deploy/redis.sh stop      shut it down, flushing and fsyncing the append-only file first
#   deploy/redis.sh status
#
# With --cluster after the command, the same for a Redis Cluster: three masters and three
# replicas on 127.0.0.1:7000-7005 (STREAMRANK_REDIS_CLUSTER_PORT is the first port), created
# with `redis-cli --cluster create --cluster-replicas 1`, each node with its own AOF under
# <run dir>/redis-cluster/<port>/. Clients connect with STREAMRANK_REDIS_URL=redis://127.0.0.1:7000/0
# and STREAMRANK_REDIS_CLUSTER=true. `stop-node PORT` (SHUTDOWN), `kill-node PORT` (SIGKILL) and
# `start-node PORT` let fault tests take one node away and bring it back.
#
# Settings: STREAMRANK_REDIS_PORT (6379), STREAMRANK_RUN_DIR (<repo>/.run),
# STREAMRANK_REDIS_MAXMEMORY (2gb; per node in cluster mode).
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
cluster_port="${STREAMRANK_REDIS_CLUSTER_PORT:-7000}"
cluster_dir="${STREAMRANK_RUN_DIR:-$repo/.run}/redis-cluster"
cluster_ports=()
for offset in 0 1 2 3 4 5; do cluster_ports+=("$(( cluster_port + offset ))"); done

say() { echo "redis: $*" >&2; }

install() {
  command -v redis-server >/dev/null && return 0
  say "installing Debian's redis-server"
  local sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq redis-server >/dev/null
}

ping() { redis-cli -h 127.0.0.1 -p "${1:-$port}" ping 2>/dev/null | grep -q PONG; }

# One durable redis-server in $1 (its directory) on port $2; further arguments are added.
launch() {
  local dir="$1" node_port="$2"; shift 2
  mkdir -p "$dir"
  redis-server --bind 127.0.0.1 --port "$node_port" --daemonize yes --dir "$dir" \
    --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" --save "" \
    --appendonly yes --appendfsync everysec \
    --maxmemory "$maxmemory" --maxmemory-policy noeviction "$@"
  for _ in $(seq 1 100); do
    if ping "$node_port"; then return 0; fi
    sleep 0.1
  done
  say "127.0.0.1:$node_port did not answer PING in 10s; log:"; tail -n 20 "$dir/redis.log" >&2
  return 1
}

start() {
  install
  if ping; then
    say "already running on 127.0.0.1:$port"
    warn_if_not_durable
    return 0
  fi
  launch "$run_dir" "$port" && say "started on 127.0.0.1:$port"
}

# A cluster node: cluster-node-timeout 2 s so that a replica takes over a dead master within a
# few seconds (the default, 15 s, would stall writes to its slots that long).
start_node() {
  local node_port="$1"
  ping "$node_port" && return 0
  launch "$cluster_dir/$node_port" "$node_port" --cluster-enabled yes \
    --cluster-config-file nodes.conf --cluster-node-timeout 2000
}

cluster_ok() {
  redis-cli -h 127.0.0.1 -p "$cluster_port" cluster info 2>/dev/null | grep -q "cluster_state:ok"
}

# Every master has its replica attached (a failover test needs one to promote).
replicas_attached() {
  [ "$(redis-cli -h 127.0.0.1 -p "$cluster_port" cluster nodes 2>/dev/null \
    | grep -c "slave.* connected")" -ge 3 ]
}

start_cluster() {
  install
  for node_port in "${cluster_ports[@]}"; do start_node "$node_port"; done
  # nodes.conf remembers the cluster across restarts; only a first start creates it.
  if ! redis-cli -h 127.0.0.1 -p "$cluster_port" cluster info | grep -q "cluster_known_nodes:6"; then
    local addresses=()
    for node_port in "${cluster_ports[@]}"; do addresses+=("127.0.0.1:$node_port"); done
    redis-cli --cluster create "${addresses[@]}" --cluster-replicas 1 --cluster-yes >/dev/null
  fi
  for _ in $(seq 1 300); do
    if cluster_ok && replicas_attached; then
      say "cluster started on 127.0.0.1:${cluster_ports[0]}-${cluster_ports[5]}" \
        "(STREAMRANK_REDIS_URL=redis://127.0.0.1:$cluster_port/0 STREAMRANK_REDIS_CLUSTER=true;" \
        "STREAMRANK_REDIS_CLUSTER_NODES: the other five)"
      return 0
    fi
    sleep 0.1
  done
  say "cluster not ok after 30s:"; redis-cli -h 127.0.0.1 -p "$cluster_port" cluster info >&2
  return 1
}

stop_node() {
  local node_port="$1"
  ping "$node_port" || return 0
  redis-cli -h 127.0.0.1 -p "$node_port" shutdown >/dev/null 2>&1 || true
  for _ in $(seq 1 100); do ping "$node_port" || return 0; sleep 0.1; done
  say "127.0.0.1:$node_port did not stop in 10s"; return 1
}

kill_node() {
  local pid_path="$cluster_dir/$1/redis.pid"
  [ -f "$pid_path" ] && kill -KILL "$(cat "$pid_path")" 2>/dev/null || true
}

stop_cluster() {
  for node_port in "${cluster_ports[@]}"; do stop_node "$node_port"; done
  say "cluster stopped"
}

status_cluster() {
  if cluster_ok; then echo "redis cluster: running on 127.0.0.1:${cluster_ports[0]}-${cluster_ports[5]}"
  else echo "redis cluster: stopped or not ok"; return 3; fi
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

usage() {
  echo "usage: $0 install|start|stop|status [--cluster] | start-node|stop-node|kill-node PORT" >&2
  exit 2
}

case "${1:-} ${2:-}" in
  "install "*) install ;;
  "start ") start ;;
  "stop ") stop ;;
  "status ") status ;;
  "start --cluster") start_cluster ;;
  "stop --cluster") stop_cluster ;;
  "status --cluster") status_cluster ;;
  "start-node "[0-9]*) install; start_node "$2" ;;
  "stop-node "[0-9]*) stop_node "$2" ;;
  "kill-node "[0-9]*) kill_node "$2" ;;
  *) usage ;;
esac
