"""The sandboxed process behind :mod:`mulligan.envs.verifiers.math`: runs math-verify on untrusted text.

This file runs as a script (``python _math_worker.py``), never imported by the parent, so that
sympy only ever sees model text inside a process that the parent can kill. It deliberately imports
nothing from ``mulligan``: startup cost is sympy and math-verify alone.

Protocol (one JSON object per line): the worker writes ``{"ready": true}`` once its imports are
done; then for each request ``{"id": n, "gold": str, "answer": str, "inner_timeout": int}`` on
stdin it writes ``{"id": n, "equal": bool}`` on stdout. Any error while parsing or comparing is a
non-match (``false``), and so is an equation with a constant side that differs from a gold value
(``99 = 72`` against 72). The parent enforces the hard wall-clock deadline by killing this process;
math-verify's own ``signal.alarm`` timeouts (which work here, since this is the main thread of its
own process) are only a cheaper first line of defence that keeps the worker alive.

Hardening: the worker dies with its parent (``PR_SET_PDEATHSIG`` on Linux, plus end-of-file on
stdin), ignores ``SIGINT`` (a Ctrl-C in the parent's terminal is the parent's business) and caps
its own address space so that a runaway big-integer power fails with ``MemoryError`` instead of
swapping the machine.
"""

from __future__ import annotations

import json
import os
import signal
import sys

#: Address-space cap of a worker; big enough for sympy, small enough to stop a 9^9^9^9 blow-up.
_ADDRESS_SPACE_LIMIT = 4 * 2**30
_PARSED_GOLD_CACHE_SIZE = 4096


def _harden(parent_pid: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: stdin EOF still ends the worker
        pass
    if os.getppid() != parent_pid:  # the parent died before the death signal was armed
        os._exit(0)
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        limit = _ADDRESS_SPACE_LIMIT if hard == resource.RLIM_INFINITY else min(hard, _ADDRESS_SPACE_LIMIT)
        if soft == resource.RLIM_INFINITY or soft > limit:
            resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    except (ImportError, ValueError, OSError):
        pass


def _equation_sides(expr: object) -> list:
    """The sides of an equation or a chain of equations (``a = b = c``), else an empty list."""
    from sympy import And, Eq

    if isinstance(expr, Eq):
        return [expr.lhs, expr.rhs]
    if isinstance(expr, And) and expr.args and all(isinstance(arg, Eq) for arg in expr.args):
        return [side for arg in expr.args for side in (arg.lhs, arg.rhs)]
    return []


def _is_constant(expr: object) -> bool:
    """Whether ``expr`` has a value of its own: no free symbols and no undefined function calls."""
    from sympy.core.function import AppliedUndef

    return not getattr(expr, "free_symbols", True) and not expr.atoms(AppliedUndef)


def main() -> None:
    """Serve verification requests until stdin closes."""
    parent_pid = int(sys.argv[1]) if len(sys.argv) > 1 else os.getppid()
    _harden(parent_pid)
    # Integers of more than 4300 digits are refused by int(str) in Python >= 3.11 already; keep it so.
    from latex2sympy2_extended.latex2sympy2 import NormalizationConfig
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    # math-verify's defaults, except its unit list: it strips words such as "more", "less", "gain"
    # and any trailing \text{...}, so "72 or more" would equal 72. The parent strips real units itself.
    extraction_config = [
        LatexExtractionConfig(
            normalization_config=NormalizationConfig(
                basic_latex=True, units=False, malformed_operators=True, nits=True, boxed="all", equations=False
            )
        ),
        ExprExtractionConfig(),
    ]
    gold_cache: dict[tuple[str, int], list] = {}

    def parse_boxed(text: str, inner_timeout: int) -> list:
        # The parent already extracted the final answer; \boxed{} tells math-verify to take all of it.
        return parse("\\boxed{" + text + "}", extraction_config=extraction_config, parsing_timeout=inner_timeout)

    def contradicts_itself(parsed_gold: list, parsed_answer: list, inner_timeout: int) -> bool:
        # math-verify compares only the last side of an equation with a gold value ("99 = 72" is 72).
        # Every constant side must equal the gold value; sides with variables or functions are names.
        sides = _equation_sides(parsed_answer[0])
        if not sides or _equation_sides(parsed_gold[0]):
            return False
        return any(
            _is_constant(side) and not verify(parsed_gold, [side], timeout_seconds=inner_timeout) for side in sides
        )

    def check(gold: str, answer: str, inner_timeout: int) -> bool:
        key = (gold, inner_timeout)
        parsed_gold = gold_cache.get(key)
        if parsed_gold is None:
            parsed_gold = parse_boxed(gold, inner_timeout)
            if len(gold_cache) >= _PARSED_GOLD_CACHE_SIZE:
                gold_cache.clear()
            gold_cache[key] = parsed_gold
        parsed_answer = parse_boxed(answer, inner_timeout)
        if not parsed_gold or not parsed_answer:
            return False
        if contradicts_itself(parsed_gold, parsed_answer, inner_timeout):
            return False
        return bool(verify(parsed_gold, parsed_answer, timeout_seconds=inner_timeout))

    out = sys.stdout
    out.write('{"ready": true}\n')
    out.flush()
    for line in sys.stdin:
        try:
            request = json.loads(line)
            request_id = request["id"]
        except (ValueError, KeyError, TypeError):
            continue
        try:
            equal = check(str(request["gold"]), str(request["answer"]), int(request.get("inner_timeout", 1)))
        except Exception:  # any failure on untrusted text (RecursionError, MemoryError...) is a non-match
            equal = False
        out.write(json.dumps({"id": request_id, "equal": equal}) + "\n")
        out.flush()


if __name__ == "__main__":
    main()
