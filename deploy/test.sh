#!/usr/bin/env bash
# Runs the whole test suite against the real Kafka broker and Redis. Services that were not
# running are started for the run and stopped afterwards; arguments go to pytest.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$(dirname "$here")"
bash deploy/setup.sh

started=()
for service in kafka redis; do
  if ! bash "deploy/$service.sh" status >/dev/null 2>&1; then
    bash "deploy/$service.sh" start
    started+=("$service")
  fi
done
cleanup() { for service in "${started[@]}"; do bash "deploy/$service.sh" stop || true; done; }
trap cleanup EXIT

# Real models and the demo corpus, so that no test skips for want of them (both are cached).
.venv/bin/python -c "from streamrank.models.assets.model_files import fetch_models; from streamrank.streams.config import get_settings; fetch_models(get_settings().model_dir, progress=False)"
.venv/bin/python -c "from streamrank.models.assets.wiki import fetch_wiki, DEFAULT_OUT; (DEFAULT_OUT / 'corpus.jsonl').exists() or fetch_wiki(DEFAULT_OUT)"

export STREAMRANK_KAFKA_BOOTSTRAP="${STREAMRANK_KAFKA_BOOTSTRAP:-127.0.0.1:${STREAMRANK_KAFKA_PORT:-9092}}"
export STREAMRANK_REDIS_URL="${STREAMRANK_REDIS_URL:-redis://127.0.0.1:${STREAMRANK_REDIS_PORT:-6379}/0}"
.venv/bin/ruff check .
.venv/bin/python -m pytest "$@"
