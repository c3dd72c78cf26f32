"""Encoder-decoder models (the sub-goal paper's FLAN-T5): the tiny T5, Seq2SeqAgent, seq2seq SFT."""

from __future__ import annotations

import json

import pytest
import torch

from mulligan.agents.base import AgentInput
from mulligan.agents.context import LastAttempts
from mulligan.agents.hf import HFAgent
from mulligan.agents.seq2seq import Seq2SeqAgent, encoder_text, is_seq2seq, model_agent
from mulligan.agents.tiny import TINY_SEQ2SEQ, TinySeq2SeqConfig, build_tiny_seq2seq, resolve_model
from mulligan.training.sft import seq2seq_dataset
from mulligan.training.subgoal import SubgoalArgs, train_policy

pytestmark = pytest.mark.usefixtures("one_torch_thread")

#: A toy imitation task: four prompts in the sub-goal format and their targets.
TOY = [
    ("Task: boil water\nNext sub-goal:", "navigate_to(kitchen)"),
    ("Task: melt ice\nNext sub-goal:", "pick_up(ice)"),
    ("Task: grow a plant\nNext sub-goal:", "water(flower pot)"),
    ("Task: freeze juice\nNext sub-goal:", "cool(juice)"),
]


def _toy_conversations():
    return [[{"role": "user", "content": p}, {"role": "assistant", "content": t}] for p, t in TOY]


def _user(text: str) -> AgentInput:
    return AgentInput([{"role": "user", "content": text}])


def test_tiny_seq2seq_is_a_t5_built_offline():
    model, tokenizer = build_tiny_seq2seq(TinySeq2SeqConfig(seed=3))
    assert model.config.model_type == "t5" and model.config.is_encoder_decoder
    assert model.config.feed_forward_proj == "gated-gelu"  # FLAN-T5's feed-forward
    assert model.config.decoder_start_token_id == tokenizer.pad_token_id
    assert tokenizer.chat_template is None and tokenizer.padding_side == "right"
    same, _ = build_tiny_seq2seq(TinySeq2SeqConfig(seed=3))
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), same.parameters(), strict=True))
    with pytest.raises(ValueError, match="divisible"):
        TinySeq2SeqConfig(d_model=10, num_heads=4)


def test_is_seq2seq_reads_the_config_only(tmp_path):
    from transformers import T5Config

    # google/flan-t5-large's architecture, config only (no weights): the same path a hub id takes.
    T5Config(d_model=1024, d_ff=2816, num_layers=24, num_heads=16, feed_forward_proj="gated-gelu").save_pretrained(
        tmp_path
    )
    assert (tmp_path / "config.json").exists() and not list(tmp_path.glob("*.safetensors"))
    assert is_seq2seq(str(tmp_path))
    assert is_seq2seq(TINY_SEQ2SEQ) and not is_seq2seq("tiny")


def test_model_agent_picks_the_agent_by_architecture():
    assert isinstance(model_agent(TINY_SEQ2SEQ, temperature=0.0), Seq2SeqAgent)
    assert isinstance(model_agent("tiny", temperature=0.0), HFAgent)
    with pytest.raises(ValueError, match="not an encoder-decoder"):
        Seq2SeqAgent("tiny")


def test_agent_records_what_the_encoder_read():
    agent = Seq2SeqAgent(TINY_SEQ2SEQ, temperature=0.0, max_new_tokens=4, context=LastAttempts(1))
    messages = [
        {"role": "user", "content": "question"},
        {"role": "assistant", "content": "first"},
        {"role": "user", "content": "wrong"},
        {"role": "assistant", "content": "second"},
        {"role": "user", "content": "wrong again"},
    ]
    [action] = agent.act([AgentInput(messages)])
    shown = action.context.shown(messages)
    assert shown == [messages[0], messages[3], messages[4]]  # the policy dropped the first attempt
    assert action.prompt == encoder_text(agent.tokenizer, shown)
    assert action.prompt_ids == agent.encode(action.prompt)
    assert len(action.completion_ids) == len(action.logprobs) <= 4
    # A single user message is read as is (the sub-goal agents' prompts, the paper's input strings).
    assert agent.render_prompt(_user("Task: x\nNext action:")) == "Task: x\nNext action:"
    with pytest.raises(ValueError, match="num_beams"):
        Seq2SeqAgent(TINY_SEQ2SEQ, num_beams=0)


def test_dataset_is_the_encoder_input_and_the_target_with_eos():
    _, tokenizer = build_tiny_seq2seq()
    dataset = seq2seq_dataset(tokenizer, _toy_conversations(), max_source_length=8, max_target_length=None)
    row = dataset[0]
    assert tokenizer.decode(row["input_ids"]) == TOY[0][0][-8:]  # a long prompt keeps its end
    assert row["labels"][-1] == tokenizer.eos_token_id
    assert tokenizer.decode(row["labels"][:-1]) == TOY[0][1]
    with pytest.raises(ValueError, match="must end with the assistant"):
        seq2seq_dataset(tokenizer, [[{"role": "user", "content": "x"}]], None, None)


def _toy_loss(path: str) -> float:
    """Mean cross-entropy of the toy targets under the model at ``path``."""
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    model = AutoModelForSeq2SeqLM.from_pretrained(resolve_model(path)).eval()
    tokenizer = AutoTokenizer.from_pretrained(resolve_model(path))
    rows = seq2seq_dataset(tokenizer, _toy_conversations(), None, None)
    with torch.no_grad():
        losses = [
            model(input_ids=torch.tensor([r["input_ids"]]), labels=torch.tensor([r["labels"]])).loss.item()
            for r in rows
        ]
    return sum(losses) / len(losses)


def test_seq2seq_policy_learns_a_toy_task(tmp_path):
    # Exact match of greedy and 5-beam decoding rises from 0 to all four prompts; the loss falls.
    before = Seq2SeqAgent(TINY_SEQ2SEQ, temperature=0.0, max_new_tokens=24)
    inputs = [_user(p) for p, _ in TOY]
    assert sum(a.text == t for a, (_, t) in zip(before.act(inputs), TOY, strict=True)) == 0
    config = SubgoalArgs(
        model=TINY_SEQ2SEQ, max_steps=200, per_device_train_batch_size=4, learning_rate=3e-3,
        lr_scheduler_type="linear", max_new_tokens=24, disable_tqdm=True, logging_steps=10, report_to="none",
        output_dir=str(tmp_path),
    )  # fmt: skip
    assert config.seq2seq
    stats = train_policy(config, _toy_conversations(), str(tmp_path / "toy"), learning_rate=3e-3, epochs=1.0)
    assert stats["model_type"] == "seq2seq" and stats["global_step"] == 200
    assert json.loads((tmp_path / "toy" / "subgoal_model.json").read_text()) == stats
    assert _toy_loss(str(tmp_path / "toy")) < 0.1 * _toy_loss(TINY_SEQ2SEQ)
    for num_beams in (1, 5):
        after = Seq2SeqAgent(str(tmp_path / "toy"), temperature=0.0, num_beams=num_beams, max_new_tokens=24)
        assert [a.text for a in after.act(inputs)] == [t for _, t in TOY]
    # Five beams: the best beam first, five distinct hypotheses.
    [beams] = Seq2SeqAgent(str(tmp_path / "toy"), num_beams=5, max_new_tokens=24).sample(inputs[:1], 5)
    assert beams[0].text == TOY[0][1] and len({b.text for b in beams}) == 5
    assert beams[0].logprobs is None  # beam tokens are no draws from the model (as HFAgent)


def test_resolve_model_maps_the_keyword():
    assert resolve_model(TINY_SEQ2SEQ).endswith(tuple("0123456789abcdef")) and "tiny-seq2seq-" in resolve_model(
        TINY_SEQ2SEQ
    )


def test_sampled_rows_depend_only_on_their_own_seed():
    agent = Seq2SeqAgent(TINY_SEQ2SEQ, temperature=1.0, max_new_tokens=12)
    one = AgentInput([{"role": "user", "content": "first"}], seed=11)
    two = AgentInput([{"role": "user", "content": "second"}], seed=22)
    together = [a.completion_ids for a in agent.act([one, two])]
    assert agent.act([two])[0].completion_ids == together[1]
    assert agent.act([AgentInput(two.messages, seed=23)])[0].completion_ids != together[1]


def test_lora_on_a_seq2seq_model_saves_a_merged_checkpoint(tmp_path):
    from transformers import AutoModelForSeq2SeqLM

    config = SubgoalArgs(
        model=TINY_SEQ2SEQ, use_lora=True, lora_target_modules="q,v", max_steps=2, per_device_train_batch_size=2,
        disable_tqdm=True, output_dir=str(tmp_path), report_to="none",
    )  # fmt: skip
    stats = train_policy(config, _toy_conversations(), str(tmp_path / "lora"), learning_rate=1e-2, epochs=1.0)
    assert stats["global_step"] == 2
    merged = AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "lora").state_dict()
    base = AutoModelForSeq2SeqLM.from_pretrained(resolve_model(TINY_SEQ2SEQ)).state_dict()
    assert not any("lora" in k for k in merged) and set(merged) == set(base)
    changed = {k for k in base if not torch.equal(base[k], merged[k])}
    assert changed and all(k.endswith((".q.weight", ".v.weight")) for k in changed)
