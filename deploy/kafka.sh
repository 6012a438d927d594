#!/usr/bin/env bash
# A real Apache Kafka (KRaft) without Docker: one node, or a local three-node cluster.
#
#   deploy/kafka.sh fetch    download the broker jars from Maven Central into the cache
#   deploy/kafka.sh start    fetch if needed, format storage if needed, start, wait until ready
#   deploy/kafka.sh stop     stop the broker cleanly (SIGTERM, then wait)
#   deploy/kafka.sh status   print whether it runs and where
#
# With --cluster after start, stop or status, the same for three nodes, each broker and
# controller in one JVM (node ids 1-3, all three controller voters), brokers on
# 127.0.0.1:9192-9194 and controllers on 9292-9294, each node's data, log and pid under
# <run dir>/kafka-cluster/node-N/, one cluster id for all three. Topics are replicated three
# times and a write with acks=all needs two in-sync replicas, so the cluster takes writes with
# one node down.
# `start` waits until every broker's metadata lists all three brokers and prints the bootstrap
# list. For fault tests: `stop-node N` (SIGTERM: leaders move away first), `kill-node N`
# (SIGKILL: a crash) and `start-node N` take one node away and bring it back.
#
# Settings (environment): STREAMRANK_KAFKA_PORT (9092), STREAMRANK_KAFKA_CONTROLLER_PORT (9093),
# STREAMRANK_KAFKA_HEAP (512m); in cluster mode STREAMRANK_KAFKA_CLUSTER_PORT (9192, node N
# listens on it + N - 1), STREAMRANK_KAFKA_CLUSTER_CONTROLLER_PORT (9292, likewise) and
# STREAMRANK_KAFKA_CLUSTER_HEAP (384m per node); STREAMRANK_CACHE (~/.cache/streamrank),
# STREAMRANK_RUN_DIR (<repo>/.run).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
version="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$here/kafka/pom.xml")"
libs="${STREAMRANK_CACHE:-$HOME/.cache/streamrank}/kafka-$version/libs"
runs="${STREAMRANK_RUN_DIR:-$repo/.run}"
cluster_nodes=(1 2 3)
cluster_dir="$runs/kafka-cluster"
cluster_port="${STREAMRANK_KAFKA_CLUSTER_PORT:-9192}"
cluster_controller_port="${STREAMRANK_KAFKA_CLUSTER_CONTROLLER_PORT:-9292}"

say() { echo "kafka: $*" >&2; }
ms_now() { echo $(( $(date +%s%N) / 1000000 )); }

fetch() {
  if [ -f "$libs/.complete" ]; then return 0; fi
  say "fetching Kafka $version jars from Maven Central into $libs"
  rm -rf "$libs" && mkdir -p "$libs"
  mvn -q -B -Dstyle.color=never -f "$here/kafka/pom.xml" dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$libs"
  touch "$libs/.complete"
}

# --- The node the functions below act on: select_single or select_node sets these. ---------
# node_id, port, controller_port, voters, heap: its identity and listeners; run_dir (its
# data, log, pid and config), cluster_file (the cluster id it is formatted with), replication
# (of the internal topics and the default for new ones), min_isr, name (for messages).

select_single() {
  node_id=1
  port="${STREAMRANK_KAFKA_PORT:-9092}"
  controller_port="${STREAMRANK_KAFKA_CONTROLLER_PORT:-9093}"
  voters="1@127.0.0.1:$controller_port"
  heap="${STREAMRANK_KAFKA_HEAP:-512m}"
  run_dir="$runs/kafka"
  cluster_file="$run_dir/cluster.id"
  replication=1 min_isr=1 name="" port_var=STREAMRANK_KAFKA_PORT
  node_paths
}

select_node() {
  case "$1" in 1|2|3) ;; *) say "no node $1: the cluster's nodes are 1, 2 and 3"; exit 2 ;; esac
  node_id="$1"
  port="$(( cluster_port + node_id - 1 ))"
  controller_port="$(( cluster_controller_port + node_id - 1 ))"
  voters="$(for n in "${cluster_nodes[@]}"; do
    printf '%s@127.0.0.1:%s,' "$n" "$(( cluster_controller_port + n - 1 ))"; done)"
  voters="${voters%,}"
  heap="${STREAMRANK_KAFKA_CLUSTER_HEAP:-384m}"
  run_dir="$cluster_dir/node-$node_id"
  cluster_file="$cluster_dir/cluster.id"
  replication=3 min_isr=2 name="node $node_id: " port_var=STREAMRANK_KAFKA_CLUSTER_PORT
  node_paths
}

node_paths() {
  data_dir="$run_dir/data"
  pid_file="$run_dir/kafka.pid"
  log_file="$run_dir/kafka.log"
}

running_pid() {
  [ -f "$pid_file" ] || return 1
  local pid; pid="$(cat "$pid_file")"
  # The config path tells this node's JVM from another broker's (a reused pid, another node).
  if kill -0 "$pid" 2>/dev/null && grep -q "kafka.Kafka" "/proc/$pid/cmdline" 2>/dev/null \
    && grep -qF "$run_dir/server.properties" "/proc/$pid/cmdline" 2>/dev/null; then
    echo "$pid"; return 0
  fi
  return 1
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

write_config() {
  mkdir -p "$run_dir"
  cat > "$run_dir/server.properties" <<CONF
process.roles=broker,controller
node.id=$node_id
controller.quorum.voters=$voters
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$controller_port
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$data_dir
num.partitions=4
auto.create.topics.enable=false
offsets.topic.replication.factor=$replication
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=$replication
transaction.state.log.min.isr=$min_isr
share.coordinator.state.topic.replication.factor=$replication
share.coordinator.state.topic.min.isr=$min_isr
group.initial.rebalance.delay.ms=0
log.retention.hours=24
CONF
  if [ "$replication" -gt 1 ]; then
    # Topics created without a replication factor get three copies, and acks=all waits for two
    # of them: one node may be down without losing an acknowledged write or refusing new ones.
    printf '%s\n' "default.replication.factor=$replication" "min.insync.replicas=$min_isr" \
      >> "$run_dir/server.properties"
  fi
  # Without a logging config the JVM prints nothing and "started" can't be seen.
  cat > "$run_dir/log4j2.properties" <<CONF
status = warn
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = OUT
logger.kafka.name = org.apache.kafka
logger.kafka.level = WARN
logger.state.name = state.change.logger
logger.state.level = WARN
logger.server.name = kafka.server.KafkaServer
logger.server.level = INFO
CONF
}

java_cmd() {
  exec java "-Xms128m" "-Xmx$heap" -XX:+UseG1GC -Djava.awt.headless=true \
    "-Dlog4j2.configurationFile=$run_dir/log4j2.properties" -cp "$libs/*" "$@"
}

format_storage() {
  [ -s "$cluster_file" ] || (java_cmd kafka.tools.StorageTool random-uuid) | tail -n 1 > "$cluster_file"
  local cluster_id; cluster_id="$(cat "$cluster_file")"
  # A data directory from another cluster id, a half-written one or a crashed format is
  # stale: wipe it rather than refuse to start (this is a local development broker).
  if [ -d "$data_dir" ] && ! grep -qs "cluster.id=$cluster_id" "$data_dir/meta.properties"; then
    say "${name}stale data directory $data_dir: wiping it"
    rm -rf "$data_dir"
  fi
  if [ ! -f "$data_dir/meta.properties" ]; then
    (java_cmd kafka.tools.StorageTool format -t "$cluster_id" -c "$run_dir/server.properties") >/dev/null
  fi
}

# Whether the selected node can start: its port free, java installed.
startable() {
  if port_in_use "$port"; then
    say "${name}port $port is taken by another process; set $port_var or stop it"; return 1
  fi
  command -v java >/dev/null || { say "java not found: install OpenJDK 17 (apt-get install openjdk-17-jre-headless)"; return 1; }
}

# Configure and format the selected node, then start its JVM without waiting for it
# (launched_ms: when, for await_started).
launch() {
  fetch
  write_config
  format_storage
  launched_ms="$(ms_now)"
  : > "$log_file"
  (java_cmd kafka.Kafka "$run_dir/server.properties") >>"$log_file" 2>&1 < /dev/null &
  echo $! > "$pid_file"
}

# Wait up to $1 seconds for the selected node's "started" line (timed from $2, in ms).
await_started() {
  local seconds="$1" started_ms="$2"
  for _ in $(seq 1 $(( seconds * 10 ))); do
    if grep -q "Kafka Server started" "$log_file"; then
      say "${name}started on 127.0.0.1:$port in $(( $(ms_now) - started_ms )) ms (pid $(cat "$pid_file"), log $log_file)"
      return 0
    fi
    if ! kill -0 "$(cat "$pid_file")" 2>/dev/null; then
      say "${name}broker exited during start; last log lines:"; tail -n 30 "$log_file" >&2; return 1
    fi
    sleep 0.1
  done
  say "${name}not started after ${seconds}s; last log lines:"; tail -n 30 "$log_file" >&2; return 1
}

start() {
  local pid
  if pid="$(running_pid)"; then say "${name}already running (pid $pid) on 127.0.0.1:$port"; return 0; fi
  startable || return 1
  launch
  await_started 60 "$launched_ms"
}

# SIGTERM the selected node (a broker then hands its partition leaderships over first).
terminate() {
  local pid
  if ! pid="$(running_pid)"; then say "${name}not running"; rm -f "$pid_file"; return 1; fi
  kill -TERM "$pid"
}

# Wait for the selected node's JVM to exit after terminate; SIGKILL it after 30s.
await_exit() {
  local pid; pid="$(cat "$pid_file" 2>/dev/null)" || return 0
  for _ in $(seq 1 300); do
    kill -0 "$pid" 2>/dev/null || { say "${name}stopped"; rm -f "$pid_file"; return 0; }
    sleep 0.1
  done
  say "${name}did not stop in 30s; killing"; kill -KILL "$pid" 2>/dev/null || true; rm -f "$pid_file"
}

stop() { terminate && await_exit || true; }

status() {
  local pid
  if pid="$(running_pid)"; then echo "kafka $version: ${name}running (pid $pid) on 127.0.0.1:$port"
  else echo "kafka $version: ${name}stopped"; return 3; fi
}

# --- The three-node cluster ------------------------------------------------------------------

bootstrap_list() {
  local n list=""
  for n in "${cluster_nodes[@]}"; do list+="127.0.0.1:$(( cluster_port + n - 1 )),"; done
  echo "${list%,}"
}

# How many brokers the broker on port $1 lists in its metadata. A hand-built Metadata v4
# request (api key 3, no topics, so the answer is only the broker list) over bash's
# /dev/tcp, so that the check needs neither a Kafka client nor another JVM: size 15, then
# api key 3, version 4, correlation id 1, an empty client id, zero topics, no auto-creation.
# The answer: size, correlation id, throttle time, then the brokers array's length.
metadata_brokers() {
  timeout 5 bash -c '
    exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
    printf "\x00\x00\x00\x0f\x00\x03\x00\x04\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00" >&3
    head -c 16 <&3 | od -An -tu1 -j12 \
      | awk "{ print \$1 * 16777216 + \$2 * 65536 + \$3 * 256 + \$4 }"
  ' _ "$1" 2>/dev/null
}

# Every broker lists all three: a client bootstrapping from any of them sees the whole cluster.
cluster_usable() {
  local n
  for n in "${cluster_nodes[@]}"; do
    [ "$(metadata_brokers "$(( cluster_port + n - 1 ))")" = "${#cluster_nodes[@]}" ] || return 1
  done
}

# All three nodes start together: a controller quorum needs two voters, so none of them can
# finish starting alone.
start_cluster() {
  local n i pid starting=() launched=()
  for n in "${cluster_nodes[@]}"; do
    select_node "$n"
    if pid="$(running_pid)"; then say "${name}already running (pid $pid) on 127.0.0.1:$port"
    else startable || return 1; starting+=("$n"); fi
  done
  local started_ms; started_ms="$(ms_now)"
  mkdir -p "$cluster_dir"
  for n in "${starting[@]}"; do select_node "$n"; launch; launched+=("$launched_ms"); done
  for i in "${!starting[@]}"; do
    select_node "${starting[$i]}"
    await_started 120 "${launched[$i]}" || { stop_cluster; return 1; }
  done
  for _ in $(seq 1 600); do
    if cluster_usable; then
      say "cluster of ${#cluster_nodes[@]} brokers usable in $(( $(ms_now) - started_ms )) ms:" \
        "STREAMRANK_KAFKA_BOOTSTRAP=$(bootstrap_list)"
      return 0
    fi
    sleep 0.1
  done
  say "the brokers do not all list each other after 60s"; return 1
}

# SIGTERM every node at once, then wait for each: stopped one after another, the last two
# would lose their controller quorum and wait out the controlled-shutdown timeout.
stop_cluster() {
  local n stopping=()
  for n in "${cluster_nodes[@]}"; do
    select_node "$n"
    if terminate; then stopping+=("$n"); fi
  done
  for n in "${stopping[@]}"; do select_node "$n"; await_exit; done
  say "cluster stopped"
}

status_cluster() {
  local n down=0
  for n in "${cluster_nodes[@]}"; do select_node "$n"; status || down=1; done
  [ "$down" = 0 ] || return 3
  echo "kafka cluster: bootstrap $(bootstrap_list)"
}

# One node of a running cluster back (after stop-node or kill-node): the other two are its
# quorum. It must have been formatted by a `start --cluster` first.
start_node() {
  select_node "$1"
  if [ ! -s "$cluster_file" ]; then
    say "no cluster in $cluster_dir: start it with --cluster first"; return 1
  fi
  start
}

kill_node() {
  select_node "$1"
  local pid
  if ! pid="$(running_pid)"; then say "${name}not running"; return 0; fi
  kill -KILL "$pid"
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  rm -f "$pid_file"
  say "${name}killed"
}

usage() {
  echo "usage: $0 fetch | start|stop|status [--cluster] | start-node|stop-node|kill-node 1|2|3" >&2
  exit 2
}

case "${1:-} ${2:-}" in
  "fetch ") fetch ;;
  "start ") select_single; start ;;
  "stop ") select_single; stop ;;
  "status ") select_single; status ;;
  "start --cluster") start_cluster ;;
  "stop --cluster") stop_cluster ;;
  "status --cluster") status_cluster ;;
  "start-node "?*) start_node "$2" ;;
  "stop-node "?*) select_node "$2"; stop ;;
  "kill-node "?*) kill_node "$2" ;;
  *) usage ;;
esac
