"""Frontier exploration as a collector (`lemario explore`): Go-Explore's return-then-explore, into a corpus.

Each round chooses `batch` cells of the archive (`lemario.play.archive`), restores each one's saved state and
plays the exploring policy from it for up to `explore_steps` steps (round 1 starts from spawn: the archive is
empty). Every exploration is a corpus episode like the collector's, whose meta says where it started (`start`:
'spawn' or 'cell:KEY', with the cell's steps from spawn and x); every moment it passes is a candidate cell, kept
when new or reached by a better way than before (alive where the old way died, else in fewer steps from spawn).
With a world model that has a disagreement ensemble, each cell found is also scored by the ensemble's
disagreement on the step that reached it (Plan2Explore's novelty), which the choice of cells can weigh.
The run stops once it has emulated `env_steps` agent steps (every step of every exploration counts; restores are
counted beside them, and the emulator frames they cost where a backend has no snapshots and replays the button log).

    OUT/explore-RRRRRR-III.h5     exploration III of round RRRRRR (a corpus episode)
    OUT/archive/cells.json        the archive: totals, one row per round (env steps, cells, frontier), the cells
    OUT/archive/states/           each cell's saved state
    OUT/archive/archive.png       the cells over the level, and the frontier against env steps

A round's explorations are seeded from (seed, round, index) and merged in index order, so the same command gives
the same archive however the workers finish. A killed run resumes at its last whole round: the episodes of the
unfinished round are deleted and played again, identically. The worker processes play the next round while the
main process saves the last. One process writes a run folder at a time.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import tyro

from lemario.control.agents import check_action_count, check_frames, validate_spec
from lemario.core import plots
from lemario.core.errors import LemarioError
from lemario.core.files import check_writable, now_iso, read_json, writer_lock
from lemario.core.provenance import provenance
from lemario.core.runconfig import as_json, check_same_run, run_key
from lemario.data.corpus import EXPLORE_RUN, Episode, add_to_index, format_summary, index_row, scan, write_episode
from lemario.games.mario.emulator import level_number, resolve_rom
from lemario.games.mario.env import EnvConfig
from lemario.model.train import CPU_MODEL
from lemario.model.world_model import load_world_model
from lemario.play.archive import CELL_KINDS, Archive, Choosing, cell_key, state_bytes, state_from_bytes
from lemario.play.collect import check_levels, level_seed
from lemario.play.episodes import Player, Workers, play_episode

NO_WAY = (True, 1 << 62)
"""Worse than any way to a cell."""
BOOKKEEPING = ("out", "env_steps", "policy", "explore", "workers", "executor", "ray_address", "progress")
"""Fields a resumed run may change: `env_steps` extends it; the exploring agent may change between extensions (the
flywheel explores with its latest policy), each episode records its own."""


@dataclass(frozen=True)
class ExploreConfig:
    out: Path = Path("runs/explore-1-1")
    """Run folder: a corpus of the explorations, and the archive (re-running the same command resumes it)."""
    env_steps: int = 50_000
    """Stop once the run has emulated this many agent steps (raise it to extend a run)."""
    cell: str = "frame"
    """Cell kind: 'frame' (a coarse grey downscale of the frame, domain-agnostic) or 'ram' (Mario's x and y)."""
    explore_steps: int = 100
    """Steps of one exploration from a restored cell (its episode's cap)."""
    batch: int = 8
    """Explorations per round."""
    policy: str = "biased"
    """The exploring agent: 'biased' (right-biased random macros), 'uniform', or 'policy:PATH' / 'planner:PATH'."""
    explore: float = 0.0
    """With a policy or planner: the per-step probability of a biased-random macro taking over."""
    world_model: Path | None = None
    """A world model with a disagreement ensemble (`lemario train --model.ensemble E`): each cell is scored by the
    ensemble's disagreement on the step that found it, and `--choosing.novelty` weighs that score (none: no
    scores)."""
    choosing: Choosing = field(default_factory=Choosing)
    """Weights of the choice of cells (`lemario.play.archive`)."""
    seed: int = 0
    env: tyro.conf.OmitArgPrefixes[EnvConfig] = field(default_factory=EnvConfig)
    """The game (`lemario.games.mario.env.EnvConfig`): --level, --backend, --action-set, ..."""
    levels: tuple[str, ...] = ()
    """Explore each of these levels instead of --level: `--env-steps` each, into OUT/<level>/ (a run and an archive
    per level: OUT is one multi-level corpus); the list is kept in OUT/levels.json and a folder refuses another."""
    workers: int = 2
    """Worker processes, one emulator each (1 plays in this process)."""
    executor: str = "local"
    """'local' (worker processes) or 'ray' (one Ray actor per worker; the run folder must be shared)."""
    ray_address: str = ""
    progress: bool = True
    """Print one line per round."""

    def validate(self) -> None:
        self.env.validate()
        resolve_rom(self.env.rom, self.env.backend)
        validate_spec(self.policy, self.env)
        if self.cell not in CELL_KINDS:
            raise LemarioError(f"unknown cell kind {self.cell!r}: use one of {', '.join(CELL_KINDS)}")
        self.choosing.validate()
        if min(self.env_steps, self.explore_steps, self.batch, self.workers) < 1:
            raise LemarioError("--env-steps, --explore-steps, --batch and --workers must be at least 1")
        if self.executor not in ("local", "ray"):
            raise LemarioError(f"unknown executor {self.executor!r}: use local or ray")
        self.env.validate_levels(self.levels)
        if self.world_model is not None:
            model, _ = load_world_model(self.world_model)
            if not model.cfg.ensemble:
                raise LemarioError(
                    f"--world-model {self.world_model} has no disagreement ensemble: train one with --model.ensemble 5"
                )
            check_action_count(model.cfg.n_actions, self.env, "the world model")
            check_frames(asdict(model.cfg), self.env, "the world model")

    def per_level(self) -> list[ExploreConfig]:
        """One exploration per level into OUT/<level>/, each seeded from (seed, world, stage); [self] without
        --levels."""
        if not self.levels:
            return [self]
        return [
            replace(self, out=self.out / lv, env=replace(self.env, level=lv), levels=(), seed=level_seed(self.seed, lv))
            for lv in self.levels
        ]

    @property
    def play_env(self) -> EnvConfig:
        """The env an exploration plays: the game's, capped at `explore_steps` steps."""
        return replace(self.env, max_steps=self.explore_steps)


PRESETS = {
    "tiny": ExploreConfig(out=Path("runs/explore-tiny"), env_steps=240, explore_steps=20, batch=4, workers=1),
    "cpu": ExploreConfig(env=CPU_MODEL.frames_env()),  # the frames of the `cpu` world model
}


def _explore(
    player: Player,
    file: str,
    index: int,
    start_data: bytes | None,
    seed: int,
    cfg: ExploreConfig,
    costs: dict[str, tuple[bool, int]],
    meta: dict,
) -> dict:
    """A worker's task: one exploration from the state `start_data` encodes (None: spawn; `meta` says which),
    written as OUT/file; returns its index row, the cells it reached by a better way than `costs` knows ((terminal,
    steps): alive before dying, then fewer steps; with their states, encoded) and how often it saw each cell."""
    env, start_steps = player.env, meta["start_steps"]
    start = state_from_bytes(start_data) if start_data is not None else None
    found: dict[str, tuple] = {}
    seen: dict[str, int] = {}
    step_of: dict[str, int] = {}  # the episode step that reached each found cell
    flag_cell: list[str] = []  # the cell where the exploration touched the flag

    def visit(obs: np.ndarray, action: int | None, info: dict) -> None:
        if action is None:
            return  # the start: the chosen cell itself
        key = cell_key(cfg.cell, env.last_frame, info)
        seen[key] = seen.get(key, 0) + 1
        if info["flag_get"]:
            flag_cell.append(key)
        way = (bool(info["is_dying"] or info["flag_get"]), start_steps + info["steps"])  # (terminal, steps)
        best = min(costs.get(key, NO_WAY), found[key][:2] if key in found else NO_WAY)
        if way < best:
            state = None if way[0] else state_bytes(env.save_state())  # encoded here, in the worker
            found[key] = (*way, int(info["x_pos"]), int(info["y_pos"]), state, bool(info["flag_get"]))
            step_of[key] = info["steps"]

    ep = play_episode(env, player.agent(cfg.policy, cfg.explore), seed, cfg.policy, start, visit)
    ep.meta.update(meta, created=now_iso())
    write_episode(Path(cfg.out) / file, ep)
    novelty = dict.fromkeys(found, 0.0)
    if cfg.world_model is not None and found:
        keys = sorted(found)
        scores = step_novelty(player.world_model(cfg.world_model), ep, [step_of[k] for k in keys])
        novelty = dict(zip(keys, scores))
    found = {k: (*v, novelty[k]) for k, v in found.items()}
    replayed = len(start.buttons) if start is not None and start.snapshot is None else 0
    return {
        "index": index,
        "row": index_row(Path(cfg.out) / file, ep.meta, ep.n_steps),
        "found": found,
        "seen": seen,
        "flag_cell": flag_cell[0] if flag_cell else None,
        "steps": ep.n_steps,
        "restored": start is not None,
        "replayed_frames": replayed,
    }


@torch.no_grad()
def step_novelty(model, ep: Episode, steps: list[int]) -> list[float]:
    """The ensemble's disagreement on the transitions into the frames `steps` of an episode: from the stack ending
    at frame t - 1 (frames before the episode's first repeat it, the buffer's convention), the action before it
    (NOOP at the first) and action t - 1."""
    t = np.asarray(steps) - 1  # (n,) the frame each transition starts from
    stack = model.cfg.frame_stack
    idx = np.maximum(t[:, None] - np.arange(stack - 1, -1, -1), 0)  # (n, stack), oldest first
    obs = torch.as_tensor(ep.frames[idx])  # (n, stack, H, W[, C])
    actions = ep.actions.astype(np.int64)
    prev = torch.as_tensor(np.where(t > 0, actions[np.maximum(t - 1, 0)], 0))
    level = torch.tensor([level_number(ep.meta["level"])])
    return model.disagreement(model.encode(obs, level), prev, torch.as_tensor(actions[t])).tolist()


def _open_run(cfg: ExploreConfig) -> Archive:
    """The run's archive (new, or resumed after checking the folder holds this run); the episodes of an
    unfinished round are deleted (they are played again)."""
    key = run_key(cfg, BOOKKEEPING)
    archive = Archive.load(cfg.out / "archive")
    path = cfg.out / "archive" / "cells.json"
    if path.exists():
        check_same_run(
            read_json(path)["run_key"], key, run_key(ExploreConfig(), BOOKKEEPING), cfg.out, "frontier-exploration run"
        )
    for f in cfg.out.glob("explore-*.h5"):
        if int(f.stem.split("-")[1]) > archive.round:
            f.unlink()
    return archive


def _start_round(
    cfg: ExploreConfig, archive: Archive, extra: dict, pool: Workers
) -> tuple[int, list[str | None], Iterator[dict]]:
    """Choose the next round's cells and hand its explorations to the workers; returns (round, the cells they
    start from, their results)."""
    r = archive.round + 1
    rng = np.random.default_rng([cfg.seed, r])
    starts = archive.choose(cfg.batch, cfg.choosing, rng) if archive.cells else [None] * cfg.batch
    costs = {k: (c.terminal, c.steps) for k, c in archive.cells.items()}
    tasks = []
    for i, key in enumerate(starts):
        seed = int(np.random.SeedSequence([cfg.seed, r, i]).generate_state(1)[0])
        meta = {"round": r, **extra, "start": "spawn", "start_steps": 0, "start_x": 0}
        if key is not None:
            cell = archive.cells[key]
            meta.update(start=f"cell:{key}", start_steps=cell.steps, start_x=cell.x)
        state = archive.state(key) if key is not None else None
        tasks.append((f"explore-{r:06d}-{i:03d}.h5", i, state, seed, cfg, costs, meta))
    return r, starts, pool.imap(_explore, tasks)


def _finish_round(
    cfg: ExploreConfig, archive: Archive, r: int, starts: list[str | None], results: Iterator[dict]
) -> list[dict]:
    """Merge round r's results in task order (the same archive whichever worker finished first); returns their
    index rows."""
    ordered = sorted(results, key=lambda res: res["index"])
    archive.round = r
    archive.count_chosen(starts)
    for res in ordered:
        archive.merge(res, cfg.env.frame_skip)
    archive.rounds.append(
        {
            "round": r,
            "env_steps": archive.env_steps,
            "cells": len(archive.cells),
            "max_x": archive.max_x,
            "time": now_iso(),
        }
    )
    return [res["row"] for res in ordered]


def explore(cfg: ExploreConfig) -> Archive:
    """Run (or resume) an exploration until `env_steps`; returns the archive."""
    cfg.validate()
    check_writable(cfg.out)
    with writer_lock(cfg.out):
        archive = _open_run(cfg)
        header = {"run_key": run_key(cfg, BOOKKEEPING), "config": as_json(cfg), **provenance()}
        extra = {"run": EXPLORE_RUN, "git_commit": header["git_commit"]}
        if archive.round:
            print(
                f"resuming {cfg.out}: round {archive.round}, {archive.env_steps} env steps, {len(archive.cells)} cells"
            )
        t0, start = time.perf_counter(), archive.env_steps
        with Workers(cfg.play_env, None, cfg.workers, cfg.executor, cfg.ray_address) as pool:

            def next_round():  # the next round handed to the workers, or None when the run has its env steps
                return _start_round(cfg, archive, extra, pool) if archive.env_steps < cfg.env_steps else None

            running = next_round()
            while running is not None:
                rows = _finish_round(cfg, archive, *running)
                running = next_round()
                archive.save(header)  # while the worker processes play the next round (a kill loses that round)
                add_to_index(cfg.out, rows)
                if cfg.progress:
                    rate = (archive.env_steps - start) / max(1e-9, time.perf_counter() - t0)
                    flag = f", flag at {archive.flag_env_steps} env steps" if archive.flag_env_steps is not None else ""
                    print(
                        f"round {archive.round}: {archive.env_steps} env steps ({rate:.0f}/s), "
                        f"{len(archive.cells)} cells, frontier x {archive.max_x}{flag}",
                        flush=True,
                    )
        plot(archive, cfg.out / "archive" / "archive.png")
    return archive


def plot(archive: Archive, path: Path) -> None:
    """The cells over the level (x, y; colour: steps from spawn) and the frontier against env steps."""
    plt = plots.figure()
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 3.5), gridspec_kw={"width_ratios": [3, 1]})
    cells = list(archive.cells.values())
    if cells:
        sc = left.scatter([c.x for c in cells], [c.y for c in cells], c=[c.steps for c in cells], s=6, cmap="viridis")
        fig.colorbar(sc, ax=left, label="steps from spawn")
        flags = [c for c in cells if c.flag]
        left.scatter([c.x for c in flags], [c.y for c in flags], marker="*", s=120, color="red", label="flag")
    left.set_xlabel("x (level pixels)")
    left.set_ylabel("y (height above the screen's bottom)")
    left.set_title(f"{len(cells)} cells")
    right.plot([r["env_steps"] for r in archive.rounds], [r["max_x"] for r in archive.rounds])
    right.set_xlabel("env steps")
    right.set_ylabel("frontier x")
    plots.save_png(fig, path)


def explore_main(cfg: ExploreConfig) -> None:
    if cfg.levels:
        cfg.validate()
        check_levels(cfg.out, cfg.levels)
    for one in cfg.per_level():
        archive = explore(one)
        flag = archive.flag_env_steps
        print(
            f"{one.env.level} archive: {len(archive.cells)} cells, frontier x {archive.max_x}, "
            + (f"flag first reached at {flag} env steps" if flag is not None else "flag not reached")
            + f"; {archive.env_steps} env steps, {archive.restores} restores, {archive.emulator_frames} emulator "
            f"frames; {one.out / 'archive' / 'cells.json'}"
        )
    print(format_summary(scan(cfg.out), title=str(cfg.out)))
