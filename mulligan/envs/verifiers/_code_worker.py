"""The sandboxed process behind CORGI's code critics (:mod:`mulligan.envs.verifiers.critics`).

This file runs as a script (``python -I _code_worker.py``), never imported by the parent, so that
a model's program only ever runs inside a process that the parent kills at its deadline. It
imports nothing from ``mulligan``.

Protocol: one JSON job on stdin, one JSON result on the original stdout (the program's own prints
go to ``/dev/null``):

* ``{"kind": "run", "code": str, "preload": [str], "split_locals": bool, "no_import": bool}``:
  execute ``code`` in a fresh namespace holding the ``preload`` modules, with top-level names in
  a separate dict when ``split_locals``, without ``__import__`` when ``no_import``; the result is
  ``{"ok": bool, "error": str}`` (any exception, ``SystemExit`` included, is a failure). This is
  MBPP's check: the function's definition alone, then the definition followed by one unit test.
* ``{"kind": "program", "code": str, "inputs": [str], "expected": [value]}``: define ``code``; the
  result is ``{"defined": false}`` when that raises or defines no ``f``, else ``{"defined": true,
  "calls": [{"raised": bool, "equal": bool, "shown": str}]}`` with one entry per input:
  ``f(float(input))`` compared with ``==`` to the expected value, and ``str()`` of what ``f``
  returned (cut at 200 characters) for the critique.

Hardening: not a security boundary (the program can read files and open sockets as the user
running it; run untrusted models in a container), but a crash, an endless loop or a memory blow-up
stays here: the worker dies with its parent (``PR_SET_PDEATHSIG`` on Linux), caps its address
space and the size of files it writes, and the parent kills its whole process group at the
deadline.
"""

from __future__ import annotations

import builtins
import json
import os
import signal
import sys

#: Address-space cap: ample for a small function, small enough to stop a runaway allocation.
_ADDRESS_SPACE_LIMIT = 2 * 2**30
#: Largest file the program may write.
_FILE_SIZE_LIMIT = 2**20
_SHOWN_LIMIT = 200


def _harden() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the parent's deadline still applies
        pass
    try:
        import resource

        for limit_id, cap in ((resource.RLIMIT_AS, _ADDRESS_SPACE_LIMIT), (resource.RLIMIT_FSIZE, _FILE_SIZE_LIMIT)):
            soft, hard = resource.getrlimit(limit_id)
            limit = cap if hard == resource.RLIM_INFINITY else min(hard, cap)
            if soft == resource.RLIM_INFINITY or soft > limit:
                resource.setrlimit(limit_id, (limit, hard))
    except (ImportError, ValueError, OSError):
        pass


def _fresh_namespace(preload: tuple = (), no_import: bool = False) -> dict:
    names = vars(builtins)
    if no_import:
        names = {k: v for k, v in names.items() if k != "__import__"}
    namespace = {"__builtins__": names, "__name__": "__corgi_sandbox__"}
    for module in preload:
        namespace[module] = __import__(module)
    return namespace


def _run(code: str, preload: tuple = (), split_locals: bool = False, no_import: bool = False) -> dict:
    namespace = _fresh_namespace(preload, no_import)
    try:
        # split_locals: top-level names land in a separate dict, as exec(code) inside a function
        # does; the code's own functions then cannot see each other (or themselves).
        exec(compile(code, "<inline code>", "exec"), namespace, {} if split_locals else namespace)
    except BaseException as err:  # any failure of the model's code is a verdict
        return {"ok": False, "error": f"{type(err).__name__}: {err}"[:_SHOWN_LIMIT]}
    return {"ok": True, "error": ""}


def _program(code: str, inputs: list, expected: list) -> dict:
    namespace = _fresh_namespace()
    try:
        exec(compile(code, "<inline code>", "exec"), namespace)
        function = namespace["f"]
    except BaseException:
        return {"defined": False}
    calls = []
    for single_input, want in zip(inputs, expected, strict=True):
        try:
            got = function(float(single_input))
        except BaseException:
            calls.append({"raised": True, "equal": False, "shown": ""})
            continue
        try:
            equal = bool(got == want)
            shown = str(got)
        except BaseException:  # an object whose == or str() raises is simply wrong
            equal, shown = False, "<unprintable>"
        calls.append({"raised": False, "equal": equal, "shown": shown[:_SHOWN_LIMIT]})
    return {"defined": True, "calls": calls}


def main() -> None:
    """Read one job, run it, write its result on the original stdout."""
    _harden()
    job = json.loads(sys.stdin.read())
    result_stream = os.fdopen(os.dup(1), "w")
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    sys.stdout = sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process
    if job["kind"] == "run":
        options = {"preload": tuple(job.get("preload", ())), "split_locals": job.get("split_locals", False)}
        result = _run(job["code"], **options, no_import=job.get("no_import", False))
    else:
        result = _program(job["code"], job["inputs"], job["expected"])
    result_stream.write(json.dumps(result))
    result_stream.flush()
    os._exit(0)  # skip interpreter teardown: the program may have left threads or handlers behind


if __name__ == "__main__":
    main()
