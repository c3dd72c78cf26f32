"""``HFAgent``: any Hugging Face causal LM as a batched policy over many envs.

The agent renders each env's conversation into a prompt, generates for all envs in one left-padded
batch with the KV cache, and returns for every action what the RL trainers need: the exact prompt
text, the prompt and completion token ids, and the per-token log-probabilities of the completion.

Prompt format
-------------
What the model sees is decided by :meth:`~mulligan.agents.base.Agent.prepare_context` (system
prompt, then the context policy) and rendered by :func:`mulligan.training.chat.render` with the
generation prompt: the tokenizer's chat template, or the plain format when it has none. Trainers
render recorded turns through the same function, so training sees exactly the sampled prompt. The
prompt is tokenised with ``add_special_tokens=False`` (templates write their own special tokens).
In the plain format generation also stops at ``"\\nUser:"`` (so a base model does not write the
next user turn) and the action text is stripped of surrounding whitespace.
:meth:`HFAgent.render_prompt` returns exactly the text the model is conditioned on.

Tool calls
----------
For an env in ``action_format="tools"`` (:mod:`mulligan.envs.tools`) the prompt renders the env's
tools through the chat template (``apply_chat_template(..., tools=...)``) and the conversation as
tool messages (:func:`mulligan.training.chat.render` with ``tools=``). The tools are the agent's
``tools=`` argument when given, otherwise those of the input's registered env when its ``info`` comes
from an env in tools mode (as :class:`~mulligan.agents.openai_chat.OpenAIChatAgent` does). A reply is
parsed with the tokenizer's response template where it has one (``tokenizer.parse_response``;
TRL's ``add_response_schema`` sets one for Qwen, Llama 3 and other known templates): its calls become
the action as an assistant message in JSON. Otherwise the reply's text is the action, which the env
reads in its common forms (``<tool_call>{...}</tool_call>``, JSON). Trainers render such episodes with
the same ``tools`` (:func:`mulligan.agents.tools.tools_for_trajectory`).

Sampling and log-probabilities
------------------------------
``temperature=0`` decodes greedily. Otherwise tokens are sampled from the model's distribution
divided by ``temperature`` and restricted to the ``top_p`` nucleus. Log-probabilities are always
those of the model itself (temperature 1, no nucleus), of the tokens actually chosen, which is what
policy-gradient trainers compare against a forward pass. They are recorded from the logits during
generation by the first logits processor, which keeps one step's distribution at a time, so memory
does not grow with the vocabulary times the completion length.

Prefilled answers
-----------------
With ``prefill_response=True``, an input whose env offers ``info["response_prefix"]`` (CORGI's
``- Output: ...`` primer, arXiv 2411.01483 App. A; :func:`mulligan.agents.base.response_prefix`) is
answered as CORGI's model answers: the prompt is the rendered conversation with its generation
prompt, followed by the prefix, and the model writes the continuation. The action's ``text`` is the
continuation (the env scores it as one with ``primed=True``), ``prefill`` the prefix, and ``prompt``
and ``prompt_ids`` end with the prefix. Trainers learn the continuation with the prefix as context
(:meth:`mulligan.training.trajectory.Trajectory.training_messages`). Inputs without the key are
answered as usual. A tool call cannot be prefilled (a ``ValueError`` says so).

Beam search
-----------
``num_beams > 1`` decodes each input with beam search (transformers' ``generate(num_beams=...)``,
no sampling, so the action is deterministic and ``temperature``/``top_p``/seeds do not apply). The
best beam is the action (every sample of :meth:`HFAgent.sample` is a copy of it) and its
``logprobs`` are ``None``: beam tokens are not draws from the model's distribution, so they are no
behaviour policy for RL. Stop strings cut the best beam after the search rather than ending beams.

Reproducibility
---------------
When every input carries a seed (:attr:`~mulligan.agents.base.AgentInput.seed`, set by the
rollout from the run seed, the episode and the turn), each row samples from its own generator
seeded by it (sample ``j`` of :meth:`HFAgent.sample` from the input's seed and ``j``): an episode's
tokens then do not depend on which other episodes share its batch, so a resumed collection equals
an uninterrupted one. Otherwise, with ``seed`` set, the agent's only state is a call counter: the
``i``-th generating call after construction or ``reset(seed)`` samples under the torch seed
``seed + i``, so two agents built with the same seed and given the same inputs in the same order
produce the same outputs, while repeated calls on the same state still explore. Without either,
the global torch RNG is used.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import LogitsProcessor, StoppingCriteria

from mulligan.agents.base import Action, Agent, AgentInput, ContextRecord, Message, response_prefix
from mulligan.agents.context import KeepAll
from mulligan.agents.tools import parsed_tool_action, tools_for_input
from mulligan.training.chat import PLAIN_FORMAT_STOP, encode, has_chat_template, render


def _load(name_or_path: str, tokenizer: Any, dtype: Any, trust_remote_code: bool) -> tuple[Any, Any]:
    """Load a model (and its tokenizer unless given) by hub id, local path or ``"tiny"``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mulligan.agents.tiny import resolve_model

    path = resolve_model(name_or_path)
    if tokenizer is None:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    load_kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if dtype is not None:
        load_kwargs["dtype"] = dtype
    return AutoModelForCausalLM.from_pretrained(path, **load_kwargs), tokenizer


def _check_decoding(prefill_response: Any, num_beams: Any) -> None:
    """Refuse a non-bool ``prefill_response`` and a ``num_beams`` that is not a positive int."""
    if not isinstance(prefill_response, bool):
        raise ValueError(f"prefill_response must be True or False, got {prefill_response!r}")
    if isinstance(num_beams, bool) or not isinstance(num_beams, int) or num_beams < 1:
        raise ValueError(f"num_beams must be a positive int (1: no beam search), got {num_beams!r}")


def _plain_text(text: str, prefill: str | None) -> str:
    """The plain format's action: stripped, except that a continuation keeps its leading whitespace.

    A continuation of a prefilled answer is scored as written after the prefix, so the space
    between the prefix and its first word belongs to it.
    """
    return text.strip() if prefill is None else text.rstrip()


def first_stop(text: str, stops: Sequence[str]) -> int | None:
    """Index in ``text`` where the earliest occurrence of any stop string begins, or ``None``."""
    positions = [text.find(s) for s in stops if s]
    positions = [p for p in positions if p >= 0]
    return min(positions) if positions else None


@dataclass
class _Completion:
    """One generated row after cutting at EOS or a stop string."""

    ids: list[int]
    logprobs: list[float] | None
    text: str
    finish_reason: str


class HFAgent(Agent):
    """A Hugging Face causal LM acting on many envs at once.

    See the module docstring for the prompt format, the log-probabilities and seeding.

    Args:
        model: A model id or local path (``"tiny"`` is the offline tiny model), or a loaded
            ``PreTrainedModel``.
        tokenizer: A tokenizer, required with a loaded model; loaded from ``model`` otherwise.
        device: Where to run (default: the loaded model's device, else CUDA when available, else CPU).
        dtype: Torch dtype (or its name, e.g. ``"bfloat16"``, or ``"auto"`` for the checkpoint's own)
            to load the model in.
        temperature: Sampling temperature; 0 decodes greedily.
        top_p: Nucleus sampling mass in (0, 1].
        max_new_tokens: Tokens generated per action at most.
        seed: Seed for reproducible sampling (see the module docstring).
        system_prompt: A system message placed first when the conversation has none.
        context: A context policy from :mod:`mulligan.agents.context` (default: keep everything).
        batch_size: Prompts per ``generate`` call (rows, before ``num_samples`` copies).
        stop: Stop strings applied to every env, in addition to each input's own.
        trust_remote_code: Passed to ``from_pretrained``.
        tools: Tool schemas (OpenAI format, e.g. ``env.unwrapped.tools``) rendered in every prompt;
            ``None`` (default): an input's env's own tools when that env is in tools mode.
        prefill_response: Start the answer with the env's ``info["response_prefix"]`` (CORGI's
            primer) where it offers one: see "Prefilled answers" in the module docstring.
        num_beams: Beam search with this many beams (1: sample or decode greedily, as
            ``temperature`` says). See "Beam search" in the module docstring.
    """

    def __init__(
        self,
        model: Any = "tiny",
        tokenizer: Any = None,
        *,
        device: Any = None,
        dtype: Any = None,
        temperature: float = 1.0,
        top_p: float = 1.0,
        max_new_tokens: int = 256,
        seed: int | None = None,
        system_prompt: str | None = None,
        context: Any = None,
        batch_size: int = 32,
        stop: Sequence[str] = (),
        trust_remote_code: bool = False,
        tools: Sequence[Mapping[str, Any]] | None = None,
        prefill_response: bool = False,
        num_beams: int = 1,
    ):
        _check_decoding(prefill_response, num_beams)
        if tools is not None and (isinstance(tools, str | Mapping) or not all(isinstance(t, Mapping) for t in tools)):
            raise ValueError("tools must be a list of OpenAI tool schemas (dicts), e.g. env.unwrapped.tools")
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 is greedy), got {temperature}")
        if not 0 < top_p <= 1:
            raise ValueError(f"top_p must lie in (0, 1], got {top_p}")
        if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be a positive int, got {max_new_tokens!r}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if isinstance(stop, str):
            raise ValueError("stop must be a sequence of strings, e.g. ['\\nObservation:'], not a str")
        if isinstance(dtype, str) and dtype != "auto":
            if not isinstance(getattr(torch, dtype, None), torch.dtype):
                raise ValueError(f"unknown dtype {dtype!r}; use 'auto' or a torch dtype name such as 'bfloat16'")
            dtype = getattr(torch, dtype)
        if dtype == "auto" and not isinstance(model, str):
            raise ValueError("dtype='auto' applies when loading a model by name or path, not to a loaded model")

        if isinstance(model, str):
            self.name_or_path = model
            model, tokenizer = _load(model, tokenizer, dtype, trust_remote_code)
            device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        else:
            if tokenizer is None:
                raise ValueError("a loaded model needs its tokenizer: HFAgent(model, tokenizer)")
            self.name_or_path = getattr(model, "name_or_path", type(model).__name__)
            if dtype is not None:
                model = model.to(dtype)
        if device is not None:
            model = model.to(device)
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.device = next(model.parameters()).device
        self.temperature = float(temperature)
        self.top_p = float(top_p)
        self.max_new_tokens = max_new_tokens
        self.system_prompt = system_prompt
        self.context = context if context is not None else KeepAll()
        self.batch_size = batch_size
        self.stop = tuple(stop)
        self.uses_chat_template = has_chat_template(tokenizer)

        self.eos_token_ids = self._eos_ids()
        if not self.eos_token_ids:
            raise ValueError("the tokenizer and model define no EOS token; generation could not end a turn")
        pad = tokenizer.pad_token_id
        self.pad_token_id = pad if pad is not None else self.eos_token_ids[0]
        self.max_length = getattr(model.config, "max_position_embeddings", None)
        self.seed = seed
        self.tools = None if tools is None else [dict(t) for t in tools]
        self.prefill_response = prefill_response
        self.num_beams = num_beams
        self._calls = 0

    # ------------------------------------------------------------------ public API
    def reset(self, seed: int | None = None) -> None:
        """Restart the call counter; with ``seed``, also replace the agent's seed."""
        if seed is not None:
            self.seed = seed
        self._calls = 0

    def render_messages(self, agent_input: AgentInput) -> list[Message]:
        """The messages the model sees: :meth:`~mulligan.agents.base.Agent.prepare_messages`."""
        return self.prepare_messages(agent_input.messages)

    def render_prompt(self, agent_input: AgentInput) -> str:
        """The exact prompt text the model is conditioned on for ``agent_input`` (ending with the prefill, if any)."""
        return self._prepare(agent_input)[0]

    def prefill_for(self, agent_input: AgentInput) -> str | None:
        """The text this agent starts its answer to ``agent_input`` with (``None``: no prefill)."""
        return response_prefix(agent_input) if self.prefill_response else None

    def tools_for(self, agent_input: AgentInput) -> list[dict[str, Any]] | None:
        """The tools rendered for ``agent_input`` (see the module docstring); ``None`` for none."""
        tools = self.tools if self.tools is not None else tools_for_input(agent_input)
        return tools or None

    def _prepare(self, agent_input: AgentInput) -> tuple[str, ContextRecord | None]:
        messages, record = self.prepare_context(agent_input.messages)
        tools = self.tools_for(agent_input)
        prompt = render(self.tokenizer, messages, add_generation_prompt=True, tools=tools)
        prefill = self.prefill_for(agent_input)
        if prefill is not None:
            if tools and self.uses_chat_template:
                raise ValueError(
                    "prefill_response cannot prefill a tool call (the env is in tools mode); "
                    "pass prefill_response=False or use the env's text action format"
                )
            prompt += prefill  # the answer starts with the prefix; the model writes the rest
        return prompt, record

    def count_tokens(self, text: str) -> int:
        """Tokens in ``text`` under the agent's tokenizer (no special tokens added)."""
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def act(self, inputs: Sequence[AgentInput]) -> list[Action]:
        """One action per input, generated in left-padded batches."""
        return [group[0] for group in self._generate(inputs, 1)]

    def sample(self, inputs: Sequence[AgentInput], num_samples: int) -> list[list[Action]]:
        """``num_samples`` actions per input from one ``generate`` call (``num_return_sequences``).

        Under greedy decoding (``temperature=0``) the samples are identical copies.
        """
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        return self._generate(inputs, num_samples)

    # ------------------------------------------------------------------ generation
    def _eos_ids(self) -> list[int]:
        ids: list[int] = []
        configured = getattr(self.model.generation_config, "eos_token_id", None)
        for value in (configured, self.tokenizer.eos_token_id):
            if value is None:
                continue
            for token in value if isinstance(value, list | tuple) else [value]:
                if token not in ids:
                    ids.append(int(token))
        return ids

    def _stops_for(self, agent_input: AgentInput) -> tuple[str, ...]:
        if isinstance(agent_input.stop, str):
            raise ValueError("AgentInput.stop must be a sequence of strings, not a str")
        stops = [*self.stop, *agent_input.stop]
        if not self.uses_chat_template:
            stops.append(PLAIN_FORMAT_STOP)
        return tuple(dict.fromkeys(s for s in stops if s))

    def _generate(self, inputs: Sequence[AgentInput], num_samples: int) -> list[list[Action]]:
        inputs = list(inputs)
        if not inputs:
            return []
        prepared = [self._prepare(x) for x in inputs]
        prompts = [prompt for prompt, _ in prepared]
        prefills = [self.prefill_for(x) for x in inputs]
        prompt_ids = [encode(self.tokenizer, p) for p in prompts]
        for i, ids in enumerate(prompt_ids):
            if not ids:
                raise ValueError(f"input {i} renders to an empty prompt")
            if self.max_length is not None and len(ids) + self.max_new_tokens > self.max_length:
                raise ValueError(
                    f"input {i}: prompt of {len(ids)} tokens plus max_new_tokens={self.max_new_tokens} exceeds "
                    f"the model's {self.max_length} positions; pass context=TokenBudget(...) or LastAttempts(...)"
                )
        stops = [self._stops_for(x) for x in inputs]
        with_tools = [self.uses_chat_template and self.tools_for(x) is not None for x in inputs]
        row_seeds = [x.seed for x in inputs] if all(x.seed is not None for x in inputs) else None
        # Similar lengths share a batch, so less compute goes to padding.
        order = sorted(range(len(inputs)), key=lambda i: len(prompt_ids[i]))
        results: list[list[_Completion] | None] = [None] * len(inputs)

        seed = None if self.seed is None else self.seed + self._calls
        self._calls += 1
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices, enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(seed)
            for start in range(0, len(order), self.batch_size):
                chunk = order[start : start + self.batch_size]
                rows = self._generate_batch(
                    [prompt_ids[i] for i in chunk],
                    [stops[i] for i in chunk],
                    num_samples,
                    None if row_seeds is None else [row_seeds[i] for i in chunk],
                )
                for j, i in enumerate(chunk):
                    results[i] = rows[j * num_samples : (j + 1) * num_samples]

        actions = []
        for i, completions in enumerate(results):
            assert completions is not None
            actions.append(
                [
                    Action(
                        text=parsed_tool_action(self.tokenizer, c.text, prompts[i])
                        if with_tools[i]
                        else _plain_text(c.text, prefills[i])
                        if not self.uses_chat_template
                        else c.text,
                        prompt=prompts[i],
                        prompt_ids=list(prompt_ids[i]),
                        completion_ids=list(c.ids),
                        logprobs=None if c.logprobs is None else list(c.logprobs),
                        metadata={"finish_reason": c.finish_reason, "model": self.name_or_path},
                        context=prepared[i][1],
                        prefill=prefills[i],
                    )
                    for c in completions
                ]
            )
        return actions

    def _generate_batch(
        self,
        batch_ids: list[list[int]],
        batch_stops: list[tuple[str, ...]],
        num_samples: int,
        row_seeds: list[int] | None = None,
    ) -> list[_Completion]:
        """Generate for one left-padded batch; returns ``len(batch_ids) * num_samples`` rows, grouped by input."""
        from transformers import (
            GenerationConfig,
            LogitsProcessorList,
            StoppingCriteriaList,
            TemperatureLogitsWarper,
            TopPLogitsWarper,
        )

        if self.num_beams > 1:
            return self._beam_search(batch_ids, batch_stops, num_samples)
        sampling = self.temperature > 0
        copies = num_samples if sampling else 1
        per_row = sampling and row_seeds is not None
        # Per-row sampling decodes greedily over one-hot choices, and greedy generate returns one
        # sequence per row: the copies of an input are rows of their own.
        rows = [ids for ids in batch_ids for _ in range(copies if per_row else 1)]
        width = max(len(ids) for ids in rows)
        input_ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for row, ids in enumerate(rows):
            input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
            attention_mask[row, width - len(ids) :] = 1
        input_ids, attention_mask = input_ids.to(self.device), attention_mask.to(self.device)

        row_stops = [s for s in batch_stops for _ in range(copies)]
        recorder = _LogprobRecorder()
        # The recorder must see the raw logits, so the generation config switches off every built-in
        # processor (they would run before custom ones) and temperature/top-p are added after it.
        processors: list[Any] = [recorder]
        if sampling and self.temperature != 1.0:
            processors.append(TemperatureLogitsWarper(self.temperature))
        if sampling and self.top_p < 1.0:
            processors.append(TopPLogitsWarper(self.top_p))
        if per_row:
            # Each row draws its token from its own generator; greedy decoding then takes it.
            seeds = [(seed, copy) for seed in row_seeds for copy in range(copies)]
            processors.append(_PerRowSampler(seeds, self.device))
        criteria = StoppingCriteriaList()
        if any(row_stops):
            criteria.append(_StopStrings(self.tokenizer, width, row_stops))
        config = GenerationConfig(
            max_new_tokens=self.max_new_tokens,
            do_sample=sampling and not per_row,
            num_return_sequences=1 if per_row else copies,
            temperature=1.0,
            top_p=1.0,
            # top_k=0 switches off the default top-k of 50; it means nothing to greedy decoding.
            top_k=0 if sampling and not per_row else None,
            min_p=None,
            typical_p=1.0,
            repetition_penalty=1.0,
            no_repeat_ngram_size=0,
            min_length=0,
            pad_token_id=self.pad_token_id,
            eos_token_id=self.eos_token_ids,
            return_dict_in_generate=True,
        )
        with torch.inference_mode():
            out = self.model.generate(
                input_ids=input_ids,
                attention_mask=attention_mask,
                generation_config=config,
                logits_processor=LogitsProcessorList(processors),
                stopping_criteria=criteria,
            )
        generated = out.sequences[:, width:]
        logprobs = recorder.finish(generated)
        generated, logprobs = generated.tolist(), logprobs.tolist()
        completions = [self._cut(generated[r], logprobs[r], row_stops[r]) for r in range(len(generated))]
        if copies != num_samples:  # greedy: every sample of an input is the same completion
            completions = [c for c in completions for _ in range(num_samples)]
        return completions

    def _left_padded(self, rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor, int]:
        width = max(len(ids) for ids in rows)
        input_ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for row, ids in enumerate(rows):
            input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
            attention_mask[row, width - len(ids) :] = 1
        return input_ids.to(self.device), attention_mask.to(self.device), width

    def _beam_search(
        self, batch_ids: list[list[int]], batch_stops: list[tuple[str, ...]], num_samples: int
    ) -> list[_Completion]:
        """Beam search (``num_beams`` beams, no sampling): each input's best beam, ``num_samples`` copies.

        Log-probabilities are not recorded (``None``): a beam's tokens were chosen for the whole
        sequence's score, not drawn from the model's distribution, so they are no behaviour policy.
        Stop strings cut the best beam afterwards; they do not end a beam early.
        """
        from transformers import GenerationConfig

        input_ids, attention_mask, width = self._left_padded(batch_ids)
        config = GenerationConfig(
            max_new_tokens=self.max_new_tokens,
            num_beams=self.num_beams,
            num_return_sequences=1,
            do_sample=False,
            temperature=1.0,
            top_p=1.0,
            top_k=None,
            repetition_penalty=1.0,
            no_repeat_ngram_size=0,
            min_length=0,
            pad_token_id=self.pad_token_id,
            eos_token_id=self.eos_token_ids,
            return_dict_in_generate=True,
        )
        with torch.inference_mode():
            out = self.model.generate(input_ids=input_ids, attention_mask=attention_mask, generation_config=config)
        generated = out.sequences[:, width:].tolist()
        completions = []
        for row, stops in enumerate(batch_stops):
            cut = self._cut(generated[row], [0.0] * len(generated[row]), stops)
            best = _Completion(ids=cut.ids, logprobs=None, text=cut.text, finish_reason=cut.finish_reason)
            completions.extend([best] * num_samples)
        return completions

    def _cut(self, ids: list[int], logprobs: list[float], stops: tuple[str, ...]) -> _Completion:
        """Cut a generated row after its first EOS or at the token that completes a stop string."""
        eos = set(self.eos_token_ids)
        end, reason = len(ids), "length"
        for k, token in enumerate(ids):
            if token in eos:
                end, reason = k + 1, "eos"
                break
        body = ids[: end - 1] if reason == "eos" else ids[:end]
        text = self.tokenizer.decode(body, skip_special_tokens=True)
        if stops and first_stop(text, stops) is not None:
            # The smallest prefix whose text contains a stop string ends at the completing token.
            lo, hi = 1, len(body)
            while lo < hi:
                mid = (lo + hi) // 2
                if first_stop(self.tokenizer.decode(body[:mid], skip_special_tokens=True), stops) is not None:
                    hi = mid
                else:
                    lo = mid + 1
            end, reason = lo, "stop"
            text = text[: first_stop(text, stops)]
        return _Completion(ids=ids[:end], logprobs=logprobs[:end], text=text, finish_reason=reason)


class _LogprobRecorder(LogitsProcessor):
    """A logits processor that records the log-probability of each chosen token, one step behind.

    At step ``t`` it receives the raw logits of step ``t`` and the sequence including the token
    chosen at step ``t - 1``, whose log-probability it reads from the distribution kept from the
    previous step; :meth:`finish` adds the last step's.
    """

    def __init__(self) -> None:
        self.previous = None
        self.steps: list[Any] = []

    def __call__(self, input_ids, scores):
        if self.previous is not None:
            self.steps.append(self.previous.gather(1, input_ids[:, -1:]).squeeze(1))
        self.previous = torch.log_softmax(scores.float(), dim=-1)
        return scores

    def finish(self, generated):
        """Per-token log-probabilities ``(rows, generated_length)`` of ``generated``."""
        steps = list(self.steps)
        if self.previous is not None and generated.shape[1] > len(steps):
            steps.append(self.previous.gather(1, generated[:, len(steps) : len(steps) + 1]).squeeze(1))
        if not steps:
            return torch.zeros(generated.shape, dtype=torch.float32)
        return torch.stack(steps, dim=1).cpu()


class _PerRowSampler(LogitsProcessor):
    """Sample each row's next token from its own seeded generator, as a one-hot of the choice.

    The last processor: it receives the tempered, nucleus-filtered scores, draws one token per row
    with that row's ``torch.Generator`` and leaves only that token possible, so greedy decoding
    emits it. A row's draws depend only on its seed and its own distribution, never on the other
    rows of the batch.
    """

    def __init__(self, seeds: list[tuple[int, int]], device: torch.device):
        self.generators = []
        for seed, copy in seeds:
            generator = torch.Generator(device=device)
            generator.manual_seed(int(seed) * 1_000_003 + copy)
            self.generators.append(generator)

    def __call__(self, input_ids, scores):
        probs = torch.softmax(scores.float(), dim=-1)
        chosen = torch.stack([torch.multinomial(probs[row], 1, generator=g) for row, g in enumerate(self.generators)])
        out = torch.full_like(scores, float("-inf"))
        return out.scatter(1, chosen, 0.0)


class _StopStrings(StoppingCriteria):
    """Stopping criterion with a different set of stop strings for every row.

    Each step decodes only the tail of each row's generated tokens that could hold a stop string
    (a character is at most 4 byte-level tokens), so the check costs the same at every step.
    """

    def __init__(self, tokenizer, prompt_width: int, row_stops: list[tuple[str, ...]]):
        self.tokenizer = tokenizer
        self.prompt_width = prompt_width
        self.row_stops = row_stops
        longest = max((len(s) for stops in row_stops for s in stops), default=1)
        self.tail = 4 * longest + 4
        self.done = [False] * len(row_stops)

    def __call__(self, input_ids, scores, **kwargs):
        tails = input_ids[:, self.prompt_width :][:, -self.tail :].tolist()
        for row, stops in enumerate(self.row_stops):
            if stops and not self.done[row]:
                text = self.tokenizer.decode(tails[row], skip_special_tokens=True)
                self.done[row] = first_stop(text, stops) is not None
        return torch.tensor(self.done, dtype=torch.bool, device=input_ids.device)
