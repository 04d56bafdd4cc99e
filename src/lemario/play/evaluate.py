"""`lemario eval AGENT [AGENT ...]`: one harness for every agent, with multi-seed statistics.

Each agent plays N stochastic episodes from the level's spawn on evaluation seeds disjoint from every
training/collection seed (EVAL_SEED_BASE + i). Per episode: max_x, final x, flag, steps, and where and how
Mario's episode ended (pit, enemy, time, step limit, flag). Per agent: mean/median/max of max_x, flag rate,
bootstrap 95% CI, and the mode-collapse flag. Several specs of one method (`policy:A policy:B policy:C`) are
its K independently trained seeds: the mean of their means with the sd between seeds (`lemario.play.stats`);
different methods are rows side by side. Finished episodes are appended to OUT/episodes.partial.jsonl as they
come, so a killed evaluation re-run with the same settings resumes.

Agents (`lemario.control.agents`): `random`, `biased` (the seed's right-biased random baseline), `planner:PATH`
(latent CEM through a world model), `policy:PATH` (an imagination policy), `ppo:PATH` (a PPO baseline checkpoint).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import tyro

from lemario.control.agents import method_of, validate_spec, with_agents_frames
from lemario.control.planner import PlannerConfig
from lemario.core import runlog
from lemario.core.errors import LemarioError
from lemario.core.files import atomic_write_text, check_writable, write_json, writer_lock
from lemario.core.progress import progress_bar
from lemario.core.provenance import provenance
from lemario.core.runconfig import as_json, differences, run_key, with_defaults
from lemario.games.mario.env import EnvConfig
from lemario.play.episodes import Player, imap, play
from lemario.play.stats import aggregate, format_ends, kseed_summary, where_ends

EVAL_SEED_BASE = 10_000_000  # collection seeds come from SeedSequence([seed, run, i]); training seeds are small ints


@dataclass(frozen=True)
class EvalConfig:
    agents: tyro.conf.Positional[tuple[str, ...]]
    """Agent specs: random, biased, planner:PATH, policy:PATH, ppo:PATH (several of one method = its K seeds)."""
    episodes: int = 30
    """Episodes per agent, on the evaluation seeds EVAL_SEED_BASE + seed_offset + 0..N-1."""
    env: tyro.conf.OmitArgPrefixes[EnvConfig] = field(default_factory=EnvConfig)
    """The game (`lemario.games.mario.env.EnvConfig`): --level, --backend, --action-set, --max-steps, ..."""
    levels: tuple[str, ...] = ()
    """Evaluate on each of these levels instead of --level: one evaluation per level into OUT/<level>/ (the same
    seeds on each), then OUT/summary.json and episodes.jsonl over all of them (each agent's episodes of every
    level pooled, and `per_level`: level -> per-agent aggregates) and a table of every agent on every level."""
    workers: int = 2
    """Worker processes, one env each (1 plays in this process)."""
    out: Path = field(default_factory=lambda: Path("runs/eval") / time.strftime("%Y%m%d-%H%M%S"))
    """Folder for episodes.jsonl and summary.json (default: runs/eval/<time>)."""
    seed_offset: int = 0
    """Added to the evaluation seeds (use another offset for an independent re-evaluation)."""
    planner: PlannerConfig = field(default_factory=PlannerConfig)
    """Settings of `planner:PATH` agents."""
    progress: bool = True
    """Show a progress bar (episodes, rate, mean max_x so far)."""

    def validate(self) -> None:
        """Every check that can fail before a worker starts (a failing worker initializer would respawn forever)."""
        if not self.agents:
            raise LemarioError("no agent to evaluate: pass one or more specs, e.g. `lemario eval biased`")
        if self.episodes < 1 or self.workers < 1:
            raise LemarioError(f"--episodes {self.episodes} and --workers {self.workers}: both must be at least 1")
        for spec in self.agents:
            validate_spec(spec, self.env)
        self.env.validate()
        self.env.validate_levels(self.levels)
        self.planner.validate()


def _episode(player: Player, spec: str, index: int, seed: int) -> dict:
    """A worker's task: one evaluation episode of an agent, with the agent's own diagnostics."""
    agent = player.agent(spec)
    row = play(player.env, agent, seed)
    extra = agent.episode_stats() if hasattr(agent, "episode_stats") else {}
    return {"agent": spec, "episode": index, **row, **extra}


PARTIAL = "episodes.partial.jsonl"


def _resume_key(cfg: EvalConfig) -> dict:
    """What makes two evaluations' episodes interchangeable (not the worker count or the folder)."""
    return run_key(cfg, ("workers", "out", "progress"))


def _load_partial(path: Path, key: dict) -> list[dict]:
    """Episodes finished by an interrupted run of the same evaluation (its run log after the header line)."""
    rows = runlog.read_rows(path)
    if not rows:
        return []
    header = rows[0].get("resume_key")
    planned = isinstance(header, dict) and any(str(a).startswith("planner:") for a in header.get("agents", []))
    if planned and "survival" not in header.get("planner", {}):  # a planner's episodes from before issue 20
        header = {**header, "planner": {**header.get("planner", {}), "survival": False}}
    header = with_defaults(header, _resume_key(EvalConfig(agents=()))) if isinstance(header, dict) else None
    if header != key:
        changed = "; ".join(differences(header, key)) if header else "its header is unreadable"
        raise LemarioError(
            f"{path} holds episodes of another evaluation ({changed}): use another --out or delete that file"
        )
    return rows[1:]


AGENT_STATS = ("planned_standing_share", "predicted_dx_mean", "realized_dx_mean", "dx_correlation")
"""Per-episode diagnostics some agents report (`episode_stats`): their means are part of the agent's aggregate."""


def _aggregate(rows: list[dict], agents: tuple[str, ...]) -> dict[str, dict]:
    """Per agent: `lemario.play.stats.aggregate`, how its episodes ended, and a planner's bias diagnostic means."""
    per_agent = {}
    for spec in agents:
        mine = [r for r in rows if r["agent"] == spec]
        agg = aggregate(mine)
        ends = [r["end"] for r in mine]
        agg["ends"] = {e: ends.count(e) for e in sorted(set(ends))}
        agg.update({k: float(np.mean([r[k] for r in mine])) for k in AGENT_STATS if k in mine[0]})
        per_agent[spec] = agg
    return per_agent


def _kseed_by_method(per_agent: dict[str, dict]) -> dict[str, dict]:
    """For each method given as several specs (its K independently trained seeds): the K-seed summary."""
    groups: dict[str, dict[str, dict]] = {}
    for spec, agg in per_agent.items():
        groups.setdefault(method_of(spec), {})[spec] = agg
    return {method: kseed_summary(seeds) for method, seeds in groups.items() if len(seeds) > 1}


def _ends_by_method(rows: list[dict]) -> dict[str, dict]:
    """Where each method's episodes end (`lemario.play.stats.where_ends`), pooled over its seeds."""
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(method_of(r["agent"]), []).append(r)
    return {method: where_ends(mine) for method, mine in groups.items()}


def evaluate(cfg: EvalConfig) -> dict:
    """Play every (agent, episode) task and aggregate. Each finished episode is appended to
    OUT/episodes.partial.jsonl at once, so an interrupted evaluation re-run with the same settings and --out
    plays only the episodes it lacks; the sorted episodes.jsonl and summary.json replace it at the end."""
    cfg.validate()
    out = cfg.out
    check_writable(out)
    with writer_lock(out):
        key, partial = _resume_key(cfg), out / PARTIAL
        finished = _finished(out, key)
        if finished is not None:
            print(f"{out} holds this evaluation already: its summary is reused", flush=True)
            return {**finished, "out": str(out)}
        rows = _load_partial(partial, key)
        done = {(r["agent"], r["episode"]) for r in rows}
        tasks = [
            (spec, i, EVAL_SEED_BASE + cfg.seed_offset + i)
            for spec in cfg.agents
            for i in range(cfg.episodes)
            if (spec, i) not in done
        ]
        if rows:
            print(f"resuming {out}: {len(rows)} episodes already played, {len(tasks)} to go", flush=True)
        atomic_write_text(partial, "".join(json.dumps(x) + "\n" for x in [{"resume_key": key}] + rows))
        total = len(cfg.agents) * cfg.episodes
        bar = progress_bar(total=total, initial=len(rows), unit="ep", progress=cfg.progress)
        for row in imap(_episode, tasks, cfg.env, cfg.planner, cfg.workers):
            runlog.append_row(partial, row, durable=True)
            rows.append(row)
            bar.set_postfix({"mean max_x": f"{np.mean([r['max_x'] for r in rows]):.0f}"}, refresh=False)
            bar.update(1)
        bar.close()
        rows.sort(key=lambda r: (cfg.agents.index(r["agent"]), r["episode"]))
        per_agent = _aggregate(rows, cfg.agents)
        summary = {
            "per_agent": per_agent,
            "kseed": _kseed_by_method(per_agent),
            "ends_at": _ends_by_method(rows),
            "config": as_json(cfg),
            "resume_key": key,
            **provenance(),
        }
        atomic_write_text(out / "episodes.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
        write_json(out / "summary.json", summary)
        partial.unlink()
    summary["out"] = str(out)
    return summary


def _finished(out: Path, key: dict) -> dict | None:
    """OUT/summary.json when it holds the evaluation of this resume key (a re-run of a finished evaluation)."""
    try:
        summary = json.loads((out / "summary.json").read_text())
    except (OSError, ValueError):
        return None
    return summary if summary.get("resume_key") == key else None


def evaluate_levels(cfg: EvalConfig) -> dict[str, dict]:
    """`evaluate` on each of cfg.levels into OUT/<level>/ (a finished level is not played again), then OUT/summary.json
    and OUT/episodes.jsonl over all levels: each row with its level, each agent's episodes of every level pooled
    (with the same episodes per level, its mean max_x is the mean of its level means), and `per_level`. Returns
    level -> that level's summary."""
    cfg.validate()
    summaries = {}
    for level in cfg.levels:
        print(f"level {level} into {cfg.out / level}", flush=True)
        summaries[level] = evaluate(replace(cfg, env=replace(cfg.env, level=level), levels=(), out=cfg.out / level))
    rows = [
        {"level": level, **row} for level in cfg.levels for row in runlog.read_rows(cfg.out / level / "episodes.jsonl")
    ]
    per_agent = _aggregate(rows, cfg.agents)
    with writer_lock(cfg.out):
        atomic_write_text(cfg.out / "episodes.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
        write_json(
            cfg.out / "summary.json",
            {
                "per_agent": per_agent,
                "kseed": _kseed_by_method(per_agent),
                "per_level": {level: s["per_agent"] for level, s in summaries.items()},
                "config": as_json(cfg),
                **provenance(),
            },
        )
    return summaries


def format_levels(summaries: dict[str, dict]) -> str:
    """Every agent on every level: mean max_x [95% CI] and flag rate."""
    levels = list(summaries)
    agents = list(next(iter(summaries.values()))["per_agent"])
    lines = [f"{'agent':<40}" + "".join(f"{lv:>26}" for lv in levels)]
    for spec in agents:
        cells = []
        for lv in levels:
            a = summaries[lv]["per_agent"][spec]
            cells.append(f"{a['mean_max_x']:.0f} [{a['ci95_low']:.0f}, {a['ci95_high']:.0f}] f{a['flag_rate']:.2f}")
        lines.append(f"{spec[-40:]:<40}" + "".join(f"{c:>26}" for c in cells))
    return "\n".join(lines)


def format_summary(summary: dict) -> str:
    """The evaluation as a table: a row per agent, then the K-seed line."""
    lines = [f"{'agent':<40}{'n':>4}{'mean':>8}{'95% CI':>16}{'median':>8}{'max':>7}{'flag':>7}  ends"]
    for spec, a in summary["per_agent"].items():
        ci = f"[{a['ci95_low']:.0f}, {a['ci95_high']:.0f}]"
        ends = ", ".join(f"{k} {v}" for k, v in a["ends"].items())
        flag = f"  MODE COLLAPSE at x={a['mode_final_x']:d}" if a["mode_collapse"] else ""
        if "predicted_dx_mean" in a:
            standing = f"planned standing {a['planned_standing_share']:.0%}, " if "planned_standing_share" in a else ""
            flag += (
                f"  [{standing}predicted dx {a['predicted_dx_mean']:.1f} vs realized {a['realized_dx_mean']:.1f}, "
                f"corr {a['dx_correlation']:.2f}]"
            )
        lines.append(
            f"{spec[-40:]:<40}{a['episodes']:>4}{a['mean_max_x']:>8.0f}{ci:>16}{a['median_max_x']:>8.0f}"
            f"{a['max_max_x']:>7.0f}{a['flag_rate']:>7.2f}  {ends}{flag}"
        )
    kseed = summary.get("kseed") or {}
    if "seeds" in kseed:  # a summary written before the K seeds were grouped by method: all agents as one
        kseed = {"all agents": kseed}
    for method, k in kseed.items():
        lines.append(
            f"{method}: K={k['seeds']} seeds, mean of means {k['mean_of_means']:.0f} +- {k['sd_between_seeds']:.0f} "
            f"(sd between seeds), best {k['best_seed']}, flag rate {k['flag_rate']:.2f}, mode-collapsed: "
            f"{k['mode_collapsed_seeds'] or 'none'}"
        )
    for method, ends in summary.get("ends_at", {}).items():
        if ends:
            lines.append(f"{method}: where episodes end (final x): {format_ends(ends)}")
    lines.append(f"saved {summary['out']}/episodes.jsonl and summary.json")
    return "\n".join(lines)


def eval_main(cfg: EvalConfig) -> None:
    cfg = with_agents_frames(cfg, cfg.agents)
    if cfg.levels:
        print(format_levels(evaluate_levels(cfg)))
    else:
        print(format_summary(evaluate(cfg)))
