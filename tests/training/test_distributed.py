"""Data-parallel training on 2 CPU processes: GRPO, PPO and NAT keep identical weights on every rank.

Each test starts ``accelerate launch`` with 2 processes over gloo (``ACCELERATE_USE_CPU=1
accelerate launch --multi_gpu --num_processes 2``; ``--cpu --num_processes 2`` would start one
process) running this file as a script: each rank trains a small tiny model for a step and writes
its weights and what it played; the test compares the ranks.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

#: Echo whose only target is "a", with partial credit: a warm-started model's groups differ.
ECHO_KWARGS = {"vocabulary": ["a"], "partial_credit": True}


# ----------------------------------------------------------------------------------- the ranks (subprocesses)
def _save_rank(workdir: Path, name: str, model, record: dict) -> None:
    import torch
    from accelerate import PartialState

    rank = PartialState().process_index
    torch.save({n: p.detach().cpu() for n, p in model.named_parameters()}, workdir / f"{name}-rank{rank}.pt")
    (workdir / f"{name}-rank{rank}.json").write_text(json.dumps({"rank": rank, **record}))


def run_grpo(workdir: Path, model_dir: str) -> None:
    """One GRPO step (single-turn Echo) under accelerate: TRL's data parallelism."""
    from mulligan.training.grpo import GRPOArgs, build_grpo_trainer

    args = GRPOArgs(
        model=model_dir,
        output_dir=str(workdir / "grpo"),
        max_steps=1,
        num_train_tasks=8,
        per_device_train_batch_size=4,
        num_generations=4,
        max_new_tokens=4,
        learning_rate=1e-2,
        env_kwargs=json.dumps(ECHO_KWARGS),
        disable_tqdm=True,
        report_to="none",
    )
    trainer = build_grpo_trainer(args)
    trainer.train()
    _save_rank(workdir, "grpo", trainer.model, {"processes": trainer.accelerator.num_processes})


def run_ppo(workdir: Path, model_dir: str) -> None:
    """Two PPO iterations (multi-turn Echo) under accelerate: mulligan's data parallelism."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mulligan.training.ppo import PPOArgs, PPOTrainer

    args = PPOArgs(
        output_dir=str(workdir / "ppo"),
        total_steps=2,
        episodes_per_step=8,
        mini_batch_size=4,
        ppo_epochs=1,
        max_new_tokens=4,
        learning_rate=1e-3,
        max_attempts=2,
        env_kwargs=json.dumps(ECHO_KWARGS),
        num_envs=4,
        save_steps=1,
        logging_steps=1,
        disable_tqdm=True,
        report_to="none",
    )
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    with PPOTrainer(args, model, tokenizer) as trainer:
        trainer.train()
        played = [t.task_id for t in trainer.collect(0)]  # this rank's share of iteration 0's tasks
        record = {
            "processes": trainer.processes.size,
            "played": played,
            "kl_coef": trainer.kl_controller.value,
            "history": trainer.history,
        }
        _save_rank(workdir, "ppo", trainer.policy, record)


def run_nat(workdir: Path, model_dir: str) -> None:
    """Two NAT steps (TRL's SFTTrainer) under accelerate: each rank a half of every batch."""
    import trl

    from mulligan.agents.testing import EchoOracle
    from mulligan.training.nat import NATArgs, train_nat
    from mulligan.training.rollout import collect_episodes

    # Observe the trainer train_nat builds (it is not returned): keep it when its training ends.
    trainers = []
    train = trl.SFTTrainer.train

    def train_and_keep(self, *args, **kwargs):
        trainers.append(self)
        return train(self, *args, **kwargs)

    trl.SFTTrainer.train = train_and_keep
    # Every rank collects the same 16 episodes (a deterministic oracle, seeded), as a launched run does.
    data = collect_episodes("Mulligan/Echo-v0", EchoOracle(wrong_every=3), 16, env_kwargs=ECHO_KWARGS, progress=False)
    config = NATArgs(
        model=model_dir,
        output_dir=str(workdir / "nat"),
        domain="math_cot",
        max_steps=2,
        per_device_train_batch_size=4,
        learning_rate=1e-2,
        save_steps=0,
        disable_tqdm=True,
        report_to="none",
    )
    summary = train_nat(config, data)
    trainer = trainers[0]
    record = {"processes": trainer.accelerator.num_processes, "global_step": summary["global_step"]}
    _save_rank(workdir, "nat", trainer.model, record)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    torch.set_num_threads(1)
    check, directory, model_path = sys.argv[1:]
    {"grpo": run_grpo, "ppo": run_ppo, "nat": run_nat}[check](Path(directory), model_path)
    sys.exit(0)


# ----------------------------------------------------------------------------------- the tests
import pytest  # noqa: E402 - the ranks above run without pytest
import torch  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def warm_model(tmp_path_factory) -> str:
    """A small tiny model that answers Echo with one of four words, saved for both ranks to load."""
    from rl_helpers import warm_start

    model, tokenizer = warm_start()
    directory = tmp_path_factory.mktemp("warm")
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return str(directory)


def launch(check: str, workdir: Path, model_dir: str, processes: int = 2) -> None:
    """``ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes N`` on this file.

    A launch that dies of a signal (gloo aborted rank 0 once in about 20 launches here, never
    reproduced) is started once more on a fresh port; its first log is kept beside the second.
    A launch that fails in any other way fails the test at once.
    """
    launcher = Path(sys.executable).with_name("accelerate")
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    for attempt in (1, 2):
        command = [
            str(launcher),
            "launch",
            "--multi_gpu",
            "--num_processes",
            str(processes),
            "--num_machines",
            "1",
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
            "--main_process_port",
            str(_free_port()),
            __file__,
            check,
            str(workdir),
            model_dir,
        ]
        done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=600, env=env)
        (workdir / f"{check}-launch-{attempt}.log").write_text(done.stdout + done.stderr)
        died_of_a_signal = done.returncode < 0 or any(f"SIG{name}" in done.stderr for name in ("ABRT", "SEGV", "BUS"))
        if done.returncode == 0 or not died_of_a_signal:
            break
    assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"


def _ranks(workdir: Path, name: str):
    weights = [torch.load(workdir / f"{name}-rank{r}.pt") for r in (0, 1)]
    records = [json.loads((workdir / f"{name}-rank{r}.json").read_text()) for r in (0, 1)]
    return weights, records


def _max_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[n] - b[n]).abs().max()) for n in a)


def test_grpo_two_ranks_train_identical_weights(tmp_path, warm_model):
    from transformers import AutoModelForCausalLM

    launch("grpo", tmp_path, warm_model)
    (first, second), records = _ranks(tmp_path, "grpo")
    assert [r["processes"] for r in records] == [2, 2]
    assert _max_difference(first, second) == 0.0
    initial = {n: p.detach() for n, p in AutoModelForCausalLM.from_pretrained(warm_model).named_parameters()}
    assert _max_difference(first, initial) > 1e-4  # the step changed the weights


def test_ppo_two_ranks_split_rollouts_and_train_identical_weights(tmp_path, warm_model):
    from transformers import AutoModelForCausalLM

    launch("ppo", tmp_path, warm_model)
    (first, second), records = _ranks(tmp_path, "ppo")
    assert [r["processes"] for r in records] == [2, 2]
    # The rollouts are split: each rank played half of the iteration's tasks, none twice.
    played = [set(r["played"]) for r in records]
    assert len(played[0]) == len(played[1]) == 4 and not played[0] & played[1]
    # Gradients are averaged: both ranks hold the same weights, different from the start.
    assert _max_difference(first, second) == 0.0
    initial = {f"model.{n}": p.detach() for n, p in AutoModelForCausalLM.from_pretrained(warm_model).named_parameters()}
    assert max(float((first[n] - initial[n]).abs().max()) for n in initial) > 1e-5
    # Metrics and the KL coefficient are the processes' common ones; one process wrote the files.
    assert records[0]["history"] == records[1]["history"] and records[0]["kl_coef"] == records[1]["kl_coef"]
    lines = (tmp_path / "ppo" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1.0, 2.0]
    assert sorted(p.name for p in (tmp_path / "ppo").glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]


def test_nat_two_ranks_train_identical_weights_and_one_process_writes(tmp_path, warm_model):
    from transformers import AutoModelForCausalLM

    launch("nat", tmp_path, warm_model)
    (first, second), records = _ranks(tmp_path, "nat")
    assert [r["processes"] for r in records] == [2, 2]
    assert [r["global_step"] for r in records] == [2, 2]
    # Gradients are all-reduced: both ranks hold the same weights, different from the start.
    assert _max_difference(first, second) == 0.0
    initial = {n: p.detach() for n, p in AutoModelForCausalLM.from_pretrained(warm_model).named_parameters()}
    assert _max_difference(first, initial) > 1e-4
    # The saved model is the ranks' model, and the run's files are whole (one writer, not two).
    saved = {n: p.detach() for n, p in AutoModelForCausalLM.from_pretrained(tmp_path / "nat").named_parameters()}
    assert _max_difference(saved, first) == 0.0
    summary = json.loads((tmp_path / "nat" / "nat_summary.json").read_text())
    rows = [json.loads(line) for line in (tmp_path / "nat" / "nat_dataset.jsonl").read_text().splitlines()]
    assert summary["global_step"] == 2 and len(rows) == summary["examples"] == 16
