"""Trajectories as Hugging Face datasets, reading them back, and the papers' released data formats."""

import json
import subprocess
import sys
from pathlib import Path

import datasets
import gymnasium
import pytest

import mulligan  # noqa: F401 - registers the env ids
from mulligan.agents.base import Action, Agent
from mulligan.agents.context import LastAttempts
from mulligan.agents.testing import EchoOracle, echo_target
from mulligan.training.datasets import (
    COLUMNS,
    export_dataset,
    from_dataset,
    load_natinstruct,
    load_trajectory_source,
    natinstruct_to_trajectory,
    parse_export_target,
    to_dataset,
)
from mulligan.training.nat import build_nat_examples
from mulligan.training.rollout import collect_episodes
from mulligan.training.trajectory import TrajectoryFileError, TrajectoryStore, load_trajectories

FIXTURES = Path(__file__).parents[1] / "fixtures"
NAT_GSM8K = FIXTURES / "natinstruct_gsm8k_sample.json"
NAT_GSM8K_QUESTIONS = FIXTURES / "natinstruct_gsm8k_questions.json"
NAT_HOTPOTQA = FIXTURES / "natinstruct_hotpotqa_rows.jsonl"
NAT_HOTPOTQA_QUESTIONS = FIXTURES / "natinstruct_hotpotqa_questions.jsonl"


class WindowedEchoAgent(Agent):
    """Echo-v0 with a system prompt and a context window; wrong on odd calls; records token ids."""

    name = "windowed-echo"

    def __init__(self, system_prompt=None, context=None):
        self.system_prompt, self.context, self.calls = system_prompt, context, 0

    def act(self, inputs):
        actions = []
        for item in inputs:
            self.calls += 1
            _, record = self.prepare_context(item.messages)
            text = "nope" if self.calls % 2 else echo_target(item)
            ids = [ord(c) for c in text]
            actions.append(Action(text, context=record, completion_ids=ids, logprobs=[-0.1 * (k + 1) for k in ids]))
        return actions


@pytest.fixture(scope="module")
def store_path(tmp_path_factory):
    """A store with trajectories of every kind: system prompt + dropped context, plain, token ids, none."""
    path = tmp_path_factory.mktemp("store") / "mixed.jsonl"
    with TrajectoryStore(path) as store:
        windowed = WindowedEchoAgent(system_prompt="Answer with the word only.", context=LastAttempts(1))
        collect_episodes("Mulligan/Echo-v0", windowed, 4, env_kwargs={"max_attempts": 3}, store=store, progress=False)
        collect_episodes("Mulligan/Echo-v0", WindowedEchoAgent(), 2, env_kwargs={"max_attempts": 3}, seed=7,
                         store=store, progress=False)  # fmt: skip
        collect_episodes("Mulligan/Echo-v0", EchoOracle(), 2, seed=3, store=store, progress=False)
    return path


def test_the_fixture_store_covers_dropped_context_system_prompts_and_token_ids(store_path):
    trajectories = load_trajectories(store_path)
    assert any(not t.sees_full_history for t in trajectories)
    assert any(t.agent_system_prompt for t in trajectories) and any(t.agent_system_prompt is None for t in trajectories)
    assert any(t.turns[0].completion_ids for t in trajectories) and any(
        not t.turns[0].completion_ids for t in trajectories
    )


def test_round_trip_trajectory_dataset_trajectory(store_path):
    trajectories = load_trajectories(store_path)
    dataset = to_dataset(trajectories)
    assert dataset.column_names == list(COLUMNS) and len(dataset) == len(trajectories)
    assert from_dataset(dataset) == trajectories


def test_columns_are_usable_without_mulligan(store_path):
    """messages + context rebuild each turn's prompt exactly; the mask marks the agent's messages."""
    trajectories = load_trajectories(store_path)
    dataset = to_dataset(trajectories)
    for trajectory, row in zip(trajectories, dataset, strict=True):
        assert row["rewards"] == trajectory.rewards and row["success"] == trajectory.success
        assert row["score"] == trajectory.score and json.loads(row["task"]) == trajectory.task
        assert row["messages"] == trajectory.conversation()
        assert row["assistant_mask"] == [m["role"] == "assistant" for m in trajectory.conversation()]
        assert row["sees_full_history"] == trajectory.sees_full_history
        positions = [i for i, m in enumerate(row["messages"]) if m["role"] == "assistant"]
        for turn, spans in enumerate(row["context"]):
            before = row["messages"][: positions[turn]]
            prompt = before if spans is None else [m for a, b in spans for m in row["messages"][a:b]]
            assert prompt == trajectory.prompt_messages(turn)
    windowed = next(r for r in dataset if not r["sees_full_history"])
    assert [0, 1] in windowed["context"][-1]  # the system prompt's span leads a windowed context


def test_load_trajectory_source_reads_a_store_a_saved_folder_and_the_dir_prefix(store_path, tmp_path):
    trajectories = load_trajectories(store_path)
    where = export_dataset(to_dataset(trajectories), f"dir:{tmp_path / 'ds'}")
    assert Path(where) == tmp_path / "ds"
    assert load_trajectory_source(store_path) == trajectories
    assert load_trajectory_source(str(tmp_path / "ds")) == trajectories
    assert load_trajectory_source(f"dir:{tmp_path / 'ds'}") == trajectories
    # What save_to_disk wrote is an ordinary dataset.
    assert datasets.load_from_disk(str(tmp_path / "ds"))["success"] == [t.success for t in trajectories]


def test_a_saved_dataset_dict_and_store_form_rows_are_read(store_path, tmp_path):
    trajectories = load_trajectories(store_path)
    datasets.DatasetDict({"train": to_dataset(trajectories)}).save_to_disk(str(tmp_path / "dict"))
    assert load_trajectory_source(tmp_path / "dict") == trajectories
    # A dataset of the store's own rows (datasets.load_dataset("json") on the store, then saved).
    raw = datasets.load_dataset("json", data_files=str(store_path), split="train", cache_dir=str(tmp_path / "cache"))
    raw.save_to_disk(str(tmp_path / "raw"))
    assert load_trajectory_source(tmp_path / "raw") == trajectories


@pytest.fixture
def local_hub(tmp_path, monkeypatch):
    """A folder laid out as a hub dataset repository (``data/{split}-00000-of-00001.parquet``).

    ``datasets.load_dataset`` reads such a folder through the same builder as a hub repository,
    so ``hf:<folder>`` exercises the ``hf:`` path offline. The datasets cache goes to ``tmp_path``.
    """
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")
    repo = tmp_path / "repo"
    (repo / "data").mkdir(parents=True)

    def publish(dataset, split):
        dataset.to_parquet(str(repo / "data" / f"{split}-00000-of-00001.parquet"))
        return repo

    return publish


def test_hf_specs_read_an_export_as_the_hub_serves_it(store_path, local_hub):
    trajectories = load_trajectories(store_path)
    repo = local_hub(to_dataset(trajectories), "train")
    assert load_trajectory_source(f"hf:{repo}") == trajectories  # default split: train
    assert load_trajectory_source(f"hf:{repo}::train") == trajectories


def test_natinstruct_hub_splits_are_read_through_hf_specs(local_hub):
    """The hub's NATInstruct splits are named like gsm8k_positive; the split names the task."""
    rows = [json.loads(line) for line in NAT_HOTPOTQA.read_text().splitlines()]
    repo = local_hub(datasets.Dataset.from_list(rows), "hotpotqa_negative")
    river, bridge = load_trajectory_source(f"hf:{repo}::hotpotqa_negative", questions=NAT_HOTPOTQA_QUESTIONS)
    assert (river.env_id, river.score, river.terminated) == ("Mulligan/HotpotQA-v0", pytest.approx(2 / 3), True)
    assert (bridge.terminated, "pred" in bridge.turns[-1].info) == (False, False)
    assert river == load_trajectory_source(NAT_HOTPOTQA, questions=NAT_HOTPOTQA_QUESTIONS)[0]


def test_bad_sources_fail_with_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no trajectory source at .*hf:NAME"):
        load_trajectory_source(tmp_path / "missing.jsonl")
    (tmp_path / "plain").mkdir()
    with pytest.raises(ValueError, match="not a dataset written by save_to_disk"):
        load_trajectory_source(tmp_path / "plain")
    with pytest.raises(ValueError, match=r"write .hf:org/name::test."):
        load_trajectory_source("hf:org/name:test")
    datasets.Dataset.from_list([{"question": "q", "answer": "a"}]).save_to_disk(str(tmp_path / "other"))
    with pytest.raises(ValueError, match=r"not trajectories \(columns \['answer', 'question'\]\)"):
        load_trajectory_source(tmp_path / "other")
    with pytest.raises(ValueError, match="read a pushed dataset back as 'hf:my-org/data'"):
        load_trajectory_source("hub:my-org/data")
    (tmp_path / "strings.json").write_text('["a", "b"]')
    with pytest.raises(ValueError, match="record 0 is a str, not a JSON object"):
        load_trajectory_source(tmp_path / "strings.json")
    corrupt = tmp_path / "corrupt.jsonl"
    corrupt.write_text('{"turns": [], "messages": []}\n{oops\n{"turns": [], "messages": []}\n')
    with pytest.raises(TrajectoryFileError, match="line 1"):
        load_trajectory_source(corrupt)


def test_a_corrupt_row_is_named_and_skipped_only_on_request(store_path, tmp_path):
    rows = to_dataset(load_trajectories(store_path)).to_list()
    rows[1]["rewards"] = rows[1]["rewards"] + [1.0]  # one reward too many
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "bad"))
    with pytest.raises(ValueError, match=r"row 1: turns \(\d+\), rewards \(\d+\)"):
        load_trajectory_source(tmp_path / "bad")
    with pytest.warns(UserWarning, match="row 1"):
        kept = load_trajectory_source(tmp_path / "bad", skip_corrupt=True)
    assert len(kept) == len(rows) - 1


def test_export_targets_parse_and_bad_ones_say_the_grammar():
    assert (parse_export_target("dir:out/x").kind, parse_export_target("dir:out/x").location) == ("dir", "out/x")
    assert str(parse_export_target("hub:my-org/teacher.v1")) == "hub:my-org/teacher.v1"
    for bad in ("out/x", "dir:", "hub:name-without-org", "hub:a/b/c", "hub:org/", "s3:bucket/x", "hub:../x"):
        with pytest.raises(ValueError, match="bad export target"):
            parse_export_target(bad)


def test_an_export_without_a_token_stops_before_any_upload(store_path, tmp_path, monkeypatch):
    """The hub path up to the push: without a token it fails with the fix, offline."""
    from huggingface_hub import constants

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "no-tokens"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    with pytest.raises(ValueError, match="no Hugging Face token; run `hf auth login` or set HF_TOKEN"):
        export_dataset(to_dataset(load_trajectories(store_path)), "hub:my-org/trajectories")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ValueError, match="HF_HUB_OFFLINE is set"):
        export_dataset(to_dataset(load_trajectories(store_path)), "hub:my-org/trajectories")


def test_a_store_finalizer_is_silent_at_interpreter_shutdown(tmp_path):
    """A store still referenced when the interpreter exits must not print 'Exception ignored'.

    With ``contextlib.suppress`` in ``__del__``, the module global ``contextlib`` could already be
    None during shutdown (seen with a dataset alive at exit).
    """
    script = (
        "import mulligan\n"
        "from mulligan.agents.testing import EchoOracle\n"
        "from mulligan.training.rollout import collect_episodes\n"
        "from mulligan.training.trajectory import TrajectoryStore\n"
        "from mulligan.training.datasets import to_dataset\n"
        f"store = TrajectoryStore({str(tmp_path / 's.jsonl')!r})\n"
        "trajectories = collect_episodes('Mulligan/Echo-v0', EchoOracle(), 2, store=store, progress=False)\n"
        "dataset = to_dataset(trajectories)\n"
    )
    result = subprocess.run(
        [sys.executable, "-"], input=script, capture_output=True, text=True, timeout=240, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "Exception ignored" not in result.stderr, result.stderr


# ------------------------------------------------------------------------------------- NATInstruct
def test_natinstruct_records_become_trajectories_with_the_joined_question():
    trajectories = load_trajectory_source(NAT_GSM8K, questions=NAT_GSM8K_QUESTIONS)
    solved, wrong, empty = trajectories
    assert solved.env_id == "Mulligan/MathReAct-v0" and solved.task["question"].startswith("Tom has 3 boxes")
    assert solved.task["answer"].endswith("#### 7")  # the question file's record is the task
    assert solved.messages[0] == {"role": "user", "content": "Question: " + solved.task["question"]}
    assert [m["role"] for m in solved.messages] == ["user", "assistant", "user", "assistant", "user", "assistant"]
    assert [t.observation for t in solved.turns] == ["Question: " + solved.task["question"], "Observation: 12",
                                                     "Observation: 7"]  # fmt: skip
    assert solved.final_observation == "Observation: Episode finished"
    assert (solved.success, solved.score, solved.rewards, solved.terminated) == (True, 1.0, [0.0, 0.0, 1.0], True)
    assert solved.turns[-1].info == {"reward": True, "gt": "7", "pred": "7", "success": True, "score": 1.0}
    assert (wrong.success, wrong.score, len(wrong.turns), wrong.turns[0].action.endswith("finish[28]")) == (
        False, 0.0, 1, True,
    )  # fmt: skip
    # A record whose model never produced a valid action: kept (the official sampler can draw it), no turns.
    assert (empty.turns, empty.success, empty.terminated, empty.truncated) == ([], False, False, True)
    assert [t.metadata["natinstruct_source"] for t in trajectories] == ["0.2", "0.5", "0.7"]


def test_natinstruct_feeds_the_nat_trainer_with_the_official_prompts():
    trajectories = load_natinstruct(NAT_GSM8K, questions=NAT_GSM8K_QUESTIONS)
    examples = build_nat_examples(trajectories, method="nat", domain="math", negative_ratio=2.0)
    positive, negative = examples[0], examples[1]
    assert positive["label"] == "positive" and negative["label"] == "negative"
    # The official NAT opening (instruction, acknowledgement, question prompt), then the record's turns.
    question = trajectories[0].task["question"]
    assert positive["messages"][2]["content"].startswith(f"Question: {question}")
    assert positive["messages"][2]["content"].endswith("to solve the problem correctly.")
    assert negative["messages"][2]["content"].endswith("But incorrectly solve the problem.")
    learned = [positive["messages"][k]["content"] for k in positive["learn_turns"]]
    assert learned == [t.action for t in trajectories[0].turns]


def test_natinstruct_negatives_are_the_ones_the_official_sampler_draws():
    """Records keep file order (empty ones included), so seed 42 draws the official negatives.

    The official loader takes ``random.seed(42); random.sample(negatives, neg_num)``.
    """
    import random

    raw = [r for r in json.loads(NAT_GSM8K.read_text()) if not r["info"]["reward"]]
    trajectories = load_natinstruct(NAT_GSM8K, questions=NAT_GSM8K_QUESTIONS)
    for neg_num in (1, 2):
        random.seed(42)
        official = random.sample(raw, neg_num)
        examples = build_nat_examples(trajectories, method="nat", domain="math", neg_num=neg_num, seed=42)
        negatives = [e for e in examples if e["label"] == "negative"]
        wanted = [(f"natinstruct-gsm8k-{r['id']}", len(r["conversations"]) // 2) for r in official]
        assert [(e["task_id"], len(e["learn_turns"])) for e in negatives] == wanted


def test_hub_style_natinstruct_rows_read_f1_and_ignore_missing_keys():
    """Parquet splits give every row every key (None where a record lacks it)."""
    river, bridge = load_trajectory_source(NAT_HOTPOTQA, questions=NAT_HOTPOTQA_QUESTIONS)
    assert river.env_id == "Mulligan/HotpotQA-v0" and river.score == pytest.approx(2 / 3)
    assert river.success is False and river.terminated is True
    # fine_grained NAT reads the F1 through score: 2/3 is "[Mostly Correct]" in the official four classes.
    assert (
        build_nat_examples([river], method="fine_grained", domain="hotpotqa", neg_num=1)[0]["label"]
        == "[Mostly Correct]"
    )
    assert (bridge.terminated, bridge.score, "pred" in bridge.turns[-1].info) == (False, 0.0, False)
    assert bridge.final_observation == "Observation: #1: No results."


def test_natinstruct_without_a_question_or_with_a_learned_observation_is_refused():
    record = json.loads(NAT_GSM8K.read_text())[0]
    with pytest.raises(ValueError, match=r"record 0 .*has no question: pass the task's question file"):
        load_trajectory_source(NAT_GSM8K)
    with pytest.raises(ValueError, match="say which NATInstruct task"):
        load_natinstruct([record], questions={"0": "q"})
    learned_observation = {**record, "conversations": [dict(m, loss=True) for m in record["conversations"]]}
    with pytest.raises(ValueError, match="user message has loss=True"):
        natinstruct_to_trajectory(learned_observation, domain="gsm8k", question="q")
    with_question = natinstruct_to_trajectory({**record, "question": "How many pens?"}, domain="gsm8k")
    assert with_question.task == {"question": "How many pens?"}


def test_natinstruct_exports_and_trains_nat_from_the_saved_folder(tmp_path):
    """NATInstruct -> exported folder -> load_trajectory_source -> one NAT step on the tiny model."""
    from mulligan.training.nat import NATArgs, train_nat

    trajectories = load_natinstruct(NAT_GSM8K, questions=NAT_GSM8K_QUESTIONS)
    export_dataset(to_dataset(trajectories), f"dir:{tmp_path / 'nat-ds'}")
    read_back = load_trajectory_source(f"dir:{tmp_path / 'nat-ds'}")
    assert read_back == trajectories
    config = NATArgs(output_dir=str(tmp_path / "run"), max_steps=1, save_steps=0, disable_tqdm=True,
                     per_device_train_batch_size=4, report_to="none")  # fmt: skip
    summary = train_nat(config, read_back)
    assert (summary["positives"], summary["negatives"], summary["global_step"]) == (1, 2, 1)


# ------------------------------------------------------------------------------------------- RISE
def test_rise_gsm8k_and_math_lines_are_what_math_env_reads(tmp_path):
    """RISE's data/gsm8k/*.jsonl ({question, answer}) and data/math/*.jsonl ({problem, level, type,
    solution}) are plain GSM8K and MATH lines: Mulligan/Math-v0 reads them as they are."""
    gsm8k = tmp_path / "gsm8k.jsonl"
    gsm8k.write_text(json.dumps({"question": "What is 6 times 7?", "answer": "6 * 7 = <<6*7=42>>42\n#### 42"}) + "\n")
    math = tmp_path / "math.jsonl"
    line = {"problem": "What is $2^5$?", "level": "Level 1", "type": "Algebra", "solution": "$2^5 = \\boxed{32}$."}
    math.write_text(json.dumps(line) + "\n")
    for path, final, question in ((gsm8k, "42", "What is 6 times 7?"), (math, "32", "What is $2^5$?")):
        env = gymnasium.make("Mulligan/Math-v0", dataset=str(path))
        env.reset(seed=0)
        task = env.unwrapped.task
        assert (task["question"], task["final_answer"]) == (question, final)
        _, reward, _, _, info = env.step(f"The answer is \\boxed{{{final}}}.")
        assert info["success"] and reward > 0
        env.close()
    assert env.unwrapped.task["level"] == "Level 1"  # MATH's extra fields are kept


# ------------------------------------------------------------------- trainers read sources back
def test_nat_args_read_an_exported_folder_through_the_trajectories_flag(tmp_path):
    """``--trajectories dir:PATH`` is read by load_trajectory_source (not only JSONL stores)."""
    from mulligan.training.nat import NATArgs, train_nat

    trajectories = load_natinstruct(NAT_GSM8K, questions=NAT_GSM8K_QUESTIONS)
    export_dataset(to_dataset(trajectories), f"dir:{tmp_path / 'nat-ds'}")
    config = NATArgs(trajectories=f"dir:{tmp_path / 'nat-ds'}", output_dir=str(tmp_path / "run"), max_steps=1,
                     save_steps=0, disable_tqdm=True, per_device_train_batch_size=4, report_to="none")  # fmt: skip
    summary = train_nat(config)
    assert (summary["positives"], summary["negatives"], summary["global_step"]) == (1, 2, 1)


def test_rise_takes_its_first_rollouts_from_a_source(tmp_path):
    """``--rollouts`` replaces iteration 0's collection with recorded rollouts (e.g. an export)."""
    from mulligan.training.rise import RISEArgs, train_rise

    store = tmp_path / "rollouts.jsonl"
    with TrajectoryStore(store) as writer:
        for t in collect_episodes("Mulligan/Echo-v0", EchoOracle(), 4, env_kwargs={"max_attempts": 2}, progress=False):
            writer.append(t)
    export_dataset(to_dataset(load_trajectories(store)), f"dir:{tmp_path / 'rollouts'}")
    config = RISEArgs(env_id="Mulligan/Echo-v0", rollouts=f"dir:{tmp_path / 'rollouts'}",
                      output_dir=str(tmp_path / "rise"), num_tasks=4, max_attempts=2, max_steps=1,
                      per_device_train_batch_size=4, max_new_tokens=4, num_envs=2, disable_tqdm=True,
                      save_steps=0)  # fmt: skip
    summary = train_rise(config, improver=EchoOracle())
    assert summary["iterations"][0]["rollouts"] == 4
    assert not (tmp_path / "rise" / "iter-0" / "rollouts.jsonl").exists()  # nothing was collected


def test_subgoal_trains_on_gold_paths_from_a_source(tmp_path):
    """``--gold`` reads recorded gold paths instead of playing the oracle."""
    from mulligan.agents.teachers.science import ScienceOracle
    from mulligan.training.subgoal import SubgoalArgs, train_subgoal

    store = tmp_path / "gold.jsonl"
    with TrajectoryStore(store) as writer:
        for t in collect_episodes("Mulligan/MiniScience-v0", ScienceOracle(), 2, progress=False):
            writer.append(t)
    config = SubgoalArgs(gold=str(store), output_dir=str(tmp_path / "sg"), num_gold=99, max_steps=1,
                         per_device_train_batch_size=2, max_length=1024, eval_episodes=0, train_flat=False,
                         shared_model=True, disable_tqdm=True, history_len=2)  # fmt: skip
    train_subgoal(config)
    assert json.loads((tmp_path / "sg" / "subgoal_summary.json").read_text())["gold_paths"] == 2
