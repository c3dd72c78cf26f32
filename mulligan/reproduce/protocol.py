"""What an experiment declares before it runs, and what one cell of its grid returns.

A :class:`Protocol` is the pre-registration of one paper's claim: the metric that decides it,
the arms (a training recipe and an evaluation mode each), the comparisons with the direction the
paper claims, and the mechanism check. A paper module pairs it with presets (sizes) and a
``run_cell`` function; everything else (grid, statistics, verdicts, report) is shared.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from mulligan.agents.base import Action, Agent, AgentInput


@dataclass(frozen=True)
class Arm:
    """One arm of an experiment.

    Attributes:
        name: Short name used in tables and ``results.jsonl``.
        train: The training recipe; arms with the same recipe share one trained model per seed and budget.
        evaluation: How the trained model is evaluated (a prompt, a decoding mode, a feedback text).
        description: One line a newcomer can read without the paper.
    """

    name: str
    train: str
    evaluation: str
    description: str


@dataclass(frozen=True)
class Comparison:
    """A paired comparison ``arm - baseline`` on the primary metric, with the paper's direction.

    Attributes:
        arm: The arm the paper says differs.
        baseline: What it is compared with.
        direction: ``+1`` when the paper says ``arm`` is higher, ``-1`` when lower.
        claim: The claim in one line.
        primary: Whether this is the headline comparison (exactly one per protocol).
        metric: The per-task metric compared (``""``: the protocol's primary metric).
    """

    arm: str
    baseline: str
    direction: int
    claim: str
    primary: bool = False
    metric: str = ""


@dataclass(frozen=True)
class Protocol:
    """The pre-declared protocol of one paper's claim (``docs/reproduce.md`` writes it out).

    Attributes:
        paper: Short name (``nat``, ``rise``, ``subgoal``, ``corgi``).
        title: The paper and its arXiv id.
        claim: The headline claim, as the paper makes it.
        env_id: The environment every arm is trained and tested on.
        primary_metric: The per-task outcome that decides the verdict (a key of every result row).
        metric_description: What the primary metric means, in one line.
        reference_arm: The arm whose held-out success must land in the learnable regime (30-70%).
        arms: Every arm, in table order.
        comparisons: The paired comparisons; exactly one is primary.
        budgets: Training budgets run for every training recipe (``("default",)`` when one).
        mechanism: The mechanism check reported beside the headline.
        decoding: Decoding at evaluation, identical for every arm.
        curve_metric: Prefix of per-task keys ``<prefix>1 .. <prefix>k`` plotted as a curve (success
            over turns or attempts) when the claim is about turns; ``""``: none.
    """

    paper: str
    title: str
    claim: str
    env_id: str
    primary_metric: str
    metric_description: str
    reference_arm: str
    arms: tuple[Arm, ...]
    comparisons: tuple[Comparison, ...]
    budgets: tuple[str, ...]
    mechanism: str
    decoding: str
    curve_metric: str = ""

    def __post_init__(self) -> None:
        names = [a.name for a in self.arms]
        if len(set(names)) != len(names):
            raise ValueError(f"arm names must be unique, got {names}")
        if self.reference_arm not in names:
            raise ValueError(f"reference_arm {self.reference_arm!r} is not an arm ({names})")
        for comparison in self.comparisons:
            if comparison.arm not in names or comparison.baseline not in names:
                raise ValueError(f"comparison {comparison.arm} vs {comparison.baseline} names an unknown arm")
            if comparison.direction not in (1, -1):
                raise ValueError(f"direction must be +1 or -1, got {comparison.direction}")
        if sum(c.primary for c in self.comparisons) != 1:
            raise ValueError("exactly one comparison must be primary")
        if not self.budgets:
            raise ValueError("budgets must name at least one budget")

    def arm(self, name: str) -> Arm:
        """The arm called ``name``."""
        for arm in self.arms:
            if arm.name == name:
                return arm
        raise KeyError(f"no arm {name!r} in {self.paper}; arms: {[a.name for a in self.arms]}")

    @property
    def primary(self) -> Comparison:
        """The headline comparison."""
        return next(c for c in self.comparisons if c.primary)


@dataclass
class CellResult:
    """What one cell (arm x seed x budget) returns.

    Attributes:
        tasks: One dict per held-out task, in the order of the test set: ``task_index``,
            ``task_id`` and the per-task metrics (the protocol's primary metric among them).
        mechanism: The mechanism check's numbers for this cell.
        extra: Anything else worth keeping (training loss, data counts).
    """

    tasks: list[dict[str, Any]]
    mechanism: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


#: The phases the wall time of a grid is split into.
PHASES = ("generation", "env", "optimisation", "other")


class PhaseTimer:
    """Wall time per phase: generation, env steps, optimisation, other (data, loading, I/O).

    ``with timer.phase("optimisation"): ...`` charges a block; an evaluation block is charged to
    ``env`` and the model calls inside it (through :class:`TimedAgent`) are moved to
    ``generation``, so env steps are the evaluation time the agent did not spend.
    """

    def __init__(self) -> None:
        self.seconds = dict.fromkeys(PHASES, 0.0)
        self._generation_in_block = 0.0

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Charge the block's wall time to ``name`` (generation inside it goes to ``generation``)."""
        if name not in PHASES:
            raise ValueError(f"phase must be one of {PHASES}, got {name!r}")
        outer = self._generation_in_block
        self._generation_in_block = 0.0
        start = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - start
            inner = self._generation_in_block
            self.seconds[name] += max(0.0, elapsed - inner)
            self.seconds["generation"] += inner
            self._generation_in_block = outer + elapsed if name == "generation" else outer + inner

    def add_generation(self, seconds: float) -> None:
        """Record model time spent inside the current block."""
        self._generation_in_block += seconds


class TimedAgent(Agent):
    """Wrap an agent so that the time it takes is charged to ``generation`` on a :class:`PhaseTimer`."""

    def __init__(self, agent: Agent, timer: PhaseTimer):
        self.agent = agent
        self.timer = timer
        self.name = getattr(agent, "name", None) or type(agent).__name__

    def act(self, inputs: Sequence[AgentInput]) -> list[Action]:
        """The inner agent's actions, timed."""
        start = time.perf_counter()
        try:
            return self.agent.act(inputs)
        finally:
            self.timer.add_generation(time.perf_counter() - start)

    def sample(self, inputs: Sequence[AgentInput], num_samples: int) -> list[list[Action]]:
        """The inner agent's samples, timed."""
        start = time.perf_counter()
        try:
            return self.agent.sample(inputs, num_samples)
        finally:
            self.timer.add_generation(time.perf_counter() - start)

    def reset(self, seed: int | None = None) -> None:
        """Reseed the inner agent."""
        self.agent.reset(seed)


GENERATION_BACKENDS = ("hf", "vllm", "auto")


def model_agent(model: str, settings: dict[str, Any], **kwargs: Any) -> Agent:
    """The agent that generates with a trained model in a cell, on the preset's generation backend.

    ``settings["generation"]`` is ``"hf"`` (the default: :class:`~mulligan.agents.hf.HFAgent`,
    transformers' ``generate``), ``"vllm"`` (:class:`~mulligan.agents.vllm.VLLMAgent`, an
    in-process vLLM engine; ``bash scripts/install.sh vllm`` installs it, docs/scaling.md) or
    ``"auto"`` (vLLM when it is installed, else transformers). Both
    take the same sampling arguments (``temperature``, ``max_new_tokens``, ``seed``, ``context``,
    ``system_prompt``, ``stop``), so a cell's protocol does not depend on the backend.

    Raises:
        ValueError: For an unknown backend.
    """
    backend = settings.get("generation", "hf")
    if backend not in GENERATION_BACKENDS:
        raise ValueError(f"generation must be one of {GENERATION_BACKENDS}, got {backend!r}")
    if backend == "auto":
        import importlib.util

        backend = "vllm" if importlib.util.find_spec("vllm") is not None else "hf"
    if backend == "vllm":
        from mulligan.agents.loading import VLLM_PREFIX, load_agent

        return load_agent(VLLM_PREFIX + model, **kwargs)
    from mulligan.agents.loading import load_agent

    return load_agent(model, **kwargs)  # HFAgent, or Seq2SeqAgent for an encoder-decoder
