"""`lemario report RUN`: a flywheel run as an HTML page and a Markdown file, with plots and the best video.

    RUN/report/index.html, report.md     the tables and the figures below, the detector's decisions
    RUN/report/kseed.png                 per-iteration K-seed scores: each seed's mean max_x, the K-seed mean +- sd,
                                         the best seed's confirmation on fresh seeds, the biased-random reference
    RUN/report/hof.png                   hall-of-fame best over iterations (confirmation score, 95% CI)
    RUN/report/tiers.png                 frame share per tier: the corpus and the replay selection
    RUN/report/world_model.png           held-out losses and probe scores per iteration, training loss curves
    RUN/report/best.mp4, best.gif        the hall of fame's best policy on its best evaluation episode

The biased-random reference is the mean max_x of iteration 1's collection (the seed's baseline policy, played
on collection seeds). Everything is read from the run folder; the report can be rebuilt at any time.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tyro

from lemario.core.errors import LemarioError
from lemario.core.executor import torch_threads
from lemario.core.files import atomic_write_text
from lemario.core.plots import figure, save_png, table
from lemario.data.corpus import scan
from lemario.flywheel import hof
from lemario.flywheel.run import finished, iter_dir
from lemario.play.render import RenderConfig, render

PROBE_KEYS = ("x_pos", "y_pos", "x_vel", "y_vel")


@dataclass(frozen=True)
class ReportConfig:
    run: tyro.conf.Positional[Path]
    """Flywheel run folder."""
    video: bool = True
    """Render the hall of fame's best episode (replays it on the emulator)."""


def biased_reference(run: Path) -> float | None:
    rows = [r for r in scan(Path(run) / "corpus", write=False).episodes if r["policy"] == "biased"]
    return float(np.mean([r["max_x"] for r in rows])) if rows else None


def plot_kseed(summaries: list[dict], reference: float | None, path: Path) -> None:
    plt = figure()
    fig, ax = plt.subplots(figsize=(7, 4))
    its = [s["iteration"] for s in summaries]
    for s in summaries:
        means = [v["mean_max_x"] for v in s["seed_scores"].values()]
        jitter = np.linspace(-0.12, 0.12, len(means))
        ax.scatter(
            s["iteration"] + jitter,
            means,
            s=18,
            color="tab:blue",
            alpha=0.7,
            label="seed (mean max_x)" if s is summaries[0] else None,
        )
        if s["confirm"]:
            ax.scatter(
                s["iteration"] + 0.28,
                s["confirm"]["mean_max_x"],
                marker="D",
                s=28,
                color="tab:green",
                label="best seed, fresh seeds" if s is summaries[0] else None,
            )
    ax.errorbar(
        its,
        [s["k_mean"] for s in summaries],
        yerr=[s["k_sd"] for s in summaries],
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


def hof_curve(summaries: list[dict]) -> list[dict]:
    """Best confirmation score so far after each iteration (the curve that must rise)."""
    best, out = None, []
    for s in summaries:
        c = s["confirm"] or s["seed_scores"][str(s["best_seed"])]
        if best is None or c["mean_max_x"] > best["score"]:
            best = {
                "iteration": s["iteration"],
                "score": c["mean_max_x"],
                "ci95": [c["ci95_low"], c["ci95_high"]],
                "max_max_x": c["max_max_x"],
            }
        out.append({"after": s["iteration"], **best})
    return out


def plot_hof(curve: list[dict], reference: float | None, path: Path) -> None:
    plt = figure()
    fig, ax = plt.subplots(figsize=(7, 3.5))
    x = [c["after"] for c in curve]
    y = [c["score"] for c in curve]
    ax.fill_between(
        x, [c["ci95"][0] for c in curve], [c["ci95"][1] for c in curve], color="tab:green", alpha=0.2, step="post"
    )
    ax.step(x, y, where="post", color="tab:green", marker="o", label="hall-of-fame best (95% CI)")
    ax.plot(
        x, [c["max_max_x"] for c in curve], color="tab:orange", marker=".", linestyle=":", label="its furthest episode"
    )
    if reference is not None:
        ax.axhline(reference, color="tab:gray", linestyle="--", label="biased random")
    ax.axhline(3161, color="tab:red", linewidth=0.8, label="1-1 flagpole (x 3161)")
    ax.set_xlabel("after iteration")
    ax.set_ylabel("max_x")
    ax.set_xticks(x)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    save_png(fig, path)


def plot_tiers(summaries: list[dict], path: Path) -> None:
    plt = figure()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5), sharey=True)
    for ax, which in zip(axes, ("corpus", "selection")):
        bottom = np.zeros(len(summaries))
        names = [t["tier"] for t in summaries[0]["audit"][which]]
        for j, name in enumerate(names):
            share = np.array([s["audit"][which][j]["share"] for s in summaries])
            ax.bar([s["iteration"] for s in summaries], share, bottom=bottom, label=name)
            bottom += share
        ax.set_title(f"{which}: share of frames")
        ax.set_xlabel("iteration")
        ax.set_xticks([s["iteration"] for s in summaries])
    axes[0].set_ylabel("share")
    axes[1].legend(fontsize=8, loc="lower right")
    save_png(fig, path)


def plot_world_model(run: Path, summaries: list[dict], path: Path) -> None:
    plt = figure()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.5))
    its = [s["iteration"] for s in summaries]
    for key in ("val/loss/pred", "val/loss/sigreg", "val/loss/reward"):
        axes[0].plot(its, [s["world_model"]["val"].get(key, np.nan) for s in summaries], marker="o", label=key[4:])
    axes[0].set_yscale("log")
    axes[0].set_title("held-out losses")
    axes[0].set_xlabel("iteration")
    for key in PROBE_KEYS:
        axes[1].plot(its, [s["probes"][key]["linear"]["r2"] for s in summaries], marker="o", label=f"{key} (linear R2)")
    for key in ("on_ground", "is_dying"):
        axes[1].plot(
            its,
            [s["probes"][key]["linear"].get("balanced_accuracy") or np.nan for s in summaries],
            marker="x",
            linestyle="--",
            label=f"{key} (bal. acc.)",
        )
    axes[1].set_ylim(-0.1, 1.05)
    axes[1].set_title("probes to RAM physics")
    axes[1].set_xlabel("iteration")
    offset = 0
    for s in summaries:
        rows = [
            json.loads(line)
            for line in (iter_dir(run, s["iteration"]) / "wm" / "metrics.jsonl").read_text().splitlines()
        ]
        rows = [r for r in rows if "loss/pred" in r]
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


def render_best(run: Path, out: Path) -> dict | None:
    """The HOF best policy on its furthest evaluation episode, replayed on the emulator."""
    top = hof.top(run)
    if not top:
        return None
    entry = hof.folder(run, top[0])
    rows = [json.loads(line) for line in (entry / "eval" / "episodes.jsonl").read_text().splitlines() if line.strip()]
    rows = [r for r in rows if r.get("agent") == top[0].get("best_agent")] or rows
    best = max(rows, key=lambda r: (r["max_x"], -r["steps"]))
    cfg = json.loads((run / "config.json").read_text())["config"]
    with torch_threads(1):  # as in the evaluation workers, so the replay is the evaluated episode
        return render(
            RenderConfig(
                agent=f"policy:{entry / 'policy.safetensors'}",
                eval_seed=best["eval_seed"],
                level=cfg["level"],
                backend=cfg["backend"],
                action_set=cfg["action_set"],
                max_steps=cfg["max_steps"],
                out=out,
            )
        )


def build(cfg: ReportConfig) -> Path:
    run = cfg.run
    summaries = finished(run)
    if not summaries:
        raise LemarioError(f"{run} has no finished flywheel iteration: run `lemario flywheel --out {run}` first")
    out = run / "report"
    out.mkdir(exist_ok=True)
    reference = biased_reference(run)
    curve = hof_curve(summaries)
    plot_kseed(summaries, reference, out / "kseed.png")
    plot_hof(curve, reference, out / "hof.png")
    plot_tiers(summaries, out / "tiers.png")
    plot_world_model(run, summaries, out / "world_model.png")
    video = render_best(run, out) if cfg.video else None
    config = json.loads((run / "config.json").read_text())

    its = table(
        [
            "iter",
            "K",
            "seed means (max_x)",
            "K-seed mean",
            "sd",
            "best seed",
            "confirm (fresh seeds)",
            "HOF best",
            "corpus episodes",
            "minutes",
        ],
        [
            [
                s["iteration"],
                len(s["seed_scores"]),
                " ".join(f"{v['mean_max_x']:.0f}" for v in s["seed_scores"].values()),
                f"{s['k_mean']:.0f}",
                f"{s['k_sd']:.0f}",
                s["best_seed"],
                f"{s['confirm']['mean_max_x']:.0f} [{s['confirm']['ci95_low']:.0f}, {s['confirm']['ci95_high']:.0f}]"
                if s["confirm"]
                else "-",
                f"{c['score']:.0f} (iter {c['iteration']})",
                s["corpus_episodes"],
                f"{sum(s['timing'].values()) / 60:.1f}",
            ]
            for s, c in zip(summaries, curve)
        ],
    )
    dec = table(
        ["iter", "decision", "z", "threshold", "pooled sd", "vs best (iter)", "flipped in this iteration", "reason"],
        [
            [
                s["iteration"],
                s["decision"]["decision"],
                f"{s['decision']['z']:.2f}",
                s["decision"]["threshold"],
                f"{s['decision']['pooled_sd']:.1f}",
                s["decision"]["best_iteration"] or "-",
                s["decision"].get("applied_flip") or "-",
                s["decision"]["reason"],
            ]
            for s in summaries
        ],
    )
    probes = table(
        ["iter", "val pred", "val sigreg"] + [f"{k} R2" for k in PROBE_KEYS] + ["on_ground bal", "is_dying bal"],
        [
            [
                s["iteration"],
                f"{s['world_model']['val'].get('val/loss/pred', float('nan')):.4f}",
                f"{s['world_model']['val'].get('val/loss/sigreg', float('nan')):.2f}",
            ]
            + [f"{s['probes'][k]['linear']['r2']:.3f}" for k in PROBE_KEYS]
            + [
                f"{s['probes'][k]['linear'].get('balanced_accuracy') or float('nan'):.3f}"
                for k in ("on_ground", "is_dying")
            ]
            for s in summaries
        ],
    )
    sds = [s["k_sd"] for s in summaries]
    head = (
        f"Run {run}: {len(summaries)} iterations, K = {len(summaries[0]['seed_scores'])} policies each; git "
        f"{config.get('git_commit', '?')}. Measured between-seed sd of mean max_x: {np.mean(sds):.0f} on average "
        f"(range {min(sds):.0f}-{max(sds):.0f}). Biased-random reference: "
        f"{'-' if reference is None else f'{reference:.0f}'}. Hall-of-fame best: {curve[-1]['score']:.0f} "
        f"(iteration {curve[-1]['iteration']}, confirmation on fresh seeds); HOF best "
        f"{'rose' if curve[-1]['score'] > curve[0]['score'] else 'did not rise'} over the run."
    )
    figures = [
        ("K-seed scores per iteration", "kseed.png"),
        ("Hall-of-fame best", "hof.png"),
        ("Corpus and replay tiers", "tiers.png"),
        ("World model", "world_model.png"),
    ]
    md = [
        f"# lemario flywheel report\n\n{head}\n",
        "## Iterations\n",
        its[0],
        "\n## Detector decisions\n",
        dec[0],
        "\n## World model\n",
        probes[0],
        "",
    ]
    md += [f"## {title}\n\n![{title}]({png})\n" for title, png in figures]
    body = [
        f"<h1>lemario flywheel report</h1><p>{html.escape(head)}</p>",
        "<h2>Iterations</h2>",
        its[1],
        "<h2>Detector decisions</h2>",
        dec[1],
        "<h2>World model</h2>",
        probes[1],
    ]
    body += [f"<h2>{title}</h2><img src='{png}' alt='{title}'>" for title, png in figures]
    if video:
        c = video["chosen"]
        caption = f"seed {c['eval_seed']}: max_x {c['max_x']}, {c['steps']} steps, end {c['end']}"
        md.append(f"## Best episode\n\n{caption}\n\n![best episode](best.gif) ([MP4](best.mp4))\n")
        body.append(
            f"<h2>Best episode</h2><p>{html.escape(caption)}</p><video src='best.mp4' controls loop "
            "width='512'></video>"
        )
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:3px 6px}"
    )
    atomic_write_text(out / "report.md", "\n".join(md))
    atomic_write_text(
        out / "index.html",
        f"<!doctype html><html><head><meta charset='utf-8'><title>lemario report</title>"
        f"<style>{style}</style></head><body>{''.join(body)}</body></html>",
    )
    return out


def report_main(cfg: ReportConfig) -> None:
    out = build(cfg)
    print(f"wrote {out / 'index.html'} and {out / 'report.md'}")
