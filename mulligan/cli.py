"""The ``mulligan`` command.

``mulligan envs`` and ``mulligan play`` live here. The other commands are thin dispatches to the
``main(argv)`` of their modules, each of which parses its own config dataclass, so that
``mulligan train nat --help`` documents every field of the NAT config:

=========================  =======================================
``mulligan collect``       :mod:`mulligan.commands.collect`
``mulligan eval``          :mod:`mulligan.commands.evaluate`
``mulligan demo``          :mod:`mulligan.commands.demo`
``mulligan report``        :mod:`mulligan.commands.report`
``mulligan export``        :mod:`mulligan.commands.export`
``mulligan reproduce``     :mod:`mulligan.commands.reproduce`
``mulligan train nat``     :mod:`mulligan.training.nat`
``mulligan train rise``    :mod:`mulligan.training.rise`
``mulligan train subgoal`` :mod:`mulligan.training.subgoal`
``mulligan train grpo``    :mod:`mulligan.training.grpo`
``mulligan train ppo``     :mod:`mulligan.training.ppo`
``mulligan train corgi``   :mod:`mulligan.training.corgi`
=========================  =======================================

Flags follow one convention in every command: ``--env_id``, ``--env_kwargs`` (a JSON object),
``--disable_tqdm``, ``--resume_from_checkpoint``, ``--report_to``. A usage mistake (an unknown env
id, bad JSON, a size below 1, a missing model or file, a directory where a file is expected) prints
one line that names the problem and the fix, and exits with status 2; so does a command whose
module is not installed (not part of this version, or missing an optional dependency).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Sequence

#: Exit status of a usage error (as argparse uses).
USAGE_ERROR = 2

COMMANDS = {
    "collect": ("mulligan.commands.collect", "Collect trajectories from an env with an agent into JSONL."),
    "eval": ("mulligan.commands.evaluate", "Evaluate an agent or checkpoint on an env (success, score, CIs)."),
    "demo": ("mulligan.commands.demo", "The main job: NAT vs positives-only in miniature, with a computed verdict."),
    "report": ("mulligan.commands.report", "Compare eval results files: a table and plot, models x envs, with CIs."),
    "export": (
        "mulligan.commands.export",
        "Export a trajectory store as a Hugging Face dataset (a folder or the Hub).",
    ),
    "reproduce": ("mulligan.commands.reproduce", "Reproduce a paper's headline comparison from one config."),
}
TRAINERS = {
    "nat": ("mulligan.training.nat", "Negative-aware fine-tuning (arXiv 2402.11651)."),
    "rise": ("mulligan.training.rise", "Recursive introspection with reward-weighted regression (arXiv 2407.18219)."),
    "subgoal": ("mulligan.training.subgoal", "Sub-goal distillation: planner and executor (arXiv 2405.02749)."),
    "grpo": ("mulligan.training.grpo", "GRPO on mulligan envs through TRL's GRPOTrainer."),
    "ppo": ("mulligan.training.ppo", "PPO over multi-turn episodes with a value head and GAE."),
    "corgi": ("mulligan.training.corgi", "RL with a checker's corrective feedback (arXiv 2411.01483)."),
}


class CommandUnavailableError(RuntimeError):
    """A command's module cannot be imported: absent from this version, or missing a dependency."""


def load_command(module: str) -> object:
    """Import a command's module.

    Raises:
        CommandUnavailableError: If the module itself is absent, or a third-party package it needs
            is not installed (a one-line usage error). An import error inside mulligan is a bug and
            propagates.
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as error:
        missing = error.name or ""
        if missing and (module == missing or module.startswith(missing + ".")):
            raise CommandUnavailableError(
                f"{module} is not part of this mulligan version; run `mulligan --help` for the commands it has"
            ) from error
        if missing and not missing.startswith("mulligan"):
            package = missing.split(".")[0]
            raise CommandUnavailableError(
                f"{module} needs the package {package!r}, which is not installed; pip install {package}"
            ) from error
        raise


def _dispatch(module: str, argv: Sequence[str]) -> int:
    return int(load_command(module).main(list(argv)) or 0)


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


def parse_env_kwargs(text: str | None) -> dict:
    """``--env_kwargs``: a JSON object (empty: none).

    Raises:
        ValueError: If ``text`` is not a JSON object (with an example of one).
    """
    try:
        value = json.loads(text) if text else {}
    except json.JSONDecodeError as err:
        raise ValueError(
            f"--env_kwargs is not valid JSON ({err}); pass an object such as '{{\"max_attempts\": 3}}'"
        ) from err
    if not isinstance(value, dict):
        raise ValueError(f"--env_kwargs must be a JSON object such as '{{\"max_attempts\": 3}}', got {text!r}")
    return value


def cmd_play(args: argparse.Namespace) -> int:
    """Play an env in the terminal: print each observation and read actions from stdin."""
    from mulligan.training.rollout import make_env

    env = make_env(args.env_id, parse_env_kwargs(args.env_kwargs))
    observation, info = env.reset(seed=args.seed)
    print(f"[{args.env_id} | task {info['task_id']}]  (end a multi-line action with a line '.', quit with EOF)")
    total = 0.0
    while True:
        print(observation)
        try:
            action = _read_action(args.multiline)
        except EOFError:
            print("\n(quit)")
            return 0
        observation, reward, terminated, truncated, info = env.step(action)
        total += reward
        status = f"reward {reward:+.3f}  score {info['score']:.3f}  success {info['success']}"
        print(status + (f"\nfeedback: {info['feedback']}" if info["feedback"] else ""))
        if terminated or truncated:
            print(observation)
            print(f"episode over ({'terminated' if terminated else 'truncated'}): return {total:+.3f}")
            return 0


def _read_action(multiline: bool) -> str:
    """One action from stdin: a line, or lines up to a line '.' with ``multiline``."""
    lines: list[str] = []
    while True:
        line = input("> " if not lines else ". ")
        if line == ".":
            break
        lines.append(line)
        if not multiline:
            break
    return "\n".join(lines)


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
        "--env_kwargs", default=None, help="JSON keyword arguments for gymnasium.make, e.g. '{\"max_attempts\": 3}'."
    )
    play.add_argument("--multiline", action="store_true", help="Read multi-line actions, ended by a line '.'.")
    play.set_defaults(func=cmd_play)

    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    train = sub.add_parser("train", help="Train with one of the methods: " + ", ".join(TRAINERS) + ".")
    train.add_argument("method", choices=sorted(TRAINERS), help="The training method.")
    return parser


def usage_error_message(error: BaseException) -> str | None:
    """The one-line message for a user's mistake, or ``None`` when ``error`` is not one (a bug).

    Usage errors are what the library raises for bad input (``ValueError`` with the fix in its
    message, missing files, a directory where a file is expected, a file held by another writer),
    gymnasium's unknown-id errors, an unexpected keyword in ``--env_kwargs``, and the hub's
    errors for a model path that does not exist.
    """
    import gymnasium

    from mulligan.training.trajectory import StoreLockedError

    text = " ".join(str(error).split()) or type(error).__name__
    if isinstance(error, gymnasium.error.Error):
        return f"{text} Run `mulligan envs` for the registered ids."
    if "Repo id must be" in text or "is not a local folder and is not a valid model identifier" in text:
        return (
            f"model not found ({text}); pass an existing checkpoint folder, 'tiny', or a hub id that is cached "
            "or reachable"
        )
    if isinstance(error, TypeError) and "unexpected keyword argument" in text:
        return f"{text}; check --env_kwargs against the env's Arguments (docs/envs.md)"
    usage = (
        ValueError,
        FileNotFoundError,
        NotADirectoryError,
        IsADirectoryError,
        FileExistsError,
        StoreLockedError,
        CommandUnavailableError,
    )
    if isinstance(error, usage):
        return text
    return None


def check_env_id(argv: Sequence[str]) -> None:
    """Fail fast on an unknown ``--env_id``, before a command loads a model or data.

    Raises:
        gymnasium.error.Error: If the id is not registered.
    """
    ids = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--env_id"]
    ids += [a.split("=", 1)[1] for a in argv if a.startswith("--env_id=")]
    if ids:
        import gymnasium

        import mulligan  # noqa: F401 - registers the ids

        for env_id in ids:
            gymnasium.spec(env_id)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mulligan`` command; usage errors print one line and return 2."""
    argv = list(sys.argv[1:] if argv is None else argv)
    name = " ".join(argv[:2]) if argv[:1] == ["train"] else (argv[0] if argv else "")
    try:
        check_env_id(argv)
        # Commands own their flags: hand everything after the command name to the module.
        if argv and argv[0] in COMMANDS:
            return _dispatch(COMMANDS[argv[0]][0], argv[1:])
        if len(argv) >= 2 and argv[0] == "train" and argv[1] in TRAINERS:
            return _dispatch(TRAINERS[argv[1]][0], argv[2:])
        args = build_parser().parse_args(argv)
        return int(args.func(args) or 0)
    except Exception as error:
        message = usage_error_message(error)
        if message is None:
            raise
        print(f"mulligan {name}: error: {message}", file=sys.stderr)
        return USAGE_ERROR


if __name__ == "__main__":
    sys.exit(main())
