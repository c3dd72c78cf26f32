"""The ``mulligan`` command.

``mulligan envs`` and ``mulligan play`` live here. The training commands are thin dispatches to
the ``main(argv)`` of their modules, each of which parses its own config dataclass, so that
``mulligan train nat --help`` documents every field of ``NATConfig``:

=========================  =======================================
``mulligan collect``       :mod:`mulligan.training.collect`
``mulligan eval``          :mod:`mulligan.training.evaluate`
``mulligan demo``          :mod:`mulligan.training.demo`
``mulligan train nat``     :mod:`mulligan.training.nat`
``mulligan train rise``    :mod:`mulligan.training.rise`
``mulligan train subgoal`` :mod:`mulligan.training.subgoal`
``mulligan train grpo``    :mod:`mulligan.training.grpo`
``mulligan train ppo``     :mod:`mulligan.training.ppo`
``mulligan train corgi``   :mod:`mulligan.training.corgi`
=========================  =======================================
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Sequence

COMMANDS = {
    "collect": ("mulligan.training.collect", "Collect trajectories from an env with an agent into JSONL."),
    "eval": ("mulligan.training.evaluate", "Evaluate an agent or checkpoint on an env (success, score, CIs)."),
    "demo": ("mulligan.training.demo", "The main job: teacher data, NAT vs positives-only, RISE, eval."),
}
TRAINERS = {
    "nat": ("mulligan.training.nat", "Negative-aware fine-tuning (arXiv 2402.11651)."),
    "rise": ("mulligan.training.rise", "Recursive introspection with reward-weighted regression (arXiv 2407.18219)."),
    "subgoal": ("mulligan.training.subgoal", "Sub-goal distillation: planner and executor (arXiv 2405.02749)."),
    "grpo": ("mulligan.training.grpo", "GRPO on mulligan envs through TRL's GRPOTrainer."),
    "ppo": ("mulligan.training.ppo", "PPO over multi-turn episodes with a value head and GAE."),
    "corgi": ("mulligan.training.corgi", "RL with a checker's corrective feedback (arXiv 2411.01483)."),
}


def _dispatch(module: str, argv: Sequence[str]) -> int:
    return int(importlib.import_module(module).main(list(argv)) or 0)


def cmd_envs(args: argparse.Namespace) -> int:
    """Print every registered id with its one-line description."""
    from mulligan.envs.registration import ENVS

    if args.json:
        print(json.dumps([{"id": e.id, "description": e.description} for e in ENVS], indent=2))
        return 0
    width = max(len(e.id) for e in ENVS)
    for entry in ENVS:
        print(f"{entry.id:<{width}}  {entry.description}")
    return 0


def cmd_play(args: argparse.Namespace) -> int:
    """Play an env in the terminal: print each observation and read actions from stdin."""
    import gymnasium

    import mulligan  # noqa: F401 - registers the ids

    kwargs = json.loads(args.env_kwargs) if args.env_kwargs else {}
    env = gymnasium.make(args.env_id, **kwargs)
    observation, info = env.reset(seed=args.seed)
    print(f"[{args.env_id} | task {info['task_id']}]  (end a multi-line action with a line '.', quit with EOF)")
    total = 0.0
    while True:
        print(observation)
        lines: list[str] = []
        try:
            while True:
                line = input("> " if not lines else ". ")
                if line == "." or (not args.multiline and not lines):
                    if line != ".":
                        lines.append(line)
                    break
                lines.append(line)
        except EOFError:
            print("\n(quit)")
            return 0
        observation, reward, terminated, truncated, info = env.step("\n".join(lines))
        total += reward
        status = f"reward {reward:+.3f}  score {info['score']:.3f}  success {info['success']}"
        print(status + (f"\nfeedback: {info['feedback']}" if info["feedback"] else ""))
        if terminated or truncated:
            print(observation)
            print(f"episode over ({'terminated' if terminated else 'truncated'}): return {total:+.3f}")
            return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``mulligan`` command."""
    parser = argparse.ArgumentParser(prog="mulligan", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    envs = sub.add_parser("envs", help="List every registered Mulligan/* env id.")
    envs.add_argument("--json", action="store_true", help="Print JSON instead of a table.")
    envs.set_defaults(func=cmd_envs)

    play = sub.add_parser("play", help="Play an env in the terminal.")
    play.add_argument("env_id", help="A registered id, e.g. Mulligan/Math-v0.")
    play.add_argument("--seed", type=int, default=None, help="Seed of the reset (picks the task).")
    play.add_argument(
        "--env-kwargs", default=None,
        help='JSON keyword arguments for gymnasium.make, e.g. \'{"max_attempts": 3}\'.',
    )
    play.add_argument("--multiline", action="store_true", help="Read multi-line actions, ended by a line '.'.")
    play.set_defaults(func=cmd_play)

    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    train = sub.add_parser("train", help="Train with one of the methods: " + ", ".join(TRAINERS) + ".")
    train.add_argument("method", choices=sorted(TRAINERS), help="The training method.")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mulligan`` command."""
    argv = list(sys.argv[1:] if argv is None else argv)
    # Training commands own their flags: hand everything after the command name to the module.
    if argv and argv[0] in COMMANDS:
        return _dispatch(COMMANDS[argv[0]][0], argv[1:])
    if len(argv) >= 2 and argv[0] == "train" and argv[1] in TRAINERS:
        return _dispatch(TRAINERS[argv[1]][0], argv[2:])
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
