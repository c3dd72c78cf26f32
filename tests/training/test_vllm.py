"""vLLM on the CPU: generation with the tiny model, GRPO and PPO in colocate mode, the weight sync, 2 ranks.

These tests need vLLM (``bash scripts/install.sh vllm`` makes ``.venv-vllm`` with vLLM's CPU build;
``bash scripts/test_vllm.sh`` runs this file there) and are skipped in an environment without it.
vLLM's engine runs in a spawned process, so each check runs as a subprocess of this file
(``python tests/training/test_vllm.py <check> <workdir>``, entry point under a ``__main__`` guard) that
prints one JSON line of measurements; the tests assert on them. The 2-rank check runs under
``ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2`` (gloo), one engine per rank.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

#: A small tiny model, so that the engine loads and every check runs in seconds.
TINY = {
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 128,
    "max_position_embeddings": 1024,
}
#: Echo whose only target is "a", with partial credit.
ECHO_KWARGS = {"vocabulary": ["a"], "partial_credit": True}


# ----------------------------------------------------------------------------------- the checks (subprocesses)
def _environment() -> None:
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB; vLLM otherwise reserves most of the RAM
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _tiny(workdir: Path) -> Path:
    from mulligan.agents.tiny import TinyModelConfig, save_tiny_model

    return save_tiny_model(workdir / "tiny", TinyModelConfig(**TINY))


def _warm_started(workdir: Path) -> Path:
    """A small tiny model that answers Echo with one of four words (so GRPO's groups differ), saved."""
    sys.path.insert(0, str(Path(__file__).parent))
    from rl_helpers import warm_start

    model, tokenizer = warm_start()
    directory = workdir / "warm"
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def _hf_logprobs(model, prompt_ids: list[int], completion_ids: list[int]) -> list[float]:
    """Log-probabilities of ``completion_ids`` after ``prompt_ids`` under a transformers model."""
    import torch

    ids = torch.tensor([prompt_ids + completion_ids])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, len(prompt_ids) - 1 : -1].float()
    picked = torch.log_softmax(logits, -1).gather(-1, torch.tensor(completion_ids)[:, None])
    return picked.squeeze(-1).tolist()


def _max_gap(model, actions) -> float:
    """Largest |sampler log-prob - model log-prob| over the actions' tokens."""
    gaps = [
        abs(a - b)
        for action in actions
        for a, b in zip(action.logprobs, _hf_logprobs(model, action.prompt_ids, action.completion_ids), strict=True)
    ]
    return max(gaps)


def check_generate(workdir: Path) -> dict:
    """VLLMAgent on the tiny model: seeded sampling, recorded tokens and log-probs, stop strings."""
    from transformers import AutoModelForCausalLM

    from mulligan.agents.base import AgentInput
    from mulligan.agents.loading import load_agent
    from mulligan.agents.vllm import VLLMAgent
    from mulligan.training.chat import encode
    from mulligan.training.evaluation import evaluate

    path = _tiny(workdir)
    engine = {"dtype": "float32", "max_model_len": 1024}  # float32: the same numbers as transformers
    # Built through the command-line spec (`mulligan eval --agent vllm:PATH`).
    agent = load_agent(f"vllm:{path}", temperature=1.0, max_new_tokens=8, seed=0, engine_kwargs=engine)
    assert isinstance(agent, VLLMAgent)
    prompt = [{"role": "user", "content": "Repeat exactly: stone"}]
    first = agent.act([AgentInput(messages=prompt, seed=s) for s in range(4)])
    again = agent.act([AgentInput(messages=prompt, seed=s) for s in range(4)])
    stopped = agent.act([AgentInput(messages=prompt, seed=0, stop=[first[0].text[2:4]])])[0]
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    result = evaluate(agent, "Mulligan/Echo-v0", list(range(8)), num_envs=8, progress=False)
    # CORGI's prefill on the same engine: the prompt ends with the primer, the action continues it.
    primed = VLLMAgent(agent.llm, temperature=0.0, max_new_tokens=6, prefill_response=True)
    primed_action = primed.act([AgentInput(messages=prompt, info={"response_prefix": "- Output: The"})])[0]
    beams = VLLMAgent(agent.llm, max_new_tokens=6, num_beams=3)
    beam_actions = [beams.act([AgentInput(messages=prompt)])[0] for _ in range(2)]
    return {
        "primed_prompt_end": primed_action.prompt[-40:],
        "primed_prefill": primed_action.prefill,
        "primed_prompt_ids": primed_action.prompt_ids == encode(agent.tokenizer, primed_action.prompt),
        "beam_ids": [a.completion_ids for a in beam_actions],
        "beam_logprobs": [a.logprobs for a in beam_actions],
        "texts": [a.text for a in first],
        "same_with_same_seeds": [a.completion_ids for a in first] == [a.completion_ids for a in again],
        "aligned": all(len(a.completion_ids) == len(a.logprobs) for a in first),
        "max_logprob_gap": _max_gap(model, first),
        "stop": first[0].text[2:4],
        "stopped_text": stopped.text,
        "stopped_ids": stopped.completion_ids,
        "unstopped_ids": first[0].completion_ids,
        "stopped_decoded": agent.tokenizer.decode(stopped.completion_ids),
        "eval_episodes": len(result.trajectories),
        "eval_recorded_tokens": all(t.turns[0].completion_ids for t in result.trajectories),
    }


def check_grpo(workdir: Path, rollout: str) -> dict:
    """Two GRPO steps in colocate mode, then the weight sync: vLLM's log-probs are the trained model's."""
    import torch
    from transformers import AutoModelForCausalLM

    from mulligan.agents.base import AgentInput
    from mulligan.agents.vllm import TrainerVLLMAgent
    from mulligan.training.grpo import GRPOArgs, build_grpo_trainer

    path = _warm_started(workdir)
    args = GRPOArgs(
        model=str(path),
        output_dir=str(workdir / "run"),
        max_steps=2,
        num_train_tasks=4,
        per_device_train_batch_size=8,
        num_generations=4,
        max_new_tokens=4,
        learning_rate=0.01,  # large, so that the synced weights are measurably not the initial ones
        max_attempts=2 if rollout == "episode" else 1,
        rollout=rollout,
        env_kwargs=json.dumps(ECHO_KWARGS),
        num_envs=4,
        use_vllm=True,
        vllm_mode="colocate",
        disable_tqdm=True,
        logging_steps=1,
        report_to="none",
        trl_args=json.dumps(
            {
                "vllm_max_model_length": 512,
                "vllm_importance_sampling_correction": True,
                "lr_scheduler_type": "constant",
            }
        ),
    )
    trainer = build_grpo_trainer(args)
    # From disk: a deepcopy of the prepared model would keep accelerate's forward bound to the original.
    initial = AutoModelForCausalLM.from_pretrained(path).eval()
    episode = None
    if rollout == "episode":
        prompts = list(trainer.train_dataset["prompt"][:2])
        output = trainer.rollout_func([prompts[0], prompts[0], prompts[1], prompts[1]], trainer)
        episode = {
            "logprobs_aligned": all(
                len(lp) == len(ids) for lp, ids in zip(output["logprobs"], output["completion_ids"], strict=True)
            ),
            "turns": [int(sum(1 for k in range(1, len(m)) if m[k] and not m[k - 1]) + 1) for m in output["env_mask"]],
            "exact": output["episode_exact_tokens"],
        }
    trainer.train()
    history = trainer.state.log_history
    trainer.vllm_generation.sync_weights()  # what TRL does before the next generation step
    agent = TrainerVLLMAgent(trainer)
    prompt = [{"role": "user", "content": "Repeat exactly: a"}]
    actions = agent.act([AgentInput(messages=prompt) for _ in range(8)])
    trainer.model.eval()
    with torch.no_grad():
        gap_trained = _max_gap(trainer.model, actions)
        gap_initial = _max_gap(initial, actions)
    if trainer.rollout_func is not None:
        trainer.rollout_func.close()
    return {
        "steps": trainer.state.global_step,
        "losses": [h["loss"] for h in history if "loss" in h],
        "rewards": [h["reward"] for h in history if "reward" in h],
        "is_ratio_mean": [h[k] for h in history for k in h if k.endswith("importance_sampling_ratio/mean")],
        "gap_trained": gap_trained,
        "gap_initial": gap_initial,
        "episode": episode,
    }


def check_grpo_ranks(workdir: Path, model_dir: str) -> dict:
    """One multi-turn GRPO step with colocated vLLM on this rank of an ``accelerate launch`` run."""
    import torch
    from accelerate import PartialState

    from mulligan.training.grpo import GRPOArgs, build_grpo_trainer

    args = GRPOArgs(
        model=model_dir,
        output_dir=str(workdir / "run"),
        max_steps=1,
        num_train_tasks=8,
        per_device_train_batch_size=4,
        num_generations=4,
        max_new_tokens=4,
        learning_rate=0.01,
        max_attempts=2,
        env_kwargs=json.dumps(ECHO_KWARGS),
        num_envs=4,
        use_vllm=True,
        disable_tqdm=True,
        report_to="none",
        trl_args=json.dumps({"vllm_max_model_length": 512}),
    )
    trainer = build_grpo_trainer(args)
    trainer.train()
    trainer.rollout_func.close()
    rank = PartialState().process_index
    weights = {n: p.detach().cpu() for n, p in trainer.model.named_parameters()}
    torch.save(weights, workdir / f"rank{rank}.pt")
    return {"rank": rank, "processes": trainer.accelerator.num_processes, "steps": trainer.state.global_step}


def _engine_logprobs(engine, prompt_ids: list[int], completion_ids: list[int]) -> list[float]:
    """The engine's log-probabilities of a fixed completion (its prompt log-probs of the joined sequence)."""
    from vllm import SamplingParams

    params = SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=1.0)
    (output,) = engine.generate([{"prompt_token_ids": prompt_ids + completion_ids}], params, use_tqdm=False)
    steps = output.prompt_logprobs[len(prompt_ids) :]
    return [step[token].logprob for step, token in zip(steps, completion_ids, strict=True)]


def check_ppo(workdir: Path) -> dict:
    """One PPO iteration with rollouts from the colocated engine, then the engine against the trained model."""
    import torch
    from transformers import AutoModelForCausalLM

    from mulligan.agents.base import AgentInput
    from mulligan.agents.vllm import VLLMAgent
    from mulligan.training.chat import encode, render
    from mulligan.training.ppo import PPOArgs, PPOTrainer

    path = _warm_started(workdir)
    args = PPOArgs(
        model=str(path),
        output_dir=str(workdir / "ppo"),
        env_id="Mulligan/Echo-v0",
        env_kwargs=json.dumps(ECHO_KWARGS),
        total_steps=1,
        episodes_per_step=8,
        mini_batch_size=8,
        ppo_epochs=2,
        max_new_tokens=4,
        learning_rate=0.01,  # large, so that the synced weights are measurably not the initial ones
        num_envs=8,
        device="cpu",
        use_vllm=True,
        vllm_max_model_length=512,
        report_to="none",
        disable_tqdm=True,
        save_steps=0,
    )
    initial = AutoModelForCausalLM.from_pretrained(path).eval()
    with PPOTrainer(args) as trainer:
        rollout = trainer.collect(0)
        agent = trainer.agent(seed=0)
        metrics = trainer.train()
        tokenizer = trainer.tokenizer
        prompt = render(tokenizer, [{"role": "user", "content": "Repeat exactly: a"}], add_generation_prompt=True)
        prompt_ids = encode(tokenizer, prompt)
        fixed = encode(tokenizer, "a<|im_end|>")
        trained = trainer.policy.model.eval()
        with torch.no_grad():
            engine = _engine_logprobs(trainer.engine, prompt_ids, fixed)
            hf_trained = _hf_logprobs(trained, prompt_ids, fixed)
            hf_initial = _hf_logprobs(initial, prompt_ids, fixed)
            sampled = trainer.agent(seed=1).act([AgentInput(messages=[{"role": "user", "content": "Repeat exactly: a"}])
                                                 for _ in range(4)])  # fmt: skip
            sampled_gap_trained = _max_gap(trained, sampled)
    return {
        "agent_is_vllm": isinstance(agent, VLLMAgent),
        "rollout_recorded": all(t.turns and all(u.completion_ids and u.logprobs for u in t.turns) for t in rollout),
        "steps": len(metrics),
        "sampler_gap_before_update": metrics[0]["policy/sampler_logprob_gap"],
        "fixed_gap_trained": max(abs(a - b) for a, b in zip(engine, hf_trained, strict=True)),
        "fixed_gap_initial": max(abs(a - b) for a, b in zip(engine, hf_initial, strict=True)),
        "sampled_gap_trained": sampled_gap_trained,
    }


def launch_ranks(name: str, workdir: Path, *args: str, processes: int = 2) -> None:
    """``ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes N`` on a check of this file."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [
        str(Path(sys.executable).with_name("accelerate")),
        "launch",
        "--multi_gpu",
        f"--num_processes={processes}",
        "--num_machines=1",
        "--mixed_precision=no",
        "--dynamo_backend=no",
        f"--main_process_port={port}",
        __file__,
        name,
        str(workdir),
        *args,
    ]
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"


def run_check(name: str, *args: str, timeout: float = 600) -> dict:
    """Run a check in a fresh interpreter of this environment and return its JSON line."""
    import tempfile

    with tempfile.TemporaryDirectory() as workdir:
        done = subprocess.run(
            [sys.executable, __file__, name, workdir, *args],
            check=False,
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")},
        )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert done.returncode == 0 and lines, f"check {name} failed:\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
    return json.loads(lines[-1])


if __name__ == "__main__":
    _environment()
    check, directory, *rest = sys.argv[1:]
    checks = {"generate": check_generate, "grpo": check_grpo, "grpo_ranks": check_grpo_ranks, "ppo": check_ppo}
    print(json.dumps(checks[check](Path(directory), *rest)), flush=True)
    sys.exit(0)


# ----------------------------------------------------------------------------------- the tests
import pytest  # noqa: E402 - the checks above run without pytest

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("vllm") is None,
    reason="vLLM is not installed; `bash scripts/install.sh vllm` then `bash scripts/test_vllm.sh` runs these",
)


def test_vllm_agent_samples_the_tiny_model_with_its_log_probs():
    result = run_check("generate")
    assert result["aligned"] and result["same_with_same_seeds"]
    # vLLM runs the same model: its log-probs are the transformers model's on the same tokens.
    assert result["max_logprob_gap"] < 0.01, result
    # A stop string cuts the text before it and the ids after the token that completes it.
    assert result["stop"] not in result["stopped_text"] and result["stop"] in result["stopped_decoded"]
    assert result["stopped_ids"] == result["unstopped_ids"][: len(result["stopped_ids"])]
    assert len(result["stopped_ids"]) < len(result["unstopped_ids"])
    assert result["eval_episodes"] == 8 and result["eval_recorded_tokens"]
    assert result["primed_prompt_end"].endswith("<|im_start|>assistant\n- Output: The") and result["primed_prompt_ids"]
    assert result["primed_prefill"] == "- Output: The"
    # Beam search: deterministic, no behaviour log-probs.
    assert result["beam_ids"][0] == result["beam_ids"][1] and result["beam_ids"][0]
    assert result["beam_logprobs"] == [None, None]


@pytest.mark.parametrize("rollout", ["single_turn", "episode"])
def test_grpo_colocate_trains_and_syncs_weights_to_vllm(rollout):
    result = run_check("grpo", rollout)
    assert result["steps"] == 2 and len(result["losses"]) == 2
    assert result["is_ratio_mean"], "TRL's importance-sampling correction did not run"
    # After the sync vLLM samples from the trained weights, not the initial ones (TRL's engine runs
    # the float32 model in bfloat16 on a CPU, hence the tolerance).
    assert result["gap_trained"] < 0.05, result
    assert result["gap_initial"] > 1.0, result
    if rollout == "episode":
        assert result["episode"]["logprobs_aligned"]
        assert max(result["episode"]["turns"]) == 2  # a failed first attempt is retried


def test_grpo_with_vllm_on_two_ranks_keeps_identical_weights(tmp_path):
    import torch

    model_dir = _warm_started(tmp_path)
    launch_ranks("grpo_ranks", tmp_path, str(model_dir))
    first, second = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    assert max(float((first[n] - second[n]).abs().max()) for n in first) == 0.0
    from transformers import AutoModelForCausalLM

    initial = dict(AutoModelForCausalLM.from_pretrained(model_dir).named_parameters())
    assert max(float((first[n] - initial[n].detach()).abs().max()) for n in first) > 1e-4


def test_ppo_samples_with_vllm_and_syncs_the_updated_weights_to_it():
    result = run_check("ppo")
    assert result["agent_is_vllm"] and result["rollout_recorded"] and result["steps"] == 1
    # Before the update the engine holds the policy's float32 weights: the sampler's log-probs are
    # the policy's (PPO's old log-probs are the sampler's).
    assert result["sampler_gap_before_update"] < 0.01, result
    # After the update and the sync, the engine scores a fixed completion as the trained model does,
    # and no longer as the initial one.
    assert result["fixed_gap_trained"] < 0.01, result
    assert result["sampled_gap_trained"] < 0.01, result
    assert result["fixed_gap_initial"] > 10 * max(result["fixed_gap_trained"], 1e-3), result
