"""`lemario study draws`: what a flywheel iteration delivers over its draws: the agent each run picked, on fresh seeds.

An iteration ends with a pick, the best of its policies on the harness's evaluation seeds, where its score is the
best of K and overstates it. Runs of one recipe that differ in their seed (and fork source) alone are its draws:
their world models and policies are independent draws (forks of one run after the same iteration, `lemario flywheel
--fork-from RUN --fork-after N --seed S`, and that run itself; or whole runs from different seeds). The study
evaluates each run's pick of iteration N on E episodes on seeds none of them selected or confirmed on, and pools the
draws: the mean of the draws' means with a nested bootstrap interval over draws (and policies) and episodes, the
figure issue 20's target asks of agents whose world model is a draw too. Beside it, from the runs' own files: the
recipe's average policy (every policy of the iteration on its evaluation) and the pick on the run's own confirmation
seeds. A draw's env steps are its corpus's after the iteration's collection (a run started from another run's agent
also owes that run's).

    OUT/config.json    resolved config, git commit (re-running the same command resumes; the runs may not change)
    OUT/eval/          every draw's pick on the study's seeds (`lemario eval`)
    OUT/draws.json     per draw and pooled

    lemario study draws --runs runs/fw-fork1 runs/fw-fork2 runs/fw-fork3 --episodes 30 --seed-offset 2000000
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from lemario.core.errors import LemarioError
from lemario.core.files import check_writable, write_json, writer_lock
from lemario.core.provenance import provenance
from lemario.core.runconfig import as_json, differences, open_study, run_key, with_defaults
from lemario.core.runlog import read_rows
from lemario.flywheel.config import BOOKKEEPING as FLYWHEEL_BOOKKEEPING
from lemario.flywheel.config import CONFIRM_SEED_OFFSET, FlywheelConfig, iter_dir, policy_dir
from lemario.flywheel.fork import source_key
from lemario.flywheel.run import finished
from lemario.games.mario.env import EnvConfig
from lemario.play.evaluate import EvalConfig, evaluate
from lemario.play.stats import pool_draws

BOOKKEEPING = ("workers", "progress")
DRAWN = ("seed", "fork_from", "fork_after")
"""Run-key fields in which draws of one recipe may differ."""


@dataclass(frozen=True)
class DrawsStudyConfig:
    runs: tuple[Path, ...] = ()
    """Flywheel run folders, draws of one recipe: their configs may differ in the seed and the fork source alone."""
    out: Path = Path("runs/study-draws")
    """Study folder (re-running the same command resumes it)."""
    iteration: int = 0
    """The iteration whose pick is measured (0: the last one every run has finished)."""
    episodes: int = 30
    """Episodes per pick on the study's seeds."""
    seed_offset: int = 2_000_000
    """The study's seeds are the harness's evaluation seeds from this offset on: they must miss the runs' own
    evaluation and confirmation seeds (offsets 0 and 500,000)."""
    workers: int = 2
    """Processes for the evaluation episodes."""
    progress: bool = True

    def validate(self) -> None:
        if len(self.runs) < 2:
            raise LemarioError(f"--runs: {len(self.runs)} run(s) given: a study of draws takes two or more")
        if len(set(self.runs)) < len(self.runs):
            raise LemarioError("--runs names a run twice: each draw once")
        if self.episodes < 1 or self.iteration < 0:
            raise LemarioError(f"--episodes {self.episodes}, --iteration {self.iteration}: need >= 1 and >= 0")


def recipe(runs: tuple[Path, ...]) -> dict:
    """The run key the runs share (the first's), refusing runs that differ in anything but their draw."""
    defaults = run_key(FlywheelConfig(), FLYWHEEL_BOOKKEEPING)
    keys = [with_defaults(source_key(r), defaults) for r in runs]
    for run, key in zip(runs[1:], keys[1:]):
        differ = [d for d in differences(keys[0], key) if not d.startswith(DRAWN)]
        if differ:
            raise LemarioError(f"--runs: {runs[0]} and {run} differ in {differ[0]}: draws share their recipe")
    seeds = [k["seed"] for k in keys]
    if len(set(seeds)) < len(seeds):
        raise LemarioError(f"--runs: run seeds {seeds} repeat: one seed draws one world model and policies")
    if keys[0]["levels"]:
        raise LemarioError("--runs: multi-level runs are not studied yet: pass runs of one level")
    return keys[0]


def check_seeds(cfg: DrawsStudyConfig, key: dict) -> None:
    """The study's seeds miss the ones the runs picked on and confirmed on."""
    used = [(0, key["eval_episodes"]), (CONFIRM_SEED_OFFSET, CONFIRM_SEED_OFFSET + key["confirm_episodes"])]
    ours = (cfg.seed_offset, cfg.seed_offset + cfg.episodes)
    for lo, hi in used:
        if lo < ours[1] and ours[0] < hi:
            raise LemarioError(
                f"--seed-offset {cfg.seed_offset}: seeds {ours[0]}..{ours[1] - 1} overlap the runs' own "
                f"({lo}..{hi - 1}): pick seeds nothing was selected on, e.g. --seed-offset 2000000"
            )


def draw_of(run: Path, n: int) -> dict:
    """One draw's iteration n: its seed, env steps, pick, and every policy's and the pick's episodes in the run."""
    done = finished(run)
    if len(done) < n:
        raise LemarioError(f"--iteration {n}: {run} has finished {len(done)}: pass runs that got there")
    s = done[n - 1]
    pick = policy_dir(iter_dir(run, n), s.best_world_model, s.best_seed) / "policy.safetensors"
    evaluated = read_rows(iter_dir(run, n) / "eval" / "episodes.jsonl")
    confirm = iter_dir(run, n) / "confirm" / "episodes.jsonl"
    key = source_key(run)
    return {
        "run": str(run),
        "seed": key["seed"],
        "forked_from": [key.get("fork_from"), key.get("fork_after")],
        "corpus_env_steps": s.env_steps,
        "pick": f"policy:{pick}",
        "policies": _by_agent(evaluated),
        "confirmation": _by_agent(read_rows(confirm)).get(f"policy:{pick}", []) if confirm.exists() else [],
    }


def _by_agent(rows: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in rows:
        out.setdefault(r["agent"], []).append(r)
    return out


def study_draws(cfg: DrawsStudyConfig) -> dict:
    """Evaluate what is missing and pool; returns draws.json's content."""
    cfg.validate()
    key = recipe(cfg.runs)
    check_seeds(cfg, key)
    n = cfg.iteration or min(len(finished(r)) for r in cfg.runs)
    if n < 1:
        raise LemarioError("--runs: a run has no finished iteration: pass runs that finished one")
    cfg = replace(cfg, iteration=n)  # stored resolved: runs that have since gone further are not studied here
    draws = [draw_of(r, n) for r in cfg.runs]
    check_writable(cfg.out)
    with writer_lock(cfg.out):
        defaults = run_key(DrawsStudyConfig(), BOOKKEEPING)
        open_study(cfg.out, run_key(cfg, BOOKKEEPING), defaults, "study of draws", as_json(cfg), recipe=key)
        ecfg = EvalConfig(
            agents=tuple(d["pick"] for d in draws),
            episodes=cfg.episodes,
            env=EnvConfig(**key["env"]),
            workers=cfg.workers,
            out=cfg.out / "eval",
            seed_offset=cfg.seed_offset,
            progress=cfg.progress,
        )
        if not (ecfg.out / "summary.json").exists():
            print(f"evaluate {len(draws)} picks x {cfg.episodes} episodes at seed offset {cfg.seed_offset}")
            evaluate(ecfg)
        fresh = _by_agent(read_rows(ecfg.out / "episodes.jsonl"))
        for d in draws:
            d["fresh"] = fresh[d["pick"]]
        summary = {
            "iteration": n,
            "episodes": cfg.episodes,
            "seed_offset": cfg.seed_offset,
            "draws": [_draw_row(d) for d in draws],
            "pooled": {
                "policies": pool_draws([list(d["policies"].values()) for d in draws]),
                "pick_confirmation": pool_draws([[d["confirmation"]] for d in draws]),
                "pick_fresh": pool_draws([[d["fresh"]] for d in draws]),
            },
            "config": as_json(cfg),
            **provenance(),
        }
        write_json(cfg.out / "draws.json", summary)
    return summary


def _draw_row(d: dict) -> dict:
    def score(episodes: list[dict]) -> dict:
        return {
            "episodes": len(episodes),
            "mean_max_x": float(np.mean([e["max_x"] for e in episodes])) if episodes else None,
            "flag_rate": float(np.mean([e["flag_get"] for e in episodes])) if episodes else None,
        }

    policies = d["policies"]
    return {
        **{k: d[k] for k in ("run", "seed", "forked_from", "corpus_env_steps", "pick")},
        "policies": {agent: score(e) for agent, e in policies.items()},
        "pick_selection": score(policies.get(d["pick"], [])),
        "pick_confirmation": score(d["confirmation"]),
        "pick_fresh": score(d["fresh"]),
    }


def format_summary(summary: dict) -> str:
    rows = [
        f"iteration {summary['iteration']} over {len(summary['draws'])} draws; the picks on {summary['episodes']} "
        f"episodes at seed offset {summary['seed_offset']}",
        f"{'run':<28}{'seed':>6}{'corpus steps':>13}  {'its policies':>14}  {'pick (selected on)':>19}  "
        f"{'its confirmation':>17}  {'fresh':>12}",
    ]
    for d in summary["draws"]:
        k = list(d["policies"].values())
        kx, kf = np.mean([p["mean_max_x"] for p in k]), np.mean([p["flag_rate"] for p in k])
        cells = [_cell(d[c]) for c in ("pick_selection", "pick_confirmation", "pick_fresh")]
        rows.append(
            f"{Path(d['run']).name:<28}{d['seed']:>6}{d['corpus_env_steps']:>13}  {kx:>6.0f}, {kf:>5.0%}  "
            f"{cells[0]:>19}  {cells[1]:>17}  {cells[2]:>12}"
        )
    rows.append("pooled: mean of the draws' means [95% nested bootstrap over draws, policies and episodes]")
    names = {"policies": "its policies", "pick_confirmation": "pick, confirmation", "pick_fresh": "pick, fresh"}
    for name, p in summary["pooled"].items():
        if p:
            x, f = p["max_x"], p["flag_rate"]
            rows.append(
                f"  {names[name]:<20} max_x {x['mean']:.0f} [{x['ci95'][0]:.0f}, {x['ci95'][1]:.0f}] (sd between "
                f"draws {x['sd_between_draws']:.0f}); flags {f['mean']:.1%} [{f['ci95'][0]:.1%}, {f['ci95'][1]:.1%}]"
                f" ({p['policies']} policies)"
            )
    return "\n".join(rows)


def _cell(score: dict) -> str:
    return f"{score['mean_max_x']:.0f}, {score['flag_rate']:.0%}" if score["episodes"] else "-"


def study_draws_main(cfg: DrawsStudyConfig) -> None:
    print(format_summary(study_draws(cfg)))
    print(f"wrote {cfg.out / 'draws.json'}")
