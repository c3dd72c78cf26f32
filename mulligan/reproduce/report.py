"""``report.md`` and the PNG plots of a reproduction, from :func:`mulligan.reproduce.analysis.analyse`."""

from __future__ import annotations

import math
import os
import platform
import subprocess
from datetime import datetime, timezone
from typing import Any

from mulligan.reproduce.analysis import LEARNABLE_REGIME
from mulligan.reproduce.protocol import PHASES, Protocol


def _fmt(value: float) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


def _interval(row: dict[str, Any]) -> str:
    if math.isnan(row["low"]):
        # No interval over seeds: the arm ran with one seed, or (a subset of arms) not at all.
        return "n/a (not run)" if row.get("seeds") == 0 else "n/a (one seed)"
    return f"[{row['low']:.3f}, {row['high']:.3f}]"


def git_commit() -> str:
    """The checkout's commit (with ``+dirty`` when tracked files changed), or ``unknown``."""
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=here, capture_output=True, text=True,
            timeout=10, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


def machine() -> str:
    """A one-line description of this machine (CPU count, platform, torch threads, accelerator)."""
    try:
        import torch

        device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
        threads = torch.get_num_threads()
    except ImportError:  # pragma: no cover - torch is a dependency
        device, threads = "unknown", 0
    return f"{platform.machine()} {platform.system()}, {os.cpu_count()} CPUs, torch threads {threads}, {device}"


def save_plots(protocol: Protocol, analysis: dict[str, Any], output_dir: str) -> list[str]:
    """Write ``success.png`` and, when the claim is about turns or attempts, ``curve.png``.

    ``success.png`` shows the primary metric per arm with its interval over seeds and each seed as
    a dot. Returns the file names written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    arms = analysis["arms"]
    if arms:
        fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(arms)), 4))
        labels = [f"{r['arm']}\n({r['budget']})" if len(protocol.budgets) > 1 else r["arm"] for r in arms]
        means = [r["mean"] for r in arms]
        errors = [
            [0 if math.isnan(r["low"]) else r["mean"] - max(0.0, r["low"]) for r in arms],
            [0 if math.isnan(r["high"]) else r["high"] - r["mean"] for r in arms],
        ]
        colours = ["#dd8452" if r["arm"] == protocol.reference_arm else "#4c72b0" for r in arms]
        ax.bar(range(len(arms)), means, yerr=errors, capsize=4, color=colours)
        for i, r in enumerate(arms):
            for value in r["per_seed"].values():
                ax.plot(i, value, "k.", markersize=4)
        ax.axhspan(*LEARNABLE_REGIME, color="#55a868", alpha=0.08, label="learnable regime (reference arm)")
        ax.set_xticks(range(len(arms)), labels, fontsize=8)
        ax.set_ylim(0, 1)
        ax.set_ylabel(f"held-out {protocol.primary_metric}\n(mean over seeds, 95% t-interval; dots: seeds)")
        primary = protocol.primary
        ax.set_title(
            f"{protocol.paper}: is {primary.arm} {'above' if primary.direction > 0 else 'below'} {primary.baseline}? "
            f"{analysis['verdict']}\n(orange: the reference arm; {protocol.env_id})",
            fontsize=9,
        )
        ax.legend(loc="upper right", fontsize=7)
        fig.tight_layout()
        fig.savefig(os.path.join(output_dir, "success.png"), dpi=120)
        plt.close(fig)
        written.append("success.png")
    if analysis["curves"]:
        fig, ax = plt.subplots(figsize=(6, 4))
        for (arm, budget), points in analysis["curves"].items():
            steps = list(range(1, len(points) + 1))
            label = f"{arm} ({budget})" if len(protocol.budgets) > 1 else arm
            ax.plot(steps, [p[0] for p in points], marker="o", label=label)
            if not any(math.isnan(p[1]) for p in points):
                ax.fill_between(steps, [p[1] for p in points], [p[2] for p in points], alpha=0.15)
        ax.set_xlabel("turn / attempt")
        ax.set_ylabel("held-out success within k (95% t-interval)")
        ax.set_ylim(0, 1)
        ax.set_title(f"{protocol.paper}: success over {protocol.curve_metric.rstrip('_')}")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(os.path.join(output_dir, "curve.png"), dpi=120)
        plt.close(fig)
        written.append("curve.png")
    return written


def render_report(
    protocol: Protocol,
    analysis: dict[str, Any],
    *,
    command: str,
    preset: str,
    settings: dict[str, Any],
    seconds: dict[str, float],
    plots: list[str],
    cells: int,
    provenance: list[str] | None = None,
) -> str:
    """The text of ``report.md``; ``provenance`` lists the commits and machines the cells ran on."""
    lines = [
        f"# Reproduction: {protocol.title}",
        "",
        f"**Claim.** {protocol.claim}",
        "",
        f"**Verdict (computed from the primary comparison's paired interval): {analysis['verdict']}.**",
        "",
        f"- Command: `{command}`",
        f"- Report written at commit `{git_commit()}` on {machine()}",
        f"- Cells ran at: {'; '.join(provenance) if provenance else 'unknown'}",
        f"- Date: {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}; preset `{preset}`; cells: {cells}",
        f"- Env: `{protocol.env_id}`; primary metric: `{protocol.primary_metric}` ({protocol.metric_description})",
        f"- Decoding: {protocol.decoding}",
        "",
    ]
    regime = analysis["regime"]
    low, high = LEARNABLE_REGIME
    lines += [
        "## Learnable regime",
        "",
        f"Reference arm `{regime['arm']}`: held-out mean {_fmt(regime['mean'])}; "
        + (
            f"inside [{low}, {high}], so differences are measurable."
            if regime["in_regime"]
            else f"OUTSIDE [{low}, {high}]: at a floor or ceiling, a null difference says little."
        ),
        "",
        "## Arms (mean over seeds of the per-seed held-out mean, 95% t-interval over seeds)",
        "",
        "| arm | budget | what it is | seeds | tasks | mean | 95% interval | per seed |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in analysis["arms"]:
        per_seed = ", ".join(f"{v:.3f}" for v in row["per_seed"].values())
        lines.append(
            f"| {row['arm']} | {row['budget']} | {protocol.arm(row['arm']).description} | {row['seeds']} | "
            f"{row['tasks']} | {_fmt(row['mean'])} | {_interval(row)} | {per_seed} |"
        )
    lines += [
        "",
        "## Comparisons (paired per-task difference arm - baseline; bootstrap over seeds and tasks)",
        "",
        "| comparison | budget | metric | paper says | seeds | tasks | difference | 95% interval | verdict |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in analysis["comparisons"]:
        star = " (primary)" if row["primary"] else ""
        sign = ">" if row["direction"] > 0 else "<"
        lines.append(
            f"| {row['arm']} vs {row['baseline']}{star} | {row['budget']} | {row['metric']} | "
            f"{row['arm']} {sign} {row['baseline']} | {row['seeds']} | {row['tasks']} | {_fmt(row['mean'])} | "
            f"{_interval(row)} | {row['verdict']} |"
        )
    mcnemar = [(r, m) for r in analysis["comparisons"] for m in r.get("mcnemar", ())]
    if mcnemar:
        lines += ["", "McNemar within each seed (tasks only the arm solved / only the baseline solved, exact p):", ""]
        for row, m in mcnemar:
            lines.append(
                f"- {row['arm']} vs {row['baseline']} on {row['metric']} ({row['budget']}), seed {m['seed']}: "
                f"{m['arm_only']} / {m['baseline_only']}, p = {m['p']:.3g}"
            )
    lines += ["", "## Mechanism check", "", protocol.mechanism, ""]
    if analysis["mechanism"]:
        lines += ["| arm | budget | check | seeds | mean | 95% interval |", "|---|---|---|---|---|---|"]
        for row in analysis["mechanism"]:
            lines.append(
                f"| {row['arm']} | {row['budget']} | {row['check']} | {row['seeds']} | {_fmt(row['mean'])} | "
                f"{_interval(row)} |"
            )
    else:
        lines.append("(no mechanism numbers recorded)")
    total = sum(seconds.values())
    lines += ["", "## Where the time went (all cells)", ""]
    if total > 0:
        shares = ", ".join(f"{p} {seconds.get(p, 0.0):.0f}s ({100 * seconds.get(p, 0.0) / total:.0f}%)" for p in PHASES)
        lines.append(f"Wall time {total:.0f}s: {shares}.")
    else:
        lines.append("No cell has finished yet.")
    lines += ["", "## Plots", ""] + [f"![{p}]({p})" for p in plots]
    lines += ["", "## Settings", "", "```", *(f"{k} = {v!r}" for k, v in sorted(settings.items())), "```", ""]
    return "\n".join(lines)
