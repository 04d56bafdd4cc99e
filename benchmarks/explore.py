"""Exploration throughput: `lemario explore`'s env steps/s per worker (restores, cell keys, saved states and HDF5
episodes included) against the raw emulator's frames/s / frame skip, for both cell kinds, with 1 and 2 workers.
The 1-1 issue's target: the explorer per core close to raw / skip.

    .venv/bin/python benchmarks/explore.py             # ~8 minutes on 2 idle cores
    .venv/bin/python benchmarks/explore.py --reps 1 --env-steps 1000   # quick look

Each figure is the mean +- sd over `reps` runs (different seeds), each a fresh run folder.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import tyro
from collect import gameplay_fps, mean_sd, raw_fps  # benchmarks/collect.py

from lemario.core.device import machine
from lemario.play.explore import ExploreConfig, explore


@dataclass(frozen=True)
class Args:
    reps: int = 3
    env_steps: int = 20000
    """Agent steps per run (8 explorations a round, ~12 steps each at first, longer as cells spread). Each run's
    start (worker processes) and end (the archive's picture) cost ~2 s, a third of a 4,000-step run's time on
    this CPU: the rate here is the run's whole, at a length where they weigh less."""
    retro_frames: int = 8000
    gameplay_episodes: int = 40
    """Biased episodes replayed for the gameplay raw rate (`benchmarks/collect.py`)."""
    frame_skip: int = 4


def run(cell: str, workers: int, seed: int, env_steps: int) -> tuple[float, int]:
    """(env steps/s, cells) of one fresh exploration run."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg = replace(
            ExploreConfig(), out=Path(tmp) / "run", env_steps=env_steps, cell=cell, workers=workers, seed=seed
        )
        cfg = replace(cfg, progress=False)
        t0 = time.perf_counter()
        archive = explore(cfg)
        return archive.env_steps / (time.perf_counter() - t0), len(archive.cells)


def main(args: Args) -> None:
    print(machine())
    raw = mean_sd([raw_fps("retro", args.retro_frames) for _ in range(args.reps)])
    game = mean_sd([gameplay_fps("retro", args.gameplay_episodes, r) for r in range(args.reps)])
    per_skip, game_skip = raw[0] / args.frame_skip, game[0] / args.frame_skip
    print(f"raw stable-retro: {raw[0]:.0f} +- {raw[1]:.0f} frames/s -> {per_skip:.0f} agent steps/s at skip 4")
    print(f"raw on gameplay frames: {game[0]:.0f} +- {game[1]:.0f} frames/s -> {game_skip:.0f} agent steps/s")
    print(f"{'cell':<7}{'workers':>8}{'steps/s':>10}{'sd':>7}{'per worker':>12}{'/ raw':>8}{'/ game':>8}{'cells':>8}")
    for cell in ("ram", "frame"):
        for workers in (1, 2):
            runs = [run(cell, workers, seed, args.env_steps) for seed in range(args.reps)]
            m, s = mean_sd([r[0] for r in runs])
            cells = int(np.mean([r[1] for r in runs]))
            per = m / workers
            ratios = f"{per / per_skip:>8.2f}{per / game_skip:>8.2f}"
            print(f"{cell:<7}{workers:>8}{m:>10.0f}{s:>7.0f}{per:>12.0f}{ratios}{cells:>8}", flush=True)


if __name__ == "__main__":
    main(tyro.cli(Args))
