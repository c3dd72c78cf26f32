"""``Seq2SeqAgent``: an encoder-decoder model (T5, FLAN-T5, BART) as a batched policy.

The sub-goal paper (arXiv 2405.02749, Sec. 4) trains its executor, controller and first-sub-goal
generator as FLAN-T5-large seq2seq models and decodes with 5-beam search (official
``evaluation/eval_utils.py``). This agent is the inference side of that setup, with the same
conventions as :class:`~mulligan.agents.hf.HFAgent`:

* What the model sees is decided by :meth:`~mulligan.agents.base.Agent.prepare_context` (system
  prompt, context policy) and recorded on each action (:class:`~mulligan.agents.base.ContextRecord`).
* The encoder reads :func:`encoder_text` of those messages: the content itself when it is one user
  message (what the sub-goal agents send, the paper's plain input string), else the conversation
  rendered by :func:`mulligan.training.chat.render` with the generation prompt. The seq2seq
  trainer (:mod:`mulligan.training.subgoal`) encodes its training prompts with the same function.
* The decoder's output, cut at EOS and at stop strings and stripped, is the action. Each action
  carries the encoder text as ``prompt``, its ids as ``prompt_ids``, the generated ids as
  ``completion_ids`` and their log-probabilities under the model itself (temperature 1, from a
  teacher-forced pass over the chosen sequence); under beam search ``logprobs`` is ``None``, as
  ``HFAgent`` records it (beam tokens are no draws from the model, so no behaviour policy for RL).

Decoding: ``num_beams > 1`` is beam search (the paper's 5 beams; deterministic, the best beam is
the action); otherwise ``temperature=0`` is greedy and ``temperature > 0`` samples with ``top_p``.
When every input carries a seed (the rollout's per-input seeds) a sampled row is drawn under its
own seed, so an episode does not depend on its batch; otherwise ``seed`` seeds each call as in
``HFAgent``.

:func:`is_seq2seq` tells from a checkpoint's config (``is_encoder_decoder``) whether a model is an
encoder-decoder, so ``google/flan-t5-large``, a fine-tuned T5 folder and ``tiny-seq2seq`` all
take this path, and :func:`model_agent` picks this agent or ``HFAgent`` for any checkpoint.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mulligan.agents.base import Action, Agent, AgentInput, ContextRecord, Message

__all__ = ["Seq2SeqAgent", "encode_source", "encoder_text", "is_seq2seq", "model_agent"]


def is_seq2seq(model: Any, trust_remote_code: bool = False) -> bool:
    """Whether ``model`` (a hub id, a local path, ``tiny-seq2seq``, or a loaded model) is an encoder-decoder.

    Reads only the config (``is_encoder_decoder``), never the weights: ``google/flan-t5-large`` is
    recognised from its ``config.json`` alone.
    """
    if not isinstance(model, str):
        return bool(getattr(getattr(model, "config", None), "is_encoder_decoder", False))
    from transformers import AutoConfig

    from mulligan.agents.tiny import resolve_model

    config = AutoConfig.from_pretrained(resolve_model(model), trust_remote_code=trust_remote_code)
    return bool(getattr(config, "is_encoder_decoder", False))


def encoder_text(tokenizer: Any, messages: Sequence[Message]) -> str:
    """The text a seq2seq model's encoder reads for ``messages`` (see the module docstring)."""
    from mulligan.training.chat import render

    if len(messages) == 1 and messages[0]["role"] == "user":
        return messages[0]["content"]
    return render(tokenizer, messages, add_generation_prompt=True)


def encode_source(tokenizer: Any, text: str, max_source_length: int | None = None) -> list[int]:
    """Encoder ids of ``text`` as training and inference see them (with the tokenizer's own special tokens).

    A longer input than ``max_source_length`` keeps its last tokens: the prompts end with the
    current step and the question (the official script cuts the end instead, ``truncation=True``).
    """
    ids = list(tokenizer(text)["input_ids"])
    if max_source_length is not None and len(ids) > max_source_length:
        ids = ids[-max_source_length:]
    return ids


def model_agent(model: str, **kwargs: Any) -> Agent:
    """The agent for a checkpoint: :class:`Seq2SeqAgent` for an encoder-decoder, else ``HFAgent``.

    ``kwargs`` are the sampling and context options both take (``temperature``, ``top_p``,
    ``max_new_tokens``, ``num_beams``, ``seed``, ``system_prompt``, ``context``, ``stop``).
    """
    if is_seq2seq(model):
        return Seq2SeqAgent(model, **kwargs)
    from mulligan.agents.hf import HFAgent

    return HFAgent(model, **kwargs)


def _check_options(
    *,
    temperature: float,
    top_p: float,
    max_new_tokens: Any,
    num_beams: Any,
    batch_size: Any,
    max_source_length: Any,
    stop: Any,
) -> None:
    """Refuse decoding options that cannot work, with the fix in the message."""
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 is greedy), got {temperature}")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must lie in (0, 1], got {top_p}")
    for name, value in (("max_new_tokens", max_new_tokens), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if isinstance(num_beams, bool) or not isinstance(num_beams, int) or num_beams < 1:
        raise ValueError(f"num_beams must be a positive int (1: no beam search), got {num_beams!r}")
    if max_source_length is not None and (not isinstance(max_source_length, int) or max_source_length < 1):
        raise ValueError(f"max_source_length must be a positive int or None, got {max_source_length!r}")
    if isinstance(stop, str):
        raise ValueError("stop must be a sequence of strings, not a str")


class Seq2SeqAgent(Agent):
    """An encoder-decoder model acting on many envs at once (module docstring).

    Args:
        model: A model id or local path (``"tiny-seq2seq"`` is the offline tiny T5), or a loaded
            ``PreTrainedModel`` with ``config.is_encoder_decoder``.
        tokenizer: A tokenizer, required with a loaded model; loaded from ``model`` otherwise.
        device: Where to run (default: the loaded model's device, else CUDA when available, else CPU).
        dtype: Torch dtype (or its name) to load the model in.
        temperature: Sampling temperature; 0 decodes greedily (ignored under beam search).
        top_p: Nucleus sampling mass in (0, 1].
        max_new_tokens: Tokens generated per action at most (the paper's ``max_target`` is 30).
        num_beams: Beam width; > 1 is beam search (the paper's 5), and the best beam is the action.
        seed: Seed for reproducible sampling.
        system_prompt: A system message placed first when the conversation has none.
        context: A context policy from :mod:`mulligan.agents.context`.
        batch_size: Prompts per ``generate`` call.
        stop: Stop strings applied to every env, in addition to each input's own.
        max_source_length: Longest encoder input in tokens; longer inputs keep their end (the
            current step and the question), ``None`` keeps everything.
        trust_remote_code: Passed to ``from_pretrained``.

    Raises:
        ValueError: For a model that is not an encoder-decoder, or bad sampling options.
    """

    def __init__(
        self,
        model: Any = "tiny-seq2seq",
        tokenizer: Any = None,
        *,
        device: Any = None,
        dtype: Any = None,
        temperature: float = 1.0,
        top_p: float = 1.0,
        max_new_tokens: int = 64,
        num_beams: int = 1,
        seed: int | None = None,
        system_prompt: str | None = None,
        context: Any = None,
        batch_size: int = 32,
        stop: Sequence[str] = (),
        max_source_length: int | None = None,
        trust_remote_code: bool = False,
    ):
        _check_options(
            temperature=temperature,
            top_p=top_p,
            max_new_tokens=max_new_tokens,
            num_beams=num_beams,
            batch_size=batch_size,
            max_source_length=max_source_length,
            stop=stop,
        )
        import torch  # here, not at import: ``import mulligan.agents`` must not load torch

        if isinstance(dtype, str):
            if not isinstance(getattr(torch, dtype, None), torch.dtype):
                raise ValueError(f"unknown dtype {dtype!r}; use a torch dtype name such as 'bfloat16'")
            dtype = getattr(torch, dtype)
        if isinstance(model, str):
            from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

            from mulligan.agents.tiny import resolve_model

            self.name_or_path = model
            path = resolve_model(model)
            if not is_seq2seq(path, trust_remote_code):
                raise ValueError(f"{model!r} is not an encoder-decoder model; use HFAgent (or model_agent) for it")
            if tokenizer is None:
                tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
            load_kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
            if dtype is not None:
                load_kwargs["dtype"] = dtype
            model = AutoModelForSeq2SeqLM.from_pretrained(path, **load_kwargs)
        else:
            if tokenizer is None:
                raise ValueError("pass the tokenizer with a loaded model")
            if not is_seq2seq(model):
                raise ValueError("the loaded model is not an encoder-decoder (config.is_encoder_decoder is false)")
            self.name_or_path = getattr(model.config, "_name_or_path", "") or type(model).__name__
        if device is None:
            device = next(model.parameters()).device
            if device.type == "cpu" and torch.cuda.is_available():
                device = torch.device("cuda")
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.name = str(self.name_or_path)
        self.temperature = float(temperature)
        self.top_p = float(top_p)
        self.max_new_tokens = max_new_tokens
        self.num_beams = num_beams
        self.seed = seed
        self.system_prompt = system_prompt
        self.context = context
        self.batch_size = batch_size
        self.stop = tuple(stop)
        self.max_source_length = max_source_length
        pad = tokenizer.pad_token_id
        self.pad_token_id = pad if pad is not None else tokenizer.eos_token_id
        self.eos_token_id = getattr(model.generation_config, "eos_token_id", None) or tokenizer.eos_token_id
        self._calls = 0

    # ------------------------------------------------------------------ public API
    def reset(self, seed: int | None = None) -> None:
        """Restart the call counter; with ``seed``, also replace the agent's seed."""
        if seed is not None:
            self.seed = seed
        self._calls = 0

    def count_tokens(self, text: str) -> int:
        """Tokens in ``text`` under the agent's tokenizer (no special tokens added)."""
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def render_prompt(self, agent_input: AgentInput) -> str:
        """The encoder text the model reads for ``agent_input``."""
        return self._prepare(agent_input)[0]

    def _prepare(self, agent_input: AgentInput) -> tuple[str, ContextRecord | None]:
        messages, record = self.prepare_context(agent_input.messages)
        return encoder_text(self.tokenizer, messages), record

    def encode(self, text: str) -> list[int]:
        """Encoder ids of ``text`` (:func:`encode_source` with ``max_source_length``)."""
        return encode_source(self.tokenizer, text, self.max_source_length)

    def act(self, inputs: Sequence[AgentInput]) -> list[Action]:
        """One action per input."""
        return [group[0] for group in self._generate(inputs, 1)]

    def sample(self, inputs: Sequence[AgentInput], num_samples: int) -> list[list[Action]]:
        """``num_samples`` actions per input (the top beams under beam search; copies under greedy)."""
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        return self._generate(inputs, num_samples)

    # ------------------------------------------------------------------ generation
    def _generate(self, inputs: Sequence[AgentInput], num_samples: int) -> list[list[Action]]:
        import torch

        inputs = list(inputs)
        if not inputs:
            return []
        prepared = [self._prepare(x) for x in inputs]
        source_ids = [self.encode(text) for text, _ in prepared]
        seeds = [x.seed for x in inputs] if all(x.seed is not None for x in inputs) else None
        sampling = self.num_beams == 1 and self.temperature > 0
        call_seed = None if self.seed is None else self.seed + self._calls
        self._calls += 1
        outputs: list[list[list[int]]] = [[] for _ in inputs]
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices, enabled=sampling and (call_seed is not None or seeds is not None)):
            if sampling and seeds is not None:
                # Each row under its own seed: an episode's tokens do not depend on its batch.
                for i, ids in enumerate(source_ids):
                    torch.manual_seed(int(seeds[i]))
                    outputs[i] = self._generate_batch([ids], num_samples)[0]
            else:
                if sampling and call_seed is not None:
                    torch.manual_seed(call_seed)
                for start in range(0, len(inputs), self.batch_size):
                    rows = self._generate_batch(source_ids[start : start + self.batch_size], num_samples)
                    outputs[start : start + len(rows)] = rows
        actions = []
        for i, x in enumerate(inputs):
            stops = tuple(s for s in (*self.stop, *x.stop) if s)
            group = []
            for ids in outputs[i]:
                completion, text, reason = self._cut(ids, stops)
                group.append(
                    Action(
                        text=text.strip(),
                        prompt=prepared[i][0],
                        prompt_ids=list(source_ids[i]),
                        completion_ids=completion,
                        logprobs=None if self.num_beams > 1 else self._logprobs(source_ids[i], completion),
                        metadata={"finish_reason": reason, "model": self.name_or_path, "num_beams": self.num_beams},
                        context=prepared[i][1],
                    )
                )
            actions.append(group)
        return actions

    def _generate_batch(self, batch: list[list[int]], num_samples: int) -> list[list[list[int]]]:
        """Decoder ids (without the start token) of ``num_samples`` outputs per encoder input."""
        import torch
        from transformers import GenerationConfig

        width = max(len(ids) for ids in batch)
        input_ids = torch.full((len(batch), width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, ids in enumerate(batch):  # right padding, as T5's encoder expects
            input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            attention_mask[row, : len(ids)] = 1
        beams = self.num_beams > 1
        sampling = not beams and self.temperature > 0
        returned = min(num_samples, self.num_beams) if beams else (num_samples if sampling else 1)
        config = GenerationConfig(
            max_new_tokens=self.max_new_tokens,
            num_beams=self.num_beams,
            num_return_sequences=returned,
            do_sample=sampling,
            temperature=self.temperature if sampling else 1.0,
            top_p=self.top_p if sampling else 1.0,
            top_k=0 if sampling else None,
            early_stopping=beams,
            pad_token_id=self.pad_token_id,
            eos_token_id=self.eos_token_id,
            decoder_start_token_id=self.model.generation_config.decoder_start_token_id,
        )
        with torch.inference_mode():
            out = self.model.generate(
                input_ids=input_ids.to(self.device),
                attention_mask=attention_mask.to(self.device),
                generation_config=config,
            )
        rows = out[:, 1:].tolist()  # drop the decoder start token
        grouped = [rows[r * returned : (r + 1) * returned] for r in range(len(batch))]
        # Fewer beams than samples asked for, or greedy: repeat the best.
        return [[group[min(j, len(group) - 1)] for j in range(num_samples)] for group in grouped]

    def _cut(self, ids: list[int], stops: tuple[str, ...]) -> tuple[list[int], str, str]:
        """Cut a decoded row after its EOS (dropping padding) or where a stop string begins."""
        end, reason = len(ids), "length"
        for k, token in enumerate(ids):
            if token == self.eos_token_id:
                end, reason = k + 1, "eos"
                break
        body = ids[: end - 1] if reason == "eos" else ids[:end]
        text = self.tokenizer.decode(body, skip_special_tokens=True)
        if stops:
            positions = [p for p in (text.find(s) for s in stops) if p >= 0]
            if positions:
                text, reason = text[: min(positions)], "stop"
        return ids[:end], text, reason

    def _logprobs(self, source: list[int], completion: list[int]) -> list[float]:
        """Per-token log-probabilities of ``completion`` under the model (temperature 1, teacher-forced)."""
        import torch

        if not completion:
            return []
        with torch.inference_mode():
            logits = self.model(
                input_ids=torch.tensor([source], device=self.device),
                labels=torch.tensor([completion], device=self.device),
            ).logits[0]
        targets = torch.tensor(completion, device=self.device)[:, None]
        return torch.log_softmax(logits.float(), dim=-1).gather(1, targets)[:, 0].tolist()
