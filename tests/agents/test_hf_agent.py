"""HFAgent on the offline tiny model: batching, log-probabilities, stop strings, seeding, every env."""

from __future__ import annotations

import copy
import importlib.util

import gymnasium
import pytest
import torch

import mulligan
from mulligan.agents.base import AgentInput
from mulligan.agents.context import LastAttempts, TokenBudget
from mulligan.agents.hf import HFAgent
from mulligan.agents.tiny import TinyModelConfig, build_tiny_model
from mulligan.envs.registration import ENVS
from mulligan.training.chat import PLAIN_FORMAT_STOP, render
from mulligan.training.rollout import EnvPool, collect_episodes

SMALL = TinyModelConfig(
    hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128, max_position_embeddings=4096
)


@pytest.fixture(scope="module")
def tiny():
    # A freshly initialised tiny model (std 0.02, tied embeddings) just repeats its last prompt token
    # under greedy decoding; larger random weights make greedy completions diverse, so the agreement
    # and stop-string tests below compare non-trivial sequences.
    model, tokenizer = build_tiny_model(SMALL)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() == 2:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.2)
    return model, tokenizer


def user(text):
    return AgentInput(messages=[{"role": "user", "content": text}])


PROMPTS = ["Hi", "What is 2 + 2? Answer in \\boxed{}.", "naïve 数学 🙂 " * 5, "a much longer prompt " * 12]


def forward_logprobs(model, action):
    ids = torch.tensor([action.prompt_ids + action.completion_ids])
    with torch.no_grad():
        logprobs = torch.log_softmax(model(ids).logits[0].float(), dim=-1)
    start = len(action.prompt_ids)
    targets = torch.tensor(action.completion_ids)
    return logprobs[start - 1 : -1].gather(1, targets[:, None]).squeeze(1)


def test_batched_and_one_at_a_time_greedy_generation_agree(tiny):
    agent = HFAgent(*tiny, temperature=0, max_new_tokens=12)
    batched = agent.act([user(p) for p in PROMPTS])
    single = [agent.act([user(p)])[0] for p in PROMPTS]
    small_batches = HFAgent(*tiny, temperature=0, max_new_tokens=12, batch_size=3).act([user(p) for p in PROMPTS])
    for b, s, m in zip(batched, single, small_batches, strict=True):
        assert b.completion_ids == s.completion_ids == m.completion_ids
        assert b.text == s.text
        assert b.prompt_ids == s.prompt_ids
        torch.testing.assert_close(torch.tensor(b.logprobs), torch.tensor(s.logprobs), atol=1e-4, rtol=0)


@pytest.mark.parametrize("temperature,top_p", [(0.0, 1.0), (1.0, 1.0), (0.7, 0.9)])
def test_logprobs_agree_with_a_separate_forward_pass(tiny, temperature, top_p):
    model, tokenizer = tiny
    agent = HFAgent(model, tokenizer, temperature=temperature, top_p=top_p, max_new_tokens=10, seed=1)
    groups = agent.sample([user(p) for p in PROMPTS], 2)
    for group in groups:
        for action in group:
            assert len(action.logprobs) == len(action.completion_ids) > 0
            # Log-probabilities are the model's own (temperature 1, no nucleus), whatever the sampling.
            reference = forward_logprobs(model, action)
            torch.testing.assert_close(torch.tensor(action.logprobs), reference, atol=1e-4, rtol=0)
            assert action.prompt_ids == tokenizer(action.prompt, add_special_tokens=False)["input_ids"]


def test_greedy_picks_the_most_likely_token(tiny):
    model, tokenizer = tiny
    action = HFAgent(model, tokenizer, temperature=0, max_new_tokens=6).act([user("Hello")])[0]
    ids = torch.tensor([action.prompt_ids + action.completion_ids])
    with torch.no_grad():
        logits = model(ids).logits[0]
    start = len(action.prompt_ids)
    assert logits[start - 1 : -1].argmax(-1).tolist() == action.completion_ids


def _ascii_stop(text, start=3):
    """A two-character printable-ASCII substring of ``text`` at or after ``start``."""
    for i in range(start, len(text) - 1):
        pair = text[i : i + 2]
        if all(32 < ord(c) < 127 for c in pair):
            return pair
    return None


def test_stop_strings_cut_the_text_and_end_generation_early(tiny):
    model, tokenizer = tiny
    agent = HFAgent(model, tokenizer, temperature=0, max_new_tokens=48)
    free = agent.act([user(p) for p in PROMPTS])
    stops = [_ascii_stop(a.text) for a in free]
    assert any(stops), "the greedy completions should contain some printable ASCII"
    inputs = [
        AgentInput(messages=[{"role": "user", "content": p}], stop=[s] if s else [])
        for p, s in zip(PROMPTS, stops, strict=True)
    ]
    cut = agent.act(inputs)
    for original, stopped, stop in zip(free, cut, stops, strict=True):
        if stop is None:  # no stop string: the row is untouched by the other rows' stops
            assert stopped.completion_ids == original.completion_ids
            continue
        position = original.text.index(stop)
        assert stopped.text == original.text[:position]
        assert stopped.metadata["finish_reason"] == "stop"
        # The completion ends with the token that completes the stop string, and no later.
        n = len(stopped.completion_ids)
        assert stopped.completion_ids == original.completion_ids[:n]
        assert stop in tokenizer.decode(stopped.completion_ids)
        assert stop not in tokenizer.decode(stopped.completion_ids[:-1])
        assert n < len(original.completion_ids)
        assert len(stopped.logprobs) == n


def test_agent_level_stop_and_per_input_stop_combine(tiny):
    model, tokenizer = tiny
    free = HFAgent(model, tokenizer, temperature=0, max_new_tokens=48).act([user(PROMPTS[1])])[0]
    stop = _ascii_stop(free.text)
    assert stop is not None
    agent = HFAgent(model, tokenizer, temperature=0, max_new_tokens=48, stop=[stop])
    assert agent.act([user(PROMPTS[1])])[0].text == free.text[: free.text.index(stop)]


def test_eos_ends_the_completion_and_is_kept_in_the_ids(tiny):
    model, tokenizer = tiny
    free = HFAgent(model, tokenizer, temperature=0, max_new_tokens=16).act([user("Hello")])[0]
    # Declare the 5th generated token an extra EOS token: generation must end right there.
    eos_model = copy.deepcopy(model)
    token = free.completion_ids[4]
    eos_model.generation_config.eos_token_id = [tokenizer.eos_token_id, token]
    first = free.completion_ids.index(token)
    action = HFAgent(eos_model, tokenizer, temperature=0, max_new_tokens=16).act([user("Hello")])[0]
    assert action.completion_ids == free.completion_ids[: first + 1]
    assert action.metadata["finish_reason"] == "eos"
    assert action.text == tokenizer.decode(free.completion_ids[:first], skip_special_tokens=True)


def test_same_seed_reproduces_samples_and_calls_keep_exploring(tiny):
    inputs = [user(p) for p in PROMPTS[:3]]

    def ids(groups):
        return [[a.completion_ids for a in g] for g in groups]

    first = HFAgent(*tiny, temperature=1.0, max_new_tokens=8, seed=7)
    second = HFAgent(*tiny, temperature=1.0, max_new_tokens=8, seed=7)
    other = HFAgent(*tiny, temperature=1.0, max_new_tokens=8, seed=8)
    call_one = ids(first.sample(inputs, 2))
    assert call_one == ids(second.sample(inputs, 2))
    assert call_one != ids(other.sample(inputs, 2))
    call_two = ids(first.sample(inputs, 2))
    assert call_two != call_one  # the call counter moves the seed on
    first.reset()
    assert ids(first.sample(inputs, 2)) == call_one
    # The global RNG is left alone by a seeded agent.
    torch.manual_seed(0)
    expected = torch.rand(1)
    torch.manual_seed(0)
    first.act(inputs)
    assert torch.equal(torch.rand(1), expected)


def test_sample_shapes_and_diversity(tiny):
    inputs = [user(p) for p in PROMPTS[:3]]
    groups = HFAgent(*tiny, temperature=1.0, max_new_tokens=12, seed=0).sample(inputs, 4)
    assert len(groups) == 3 and all(len(g) == 4 for g in groups)
    for group, item in zip(groups, inputs, strict=True):
        assert len({tuple(a.completion_ids) for a in group}) > 1
        assert all(a.prompt == groups[inputs.index(item)][0].prompt for a in group)
    greedy = HFAgent(*tiny, temperature=0, max_new_tokens=12).sample(inputs, 3)
    assert all(len({tuple(a.completion_ids) for a in g}) == 1 for g in greedy)
    with pytest.raises(ValueError, match="num_samples"):
        HFAgent(*tiny).sample(inputs, 0)
    assert HFAgent(*tiny).act([]) == []


def test_render_prompt_is_exactly_what_the_model_saw(tiny):
    model, tokenizer = tiny
    agent = HFAgent(
        model, tokenizer, temperature=0, max_new_tokens=4, system_prompt="Be terse.", context=LastAttempts(1)
    )
    messages = [
        {"role": "user", "content": "Task"},
        {"role": "assistant", "content": "try 1"},
        {"role": "user", "content": "wrong 1"},
        {"role": "assistant", "content": "try 2"},
        {"role": "user", "content": "wrong 2"},
    ]
    item = AgentInput(messages=messages)
    prompt = agent.render_prompt(item)
    assert prompt == (
        "<|im_start|>system\nBe terse.<|im_end|>\n<|im_start|>user\nTask<|im_end|>\n"
        "<|im_start|>assistant\ntry 2<|im_end|>\n<|im_start|>user\nwrong 2<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    action = agent.act([item])[0]
    assert action.prompt == prompt
    assert action.prompt_ids == tokenizer(prompt, add_special_tokens=False)["input_ids"]
    assert messages[0] == {"role": "user", "content": "Task"} and len(messages) == 5  # input untouched


def test_plain_format_without_a_chat_template(tiny):
    model, tokenizer = tiny
    plain_tokenizer = copy.deepcopy(tokenizer)
    plain_tokenizer.chat_template = None
    agent = HFAgent(model, plain_tokenizer, temperature=0, max_new_tokens=8, system_prompt="Sys")
    item = AgentInput(
        messages=[
            {"role": "user", "content": "Q"},
            {"role": "assistant", "content": "A"},
            {"role": "user", "content": "Q2"},
        ]
    )
    # The one plain format of mulligan.training.chat: what the trainer renders, the agent samples from.
    assert agent.render_prompt(item) == "System: Sys\nUser: Q\nAssistant: A<|im_end|>\nUser: Q2\nAssistant: "
    assert agent.render_prompt(item) == render(plain_tokenizer, agent.prepare_messages(item.messages), True)
    action = agent.act([item])[0]
    assert action.text == action.text.strip()
    assert PLAIN_FORMAT_STOP not in action.text


def test_token_budget_keeps_long_episodes_inside_the_context():
    short = TinyModelConfig(**{**SMALL.__dict__, "max_position_embeddings": 256})
    small_model, small_tokenizer = build_tiny_model(short)
    messages = [{"role": "user", "content": "task"}]
    for k in range(20):
        messages += [{"role": "assistant", "content": f"action {k}"}, {"role": "user", "content": "obs " * 10}]
    with pytest.raises(ValueError, match="TokenBudget"):
        HFAgent(small_model, small_tokenizer, max_new_tokens=8).act([AgentInput(messages=messages)])
    agent = HFAgent(small_model, small_tokenizer, max_new_tokens=8, context=TokenBudget(160))
    action = agent.act([AgentInput(messages=messages)])[0]
    assert len(action.prompt_ids) + 8 <= 256
    assert "action 19" in action.prompt and "action 0\n" not in action.prompt


def test_invalid_arguments_are_rejected_with_the_fix(tiny):
    model, tokenizer = tiny
    with pytest.raises(ValueError, match="temperature"):
        HFAgent(model, tokenizer, temperature=-1)
    with pytest.raises(ValueError, match="top_p"):
        HFAgent(model, tokenizer, top_p=0)
    with pytest.raises(ValueError, match="tokenizer"):
        HFAgent(model)
    with pytest.raises(ValueError, match="sequence of strings"):
        HFAgent(model, tokenizer, stop="\nObservation:")
    with pytest.raises(ValueError, match="dtype"):
        HFAgent(model, tokenizer, dtype="float33")
    with pytest.raises(ValueError, match="empty"):
        HFAgent(model, tokenizer).act([AgentInput(messages=[])])


def test_loads_from_a_saved_path_and_the_tiny_keyword(tmp_path, tiny):
    model, tokenizer = tiny
    model.save_pretrained(tmp_path / "m")
    tokenizer.save_pretrained(tmp_path / "m")
    from_path = HFAgent(str(tmp_path / "m"), temperature=0, max_new_tokens=6, device="cpu", dtype="float32")
    in_memory = HFAgent(model, tokenizer, temperature=0, max_new_tokens=6)
    assert from_path.act([user("hey")])[0].completion_ids == in_memory.act([user("hey")])[0].completion_ids
    keyword = HFAgent("tiny", temperature=0, max_new_tokens=4)
    assert keyword.uses_chat_template and keyword.act([user("hey")])[0].metadata["model"] == "tiny"


def _module_missing(env_id):
    entry = next(e for e in ENVS if e.id == env_id)
    return importlib.util.find_spec(entry.module) is None


def _skip_without_scienceworld(env_id):
    if env_id == "Mulligan/ScienceWorld-v0":
        from mulligan.envs.scienceworld import import_scienceworld

        try:
            import_scienceworld()
        except ImportError as err:
            pytest.skip(f"ScienceWorld's simulator is not installed here: {err}")


@pytest.mark.parametrize(
    "env_id",
    [
        pytest.param(env_id, marks=pytest.mark.scienceworld) if "ScienceWorld" in env_id else env_id
        for env_id in mulligan.env_ids()
    ],
)
def test_plays_every_registered_env(env_id, tiny):
    if _module_missing(env_id):
        pytest.skip(f"{env_id}: its module is not written yet (another issue is building it)")
    _skip_without_scienceworld(env_id)
    # Each ScienceWorld env starts a JVM (about 20 s here); one env and one episode show the agent copes.
    slow = "ScienceWorld" in env_id
    agent = HFAgent(
        *tiny, temperature=1.0, max_new_tokens=8, seed=0, context=TokenBudget(2000), stop=["\nObservation:"]
    )
    with EnvPool(env_id, 1 if slow else 2) as pool:
        trajectories = collect_episodes(pool, agent, 1 if slow else 4, max_turns=3, progress=False)
    for trajectory in trajectories:
        assert 1 <= len(trajectory.turns) <= 3 and 0.0 <= trajectory.score <= 1.0
        for turn in trajectory.turns:
            assert isinstance(turn.action, str) and isinstance(turn.reward, float)
            assert turn.completion_ids and len(turn.logprobs) == len(turn.completion_ids)


def test_seeded_inputs_sample_the_same_whatever_shares_their_batch(tiny):
    agent = HFAgent(*tiny, temperature=1.0, max_new_tokens=8, seed=0)
    inputs = [AgentInput(messages=[{"role": "user", "content": p}], seed=100 + k) for k, p in enumerate(PROMPTS)]
    together = agent.act(inputs)
    alone = [agent.act([x])[0] for x in reversed(inputs)][::-1]
    assert [a.completion_ids for a in together] == [a.completion_ids for a in alone]
    for a, b in zip(together, alone, strict=True):
        assert a.logprobs == pytest.approx(b.logprobs, abs=1e-4)
    reseeded = agent.act([AgentInput(messages=inputs[0].messages, seed=7)])[0]
    assert len({tuple(a.completion_ids) for a in [together[0], reseeded]}) == 2  # the seed decides the draw
    samples = agent.sample(inputs[:2], 3)
    assert samples[1][2].completion_ids == agent.sample(inputs[1:2], 3)[0][2].completion_ids
    assert len({tuple(a.completion_ids) for a in samples[0]}) > 1


def test_a_model_collection_does_not_depend_on_the_batch(tiny):
    # A resumed collection runs the remaining episodes in other batches; with per-episode seeds
    # its trajectories are those of an uninterrupted run.
    from mulligan.training.rollout import collect_episodes

    def run(num_envs):
        agent = HFAgent(*tiny, temperature=1.0, max_new_tokens=6)
        return collect_episodes(
            "Mulligan/Echo-v0", agent, 6, env_kwargs={"max_attempts": 2}, num_envs=num_envs, seed=4, progress=False
        )

    wide, narrow = run(6), run(1)
    for a, b in zip(wide, narrow, strict=True):
        assert [t.completion_ids for t in a.turns] == [t.completion_ids for t in b.turns]
        assert a.messages == b.messages


def _rebuilt_prompt(tokenizer, item, action):
    """The prompt a trainer renders from the recorded context of ``action`` on ``item``."""
    assert action.context is not None, "a wrapper that rewrites the conversation must record it"
    return render(tokenizer, action.context.shown(item.messages), add_generation_prompt=True)


def test_wrappers_record_exactly_what_the_inner_model_saw(tiny):
    """NAT's prompt, the flat and the hierarchical agents rewrite the conversation; the record rebuilds it."""
    from mulligan.agents.flat import FlatAgent
    from mulligan.agents.hierarchical import HierarchicalAgent
    from mulligan.agents.nat_prompt import NATPromptAgent

    model, tokenizer = tiny

    def policy(**kwargs):
        return HFAgent(model, tokenizer, temperature=1.0, max_new_tokens=6, system_prompt="Be terse.", **kwargs)

    # NAT: the task message shown as the NAT opening, then the attempts (some dropped by a budget).
    retries = AgentInput(
        messages=[{"role": "user", "content": "Solve: 2 + 2"}, {"role": "assistant", "content": "5"},
                  {"role": "user", "content": "Wrong, try again."}, {"role": "assistant", "content": "3"},
                  {"role": "user", "content": "Wrong again."}],
        task={"question": "What is 2 + 2?"}, seed=7,
    )  # fmt: skip
    for window in (None, LastAttempts(1), TokenBudget(60, per_message_overhead=4)):
        nat = NATPromptAgent(policy(), domain="math", context=window)
        action = nat.act([retries])[0]
        assert _rebuilt_prompt(tokenizer, retries, action) == action.prompt
        # The window applies to the env's conversation: NAT's opening is always whole.
        assert "Solve: 2 + 2" not in action.prompt and "What is 2 + 2?" in action.prompt
        assert ("<|im_start|>assistant\n5<|im_end|>" in action.prompt) == (window is None)
        for sample in nat.sample([retries], 2)[0]:
            assert _rebuilt_prompt(tokenizer, retries, sample) == sample.prompt
    # Flat and hierarchical: the latest observation shown as the rendered step prompt, nothing else.
    env = gymnasium.make("Mulligan/MiniScience-v0")
    observation, info = env.reset(seed=0)
    messages = [{"role": "user", "content": observation}]
    observation, _, _, _, info = env.step("look around")
    messages += [{"role": "assistant", "content": "look around"}, {"role": "user", "content": observation}]
    step = AgentInput(messages=messages, task=env.unwrapped.task, info=info, seed=3)
    for agent in (FlatAgent(policy()), HierarchicalAgent(policy(), policy())):
        action = agent.act([step])[0]
        assert action.completion_ids, "the action comes from the model"
        assert _rebuilt_prompt(tokenizer, step, action) == action.prompt
        assert action.context.spans == ((2, 3),) and action.context.system_prompt == "Be terse."
    env.close()


# ----------------------------------------------------------------------------------- prefill and beams
PRIMER = "- Output: The old lighthouse"


def primed(text, prefix=PRIMER):
    return AgentInput(messages=[{"role": "user", "content": text}], info={"response_prefix": prefix})


def test_prefill_response_starts_the_answer_with_the_primer_and_returns_the_continuation(tiny):
    model, tokenizer = tiny
    agent = HFAgent(model, tokenizer, temperature=0, max_new_tokens=8, prefill_response=True)
    action = agent.act([primed("Finish the story.")])[0]
    # Known answer: the chat template's prompt with its generation prompt, then the primer.
    expected = "<|im_start|>user\nFinish the story.<|im_end|>\n<|im_start|>assistant\n- Output: The old lighthouse"
    assert action.prompt == expected == agent.render_prompt(primed("Finish the story."))
    assert action.prefill == PRIMER
    assert action.prompt_ids == tokenizer(expected, add_special_tokens=False)["input_ids"]
    # The action is what the model writes after the primer: transformers' greedy continuation of it.
    with torch.no_grad():
        out = model.generate(
            torch.tensor([action.prompt_ids]), max_new_tokens=8, do_sample=False, pad_token_id=tokenizer.pad_token_id
        )
    continuation = out[0, len(action.prompt_ids) :].tolist()
    assert action.completion_ids == continuation[: len(action.completion_ids)]
    assert action.text == tokenizer.decode(action.completion_ids, skip_special_tokens=True)
    assert not action.text.startswith(PRIMER)
    # Without the option, or without the key, the answer is not prefilled.
    unprimed = HFAgent(model, tokenizer, temperature=0, max_new_tokens=8).act([primed("Finish the story.")])[0]
    assert unprimed.prefill is None and unprimed.prompt.endswith("<|im_start|>assistant\n")
    no_key = agent.act([user("Finish the story.")])[0]
    assert no_key.prefill is None and no_key.prompt == unprimed.prompt


def test_prefill_in_the_plain_format_keeps_the_continuations_leading_space(tiny):
    model, tokenizer = tiny
    plain = copy.deepcopy(tokenizer)
    plain.chat_template = None
    agent = HFAgent(model, plain, temperature=1.0, seed=3, max_new_tokens=6, prefill_response=True)
    action = agent.act([primed("Go on.", prefix="Word:")])[0]
    assert action.prompt == "User: Go on.\nAssistant: Word:"
    decoded = plain.decode(action.completion_ids, skip_special_tokens=True).split(PLAIN_FORMAT_STOP)[0]
    assert action.text == decoded.rstrip()  # not lstripped: the text continues "Word:" as written


def test_prefill_response_rejects_a_non_bool_and_a_non_string_prefix(tiny):
    with pytest.raises(ValueError, match="prefill_response"):
        HFAgent(*tiny, prefill_response="yes")
    agent = HFAgent(*tiny, temperature=0, max_new_tokens=2, prefill_response=True)
    with pytest.raises(ValueError, match="response_prefix"):
        agent.act([primed("x", prefix=["- Output:"])])


def test_beam_search_is_transformers_beam_search_and_deterministic(tiny):
    from transformers import GenerationConfig

    model, tokenizer = tiny
    agent = HFAgent(model, tokenizer, num_beams=5, max_new_tokens=10, temperature=1.0)
    inputs = [user(p) for p in PROMPTS[:3]]
    actions = agent.act(inputs)
    assert [a.completion_ids for a in agent.act(inputs)] == [a.completion_ids for a in actions]  # no randomness
    config = GenerationConfig(
        num_beams=5,
        do_sample=False,
        max_new_tokens=10,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=agent.eos_token_ids,
    )
    greedy = HFAgent(model, tokenizer, temperature=0, max_new_tokens=10).act(inputs)
    for action, item, _plain in zip(actions, inputs, greedy, strict=True):
        with torch.no_grad():
            out = model.generate(torch.tensor([action.prompt_ids]), generation_config=config)
        reference = out[0, len(action.prompt_ids) :].tolist()
        assert action.completion_ids == reference[: len(action.completion_ids)]
        assert action.logprobs is None and action.text == tokenizer.decode(
            action.completion_ids, skip_special_tokens=True
        )
        assert action.prompt == agent.render_prompt(item)
    assert any(a.completion_ids != g.completion_ids for a, g in zip(actions, greedy, strict=True))
    samples = agent.sample(inputs[:1], 3)[0]
    assert all(s.completion_ids == actions[0].completion_ids for s in samples)
    with pytest.raises(ValueError, match="num_beams"):
        HFAgent(*tiny, num_beams=0)


def test_load_agent_gives_encoder_decoders_the_seq2seq_agent():
    from mulligan.agents.hf import HFAgent
    from mulligan.agents.loading import load_agent
    from mulligan.agents.seq2seq import Seq2SeqAgent

    assert isinstance(load_agent("tiny-seq2seq", temperature=0.0, max_new_tokens=4), Seq2SeqAgent)
    assert isinstance(load_agent("tiny", temperature=0.0, max_new_tokens=4), HFAgent)
    with pytest.raises(ValueError, match="encoder-decoder model; its agent does not take"):
        load_agent("tiny-seq2seq", prefill_response=True)
