#!/usr/bin/env bash
# A real single-node Apache Kafka (KRaft, broker+controller in one JVM) without Docker.
#
#   deploy/kafka.sh fetch    download the broker jars from Maven Central into the cache
#   deploy/kafka.sh start    fetch if needed, format storage if needed, start, wait until ready
#   deploy/kafka.sh stop     stop the broker cleanly (SIGTERM, then wait)
#   deploy/kafka.sh status   print whether it runs and where
#
# Settings (environment): STREAMRANK_KAFKA_PORT (9092), STREAMRANK_KAFKA_CONTROLLER_PORT (9093),
# STREAMRANK_KAFKA_HEAP (512m), STREAMRANK_CACHE (~/.cache/streamrank), STREAMRANK_RUN_DIR (<repo>/.run).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
version="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$here/kafka/pom.xml")"
port="${STREAMRANK_KAFKA_PORT:-9092}"
controller_port="${STREAMRANK_KAFKA_CONTROLLER_PORT:-9093}"
heap="${STREAMRANK_KAFKA_HEAP:-512m}"
libs="${STREAMRANK_CACHE:-$HOME/.cache/streamrank}/kafka-$version/libs"
run_dir="${STREAMRANK_RUN_DIR:-$repo/.run}/kafka"
data_dir="$run_dir/data"
pid_file="$run_dir/kafka.pid"
log_file="$run_dir/kafka.log"

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

running_pid() {
  [ -f "$pid_file" ] || return 1
  local pid; pid="$(cat "$pid_file")"
  if kill -0 "$pid" 2>/dev/null && grep -q "kafka.Kafka" "/proc/$pid/cmdline" 2>/dev/null; then
    echo "$pid"; return 0
  fi
  return 1
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

write_config() {
  mkdir -p "$run_dir"
  cat > "$run_dir/server.properties" <<CONF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$controller_port
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$controller_port
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$data_dir
num.partitions=4
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
log.retention.hours=24
CONF
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
  local cluster_file="$run_dir/cluster.id"
  [ -s "$cluster_file" ] || (java_cmd kafka.tools.StorageTool random-uuid) | tail -n 1 > "$cluster_file"
  local cluster_id; cluster_id="$(cat "$cluster_file")"
  # A data directory from another cluster id, a half-written one or a crashed format is
  # stale: wipe it rather than refuse to start (this is a local development broker).
  if [ -d "$data_dir" ] && ! grep -qs "cluster.id=$cluster_id" "$data_dir/meta.properties"; then
    say "stale data directory $data_dir: wiping it"
    rm -rf "$data_dir"
  fi
  if [ ! -f "$data_dir/meta.properties" ]; then
    (java_cmd kafka.tools.StorageTool format -t "$cluster_id" -c "$run_dir/server.properties") >/dev/null
  fi
}

start() {
  local pid
  if pid="$(running_pid)"; then say "already running (pid $pid) on 127.0.0.1:$port"; return 0; fi
  if port_in_use "$port"; then
    say "port $port is taken by another process; set STREAMRANK_KAFKA_PORT or stop it"; return 1
  fi
  command -v java >/dev/null || { say "java not found: install OpenJDK 17 (apt-get install openjdk-17-jre-headless)"; return 1; }
  fetch
  write_config
  format_storage
  local started_ms; started_ms="$(ms_now)"
  : > "$log_file"
  (java_cmd kafka.Kafka "$run_dir/server.properties") >>"$log_file" 2>&1 < /dev/null &
  echo $! > "$pid_file"
  for _ in $(seq 1 600); do
    if grep -q "Kafka Server started" "$log_file"; then
      say "started on 127.0.0.1:$port in $(( $(ms_now) - started_ms )) ms (pid $(cat "$pid_file"), log $log_file)"
      return 0
    fi
    if ! kill -0 "$(cat "$pid_file")" 2>/dev/null; then
      say "broker exited during start; last log lines:"; tail -n 30 "$log_file" >&2; return 1
    fi
    sleep 0.1
  done
  say "not started after 60s; last log lines:"; tail -n 30 "$log_file" >&2; return 1
}

stop() {
  local pid
  if ! pid="$(running_pid)"; then say "not running"; rm -f "$pid_file"; return 0; fi
  kill -TERM "$pid"
  for _ in $(seq 1 300); do
    kill -0 "$pid" 2>/dev/null || { say "stopped"; rm -f "$pid_file"; return 0; }
    sleep 0.1
  done
  say "did not stop in 30s; killing"; kill -KILL "$pid" 2>/dev/null || true; rm -f "$pid_file"
}

status() {
  local pid
  if pid="$(running_pid)"; then echo "kafka $version: running (pid $pid) on 127.0.0.1:$port"
  else echo "kafka $version: stopped"; return 3; fi
}

case "${1:-}" in
  fetch) fetch ;;
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 fetch|start|stop|status" >&2; exit 2 ;;
esac
