"""A tiny model that calls a tool: the offline tiny Llama, a Qwen-style chat template, a few steps of training.

The tiny model's random weights never write a tool call, so tool-calling tests train one: the
byte tokenizer gets TRL's copy of the Qwen2.5 chat template (which renders ``tools`` and tool
messages and has a ``<tool_call>`` format) and the response template that parses it
(``trl.chat_template_utils.add_response_schema``), and a small model is fitted until its greedy
reply in any turn of a tool-calling conversation is one fixed tool call. Used by the real
``transformers serve`` tests and by HFAgent's tool-call tests.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

#: The call the trained model writes, whatever it is asked.
TARGET_CALL = {"name": "finish", "arguments": {"answer": "Yes"}}
TARGET_TEXT = "<tool_call>\n" + json.dumps(TARGET_CALL) + "\n</tool_call>"


def _find(sequence: list[int], pattern: list[int]) -> list[int]:
    """Start positions of ``pattern`` in ``sequence``."""
    n = len(pattern)
    return [i for i in range(len(sequence) - n + 1) if sequence[i : i + n] == pattern]


def build_tool_calling_model(directory: str | Path, prompts: list[tuple[list[dict], str]], steps: int = 160) -> Path:
    """Train and save a tiny model whose greedy reply to each prompt is :data:`TARGET_TEXT` in every turn.

    Each training conversation is a user prompt followed by three call/result rounds, so that one
    forward pass supervises three replies (the prompt, with the tools' schemas, is most of the
    sequence) and later turns of an episode are covered too.

    Args:
        directory: Where to save the model and tokenizer (``save_pretrained``).
        prompts: ``(tools, user message)`` pairs to train on: the model memorises its reply to
            these renderings (a tiny model does not generalise to other tool lists).
        steps: Optimiser steps.
    """
    import torch
    from trl.chat_template_utils import add_response_schema, qwen2_5_chat_template

    from mulligan.agents.tiny import TinyModelConfig, build_tiny_model

    # 16k positions (rotary, so no extra weights): the science envs' 19 tool schemas alone are
    # about 6,000 byte tokens.
    config = TinyModelConfig(
        hidden_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=256,
        max_position_embeddings=16384,
    )
    model, tokenizer = build_tiny_model(config)
    tokenizer.chat_template = qwen2_5_chat_template
    tokenizer = add_response_schema(tokenizer)
    target = tokenizer(TARGET_TEXT + "<|im_end|>", add_special_tokens=False)["input_ids"]
    call = {"type": "function", "function": TARGET_CALL}
    batch = []
    for tools, prompt in prompts:
        messages = [{"role": "user", "content": prompt}]
        for result in ("Invalid answer.", "No more results."):
            messages += [
                {"role": "assistant", "content": "", "tool_calls": [call]},
                {"role": "tool", "content": result},
            ]
        ids = tokenizer.apply_chat_template(messages, tools=tools, add_generation_prompt=True, tokenize=True)
        ids = list(ids["input_ids"] if hasattr(ids, "keys") else ids) + target
        labels = [-100] * len(ids)
        starts = _find(ids, target)
        if len(starts) != 3:
            raise RuntimeError(f"the template did not render the call as {TARGET_TEXT!r} ({len(starts)} found)")
        for start in starts:
            labels[start : start + len(target)] = target
        batch.append((torch.tensor([ids]), torch.tensor([labels])))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    # Clipped steps and a rate that decays to a tenth: without them the fit of long prompts
    # oscillates and the greedy reply can end a few bytes off.
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 - 0.9 * step / steps)
    model.train()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        for step in range(steps):
            input_ids, labels = batch[step % len(batch)]
            loss = model(input_ids=input_ids, labels=labels).loss
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            if os.environ.get("W5_DEBUG"):
                print(step, loss.item())
    model.eval()
    directory = Path(directory)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


#: The env and tasks the cached model is trained on (StrategyQA's test split: task 0's answer is Yes, task 1's No).
ENV_ID = "Mulligan/StrategyQA-v0"
ENV_KWARGS = {"action_format": "tools", "split": "test"}
TASK_INDICES = (0, 1)
_VERSION = 4  # bump when the recipe above changes, so cached models are rebuilt


def cached_tool_calling_model() -> Path:
    """The tool-calling tiny model for :data:`ENV_ID`'s first observations, built once per machine.

    Cached like the tiny model (``$MULLIGAN_CACHE`` or ``~/.cache/mulligan``), keyed by the tools,
    the prompts and the recipe version; built into a temporary sibling and renamed, so concurrent
    test processes never see half a model.
    """
    import hashlib
    import os
    import shutil

    import gymnasium
    from transformers.utils import get_json_schema

    import mulligan  # noqa: F401 - registers the ids
    from mulligan.agents.tiny import default_cache_dir
    from mulligan.integrations.trl import environment_factory

    env = gymnasium.make(ENV_ID, **ENV_KWARGS)
    observations = [env.reset(options={"task_index": i})[0] for i in TASK_INDICES]
    # The env's schemas (what HFAgent and OpenAIChatAgent send) and those TRL builds from the
    # adapter's methods (get_json_schema: same names and descriptions, other JSON Schema fields).
    adapter = environment_factory(ENV_ID, {k: v for k, v in ENV_KWARGS.items() if k != "action_format"})()
    trl_tools = [get_json_schema(getattr(adapter, tool["function"]["name"])) for tool in env.unwrapped.tools]
    prompts = [(tools, observation) for tools in (env.unwrapped.tools, trl_tools) for observation in observations]
    key = hashlib.sha1(json.dumps([_VERSION, prompts], sort_keys=True).encode()).hexdigest()[:10]
    directory = default_cache_dir() / f"tiny-tool-calling-{key}"
    if not (directory / "tokenizer_config.json").exists():
        tmp = directory.with_name(directory.name + f".tmp{os.getpid()}")
        build_tool_calling_model(tmp, prompts)
        try:
            tmp.rename(directory)
        except OSError:  # another process won the race; its copy is equivalent
            shutil.rmtree(tmp, ignore_errors=True)
    return directory
