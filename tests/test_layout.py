"""The package layout holds: tiers import only tiers below, and torch stays optional for the core.

``mulligan/training`` is three tiers (issue 11): infrastructure (rollout, trajectories, the renderer,
stats, rewards, evaluation, config pieces, SFT plumbing, progress display, trajectory datasets),
methods (one module per paper or algorithm), and commands (``mulligan/commands``). A method imports
infrastructure only, never another method (the single exception: CORGI is PPO with retries, so
``corgi`` imports ``ppo``).
Infrastructure, envs and agents import no method and no command. Imports inside functions count.
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "mulligan"

#: Method modules, grouped by method (a method's helper module belongs to it).
METHODS = {
    "nat": {"mulligan.training.nat"},
    "rise": {"mulligan.training.rise"},
    "subgoal": {"mulligan.training.subgoal", "mulligan.training.subgoal_data"},
    "grpo": {"mulligan.training.grpo"},
    "ppo": {"mulligan.training.ppo"},
    "corgi": {"mulligan.training.corgi"},
}
METHOD_OF = {module: method for method, modules in METHODS.items() for module in modules}
#: The one allowed edge between methods.
ALLOWED_METHOD_IMPORTS = {("corgi", "ppo")}
INFRASTRUCTURE = {
    f"mulligan.training.{name}"
    for name in (
        "rollout",
        "env_workers",
        "trajectory",
        "chat",
        "stats",
        "rewards",
        "evaluation",
        "args",
        "sft",
        "progress",
        "datasets",
    )
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports (at any depth of the file), as dotted names."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in names if name.startswith("mulligan")}


def modules_in(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (PACKAGE / folder).rglob("*.py"))


def is_command(name: str) -> bool:
    return name == "mulligan.commands" or name.startswith("mulligan.commands.") or name == "mulligan.cli"


def test_no_method_imports_another_method():
    violations = []
    for path in modules_in("training"):
        source = module_name(path)
        if source not in METHOD_OF:
            continue
        for target in imported_modules(path):
            method = METHOD_OF.get(target)
            if method and method != METHOD_OF[source] and (METHOD_OF[source], method) not in ALLOWED_METHOD_IMPORTS:
                violations.append(f"{source} imports {target}")
            if is_command(target):
                violations.append(f"{source} imports the command {target}")
    assert not violations, "methods must import infrastructure only:\n" + "\n".join(sorted(violations))


def test_infrastructure_envs_and_agents_import_no_method_or_command():
    violations = []
    for path in [*modules_in("training"), *modules_in("envs", "agents")]:
        source = module_name(path)
        lower_tier = source in INFRASTRUCTURE or source.startswith(("mulligan.envs", "mulligan.agents"))
        if not lower_tier:
            continue
        for target in imported_modules(path):
            if target in METHOD_OF or is_command(target):
                violations.append(f"{source} imports {target}")
    assert not violations, "lower tiers must not import methods or commands:\n" + "\n".join(sorted(violations))


def test_every_training_module_is_placed_in_a_tier():
    placed = set(METHOD_OF) | INFRASTRUCTURE | {"mulligan.training"}
    unplaced = [module_name(p) for p in modules_in("training") if module_name(p) not in placed]
    assert not unplaced, f"place these modules in a tier (commands live in mulligan/commands): {unplaced}"


@pytest.mark.parametrize(
    "module",
    [
        "mulligan",
        "mulligan.agents",
        "mulligan.envs",
        "mulligan.training.rollout",
        "mulligan.training.evaluation",
        "mulligan.agents.loading",
    ],
)
def test_the_core_imports_without_torch(module):
    code = f"import sys, {module}; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.strip() == "False", f"importing {module} imports torch"


def test_agents_are_lazy_exports_of_the_agents_package():
    """Every public agent imports from ``mulligan.agents``; only HFAgent brings torch, and only when asked."""
    code = (
        "import importlib, sys, mulligan.agents as a\n"
        "assert 'torch' not in sys.modules\n"
        "lazy = dict(a._LAZY)\n"
        "assert not any(m in sys.modules for m in lazy.values()), [m for m in lazy.values() if m in sys.modules]\n"
        "for name, module in lazy.items():\n"
        "    if name == 'HFAgent':\n"
        "        continue\n"
        "    value = getattr(a, name)\n"
        "    assert value is getattr(importlib.import_module(module), name), name\n"
        "    assert name in a.__all__ and name in dir(a), name\n"
        "assert 'torch' not in sys.modules, 'a wrapper agent imports torch'\n"
        "from mulligan.agents import HFAgent\n"
        "from mulligan.agents.hf import HFAgent as H\n"
        "assert HFAgent is H and 'HFAgent' in a.__all__\n"
        "assert set(a.__all__) >= {'FlatAgent', 'NATPromptAgent', 'HierarchicalAgent', 'BestOfNAfterFirst'}\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "ok", result.stderr
