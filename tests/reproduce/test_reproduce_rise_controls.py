"""RISE's history-removed control: the rise arm's very rollouts, every attempt trained without its history."""

import json

import pytest

from mulligan.commands.reproduce import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def samples(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_history_removed_arm_trains_the_rise_samples_on_the_first_prompt_alone(tmp_path):
    out = tmp_path / "rep"
    argv = ["rise", "--preset", "tiny", "--seeds", "1", "--arms", "rise,rise_no_history", "--output_dir", str(out),
            "--torch_threads", "1", "--disable_tqdm"]  # fmt: skip
    assert main(argv) == 0
    models = next(out.rglob("rise-seed0")).parent
    rise = samples(models / "rise-seed0" / "iter-0" / "samples.jsonl")
    control = samples(models / "rise_no_history-seed0" / "iter-0" / "samples.jsonl")
    # The same attempts, turns and rewards (the rise arm's rollouts, not a new collection) ...
    key = [(s["rollout"], s["turn"], s["reward"], s["messages"][-1]) for s in rise]
    assert [(s["rollout"], s["turn"], s["reward"], s["messages"][-1]) for s in control] == key
    assert any(s["turn"] == 2 for s in rise)
    # ... but each attempt follows the first prompt alone, where RISE shows the earlier attempt.
    for with_history, without in zip(rise, control, strict=True):
        assert without["messages"] == [with_history["messages"][0], with_history["messages"][-1]]
        assert len(with_history["messages"]) == (2 if with_history["turn"] == 1 else 4)
    rise_summary = json.loads((models / "rise-seed0" / "rise_summary.json").read_text())
    control_summary = json.loads((models / "rise_no_history-seed0" / "rise_summary.json").read_text())
    assert control_summary["iterations"][0]["global_step"] == rise_summary["iterations"][0]["global_step"]
