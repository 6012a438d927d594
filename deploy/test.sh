#!/usr/bin/env bash
# Runs the whole test suite, all three tiers (tests/unit, tests/integration against the real
# Kafka broker and Redis, tests/data on ../shared/data and the fetched models). Services that
# were not running are started for the run and stopped afterwards. Arguments go to pytest:
# options are added to the three tiers, and test paths (tests/unit, a file, file::test),
# when given, replace them.
#
# With --cluster first, the integration tier runs instead against the three-broker Kafka
# cluster and the Redis Cluster (`deploy/kafka.sh start --cluster`, `deploy/redis.sh start
# --cluster`), the same tests with the environment pointing at the clusters.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$(dirname "$here")"
bash deploy/setup.sh

mode=()
if [ "${1:-}" = "--cluster" ]; then
  shift
  mode=(--cluster)
  export STREAMRANK_KAFKA_BOOTSTRAP=127.0.0.1:9192,127.0.0.1:9193,127.0.0.1:9194
  export STREAMRANK_REDIS_URL=redis://127.0.0.1:7000/0 STREAMRANK_REDIS_CLUSTER=true
  export STREAMRANK_REDIS_CLUSTER_NODES=127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003,127.0.0.1:7004,127.0.0.1:7005
fi

started=()
for service in kafka redis; do
  if ! bash "deploy/$service.sh" status "${mode[@]}" >/dev/null 2>&1; then
    bash "deploy/$service.sh" start "${mode[@]}"
    started+=("$service")
  fi
done
cleanup() {
  for service in "${started[@]}"; do bash "deploy/$service.sh" stop "${mode[@]}" || true; done
}
trap cleanup EXIT

# Real models, the demo corpus and MovieLens, so that no test skips for want of them (cached).
.venv/bin/python -c "from streamrank.models.assets.model_files import fetch_models; from streamrank.streams.config import get_settings; fetch_models(get_settings().model_dir, progress=False)"
.venv/bin/python -c "from streamrank.models.assets.wiki import fetch_wiki, DEFAULT_OUT; (DEFAULT_OUT / 'corpus.jsonl').exists() or fetch_wiki(DEFAULT_OUT)"
.venv/bin/python -c "from streamrank.models.assets.movielens import fetch_movielens, DEFAULT_OUT; (DEFAULT_OUT / 'items.jsonl').exists() or fetch_movielens(DEFAULT_OUT)"

export STREAMRANK_KAFKA_BOOTSTRAP="${STREAMRANK_KAFKA_BOOTSTRAP:-127.0.0.1:${STREAMRANK_KAFKA_PORT:-9092}}"
export STREAMRANK_REDIS_URL="${STREAMRANK_REDIS_URL:-redis://127.0.0.1:${STREAMRANK_REDIS_PORT:-6379}/0}"
.venv/bin/ruff check .
tiers=(tests/unit tests/integration tests/data)
[ ${#mode[@]} -eq 0 ] || tiers=(tests/integration)
for argument in "$@"; do
  [[ "$argument" != -* && -e "${argument%%::*}" ]] && { tiers=(); break; }
done
.venv/bin/python -m pytest "${tiers[@]}" "$@"
