"""``mulligan eval``: success rate and score of an agent, checkpoint or served model on held-out tasks, with CIs.

Evaluation goes through :func:`mulligan.training.evaluation.evaluate`: by default every task of the
split once (``--num_episodes 0``); ``--num_episodes N`` takes the N consecutive task indices from
``--task_offset``, each scored exactly once (never drawn with replacement). Decoding is greedy by
default.

* The agent is any spec of :func:`~mulligan.agents.loading.load_agent`, including a served model:
  ``--agent openai:MODEL --base_url http://HOST:PORT/v1 --api_key_env NAME --concurrency 16``.
* ``--nat_prompt DOMAIN`` (``math``, ``math_cot``, ``hotpotqa``/``qa``, ``strategyqa``) prompts the
  model with NAT's inference prompt (:class:`~mulligan.agents.nat_prompt.NATPromptAgent`);
  ``--nat_signal plain`` prompts a NUT or positives-only model with the same instruction and no
  signal, ``--nat_signal fine_grained`` with the ``[Correct]`` tag of the fine-grained models,
  ``--nat_signal negative`` with the signal of the negatives (NAT's mechanism check: a model that
  learned the signal does worse); ``--nat_inverse`` for models trained with the labels inverted.
* ``--one_shot builtin|FILE`` opens each task with RISE's one-shot demo
  (:class:`~mulligan.agents.one_shot.OneShotAgent`: the demo question as the system message, its
  answer, then "Great job! ..." and the task), as a RISE model trained with ``--one_shot`` saw it.
* ``--rise_metrics`` adds RISE's metrics (arXiv 2407.18219, Sec. 5) through
  :func:`~mulligan.training.rise.evaluate_rise`: m1@t1 and m{k}@t1 from ``--rise_samples``
  single-attempt samples per task, m1@t{n} and p1@t{n} from an oracle-free ``--rise_turns``-attempt
  run (``RetryWithFeedback(stop_on_success=False)``), majority votes keyed by the math verifier's
  answer extraction with ties drawn at random per task. Both RISE runs sample at
  ``--rise_temperature`` (1.0, the paper's) with the first prompt and the last attempt in context
  (``LastAttempts(1)``, the paper's ``context_window 2``) unless ``--window`` says otherwise; the
  main evaluation keeps ``--temperature``.
* ``--results PATH`` writes a results file (:func:`results_record`: agent, env, tasks, seed,
  sampling, summary with intervals, metrics, per-task outcomes, commit, date) that
  ``mulligan report`` compares across runs; ``mulligan eval --compare A.json B.json ...`` is
  ``mulligan report A.json B.json ...``.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from mulligan.agents.base import Agent
from mulligan.agents.loading import ServedModelArgs, is_served, load_agent
from mulligan.training.args import EnvArgs, EnvWorkerArgs, SamplingArgs, parse_args
from mulligan.training.evaluation import EvalResult, evaluate
from mulligan.training.rollout import EnvPool
from mulligan.training.stats import format_table, summary_row
from mulligan.training.trajectory import Trajectory, TrajectoryStore

#: ``--nat_prompt`` values: ``none`` or a domain of :mod:`mulligan.agents.nat_prompt`.
NAT_PROMPTS = ("none", "math", "math_cot", "hotpotqa", "qa", "strategyqa")
#: ``--nat_signal`` values: NAT's positive signal, no signal (NUT / positives-only), the fine-grained tag.
NAT_SIGNALS = ("positive", "plain", "fine_grained", "negative")
#: The format of the results file, written into it.
RESULTS_SCHEMA = "mulligan.eval/1"


@dataclass
class EvalArgs(ServedModelArgs, EnvArgs, SamplingArgs, EnvWorkerArgs):
    """Configuration of ``mulligan eval`` (plus :class:`ServedModelArgs`, :class:`EnvArgs`, :class:`SamplingArgs`).

    Attributes:
        agent: ``openai:MODEL`` (a served model), ``module:Class`` of a scripted agent, or a model
            (``tiny``, hub id, checkpoint path).
        num_episodes: Tasks to evaluate: 0 is the whole split (each task once); N > 0 takes the N
            task indices from ``task_offset`` (required for endless procedural sources).
        samples_per_task: Episodes per task (pass@k, majority votes).
        seed: Seed of the resets and the agent's sampling.
        temperature: Sampling temperature (0: greedy, the default for evaluation).
        nat_prompt: ``none``, or the NAT domain whose inference prompt wraps the task: ``math``,
            ``math_cot``, ``hotpotqa`` (``qa``), ``strategyqa``.
        nat_signal: ``positive`` (NAT), ``plain`` (no signal: NUT and positives-only models),
            ``fine_grained`` (the ``[Correct]`` tag of the fine-grained models) or ``negative``
            (the negatives' signal: the mechanism check).
        nat_inverse: The NAT model was trained with the signal inverted (``--inverse``).
        one_shot: RISE's one-shot opening: ``builtin``, a JSON ``{question, answer}`` file, or empty.
        nat_position: ``suffix`` or ``prefix`` (as the NAT model was trained).
        nat_tags: The signal tags (``correct``, ``good``, ``AB``, ``meaningless``, ``laptop``,
            ``good_suffix``, ``random_sentence``; see :mod:`mulligan.agents.nat_prompt`).
        window: Attempts kept in the model's context in multi-turn episodes (0: all). Unset: all
            in the main evaluation and 1 in the RISE runs (RISE's ``context_window 2`` is the first
            prompt plus the last attempt).
        rise_metrics: Also compute RISE's m1@t1, m<k>@t1, m1@t<n>, p1@t<n> (and the tie shares).
        rise_turns: Attempts of the oracle-free sequential run (n).
        rise_samples: Single-attempt samples per task of the parallel run (k).
        rise_temperature: Sampling temperature of both RISE runs (the paper's 1.0).
        max_turns: Cap on the agent's turns per episode (0: the env's own cap); NAT evaluates
            ReAct episodes with at most 7 steps.
        output: JSONL file for the evaluation trajectories (empty: not saved).
        results: JSON results file for ``mulligan report`` (empty: printed only).
        disable_tqdm: Hide the progress bar.
    """

    agent: str = field(default="tiny", metadata={"help": "'openai:MODEL', 'module:Class' or a model/checkpoint."})
    num_episodes: int = field(default=0, metadata={"help": "Tasks (0: the whole split, each once)."})
    samples_per_task: int = field(default=1, metadata={"help": "Episodes per task."})
    seed: int = field(default=1000, metadata={"help": "Seed of resets and sampling."})
    temperature: float = field(default=0.0, metadata={"help": "Sampling temperature (0: greedy)."})
    nat_prompt: str = field(default="none", metadata={"help": "none | " + " | ".join(NAT_PROMPTS[1:]) + "."})
    nat_signal: str = field(default="positive", metadata={"help": "positive | plain | fine_grained | negative."})
    nat_inverse: bool = field(default=False, metadata={"help": "The NAT model was trained with inverted labels."})
    one_shot: str = field(default="", metadata={"help": "RISE's one-shot opening: builtin | FILE (empty: none)."})
    nat_position: str = field(default="suffix", metadata={"help": "suffix | prefix."})
    nat_tags: str = field(default="correct", metadata={"help": "Signal tags: correct | good | good_suffix | ..."})
    window: int | None = field(default=None, metadata={"help": "Attempts in context (0: all; unset: RISE 1)."})
    rise_metrics: bool = field(default=False, metadata={"help": "Also compute RISE metrics."})
    rise_turns: int = field(default=5, metadata={"help": "Attempts of the RISE sequential run."})
    rise_samples: int = field(default=5, metadata={"help": "Samples of RISE's parallel run (m<k>@t1)."})
    rise_temperature: float = field(default=1.0, metadata={"help": "Temperature of both RISE runs."})
    max_turns: int = field(default=0, metadata={"help": "Turn cap per episode (0: the env's own)."})
    output: str = field(default="", metadata={"help": "JSONL for eval trajectories."})
    results: str = field(default="", metadata={"help": "JSON results file (for mulligan report)."})
    disable_tqdm: bool = field(default=False, metadata={"help": "Hide the progress bar."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.nat_prompt not in NAT_PROMPTS:
            raise ValueError(f"--nat_prompt must be one of {', '.join(NAT_PROMPTS)}; got {self.nat_prompt!r}")
        if self.nat_signal not in NAT_SIGNALS:
            raise ValueError(f"--nat_signal must be one of {', '.join(NAT_SIGNALS)}; got {self.nat_signal!r}")
        if self.nat_position not in ("suffix", "prefix"):
            raise ValueError(f"--nat_position must be suffix or prefix; got {self.nat_position!r}")
        if self.nat_prompt != "none":
            from mulligan.agents.nat_prompt import nat_prompt

            nat_prompt(
                "", True, domain=self.nat_prompt, position=self.nat_position, tags=self.nat_tags,
                inverse=self.nat_inverse,
            )  # fmt: skip
        if self.one_shot:
            from mulligan.agents.one_shot import load_one_shot_demo

            if self.nat_prompt != "none":
                raise ValueError("--one_shot and --nat_prompt both rewrite the task's opening; choose one")
            if self.system_prompt:
                raise ValueError("--one_shot puts the demo in the system message; drop --system_prompt")
            load_one_shot_demo(self.one_shot)  # a bad file fails here, before any model is loaded
        if self.num_episodes < 0:
            raise ValueError(f"--num_episodes must be >= 0 (0: the whole split), got {self.num_episodes}")
        for name in ("samples_per_task", "rise_turns", "rise_samples"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be >= 1, got {getattr(self, name)}")
        if self.max_turns < 0:
            raise ValueError(f"--max_turns must be >= 0 (0: the env's own cap), got {self.max_turns}")
        if self.window is not None and self.window < 0:
            raise ValueError(f"--window must be >= 0 (0: all attempts), got {self.window}")
        if self.rise_temperature < 0:
            raise ValueError(f"--rise_temperature must be >= 0, got {self.rise_temperature}")
        if self.rise_metrics and self.rise_turns < 2:
            raise ValueError("--rise_turns must be >= 2 for the sequential RISE run (the paper uses 5)")

    def task_indices(self) -> list[int] | None:
        """The explicit task indices, or ``None`` for the whole split."""
        if self.num_episodes == 0:
            return None if self.task_offset == 0 else _rest_of_split(self)
        return list(range(self.task_offset, self.task_offset + self.num_episodes))


def _rest_of_split(args: EvalArgs) -> list[int]:
    with EnvPool(args.env_id, 1, args.make_kwargs()) as pool:
        if pool.num_tasks is None:
            raise ValueError("this env is an endless procedural source; pass --num_episodes N")
        return list(range(args.task_offset, pool.num_tasks))


def _context(window: int | None):
    """The context policy of ``--window``: ``None`` (the agent's default: all), all, or the last N."""
    from mulligan.agents.context import KeepAll, LastAttempts

    if window is None:
        return None
    return KeepAll() if window == 0 else LastAttempts(window)


def load_eval_model(args: EvalArgs) -> Agent:
    """The agent under evaluation, before any NAT prompt: ``--agent`` with the sampling flags."""
    kwargs: dict[str, Any] = {
        "temperature": args.temperature,
        "top_p": args.top_p,
        "max_new_tokens": args.max_new_tokens,
        "seed": args.seed,
        "system_prompt": args.system_prompt or None,
        **args.decoding_kwargs(),
    }
    context = _context(args.window)
    # With NAT's prompt or the one-shot opening the window belongs to the wrapper (see
    # with_nat_prompt): applied to the model's own messages it would take the opening's assistant
    # turn for an attempt and drop the question.
    if context is not None and not has_prompt_wrapper(args):
        kwargs["context"] = context
    return load_agent(args.agent, **kwargs, **args.served_kwargs())


def has_prompt_wrapper(args: EvalArgs) -> bool:
    """Whether the model is wrapped by an agent that rewrites the task's opening (NAT, one-shot)."""
    return args.nat_prompt != "none" or bool(args.one_shot)


def with_nat_prompt(agent: Agent, args: EvalArgs, context: Any = None) -> Agent:
    """``agent`` behind NAT's inference prompt (``--nat_prompt``) or RISE's one-shot opening (``--one_shot``).

    Without either, ``agent`` as is. The context policy (``context``, else ``--window``'s) is the
    wrapper's: it cuts the env's conversation before the opening is put in front of it.
    """
    window = context if context is not None else _context(args.window)
    if args.one_shot:
        from mulligan.agents.one_shot import OneShotAgent, load_one_shot_demo

        return OneShotAgent(agent, load_one_shot_demo(args.one_shot), context=window)
    if args.nat_prompt == "none":
        return agent
    from mulligan.agents.nat_prompt import NATPromptAgent

    return NATPromptAgent(
        agent,
        context=window,
        domain=args.nat_prompt,
        position=args.nat_position,
        tags=args.nat_tags,
        inverse=args.nat_inverse,
        fine_grained=args.nat_signal == "fine_grained",
        signal=args.nat_signal != "plain",
        negative_signal=args.nat_signal == "negative",
    )


def build_eval_agent(args: EvalArgs) -> Agent:
    """The agent under evaluation, with the NAT prompt and context window applied."""
    return with_nat_prompt(load_eval_model(args), args)


@contextlib.contextmanager
def sampling_as(model: Agent, temperature: float, context: Any) -> Iterator[Agent]:
    """``model`` sampling at ``temperature`` with ``context`` inside the block, restored after it.

    The same object (its weights, or its server connection) is reused rather than loaded again; a
    scripted agent, which has neither a temperature nor a context policy, is left as it is.
    """
    saved = {name: getattr(model, name) for name in ("temperature", "context") if hasattr(model, name)}
    if "temperature" in saved:
        model.temperature = temperature
    if "context" in saved:
        model.context = context
    try:
        yield model
    finally:
        for name, value in saved.items():
            setattr(model, name, value)


def without_oracle(pool: EnvPool) -> EnvPool:
    """Make every env of ``pool`` keep retrying after a success (RISE's no-oracle runs)."""
    from mulligan.envs.wrappers import set_stop_on_success

    if pool.is_multi_turn:
        pool.call(set_stop_on_success, False)  # in the env's worker when it has one
    return pool


def rise_metrics(model: Agent, args: EvalArgs, task_indices: list[int] | None) -> dict[str, float]:
    """RISE's metrics (see the module docstring) of ``model`` (before any NAT prompt)."""
    from mulligan.agents.context import LastAttempts
    from mulligan.training.rise import evaluate_rise

    context = _context(args.window) if args.window is not None else LastAttempts(1)
    single = args.make_kwargs()
    single.pop("max_attempts", None)
    # Under NAT's prompt or the one-shot opening the window goes to the wrapper (see with_nat_prompt).
    with sampling_as(model, args.rise_temperature, None if has_prompt_wrapper(args) else context) as rise_model:
        return evaluate_rise(
            with_nat_prompt(rise_model, args, context=context),
            args.env_id,
            task_indices,
            env_kwargs=single,
            turns=args.rise_turns,
            parallel_samples=args.rise_samples,
            seed=args.seed,
            num_envs=args.num_envs,
            progress=not args.disable_tqdm,
        )


def run_eval(args: EvalArgs) -> EvalResult:
    """Evaluate; with ``--rise_metrics`` the RISE metrics are in ``result.metrics``."""
    indices = args.task_indices()
    store = TrajectoryStore(args.output) if args.output else None
    model = load_eval_model(args)
    try:
        result = evaluate(
            with_nat_prompt(model, args),
            args.env_id,
            indices,
            env_kwargs=args.make_kwargs(),
            samples_per_task=args.samples_per_task,
            seed=args.seed,
            num_envs=args.num_envs,
            store=store,
            progress=not args.disable_tqdm,
            max_turns=args.max_turns or None,
            **args.worker_kwargs(),
        )
        if args.rise_metrics:
            result.metrics.update(rise_metrics(model, args, indices))
    finally:
        if hasattr(model, "close"):
            model.close()
    return result


# --------------------------------------------------------------------------------------- results file
def per_task_outcomes(trajectories: list[Trajectory]) -> list[dict[str, Any]]:
    """One entry per task, in order: its index, id, and every sample's success and score.

    ``mulligan report`` pairs two runs on the tasks they share through these entries.
    """
    tasks: dict[str, dict[str, Any]] = {}
    for t in trajectories:
        entry = tasks.setdefault(
            t.task_id, {"index": t.metadata.get("task_index"), "task_id": t.task_id, "success": [], "score": []}
        )
        entry["success"].append(bool(t.success))
        entry["score"].append(float(t.score))
    return list(tasks.values())


def _commit() -> str | None:
    """The git commit of the mulligan source (``+dirty`` when it has uncommitted changes), if known."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        head = subprocess.run(
            ["git", "-C", root, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", root, "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+dirty" if dirty else "") if head else None


def _public_url(url: str) -> str:
    """``url`` without user:password and query string (they may hold secrets)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return f"{parts.scheme}://{host}{parts.path}" if parts.scheme else ""


def results_record(args: EvalArgs, result: EvalResult) -> dict[str, Any]:
    """The results file's content: what was evaluated, how, and what it scored.

    Keys: ``schema``, ``agent`` (the spec as given), ``base_url`` (served models, without
    credentials), ``env_id``, ``env_kwargs`` (with ``max_attempts``), ``task_indices`` (every index
    evaluated, in order), ``samples_per_task``, ``seed``, ``sampling`` (temperature, top_p,
    max_new_tokens, window, NAT prompt), ``summary`` (success rate with its Wilson 95% interval,
    mean score with its interval, turns), ``metrics``, ``groups``, ``macro``, ``tasks``
    (:func:`per_task_outcomes`), ``commit``, ``date`` (UTC, ISO 8601) and ``mulligan_version``.
    The API key is never written (only the name of its variable).
    """
    import mulligan

    served = is_served(args.agent)
    tasks = per_task_outcomes(result.trajectories)
    return {
        "schema": RESULTS_SCHEMA,
        "agent": args.agent,
        "base_url": _public_url(args.base_url or os.environ.get("OPENAI_BASE_URL", "")) if served else None,
        "api_key_env": args.api_key_env if served else None,
        "env_id": args.env_id,
        "env_kwargs": _jsonable(args.make_kwargs()),
        "task_indices": [entry["index"] for entry in tasks],
        "samples_per_task": args.samples_per_task,
        "seed": args.seed,
        "sampling": {
            "temperature": args.temperature,
            "top_p": args.top_p,
            "max_new_tokens": args.max_new_tokens,
            "prefill_response": args.prefill_response,
            "num_beams": args.num_beams,
            "window": args.window,
            "system_prompt": args.system_prompt or None,
            "nat_prompt": None if args.nat_prompt == "none" else args.nat_prompt,
            "nat_signal": None if args.nat_prompt == "none" else args.nat_signal,
            "rise_temperature": args.rise_temperature if args.rise_metrics else None,
            "max_turns": args.max_turns or None,
        },
        **result.to_dict(),
        "tasks": tasks,
        "commit": _commit(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "mulligan_version": mulligan.__version__,
    }


def _jsonable(value: Any) -> Any:
    """``value`` with anything JSON cannot carry written as its ``repr``."""
    return json.loads(json.dumps(value, default=repr))


def write_results(path: str, record: dict[str, Any]) -> None:
    """Write ``record`` to ``path`` as JSON (via a temporary file, so a crash leaves no half file)."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    partial = f"{path}.partial"
    with open(partial, "w", encoding="utf-8") as handle:
        json.dump(record, handle, indent=2, allow_nan=True)
        handle.write("\n")
    os.replace(partial, path)


def main(argv: list[str] | None = None) -> int:
    """``mulligan eval``: parse :class:`EvalArgs` flags, evaluate, print a table (or ``--compare``)."""
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    if "--compare" in argv:
        from mulligan.commands import report

        if argv[0] != "--compare":
            raise ValueError("--compare comes first and takes results files: mulligan eval --compare A.json B.json")
        return report.main(argv[1:])
    args = parse_args(EvalArgs, argv, prog="mulligan eval", description=__doc__.split("\n")[0])
    if args.results and os.path.isdir(args.results):
        raise IsADirectoryError(f"--results {args.results} is a directory; pass a file path such as runs/eval.json")
    result = run_eval(args)
    print(format_table([summary_row(result.summary, env=args.env_id, agent=args.agent)]))
    if result.metrics:
        print(format_table([{"agent": args.agent, **result.metrics}]))
    if args.results:
        write_results(args.results, results_record(args, result))
        print(f"results in {args.results}")
    return 0
