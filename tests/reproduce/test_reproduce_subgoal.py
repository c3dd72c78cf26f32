"""`mulligan reproduce subgoal`: its mechanism check includes the executor under oracle sub-goals."""

from __future__ import annotations

import pytest

from mulligan.agents.hf import HFAgent
from mulligan.agents.seq2seq import Seq2SeqAgent
from mulligan.reproduce import subgoal
from mulligan.reproduce.protocol import PhaseTimer

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_cell_policies_follow_the_checkpoints_architecture():
    build = subgoal.cell_policy(dict(subgoal.PRESETS["tiny"]), seed=0, timer=PhaseTimer())
    assert isinstance(build("tiny").agent, HFAgent)
    assert isinstance(build("tiny-seq2seq").agent, Seq2SeqAgent)
    assert build("tiny").agent.temperature == 0.0


def test_hierarchical_cell_reports_the_executor_under_oracle_subgoals(tmp_path):
    settings = dict(subgoal.PRESETS["tiny"])
    arm = subgoal.PROTOCOL.arm("hierarchical")
    result = subgoal.run_cell(arm, 0, "default", settings=settings, workdir=str(tmp_path), timer=PhaseTimer())
    assert len(result.tasks) == settings["test_tasks"]
    assert set(result.mechanism) == {
        "planner_exact_match",
        "planner_exact_match_macro",
        "executor_exact_match_oracle_subgoals",
        "oracle_subgoals_score",
        "oracle_subgoals_success",
    }
    assert all(0.0 <= value <= 1.0 for value in result.mechanism.values())
    assert "oracle" in subgoal.PROTOCOL.mechanism
    flat = subgoal.run_cell(
        subgoal.PROTOCOL.arm("flat"), 0, "default", settings=settings, workdir=str(tmp_path), timer=PhaseTimer()
    )
    assert flat.mechanism == {}  # the models were trained once for the seed and reused
