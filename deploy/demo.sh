#!/usr/bin/env bash
# The demo end to end on a fresh machine: install, start Kafka and Redis, create the topics,
# stream requests through a worker and show the rankings live. Services stay up afterwards
# (`make services-down` stops them).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$(dirname "$here")"
bash deploy/setup.sh
.venv/bin/streamrank services up
.venv/bin/streamrank topics create
.venv/bin/streamrank demo
