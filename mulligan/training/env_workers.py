"""Env workers: the envs of an :class:`~mulligan.training.rollout.EnvPool` stepped in other processes.

A slow env spends its step outside the agent: ScienceWorld in its JVM, HotpotQA fullwiki in a
BM25 search over a large corpus. In one process the pool's envs step one after another; with
``EnvPool(..., env_workers=N)`` they live in ``N`` workers (env ``i`` in worker ``i % N``) and a
turn's steps run in all workers at once. The rollout sends each worker one message per turn (the
steps of all its envs) and then gathers the answers, so the inter-process traffic is two messages
per worker per turn, whatever the number of envs.

Backends:

* ``"process"`` (default): worker processes started with ``multiprocessing``'s ``spawn`` method
  (safe beside threads, torch and a JVM; a script that builds such a pool at import time needs an
  ``if __name__ == "__main__":`` guard, as any ``multiprocessing`` program does). Messages go
  through pipes.
* ``"ray"``: one Ray actor per worker (``num_cpus=1`` each), for envs spread over several machines.
  Needs ``pip install ray``. The pool joins the Ray instance the caller started with
  ``ray.init(address=...)``; without one, Ray starts a local instance on first use.

What comes back is what the env returned (pickled): observations, rewards, flags, ``info``, and
after a reset the env's task record (``env.unwrapped.task``), which the rollout gives the agent.
The envs are the same envs as in one process, so a collection with workers produces the same
trajectories as without them for the same seeds.

Errors: an exception raised by an env is re-raised in the caller as :class:`EnvWorkerError`,
naming the env, the worker and the call, with the worker's traceback in the message and the env's
own exception as ``__cause__`` when it could be sent back. A worker that dies (killed, out of
memory, a crash in native code) raises :class:`EnvWorkerError` with its exit code on the next call;
the workers are then shut down and the pool must be rebuilt. So are they when a call is
interrupted while it waits (Ctrl-C): their answers would otherwise be read by the next call.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import pickle
import signal
import traceback
import weakref
from collections.abc import Callable, Sequence
from multiprocessing.connection import wait
from typing import Any

#: The env-worker backends :class:`EnvWorkers` accepts.
BACKENDS = ("process", "ray")

#: A request to one env: ``(env index, method, positional args, keyword args)``; the methods are
#: ``"reset"``, ``"step"`` and ``"call"`` (``args[0]`` is a function called as ``f(env, *args[1:])``).
Request = tuple[int, str, tuple, dict]


class EnvWorkerError(RuntimeError):
    """An env raised in its worker (its exception is the ``__cause__`` when it could be sent back), or a worker died."""


class EnvHost:
    """The envs of one worker: builds them and runs the calls sent to them.

    A worker process and a Ray actor both wrap one host. A call that raises does not stop the
    host: the error is returned as an outcome, and the caller raises it.

    Args:
        env_id: A registered id (``Mulligan/*``, or gymnasium's ``"module:Id"`` form).
        env_kwargs: Keyword arguments for ``gymnasium.make``.
    """

    def __init__(self, env_id: str, env_kwargs: dict[str, Any]):
        self.env_id, self.env_kwargs = env_id, dict(env_kwargs)
        self.envs: dict[int, Any] = {}

    def add(self, indices: Sequence[int]) -> list[tuple]:
        """Build one env per index; per index an outcome whose value describes the env.

        The value is ``{"num_tasks": ..., "is_multi_turn": ...}``; an env that fails to build gives
        an error outcome.
        """
        from mulligan.training.rollout import is_multi_turn, make_env

        outcomes = []
        for index in indices:
            try:
                env = make_env(self.env_id, self.env_kwargs)
                self.envs[int(index)] = env
                outcomes.append(("ok", {"num_tasks": env.unwrapped.num_tasks, "is_multi_turn": is_multi_turn(env)}))
            except Exception as err:
                outcomes.append(_error_outcome(err))
        return outcomes

    def run(self, requests: Sequence[Request]) -> list[tuple]:
        """Run each request on its env, in order; one outcome per request."""
        return [self._run_one(*request) for request in requests]

    def _run_one(self, index: int, method: str, args: tuple, kwargs: dict) -> tuple:
        try:
            env = self.envs[index]
            if method == "reset":
                observation, info = env.reset(*args, **kwargs)
                return ("ok", (observation, info, env.unwrapped.task))
            if method == "step":
                return ("ok", env.step(*args, **kwargs))
            if method == "call":
                function, *rest = args
                return ("ok", call_on_env(env, function, *rest, **kwargs))
            raise ValueError(f"unknown env method {method!r}; expected 'reset', 'step' or 'call'")
        except Exception as err:
            return _error_outcome(err)

    def pid(self) -> int:
        """The id of the process the host runs in."""
        return os.getpid()

    def close(self) -> None:
        """Close every env (an env that fails to close does not stop the others)."""
        envs, self.envs = self.envs, {}
        for env in envs.values():
            with contextlib.suppress(Exception):
                env.close()


def call_on_env(env: Any, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``function(env, *args, **kwargs)``, with ``None`` for a result that is the env itself.

    A setter that returns its env (such as :func:`~mulligan.envs.wrappers.set_stop_on_success`)
    would otherwise send the whole env back from a worker.
    """
    value = function(env, *args, **kwargs)
    return None if value is env or value is getattr(env, "unwrapped", None) else value


def _error_outcome(err: BaseException) -> tuple:
    """``("error", exception or None, one-line description, traceback)``; the exception only if it pickles."""
    description = f"{type(err).__name__}: {err}"
    text = "".join(traceback.format_exception(err))
    try:
        pickle.loads(pickle.dumps(err))
        sendable: BaseException | None = err
    except Exception:
        sendable = None
    return ("error", sendable, description, text)


def _serve(connection: Any, env_id: str, env_kwargs: dict[str, Any]) -> None:
    """A worker process's loop: answer ``(command, payload)`` messages until ``close`` or the parent leaves."""
    # Ctrl-C reaches the whole process group; the parent decides and closes the workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    host = EnvHost(env_id, env_kwargs)
    try:
        while True:
            try:
                command, payload = connection.recv()
            except (EOFError, OSError):
                return  # the parent is gone
            if command == "add":
                connection.send(host.add(payload))
            elif command == "run":
                connection.send(host.run(payload))
            elif command == "close":
                host.close()
                connection.send(None)
                return
    finally:
        host.close()


class _ProcessWorker:
    """One worker process and its pipe."""

    def __init__(self, number: int, env_id: str, env_kwargs: dict[str, Any]):
        context = multiprocessing.get_context("spawn")
        self.number = number
        self.connection, child = context.Pipe()
        self.process = context.Process(
            target=_serve, args=(child, env_id, env_kwargs), name=f"mulligan-env-worker-{number}", daemon=True
        )
        self.process.start()
        child.close()

    def describe(self) -> str:
        return f"env worker {self.number} (pid {self.process.pid})"

    def send(self, command: str, payload: Any) -> None:
        try:
            self.connection.send((command, payload))
        except (BrokenPipeError, ConnectionError, EOFError, OSError) as err:
            raise self.died() from err

    def receive(self) -> Any:
        ready = wait([self.connection, self.process.sentinel])
        if self.connection in ready:
            try:
                return self.connection.recv()
            except (EOFError, ConnectionError, OSError) as err:
                raise self.died() from err
        raise self.died()

    def died(self) -> EnvWorkerError:
        self.process.join(timeout=5)
        code = self.process.exitcode
        how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        return EnvWorkerError(f"{self.describe()} died ({how})")

    def close(self, graceful: bool = True) -> None:
        if graceful and self.process.is_alive():
            with contextlib.suppress(Exception):
                self.connection.send(("close", None))
                if self.connection.poll(30):
                    self.connection.recv()
            self.process.join(timeout=10)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(timeout=5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(timeout=5)
        self.connection.close()


class _RayWorker:
    """One Ray actor holding an :class:`EnvHost` (one CPU of the Ray cluster)."""

    #: Seconds to wait for an actor to build its envs: longer means Ray could not place it.
    START_TIMEOUT_S = 600

    def __init__(self, number: int, env_id: str, env_kwargs: dict[str, Any]):
        ray = import_ray()
        self.ray, self.number = ray, number
        self.actor = ray.remote(num_cpus=1)(EnvHost).remote(env_id, env_kwargs)
        self._pid = self.actor.pid.remote()
        self.pending: Any = None
        self.command = ""

    def describe(self) -> str:
        try:
            pid = self.ray.get(self._pid, timeout=5)
        except Exception:
            pid = "unknown"
        return f"env worker {self.number} (Ray actor, pid {pid})"

    def send(self, command: str, payload: Any) -> None:
        method = {"add": self.actor.add, "run": self.actor.run}[command]
        self.pending, self.command = method.remote(payload), command

    def receive(self) -> Any:
        pending, self.pending = self.pending, None
        timeout = self.START_TIMEOUT_S if self.command == "add" else None
        try:
            return self.ray.get(pending, timeout=timeout)
        except self.ray.exceptions.GetTimeoutError as err:
            raise EnvWorkerError(
                f"env worker {self.number} did not start within {timeout} s: each env worker takes one CPU of "
                "the Ray cluster; check ray.available_resources() or use fewer env_workers"
            ) from err
        except self.ray.exceptions.RayActorError as err:
            raise EnvWorkerError(f"{self.describe()} died ({type(err).__name__}: {err})") from err

    def close(self, graceful: bool = True) -> None:
        with contextlib.suppress(Exception):
            if graceful:
                self.ray.get(self.actor.close.remote(), timeout=30)
        with contextlib.suppress(Exception):
            self.ray.kill(self.actor)


def import_ray() -> Any:
    """Import ``ray``, or raise ``ImportError`` saying how to install it."""
    try:
        import ray
    except ImportError as err:
        raise ImportError('env_workers_backend="ray" needs Ray: pip install ray') from err
    return ray


class EnvWorkers:
    """``num_workers`` workers holding envs of one id; env ``i`` lives in worker ``i % num_workers``.

    Args:
        env_id: A registered id.
        env_kwargs: Keyword arguments for ``gymnasium.make``.
        num_workers: Worker processes (or Ray actors).
        backend: ``"process"`` or ``"ray"`` (see the module docstring).

    Raises:
        ValueError: For ``num_workers < 1`` or an unknown backend (with the fix in the message).
        ImportError: For the Ray backend without Ray installed.
    """

    def __init__(self, env_id: str, env_kwargs: dict[str, Any], num_workers: int, backend: str = "process"):
        if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 1:
            raise ValueError(f"env_workers must be an int >= 1 (or 0 for envs in this process), got {num_workers!r}")
        if backend not in BACKENDS:
            raise ValueError(f"env_workers_backend must be one of {BACKENDS}, got {backend!r}")
        worker_class = _ProcessWorker if backend == "process" else _RayWorker
        if backend == "ray":
            import_ray()
        self.env_id, self.backend = env_id, backend
        self.num_envs, self.closed = 0, False
        self.workers: list[Any] = []
        self._finalizer = weakref.finalize(self, _close_workers, self.workers)
        try:
            for number in range(num_workers):
                self.workers.append(worker_class(number, env_id, env_kwargs))
        except BaseException:
            self.close()
            raise

    def __len__(self) -> int:
        return len(self.workers)

    def worker_of(self, index: int) -> Any:
        """The worker holding env ``index``."""
        return self.workers[index % len(self.workers)]

    def add_envs(self, count: int) -> list[dict[str, Any]]:
        """Build ``count`` more envs (indices continue from the current count); their descriptions.

        Raises:
            EnvWorkerError: If an env fails to build (the workers are then closed) or a worker died.
        """
        self._check_open()
        indices = list(range(self.num_envs, self.num_envs + count))
        by_worker: dict[int, list[int]] = {}
        for index in indices:
            by_worker.setdefault(index % len(self.workers), []).append(index)
        answers = self._exchange("add", {number: list(ids) for number, ids in by_worker.items()})
        descriptions: dict[int, dict[str, Any]] = {}
        for number, ids in by_worker.items():
            for index, outcome in zip(ids, answers[number], strict=True):
                descriptions[index] = self._value(outcome, index, "building the env")
        self.num_envs += count
        return [descriptions[index] for index in indices]

    def run(self, requests: Sequence[Request]) -> list[Any]:
        """Run the requests (each worker runs its envs' requests in order, all workers at once).

        Returns:
            The values, in the order of ``requests``.

        Raises:
            EnvWorkerError: For the first request (in order) whose env raised, or a dead worker
                (the workers are then closed).
        """
        self._check_open()
        by_worker: dict[int, list[int]] = {}
        for position, (index, *_rest) in enumerate(requests):
            if not 0 <= index < self.num_envs:
                raise ValueError(f"env index {index} outside the pool's {self.num_envs} envs")
            by_worker.setdefault(index % len(self.workers), []).append(position)
        answers = self._exchange(
            "run", {number: [requests[p] for p in positions] for number, positions in by_worker.items()}
        )
        outcomes: list[Any] = [None] * len(requests)
        for number, positions in by_worker.items():
            for position, outcome in zip(positions, answers[number], strict=True):
                outcomes[position] = outcome
        return [
            self._value(outcome, requests[position][0], _describe_call(requests[position]))
            for position, outcome in enumerate(outcomes)
        ]

    def _exchange(self, command: str, payloads: dict[int, Any]) -> dict[int, Any]:
        """Send each worker its payload, then gather every answer (a dead worker closes the pool)."""
        try:
            for number, payload in payloads.items():
                self.workers[number].send(command, payload)
            return {number: self.workers[number].receive() for number in payloads}
        except EnvWorkerError as err:
            self.close()
            raise EnvWorkerError(f"{err}; the pool's env workers are shut down: build a new pool") from err
        except BaseException:
            # Interrupted mid-exchange (Ctrl-C, a timeout signal): answers may still be on their
            # way, and a later call would read them as its own. Stop the workers instead.
            self.closed = True
            for worker in self.workers:
                with contextlib.suppress(Exception):
                    worker.close(graceful=False)
            self._finalizer()
            raise

    def _check_open(self) -> None:
        if self.closed:
            raise EnvWorkerError("the env workers are closed (a worker died or the pool was closed); build a new pool")

    def _value(self, outcome: tuple, index: int, what: str) -> Any:
        if outcome[0] == "ok":
            return outcome[1]
        _, error, description, text = outcome
        worker = self.worker_of(index).describe()
        message = f"env {index} of {self.env_id!r} in {worker} raised {description} while {what}\n\n{text}"
        raise EnvWorkerError(message) from error

    def close(self) -> None:
        """Close every env and stop the workers (idempotent)."""
        self.closed = True
        self._finalizer()


def _describe_call(request: Request) -> str:
    _, method, args, kwargs = request
    if method == "step":
        return f"stepping it with {str(args[0])[:80]!r}"
    if method == "reset":
        return f"resetting it ({', '.join(f'{k}={v!r}' for k, v in kwargs.items())})"
    function = getattr(args[0], "__name__", repr(args[0])) if args else "?"
    return f"calling {function}(env, ...) on it"


def _close_workers(workers: list[Any]) -> None:
    while workers:
        with contextlib.suppress(Exception):
            workers.pop().close()


class RemoteEnv:
    """A handle on one env in a worker: ``reset`` and ``step`` as on the env, and :meth:`call`.

    The rollout steps many handles at once through :meth:`EnvWorkers.run`; a handle's own methods
    make one round trip each (for occasional use, such as reading a prompt after a reset).
    """

    def __init__(self, workers: EnvWorkers, index: int):
        self.workers, self.index = workers, index
        #: The task record of the last reset (``env.unwrapped.task`` in the worker).
        self.task: Any = None

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict]:
        """``env.reset(seed=seed, options=options)`` in the worker."""
        observation, info, self.task = self.workers.run(
            [(self.index, "reset", (), {"seed": seed, "options": options})]
        )[0]
        return observation, info

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        """``env.step(action)`` in the worker."""
        return self.workers.run([(self.index, "step", (action,), {})])[0]

    def call(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``function(env, *args, **kwargs)`` in the worker (``function`` must pickle: a module-level function)."""
        return self.workers.run([(self.index, "call", (function, *args), kwargs)])[0]

    def close(self) -> None:
        """A no-op: the pool closes its workers."""

    def __repr__(self) -> str:
        return f"RemoteEnv({self.workers.env_id!r}, index={self.index}, backend={self.workers.backend!r})"
