"""`lemario report RUN`: a flywheel run as an HTML page and a Markdown file, with plots and the best video.

    RUN/report/index.html, report.md     the tables and the figures below, the detector's decisions
    RUN/report/kseed.png                 per-iteration K-seed scores: each seed's mean max_x, the K-seed mean +- sd,
                                         the best seed's confirmation on fresh seeds, the biased-random reference
    RUN/report/hof.png                   hall-of-fame best over iterations (confirmation score, 95% CI)
    RUN/report/tiers.png                 frame share per tier: the corpus and the replay selection
    RUN/report/world_model.png           held-out losses and probe scores per iteration, training loss curves
    RUN/report/levels.png                a run on several levels (--levels): the policies per level and iteration,
                                         beside each level's biased-random reference (and a per-level table)
    RUN/report/best.mp4, best.gif        the hall of fame's best policy on its best evaluation episode, its world
                                         model's decoded dreams beside the game
    RUN/report/dreams.png, dream_long.png  those dreams as strips (real, decoded, dreamed; one long dream)
    RUN/report/decoder.safetensors       the post-hoc decoder they come from (diagnostic, trained here once)

The biased-random reference is the mean max_x of iteration 1's collection (the seed's baseline policy, played
on collection seeds; per level too in a multi-level run). Everything is read from the run folder; the report can
be rebuilt at any time.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import tyro

from lemario.core import checkpoint, runlog
from lemario.core.errors import LemarioError
from lemario.core.executor import torch_threads
from lemario.core.files import atomic_write_text, read_json
from lemario.core.plots import table
from lemario.core.runconfig import as_json, with_defaults
from lemario.data.corpus import EXPLORE_RUN, scan
from lemario.flywheel import hof
from lemario.flywheel.config import FlywheelConfig, iter_dir
from lemario.flywheel.figures import (
    PROBE_KEYS,
    level_means,
    plot_hof,
    plot_kseed,
    plot_levels,
    plot_tiers,
    plot_world_model,
)
from lemario.flywheel.run import finished
from lemario.flywheel.summary import IterationSummary, emulated_steps, hof_curve
from lemario.games.mario.env import EnvConfig
from lemario.model.decoder import DecoderConfig, train_decoder
from lemario.play.render import RenderConfig, render
from lemario.play.stats import format_ends, where_ends

FIGURES = (
    ("K-seed scores per iteration", "kseed.png"),
    ("Hall-of-fame best", "hof.png"),
    ("Corpus and replay tiers", "tiers.png"),
    ("World model", "world_model.png"),
)


@dataclass(frozen=True)
class ReportConfig:
    run: tyro.conf.Positional[Path]
    """Flywheel run folder."""
    video: bool = True
    """Render the hall of fame's best episode (replays it on the emulator)."""
    dreams: bool = True
    """Beside it, its world model's dreams: a post-hoc decoder (`lemario analyze decoder`) trained on the run's
    corpus for that world model, once (report/decoder.safetensors is reused while the best entry stays)."""
    decoder_steps: int = 2000


def biased_references(run: Path) -> dict[str | None, float]:
    """Mean max_x of the run's biased-random episodes from spawn (iteration 1's collection; the explorer's biased
    play starts from restored cells, and a run --start-from has none): None -> over all of them, and level -> over
    that level's; empty without any."""
    rows = scan(Path(run) / "corpus", write=False).episodes
    rows = [r for r in rows if r["policy"] == "biased" and r["run"] != EXPLORE_RUN]
    if not rows:
        return {}
    levels = {r["level"] for r in rows}
    out = {lv: float(np.mean([r["max_x"] for r in rows if r["level"] == lv])) for lv in levels}
    return {None: float(np.mean([r["max_x"] for r in rows])), **out}


def dream_decoder(run: Path, entry: Path, out: Path, steps: int) -> Path:
    """A decoder for the HOF entry's world model: report/decoder.safetensors, trained unless it is already that
    world model's."""
    path, world_model = out / "decoder.safetensors", entry / "world_model.safetensors"
    if path.exists() and (out / checkpoint.load_meta(path)["world_model"]).resolve() == world_model.resolve():
        return path
    train_decoder(DecoderConfig(world_model, corpus=run / "corpus", steps=steps, out=out))
    return path


def render_best(run: Path, out: Path, cfg: ReportConfig) -> dict | None:
    """The HOF best policy on its furthest evaluation episode, replayed on the emulator (with its world model's
    dreams when asked)."""
    top = hof.top(run)
    if not top:
        return None
    entry = hof.folder(run, top[0])
    decoder = dream_decoder(run, entry, out, cfg.decoder_steps) if cfg.dreams else None
    rows = runlog.read_rows(entry / "eval" / "episodes.jsonl")
    rows = [r for r in rows if r.get("agent") == top[0].get("best_agent")] or rows
    best = max(rows, key=lambda r: (r["flag_get"], r["max_x"], -r["steps"]))
    stored = read_json(run / "config.json")["config"]  # as written by any lemario: in today's shape
    env = EnvConfig(**with_defaults(stored, as_json(FlywheelConfig()))["env"])
    env = replace(env, level=best.get("level", env.level))  # a multi-level run's rows name their level
    with torch_threads(1):  # as in the evaluation workers, so the replay is the evaluated episode
        return render(
            RenderConfig(
                agent=f"policy:{entry / 'policy.safetensors'}",
                eval_seed=best["eval_seed"],
                env=env,
                out=out,
                decoder=decoder,
            )
        )


def _confirm_cell(s: IterationSummary) -> str:
    c = s.confirm
    return f"{c['mean_max_x']:.0f} [{c['ci95_low']:.0f}, {c['ci95_high']:.0f}]" if c else "-"


def _iterations_table(summaries: list[IterationSummary], curve: list[dict]) -> tuple[str, str]:
    return table(
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
            "env steps",
            "emulated (with evaluations)",
            "exploration",
            "minutes",
        ],
        [
            [
                s.iteration,
                len(s.seed_scores),
                " ".join(f"{v['mean_max_x']:.0f}" for v in s.seed_scores.values()),
                f"{s.k_mean:.0f}",
                f"{s.k_sd:.0f}",
                s.best_seed,
                _confirm_cell(s),
                f"{c['score']:.0f}, {c['flag_rate']:.0%} flags (iter {c['iteration']})",
                s.corpus_episodes,
                s.env_steps,
                emulated,
                _exploration_cell(s),
                f"{sum(s.timing.values()) / 60:.1f}",
            ]
            for s, c, emulated in zip(summaries, curve, emulated_steps(summaries))
        ],
    )


def _exploration_cell(s: IterationSummary) -> str:
    """'E env steps, frontier x X[, flag at F]' of the archive after the iteration, or '-' without exploration."""
    e = s.exploration
    if not e:
        return "-"
    if "levels" in e:  # a multi-level run: each level's archive
        return "; ".join(f"{lv}: {_exploration_cell_of(f)}" for lv, f in e["levels"].items())
    return _exploration_cell_of(e)


def _exploration_cell_of(e: dict) -> str:
    flag = f", flag at {e['flag_env_steps']}" if e["flag_env_steps"] is not None else ""
    return f"{e['env_steps']} env steps, frontier x {e['max_x']}{flag}"


def _design(s: IterationSummary) -> str:
    """'K = 3 policies', or 'W = 2 world models x K = 3 policies'."""
    k = f"K = {len(s.plan.policy_seeds)} policies"
    return k if s.plan.world_models == 1 else f"W = {s.plan.world_models} world models x {k}"


def _decisions_table(summaries: list[IterationSummary]) -> tuple[str, str]:
    return table(
        [
            "iter",
            "decision",
            "rule (metric)",
            "z max_x",
            "z flags",
            "threshold",
            "z's unit",
            "vs best (iter)",
            "flipped in this iteration",
            "reason",
        ],
        [
            [
                s.iteration,
                s.decision.verdict,
                f"{s.decision.rule} ({s.decision.metric})",
                f"{s.decision.z:.2f}",
                f"{s.decision.flags.z:.2f}" if s.decision.flags else "-",
                f"{s.decision.threshold:.3f}",
                f"{s.decision.pooled_sd:.1f}",
                s.decision.best_iteration or "-",
                s.plan.flip or "-",
                s.decision.reason,
            ]
            for s in summaries
        ],
    )


def _levels_table(summaries: list[IterationSummary], references: dict) -> tuple[str, str]:
    """A multi-level run: per iteration and level, the policies' mean max_x +- sd and the best flag rate."""
    levels = list(summaries[0].level_scores)
    ref = [f"{references[lv]:.0f}" if lv in references else "-" for lv in levels]
    rows = [["biased random", *ref]]
    for s in summaries:
        means = level_means(s)
        rows.append([s.iteration] + [f"{m:.0f} +- {sd:.0f}, best flag {f:.2f}" for m, sd, f in map(means.get, levels)])
    return table(["iter", *levels], rows)


def _blocked_cells(s: IterationSummary) -> list[str]:
    """The warm-start model on the iteration's new episodes: how many steps were blocked (right held, x unchanged)
    and the progress it predicted there, one step and along its rollout (the game gives 0); its death foresight
    AUC there."""
    b = (s.model_error or {}).get("groups", {}).get("blocked")
    death = (s.model_error or {}).get("death")  # since session 35
    auc = "-" if death is None or death["auc"]["all"] is None else f"{death['auc']['all']:.3f}"
    if b is None:  # the first iteration, or a run from before the measurement
        return ["-", "-", auc]
    if not b["steps"]:
        return ["0", "-", auc]
    return [str(b["steps"]), f"{b['predicted']:.2f} / {b['predicted_rollout']:.2f}", auc]


def _ends_table(run: Path, summaries: list[IterationSummary]) -> tuple[str, str]:
    """Where the K policies' evaluation episodes end, per iteration: each end's most frequent 100-px places
    (`lemario.play.stats.where_ends`), the obstacles the run is stuck at."""
    rows = []
    for s in summaries:
        episodes = runlog.read_rows(iter_dir(run, s.iteration) / "eval" / "episodes.jsonl")
        flags = sum(e["end"] == "flag" for e in episodes)
        rows.append([s.iteration, len(episodes), flags, format_ends(where_ends(episodes), bins=3)])
    return table(["iter", "episodes", "flags", "where the others end (final x)"], rows)


def _world_model_table(summaries: list[IterationSummary]) -> tuple[str, str]:
    nan = float("nan")
    return table(
        ["iter", "val pred", "val sigreg"]
        + [f"{k} R2" for k in PROBE_KEYS]
        + [
            "on_ground bal",
            "is_dying bal",
            "blocked steps (prev WM)",
            "blocked pred px (1 / rollout)",
            "death AUC (prev WM)",
        ],
        [
            [
                s.iteration,
                f"{s.world_model['val'].get('val/loss/pred', nan):.4f}",
                f"{s.world_model['val'].get('val/loss/sigreg', nan):.2f}",
            ]
            + [f"{s.probes[k]['linear']['r2']:.3f}" for k in PROBE_KEYS]
            + [f"{s.probes[k]['linear'].get('balanced_accuracy') or nan:.3f}" for k in ("on_ground", "is_dying")]
            + _blocked_cells(s)
            for s in summaries
        ],
    )


def _headline(run: Path, summaries: list[IterationSummary], curve: list[dict], reference: float | None) -> str:
    sds = [s.k_sd for s in summaries]
    commit = read_json(run / "config.json").get("git_commit", "?")
    ref = "-" if reference is None else f"{reference:.0f}"
    rose = "rose" if curve[-1]["iteration"] != curve[0]["iteration"] else "did not rise"
    return (
        f"Run {run}: {len(summaries)} iterations, {_design(summaries[0])} each; git {commit}. "
        f"Measured between-seed sd of mean max_x: {np.mean(sds):.0f} on average (range {min(sds):.0f}-"
        f"{max(sds):.0f}). Biased-random reference: {ref}. Hall-of-fame best: {curve[-1]['score']:.0f}, "
        f"{curve[-1]['flag_rate']:.0%} flags (iteration {curve[-1]['iteration']}, confirmation on fresh seeds); HOF "
        f"best {rose} over the run."
    )


def _write_page(out: Path, head: str, tables: list, figures: list, video: dict | None) -> None:
    """report.md and index.html: the headline, the tables, the figures and the best episode."""
    md = [f"# lemario flywheel report\n\n{head}\n"]
    body = [f"<h1>lemario flywheel report</h1><p>{html.escape(head)}</p>"]
    for title, (tmd, thtml) in tables:
        md += [f"## {title}\n", tmd, ""]
        body += [f"<h2>{title}</h2>", thtml]
    for title, png in figures:
        md.append(f"## {title}\n\n![{title}]({png})\n")
        body.append(f"<h2>{title}</h2><img src='{png}' alt='{title}'>")
    if video:
        c = video["chosen"]
        caption = f"seed {c['eval_seed']}: max_x {c['max_x']}, {c['steps']} steps, end {c['end']}"
        md.append(f"## Best episode\n\n{caption}\n\n![best episode](best.gif) ([MP4](best.mp4))\n")
        body.append(
            f"<h2>Best episode</h2><p>{html.escape(caption)}</p>"
            "<video src='best.mp4' controls loop width='768'></video>"
        )
        if (out / "dreams.png").exists():
            text = (
                "Its world model's dreams, decoded by a post-hoc decoder: each moment imagined a few steps earlier "
                "under the actions played, and one open-loop dream from the first frame."
            )
            md.append(f"## Dreams\n\n{text}\n\n![dreams](dreams.png)\n\n![one long dream](dream_long.png)\n")
            body.append(f"<h2>Dreams</h2><p>{text}</p><img src='dreams.png'><img src='dream_long.png'>")
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:3px 6px}"
    )
    atomic_write_text(out / "report.md", "\n".join(md))
    atomic_write_text(
        out / "index.html",
        f"<!doctype html><html><head><meta charset='utf-8'><title>lemario report"
        f"</title><style>{style}</style></head><body>{''.join(body)}</body></html>",
    )


def build(cfg: ReportConfig) -> Path:
    """Write RUN/report/ from the run folder; returns the report folder."""
    run = cfg.run
    summaries = finished(run)
    if not summaries:
        raise LemarioError(f"{run} has no finished flywheel iteration: run `lemario flywheel --out {run}` first")
    out = run / "report"
    out.mkdir(exist_ok=True)
    references = biased_references(run)
    reference = references.get(None)
    curve = hof_curve(summaries)
    plot_kseed(summaries, reference, out / "kseed.png")
    plot_hof(curve, reference, out / "hof.png")
    plot_tiers(summaries, out / "tiers.png")
    plot_world_model(run, summaries, out / "world_model.png")
    figures = list(FIGURES)
    video = render_best(run, out, cfg) if cfg.video else None
    tables = [
        ("Iterations", _iterations_table(summaries, curve)),
        ("Detector decisions", _decisions_table(summaries)),
        ("World model", _world_model_table(summaries)),
    ]
    if summaries[0].level_scores:  # one place axis per level: the pooled ends would mix them
        plot_levels(summaries, references, out / "levels.png")
        figures.append(("Per level", "levels.png"))
        tables.insert(1, ("Per level", _levels_table(summaries, references)))
    else:
        tables.insert(2, ("Where episodes end", _ends_table(run, summaries)))
    _write_page(out, _headline(run, summaries, curve, reference), tables, figures, video)
    return out


def report_main(cfg: ReportConfig) -> None:
    out = build(cfg)
    print(f"wrote {out / 'index.html'} and {out / 'report.md'}")
