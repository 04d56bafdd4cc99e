"""The hall of fame (the seed's M2): every iteration's world model, policy and evaluation, copied, never overwritten.

    RUN/hof/iter{N}_meanx{mean}_maxx{max}/   world_model.{safetensors,json}, policy.{safetensors,json},
                                             eval/summary.json, eval/episodes.jsonl, entry.json
                                             confirm/... (the re-evaluation on fresh seeds, when given)
    RUN/hof/catalog.json                     entries ranked (best first)

Entries are ranked on their confirmation evaluation when there is one (the iteration's policy is the best of K on
the evaluation seeds, so its own figures there are biased upwards, the winner's curse; the confirmation replays it
on seeds nothing was selected on), by what the run's detector decides on (`detector.rank_key`): the mean max_x
(an entry's `score`), or with --detector.metric flags or either the flag rate first, then the mean max_x. Files
are copied (not linked), so deleting a run's working files never loses an entry; the policy's sidecar points at the
entry's own world model. Warm starts come from `top(run, k)`. `lemario hof list|show|export RUN`.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import tyro

from lemario.core.errors import LemarioError
from lemario.core.files import read_json, write_json
from lemario.flywheel.detector import rank_key
from lemario.flywheel.keys import upgrade_key

CATALOG = "catalog.json"


def entry_name(iteration: int, mean_max_x: float, max_max_x: float) -> str:
    """The entry's folder name: iteration, mean and furthest max_x of its evaluation."""
    return f"iter{iteration}_meanx{mean_max_x:.0f}_maxx{max_max_x:.0f}"


def _copy_checkpoint(src: Path, dst: Path) -> None:
    """NAME.safetensors and its NAME.json sidecar."""
    shutil.copyfile(src, dst)
    shutil.copyfile(src.with_suffix(".json"), dst.with_suffix(".json"))


def _entry(iteration: int, name: str, best: dict, confirm: dict | None, extra: dict) -> dict:
    """The catalog row of an entry: its evaluation's figures, its score (the confirmation's mean when given)."""
    entry = {
        "iteration": iteration,
        "name": name,
        "mean_max_x": best["mean_max_x"],
        "max_max_x": best["max_max_x"],
        "flag_rate": best["flag_rate"],
        "ci95": [best["ci95_low"], best["ci95_high"]],
        "score": confirm["mean_max_x"] if confirm else best["mean_max_x"],
        **extra,
    }
    if confirm:
        keys = ("mean_max_x", "max_max_x", "flag_rate", "ci95_low", "ci95_high", "episodes")
        entry["confirm"] = {k: confirm[k] for k in keys}
    return entry


def _copy_files(tmp: Path, world_model: Path, policy: Path, evals: list[tuple[Path, str]]) -> None:
    """The entry's own copies: world model, policy (its sidecar pointing at the copy) and evaluations."""
    (tmp / "eval").mkdir(parents=True)
    _copy_checkpoint(world_model, tmp / "world_model.safetensors")
    _copy_checkpoint(policy, tmp / "policy.safetensors")
    sidecar = read_json(tmp / "policy.json")
    moved = {**sidecar, "world_model": "world_model.safetensors", "trained_with": sidecar.get("world_model")}
    write_json(tmp / "policy.json", moved)
    for src, dst in evals:
        (tmp / dst).mkdir(exist_ok=True)
        for f in ("summary.json", "episodes.jsonl"):
            shutil.copyfile(src / f, tmp / dst / f)


def add(
    run: Path,
    iteration: int,
    world_model: Path,
    policy: Path,
    eval_dir: Path,
    extra: dict,
    metric: str,
    confirm_dir: Path | None = None,
) -> dict:
    """Copy an iteration's artifacts into the hall of fame and re-rank the catalog by `metric` (the run's detector
    metric). Refuses to overwrite."""
    per_agent = read_json(eval_dir / "summary.json")["per_agent"]
    best = per_agent[extra["best_agent"]] if "best_agent" in extra else next(iter(per_agent.values()))
    confirm = next(iter(read_json(confirm_dir / "summary.json")["per_agent"].values())) if confirm_dir else None
    name = entry_name(iteration, best["mean_max_x"], best["max_max_x"])
    folder = run / "hof" / name
    if any(e["iteration"] == iteration for e in catalog(run)):
        raise LemarioError(
            f"hall of fame already holds iteration {iteration} ({folder}): entries are never overwritten"
        )
    if (folder / "entry.json").exists():  # copied, then killed before the catalog was updated: finish that
        entry = read_json(folder / "entry.json")
        _write_catalog(run, catalog(run) + [entry], metric)
        return entry
    tmp = run / "hof" / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    _copy_files(tmp, world_model, policy, [(eval_dir, "eval")] + ([(confirm_dir, "confirm")] if confirm_dir else []))
    entry = _entry(iteration, name, best, confirm, extra)
    write_json(tmp / "entry.json", entry)
    tmp.rename(folder)
    _write_catalog(run, catalog(run) + [entry], metric)
    return entry


def ranked(entries: list[dict], metric: str) -> list[dict]:
    """Entries best first by `metric`, on their confirmation when they have one."""
    return sorted(entries, key=lambda e: rank_key(metric, e.get("confirm", e)), reverse=True)


def _write_catalog(run: Path, entries: list[dict], metric: str) -> None:
    write_json(Path(run) / "hof" / CATALOG, ranked(entries, metric))


def catalog(run: Path) -> list[dict]:
    """The entries of a run's hall of fame, best first (none before the first iteration)."""
    path = Path(run) / "hof" / CATALOG
    return read_json(path) if path.exists() else []


def top(run: Path, k: int = 1) -> list[dict]:
    """The k best entries."""
    return catalog(run)[:k]


def folder(run: Path, entry: dict) -> Path:
    """Where an entry's files are."""
    return Path(run) / "hof" / entry["name"]


def _metric(run: Path) -> str:
    """The detector metric a run ranks its hall of fame by (runs before the flag test: max_x)."""
    return upgrade_key(read_json(Path(run) / "config.json")["run_key"])["detector"]["metric"]


@dataclass(frozen=True)
class HofConfig:
    action: tyro.conf.Positional[Literal["list", "show", "export"]]
    run: tyro.conf.Positional[Path]
    """Flywheel run folder."""
    iteration: int | None = None
    """Entry to show or export (default: the best)."""
    to: Path | None = None
    """Export destination folder."""


def hof_main(cfg: HofConfig) -> None:
    entries = catalog(cfg.run)
    if not entries:
        raise LemarioError(f"{cfg.run} has no hall of fame yet: run `lemario flywheel --out {cfg.run}` first")
    if cfg.action == "list":
        print(
            f"{'rank':>4}  {'iter':>4}  {'score':>6}  {'flags':>5}  {'mean max_x':>10}  {'95% CI':>14}  {'max':>6}  "
            f"{'flag':>5}  entry"
        )
        for i, e in enumerate(entries, 1):
            print(
                f"{i:>4}  {e['iteration']:>4}  {e.get('score', e['mean_max_x']):>6.0f}  "
                f"{e.get('confirm', e)['flag_rate']:>5.2f}  {e['mean_max_x']:>10.0f}  "
                f"[{e['ci95'][0]:>5.0f}, {e['ci95'][1]:>5.0f}]  {e['max_max_x']:>6.0f}  {e['flag_rate']:>5.2f}  "
                f"{e['name']}"
            )
        by = "flags, then score" if _metric(cfg.run) != "max_x" else "score"
        print(
            f"ranked by {by}: score and flags are the mean max_x and flag rate on the confirmation seeds; the columns "
            "after them the evaluation's, where the policy was the best of K (biased upwards)"
        )
        return
    chosen = (
        entries[0] if cfg.iteration is None else next((e for e in entries if e["iteration"] == cfg.iteration), None)
    )
    if chosen is None:
        raise LemarioError(
            f"no iteration {cfg.iteration} in the hall of fame of {cfg.run}: see `lemario hof list {cfg.run}`"
        )
    if cfg.action == "show":
        print(json.dumps(chosen, indent=2))
        return
    if cfg.to is None:
        raise LemarioError("export needs a destination: pass --to FOLDER")
    if cfg.to.exists():
        raise LemarioError(f"{cfg.to} exists: export to a new folder")
    shutil.copytree(folder(cfg.run, chosen), cfg.to)
    print(f"exported {chosen['name']} to {cfg.to}")
