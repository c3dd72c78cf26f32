"""Start a real ``transformers serve`` (OpenAI-compatible) on 127.0.0.1 for the served-model tests."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest


def require_serving() -> str:
    """The ``transformers`` executable; skips the test when the serving extras or the command are missing."""
    for module in ("fastapi", "uvicorn", "openai"):
        pytest.importorskip(module, reason="transformers serve needs transformers[serving] (fastapi, uvicorn, openai)")
    executable = shutil.which("transformers", path=os.path.dirname(sys.executable)) or shutil.which("transformers")
    if executable is None:
        pytest.skip("the transformers command is not installed")
    return executable


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def serve(executable: str, model: str, log_dir: Path) -> Iterator[str]:
    """Serve ``model`` offline on CPU, yield the API root (``http://127.0.0.1:PORT/v1``), then stop it."""
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    with open(log_dir / "serve.log", "w+") as log:
        process = subprocess.Popen(
            [executable, "serve", model, "--host", "127.0.0.1", "--port", str(port), "--device", "cpu"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        try:
            deadline = time.monotonic() + 180
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                        break
                except OSError:
                    if process.poll() is not None or time.monotonic() > deadline:
                        log.seek(0)
                        pytest.fail(f"transformers serve did not come up:\n{log.read()[-3000:]}")
                    time.sleep(0.5)
            yield f"http://127.0.0.1:{port}/v1"
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
