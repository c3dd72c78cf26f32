"""Supervised fine-tuning plumbing shared by NAT, RISE and sub-goal distillation (infrastructure tier).

* :func:`load_model` / :func:`load_tokenizer`: a causal LM as :class:`~mulligan.training.args.ModelArgs`
  says (dtype, attention kernel, LoRA adapters).
* :func:`seq2seq_dataset`: encoder ``input_ids`` + decoder ``labels`` for an encoder-decoder
  (FLAN-T5, the sub-goal paper's models), with the encoder text of
  :func:`mulligan.agents.seq2seq.encoder_text`, exactly what :class:`~mulligan.agents.seq2seq.Seq2SeqAgent` reads.
* :func:`conversations_to_dataset`: pre-tokenized ``input_ids`` + ``assistant_masks`` for TRL's
  ``SFTTrainer``, so the loss falls on the agent's turns only.
* :func:`save_trained`: the final model as a full checkpoint (LoRA adapters merged), so every
  later stage (the next RISE iteration, evaluation) loads it with ``from_pretrained``.
* :func:`resolve_checkpoint`: the one meaning of ``--resume_from_checkpoint`` (``""``, ``auto``, a
  path) for ``Trainer.train``.

The training arguments themselves come from :meth:`~mulligan.training.args.SFTArgs.to_sft_config`
and :meth:`~mulligan.training.args.SFTArgs.to_training_arguments`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from mulligan.training.args import ModelArgs

_DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}


def load_tokenizer(args: ModelArgs, path: str | None = None):
    """The tokenizer of ``path`` (``args.model`` when ``None``; ``tiny`` is built offline)."""
    from transformers import AutoTokenizer

    from mulligan.agents.tiny import resolve_model

    return AutoTokenizer.from_pretrained(resolve_model(path or args.model))


def load_model(args: ModelArgs, path: str | None = None, *, seq2seq: bool = False):
    """A causal LM (or, with ``seq2seq``, an encoder-decoder) from ``path`` in ``args.dtype``, with LoRA if asked.

    Args:
        args: The model options.
        path: The checkpoint (``args.model`` when ``None``; ``tiny`` and ``tiny-seq2seq`` are built offline).
        seq2seq: Load with ``AutoModelForSeq2SeqLM`` (T5, FLAN-T5, BART) instead of ``AutoModelForCausalLM``.

    With ``args.use_lora`` the returned model is a ``peft`` model whose adapters alone train.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    from mulligan.agents.tiny import resolve_model

    kwargs: dict[str, Any] = {"dtype": "auto" if args.dtype == "auto" else getattr(torch, _DTYPES[args.dtype])}
    if args.attn_implementation:
        kwargs["attn_implementation"] = args.attn_implementation
    loader = AutoModelForSeq2SeqLM if seq2seq else AutoModelForCausalLM
    model = loader.from_pretrained(resolve_model(path or args.model), **kwargs)
    lora = args.lora_config()
    if lora is not None and seq2seq:
        lora.task_type = "SEQ_2_SEQ_LM"
    if lora is not None:
        from peft import get_peft_model

        model = get_peft_model(model, lora)
    return model


def conversations_to_dataset(
    tokenizer,
    conversations: Sequence[Sequence[dict[str, str]]],
    max_length: int | None,
    learn_turns: Sequence[Sequence[int] | None] | None = None,
    tools: Sequence[Sequence[dict[str, Any]] | None] | None = None,
):
    """A pre-tokenized ``datasets.Dataset`` (``input_ids``, ``assistant_masks``) for TRL's SFTTrainer.

    The mask marks the agent's tokens: SFTTrainer turns it into labels (-100 elsewhere), so the
    loss falls on the agent's turns only. Conversations longer than ``max_length`` keep their start
    (SFTTrainer truncates the same way); a conversation with no agent token left is dropped.

    Args:
        tokenizer: A Hugging Face tokenizer.
        conversations: Chat message lists.
        max_length: Longest sequence in tokens (``None``: no limit).
        learn_turns: Per conversation, the indices of the assistant messages to learn (``None``:
            all of them), e.g. to leave a fixed acknowledgement such as NAT's unlearned.
        tools: Per conversation, the tool schemas its model was shown (``None``: none), e.g.
            :func:`mulligan.agents.tools.tools_for_trajectory` of each source trajectory. A
            tools-mode episode is then trained on the text the agent was conditioned on: the chat
            template's tool preamble and the conversation as tool calls and tool results
            (:func:`mulligan.training.chat.render`); without it the model would learn calls
            against a prompt that never listed the tools.

    Raises:
        ValueError: If no conversation has an agent token left (the message names the fix).
    """
    from datasets import Dataset

    from mulligan.training.chat import tokenize_conversation

    if learn_turns is not None and len(learn_turns) != len(conversations):
        raise ValueError(f"learn_turns has {len(learn_turns)} entries for {len(conversations)} conversations")
    if tools is not None and len(tools) != len(conversations):
        raise ValueError(f"tools has {len(tools)} entries for {len(conversations)} conversations")
    rows: dict[str, list] = {"input_ids": [], "assistant_masks": []}
    for k, messages in enumerate(conversations):
        episode = tokenize_conversation(
            tokenizer,
            messages,
            learn_turns=None if learn_turns is None else learn_turns[k],
            tools=None if tools is None else tools[k],
        )
        ids, mask = episode.input_ids, episode.assistant_mask
        if max_length is not None:
            ids, mask = ids[:max_length], mask[:max_length]
        if not any(mask):
            continue  # nothing of the agent's left to learn
        rows["input_ids"].append(ids)
        rows["assistant_masks"].append(mask)
    if not rows["input_ids"]:
        raise ValueError(
            f"no conversation has an agent turn left to learn after truncation to max_length={max_length}; "
            "raise --max_length"
        )
    return Dataset.from_dict(rows)


def seq2seq_dataset(
    tokenizer,
    conversations: Sequence[Sequence[dict[str, str]]],
    max_source_length: int | None,
    max_target_length: int | None,
):
    """A ``datasets.Dataset`` (``input_ids``, ``labels``) for an encoder-decoder's ``Seq2SeqTrainer``.

    Each conversation ends with the assistant's target; the messages before it are the encoder's
    input, as :class:`~mulligan.agents.seq2seq.Seq2SeqAgent` reads them
    (:func:`~mulligan.agents.seq2seq.encoder_text`: a single user message is its text, the paper's
    plain input string). The labels are the target's ids followed by EOS, the whole loss (the
    official ``ds_train.py``). An input longer than ``max_source_length`` keeps its end (as the
    agent does); a target longer than ``max_target_length`` (EOS included) keeps its start.

    Raises:
        ValueError: If a conversation does not end with an assistant message, or there is none.
    """
    from datasets import Dataset

    from mulligan.agents.seq2seq import encode_source, encoder_text

    eos = tokenizer.eos_token_id
    rows: dict[str, list] = {"input_ids": [], "labels": []}
    for k, messages in enumerate(conversations):
        if len(messages) < 2 or messages[-1]["role"] != "assistant":
            raise ValueError(f"conversation {k} must end with the assistant's target after at least one message")
        rows["input_ids"].append(encode_source(tokenizer, encoder_text(tokenizer, messages[:-1]), max_source_length))
        labels = list(tokenizer(messages[-1]["content"])["input_ids"])
        if not labels or labels[-1] != eos:
            labels.append(eos)
        if max_target_length is not None:
            labels = labels[:max_target_length]
        rows["labels"].append(labels)
    if not rows["input_ids"]:
        raise ValueError("no conversation to train on")
    return Dataset.from_dict(rows)


def resolve_checkpoint(value: str | None, output_dir: str) -> str | None:
    """``resume_from_checkpoint`` for ``Trainer.train``.

    Args:
        value: ``""`` (or ``None``) starts fresh; ``auto`` resumes from the latest
            ``checkpoint-*`` in ``output_dir``, or starts fresh if there is none; anything else is
            a checkpoint folder.
        output_dir: Where the Trainer writes its checkpoints.

    Raises:
        FileNotFoundError: If ``value`` names a folder that does not exist.
    """
    if not value:
        return None
    if value == "auto":
        from transformers.trainer_utils import get_last_checkpoint

        return get_last_checkpoint(output_dir) if os.path.isdir(output_dir) else None
    if not os.path.isdir(value):
        raise FileNotFoundError(
            f"resume_from_checkpoint={value!r} is not a checkpoint folder; pass 'auto' for the latest in "
            f"{output_dir!r}, or '' to start fresh"
        )
    return value


def save_trained(trainer, tokenizer, output_dir: str) -> None:
    """Save the trained model and its tokenizer to ``output_dir`` as a full checkpoint.

    A LoRA model is merged into its base weights first (``merge_and_unload``), so the folder loads
    with ``AutoModelForCausalLM.from_pretrained`` like any other; other models are saved by
    ``trainer.save_model`` (which gathers DeepSpeed/FSDP shards).
    """
    model = trainer.model
    if getattr(model, "peft_config", None) is not None and hasattr(model, "merge_and_unload"):
        if trainer.is_world_process_zero():
            model.merge_and_unload().save_pretrained(output_dir)
    else:
        trainer.save_model(output_dir)
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(output_dir)
