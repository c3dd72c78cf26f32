#!/usr/bin/env bash
# CI's vLLM job: vLLM's CPU build in its own venv (.venv-vllm), then tests/training/test_vllm.py there
# (vLLM generation with the tiny model, GRPO in colocate mode, the weight sync).
#
#   bash scripts/test_vllm.sh            # installs .venv-vllm first when it is missing
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv-vllm/bin/python ]; then
  bash scripts/install.sh vllm
fi
# 1 GiB of KV cache: vLLM's CPU backend otherwise reserves most of the machine's memory.
export VLLM_CPU_KVCACHE_SPACE="${VLLM_CPU_KVCACHE_SPACE:-1}"
.venv-vllm/bin/python -m pytest -q tests/training/test_vllm.py "$@"
