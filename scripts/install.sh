#!/usr/bin/env bash
# Set up mulligan on a fresh machine: a JRE for ScienceWorld (when asked for), a virtualenv in
# .venv, the CPU build of torch 2.13.0 first (so that no CUDA build is pulled), then the package.
#
#   bash scripts/install.sh            # the package with the training extra (the main job)
#   bash scripts/install.sh dev        # everything the test suite needs (train, scienceworld, dev)
set -euo pipefail
cd "$(dirname "$0")/.."

profile="${1:-train}"
case "$profile" in
  train) extras="train" ;;
  dev) extras="train,scienceworld,dev" ;;
  *) echo "usage: bash scripts/install.sh [train|dev]" >&2; exit 2 ;;
esac

if [[ "$extras" == *scienceworld* ]] && ! command -v java >/dev/null 2>&1; then
  # ScienceWorld is a Java program driven from Python: it needs a Java runtime.
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    echo "installing a Java runtime for ScienceWorld (default-jre-headless)"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq default-jre-headless >/dev/null
  else
    echo "warning: no java and no apt-get; ScienceWorld tests will be skipped" >&2
  fi
fi

python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".[$extras]"
echo "mulligan installed in .venv with extras [$extras]"
