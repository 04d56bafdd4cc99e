"""The flywheel report's figures, drawn from the iterations' summaries (`lemario.flywheel.iteration`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lemario.core import runlog
from lemario.core.plots import figure, save_png
from lemario.flywheel.config import iter_dir
from lemario.flywheel.summary import IterationSummary

PROBE_KEYS = ("x_pos", "y_pos", "x_vel", "y_vel")
FLAGPOLE_X = 3161  # 1-1's flagpole


def plot_kseed(summaries: list[IterationSummary], reference: float | None, path: Path) -> None:
    """Each seed's mean max_x per iteration, the K-seed mean +- sd, the confirmation, the biased reference."""
    plt = figure()
    fig, ax = plt.subplots(figsize=(7, 4))
    its = [s.iteration for s in summaries]
    for s in summaries:
        means = [v["mean_max_x"] for v in s.seed_scores.values()]
        jitter = np.linspace(-0.12, 0.12, len(means))
        ax.scatter(
            s.iteration + jitter,
            means,
            s=18,
            color="tab:blue",
            alpha=0.7,
            label="seed (mean max_x)" if s is summaries[0] else None,
        )
        if s.confirm:
            ax.scatter(
                s.iteration + 0.28,
                s.confirm["mean_max_x"],
                marker="D",
                s=28,
                color="tab:green",
                label="best seed, fresh seeds" if s is summaries[0] else None,
            )
    ax.errorbar(
        its,
        [s.k_mean for s in summaries],
        yerr=[s.k_sd for s in summaries],
        color="black",
        capsize=4,
        marker="_",
        markersize=14,
        linestyle="none",
        label="K-seed mean +- sd",
    )
    if reference is not None:
        ax.axhline(reference, color="tab:gray", linestyle="--", label=f"biased random ({reference:.0f})")
    ax.set_xlabel("iteration")
    ax.set_ylabel("mean max_x over evaluation episodes")
    ax.set_xticks(its)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    ax.set_title("K policies per iteration")
    save_png(fig, path)


def plot_hof(curve: list[dict], reference: float | None, path: Path) -> None:
    """The hall-of-fame best after each iteration (`hof_curve`) with its 95% CI, its flag rate and its furthest
    episode."""
    plt = figure()
    fig, ax = plt.subplots(figsize=(7, 3.5))
    x = [c["after"] for c in curve]
    y = [c["score"] for c in curve]
    ax.fill_between(
        x, [c["ci95"][0] for c in curve], [c["ci95"][1] for c in curve], color="tab:green", alpha=0.2, step="post"
    )
    ax.step(x, y, where="post", color="tab:green", marker="o", label="hall-of-fame best (95% CI)")
    for c in curve:
        if c["flag_rate"] > 0:
            ax.annotate(
                f"{c['flag_rate']:.0%} flags",
                (c["after"], c["score"]),
                fontsize=7,
                xytext=(3, -10),
                textcoords="offset points",
            )
    ax.plot(
        x, [c["max_max_x"] for c in curve], color="tab:orange", marker=".", linestyle=":", label="its furthest episode"
    )
    if reference is not None:
        ax.axhline(reference, color="tab:gray", linestyle="--", label="biased random")
    ax.axhline(FLAGPOLE_X, color="tab:red", linewidth=0.8, label=f"1-1 flagpole (x {FLAGPOLE_X})")
    ax.set_xlabel("after iteration")
    ax.set_ylabel("max_x")
    ax.set_xticks(x)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    save_png(fig, path)


def plot_tiers(summaries: list[IterationSummary], path: Path) -> None:
    """Share of frames per tier, in the corpus and in the replay selection, per iteration."""
    plt = figure()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5), sharey=True)
    for ax, which in zip(axes, ("corpus", "selection")):
        bottom = np.zeros(len(summaries))
        names = [t["tier"] for t in summaries[0].audit[which]]
        for j, name in enumerate(names):
            share = np.array([s.audit[which][j]["share"] for s in summaries])
            ax.bar([s.iteration for s in summaries], share, bottom=bottom, label=name)
            bottom += share
        ax.set_title(f"{which}: share of frames")
        ax.set_xlabel("iteration")
        ax.set_xticks([s.iteration for s in summaries])
    axes[0].set_ylabel("share")
    axes[1].legend(fontsize=8, loc="lower right")
    save_png(fig, path)


def plot_world_model(run: Path, summaries: list[IterationSummary], path: Path) -> None:
    """Held-out losses and probe scores per iteration, and the training loss curves back to back."""
    plt = figure()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.5))
    its = [s.iteration for s in summaries]
    for key in ("val/loss/pred", "val/loss/sigreg", "val/loss/reward"):
        axes[0].plot(its, [s.world_model["val"].get(key, np.nan) for s in summaries], marker="o", label=key[4:])
    axes[0].set_yscale("log")
    axes[0].set_title("held-out losses")
    axes[0].set_xlabel("iteration")
    for key in PROBE_KEYS:
        axes[1].plot(its, [s.probes[key]["linear"]["r2"] for s in summaries], marker="o", label=f"{key} (linear R2)")
    for key in ("on_ground", "is_dying"):
        axes[1].plot(
            its,
            [s.probes[key]["linear"].get("balanced_accuracy") or np.nan for s in summaries],
            marker="x",
            linestyle="--",
            label=f"{key} (bal. acc.)",
        )
    r2 = [s.probes[key]["linear"]["r2"] for s in summaries for key in PROBE_KEYS]
    axes[1].set_ylim(min(-0.1, np.nanmin(r2) - 0.05), 1.05)  # a negative R2 (worse than the mean) stays in view
    axes[1].set_title("probes to RAM physics")
    axes[1].set_xlabel("iteration")
    offset = 0
    for s in summaries:
        rows = [r for r in runlog.read_rows(iter_dir(run, s.iteration) / "wm" / runlog.NAME) if "loss/pred" in r]
        if rows:
            axes[2].plot(
                [offset + r["step"] for r in rows], [r["loss/pred"] for r in rows], color="tab:blue", linewidth=0.8
            )
            axes[2].axvline(offset, color="tab:gray", linewidth=0.5)
            offset += rows[-1]["step"]
    axes[2].set_yscale("log")
    axes[2].set_title("training prediction loss (iterations back to back)")
    axes[2].set_xlabel("optimizer step")
    for ax in axes[:2]:
        ax.set_xticks(its)
        ax.legend(fontsize=7)
    save_png(fig, path)


def level_means(s: IterationSummary) -> dict[str, tuple[float, float, float]]:
    """With --levels: level -> (mean over the iteration's policies of their mean max_x there, the sd between
    them, the best policy's flag rate there); empty for a single-level run."""
    out = {}
    for level, scores in (s.level_scores or {}).items():
        means = [a["mean_max_x"] for a in scores.values()]
        sd = float(np.std(means, ddof=1)) if len(means) > 1 else 0.0
        out[level] = (float(np.mean(means)), sd, max(a["flag_rate"] for a in scores.values()))
    return out


def plot_levels(summaries: list[IterationSummary], references: dict[str, float], path: Path) -> None:
    """A multi-level run's policies per level and iteration (mean +- sd over the policies), with each level's
    biased-random reference."""
    plt = figure()
    fig, ax = plt.subplots(figsize=(7, 4))
    levels = list(summaries[0].level_scores)
    its = [s.iteration for s in summaries]
    for j, level in enumerate(levels):
        color = f"C{j % 10}"
        stats = [level_means(s)[level] for s in summaries]
        ax.errorbar(
            np.array(its) + 0.06 * (j - (len(levels) - 1) / 2),
            [m for m, _, _ in stats],
            yerr=[sd for _, sd, _ in stats],
            color=color,
            marker="o",
            capsize=3,
            label=level,
        )
        if level in references:
            ax.axhline(references[level], color=color, linestyle="--", linewidth=0.8)
    ax.set_xlabel("iteration")
    ax.set_ylabel("mean max_x (policies' mean +- sd)")
    ax.set_xticks(its)
    ax.set_title("per level (dashed: biased random)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    save_png(fig, path)
