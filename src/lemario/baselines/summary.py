"""`lemario baseline summary RUN...`: PPO runs (one per seed) side by side, as a figure and a Markdown table.

    OUT/curve.png     per seed: the harness evaluations' mean max_x with their 95% CI, and the training episodes'
                      max_x (rolling median), against env steps; the 1-1 flagpole and an optional reference line
    OUT/summary.md    per seed: env steps, wall hours, env steps per wall second, the first env step at which a training
                      episode / an evaluation's mean reached x >= 700 / 1500 / 2000 / the flag, the best evaluation;
                      then each milestone over the seeds (mean +- sd where every seed reached it), and the
                      evaluations by env step

Everything is read from the run folders (metrics.jsonl, state.json, config.json), live or finished; rebuild it at
any time.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tyro

from lemario.baselines.milestones import KEYS
from lemario.core import runlog
from lemario.core.errors import LemarioError
from lemario.core.files import atomic_write_text, read_json
from lemario.core.plots import env_steps_axis, figure, save_png, table


@dataclass(frozen=True)
class SummaryConfig:
    runs: tyro.conf.Positional[tuple[Path, ...]]
    """PPO run folders (`lemario baseline ppo --out`), typically one per seed."""
    out: Path = Path("runs/ppo-summary")
    reference: float | None = None
    """A mean max_x to draw as a horizontal line (e.g. biased random's)."""
    reference_label: str = "reference"
    window: int = 50
    """Training episodes per rolling median."""


def load_run(run: Path) -> dict:
    """config, state and metrics rows of one PPO run folder."""
    files = {name: run / name for name in ("config.json", "state.json", "metrics.jsonl")}
    missing = [str(p) for p in files.values() if not p.exists()]
    if missing:
        raise LemarioError(
            f"{run} is not a PPO run folder (missing {', '.join(missing)}): pass folders written by "
            f"`lemario baseline ppo --out`"
        )
    rows = runlog.read_rows(files["metrics.jsonl"])
    return {
        "run": run,
        "config": read_json(files["config.json"])["config"],
        "state": read_json(files["state.json"]),
        "episodes": [r for r in rows if "episode/max_x" in r],
        "evals": [r for r in rows if "eval/mean_max_x" in r],
    }


def rolling_median(values: np.ndarray, window: int) -> np.ndarray:
    """Median of the last `window` values at each position (fewer at the start)."""
    return np.array([np.median(values[max(0, i + 1 - window) : i + 1]) for i in range(len(values))])


def mean_if_all_reached(steps: list[int | None]) -> float | None:
    """The mean env steps of the seeds to a milestone; None unless every seed reached it (None: never)."""
    return None if not steps or None in steps else float(np.mean(steps))


def milestone_row(key: str, steps: list[int | None]) -> list[str]:
    """One milestone over the seeds: mean +- sd of the env steps where every seed reached it (one seed: its own)."""
    reached = [s for s in steps if s is not None]
    mean = mean_if_all_reached(steps)
    if mean is None:
        agg = f"{len(reached)} of {len(steps)} seeds"
    elif len(reached) == 1:
        agg = f"{reached[0]:,} (one seed)"
    else:
        agg = f"{mean:,.0f} ± {np.std(reached, ddof=1):,.0f}"
    return [key] + ["-" if s is None else f"{s:,}" for s in steps] + [agg]


def plot_curve(runs: list[dict], cfg: SummaryConfig, path: Path) -> None:
    """Evaluations (mean max_x, 95% CI) and training episodes (rolling median) against env steps, per seed."""
    plt = figure()
    fig, (ax_eval, ax_train) = plt.subplots(1, 2, figsize=(12, 4.2), sharey=True)
    for i, r in enumerate(runs):
        color, label = f"C{i}", f"seed {r['config']['seed']}"
        if r["evals"]:
            steps = np.array([e["env_steps"] for e in r["evals"]])
            ax_eval.plot(steps, [e["eval/mean_max_x"] for e in r["evals"]], "o-", color=color, label=label)
            ax_eval.fill_between(
                steps,
                [e["eval/ci95_low"] for e in r["evals"]],
                [e["eval/ci95_high"] for e in r["evals"]],
                color=color,
                alpha=0.15,
            )
        if r["episodes"]:
            x = np.array([e["episode/max_x"] for e in r["episodes"]], dtype=float)
            ax_train.plot(
                [e["env_steps"] for e in r["episodes"]], rolling_median(x, cfg.window), color=color, label=label
            )
    for ax, title in (
        (ax_eval, "harness evaluations: mean max_x, 95% CI"),
        (ax_train, f"training episodes: max_x, rolling median of {cfg.window}"),
    ):
        ax.axhline(3161, color="tab:red", linewidth=0.8, label="1-1 flagpole (x 3161)")
        if cfg.reference is not None:
            ax.axhline(cfg.reference, color="gray", linestyle="--", linewidth=0.8, label=cfg.reference_label)
        env_steps_axis(ax, title)
    ax_eval.set_ylabel("max x")
    ax_eval.legend(fontsize=8)
    save_png(fig, path)


def _runs_table(runs: list[dict]) -> str:
    """One row per seed: env steps, wall hours, throughput, the milestones of both kinds, the best evaluation."""

    def firsts(reached: dict) -> str:
        return " / ".join(f"{reached[k]:,}" if k in reached else "-" for k in KEYS)

    rows = []
    for r in runs:
        s = r["state"]
        hours = s.get("elapsed", 0.0) / 3600  # 0: a run of a lemario that did not record it
        rate = f"{s['env_steps'] / (hours * 3600):.1f}" if hours > 0 else "-"
        rows.append(
            [
                r["config"]["seed"],
                f"{s['env_steps']:,}",
                f"{hours:.2f}" if hours > 0 else "-",
                rate,
                firsts(s["first_reached"]),
                firsts(s["first_eval_reached"]),
                f"{s['best_eval']:.0f}",
            ]
        )
    header = [
        "seed",
        "env steps",
        "wall hours",
        "env steps per wall second",
        "training episode first at x >= 700 / 1500 / 2000 / flag",
        "evaluation mean first at x >= 700 / 1500 / 2000 / flag",
        "best eval mean",
    ]
    return table(header, rows)[0]


def _milestones_table(runs: list[dict], kind: str, what: str) -> str:
    """Each milestone over the seeds, from state.json's `kind` ('first_reached' or 'first_eval_reached')."""
    seeds = [f"seed {r['config']['seed']}" for r in runs]
    rows = [milestone_row(k, [r["state"][kind].get(k) for r in runs]) for k in KEYS]
    return table([f"{what} first at"] + seeds + ["over the seeds"], rows)[0]


def _evaluations_table(runs: list[dict]) -> str:
    """Every evaluation's mean max_x [95% CI] / flag rate, by env step and seed."""
    steps = sorted({e["env_steps"] for r in runs for e in r["evals"]})
    by_step = {(r["config"]["seed"], e["env_steps"]): e for r in runs for e in r["evals"]}

    def cell(seed: int, n: int) -> str:
        e = by_step.get((seed, n))
        if e is None:
            return "-"
        ci = f"[{e['eval/ci95_low']:.0f}, {e['eval/ci95_high']:.0f}]"
        return f"{e['eval/mean_max_x']:.0f} {ci} / {e['eval/flag_rate']:.2f}"

    header = ["env steps"] + [f"seed {r['config']['seed']} mean max_x [95% CI] / flag rate" for r in runs]
    return table(header, [[f"{n:,}"] + [cell(r["config"]["seed"], n) for r in runs] for n in steps])[0]


def build(cfg: SummaryConfig) -> str:
    """Write OUT/curve.png and OUT/summary.md; returns the Markdown."""
    if not cfg.runs:
        raise LemarioError("no run folders given: pass one or more `lemario baseline ppo` --out folders")
    runs = [load_run(Path(r)) for r in cfg.runs]
    cfg.out.mkdir(parents=True, exist_ok=True)
    plot_curve(runs, cfg, cfg.out / "curve.png")
    eval_episodes = "/".join(str(n) for n in sorted({r["config"]["eval_episodes"] for r in runs}))
    intro = (
        f"Runs: {', '.join(str(r['run']) for r in runs)}. Evaluations: {eval_episodes} stochastic episodes on the "
        "harness's eval seeds. Milestones by evaluation: the mean max_x reached x, the flag when half the "
        "episodes took it.\n"
    )
    md = "\n".join(
        [
            "# PPO baseline runs\n",
            intro,
            _runs_table(runs),
            "\n## Milestones of training episodes (env steps)\n",
            _milestones_table(runs, "first_reached", "training episode"),
            "\n## Milestones of evaluations (env steps)\n",
            _milestones_table(runs, "first_eval_reached", "evaluation mean"),
            "\n## Evaluations\n",
            _evaluations_table(runs),
            "\n![learning curve](curve.png)\n",
        ]
    )
    atomic_write_text(cfg.out / "summary.md", md)
    return md


def summary_main(cfg: SummaryConfig) -> None:
    print(build(cfg))
    print(f"wrote {cfg.out / 'summary.md'} and {cfg.out / 'curve.png'}")
