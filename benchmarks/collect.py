"""Collection throughput: each backend's raw emulator frames/s, and the collector's end-to-end agent steps/s
(emulation + preprocessing + HDF5 storage) with 1 and 2 workers, then the ratios the foundation issue targets:

- fast backend end to end >= 4x the nes-py backend end to end;
- fast backend end to end per worker >= 75% of its raw frames/s / frame skip.

    .venv/bin/python benchmarks/collect.py            # ~9 minutes on 2 cores (measured 2026-11-22)
    .venv/bin/python benchmarks/collect.py --reps 1 --retro-episodes 8 --nespy-episodes 2   # quick look

Each figure is the mean +- sd over `reps` repetitions (different policy seeds).
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import platform
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tyro

from lemario.games.mario.emulator import boot, make_emulator
from lemario.games.mario.env import EnvConfig
from lemario.play.collect import CollectConfig, collect


@dataclass(frozen=True)
class Args:
    reps: int = 3
    """Repetitions of every measurement (mean +- sd)."""
    retro_frames: int = 8000
    """Frames per raw-emulator measurement on stable-retro."""
    nespy_frames: int = 2000
    """Frames per raw-emulator measurement on nes-py."""
    retro_episodes: int = 300
    """Episodes per end-to-end measurement on stable-retro (biased policy, ~90 steps each; long enough that
    spawning the workers, ~0.6 s, and the last episode's tail weigh little)."""
    nespy_episodes: int = 24
    """Episodes per end-to-end measurement on nes-py."""
    frame_skip: int = 4
    json_out: Path | None = None
    """Also write the figures as JSON here."""


def raw_fps(backend: str, frames: int) -> float:
    emu = make_emulator(backend)
    boot(emu, 1, 1)
    buttons = [0x80, 0x81] * (frames // 2)  # run right, jumping every other frame pair
    t0 = time.perf_counter()
    for b in buttons:
        emu.step(b)
    fps = len(buttons) / (time.perf_counter() - t0)
    emu.close()
    return fps


def raw_fps_concurrent(backend: str, frames: int, processes: int = 2) -> float:
    """Per-process raw frames/s while `processes` emulators run at once (the per-core rate workers get)."""
    with mp.get_context("spawn").Pool(processes) as pool:
        return float(np.mean(pool.starmap(raw_fps, [(backend, frames)] * processes)))


def end_to_end(backend: str, workers: int, episodes: int, seed: int, frame_skip: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = CollectConfig(
            out=Path(tmp),
            episodes=episodes,
            workers=workers,
            seed=seed,
            env=EnvConfig(backend=backend, frame_skip=frame_skip),
            progress=False,
        )
        t0 = time.perf_counter()
        index = collect(cfg)
        seconds = time.perf_counter() - t0
    steps = sum(e["n_steps"] for e in index.episodes)
    return steps / seconds


def mean_sd(xs: list[float]) -> tuple[float, float]:
    return float(np.mean(xs)), float(np.std(xs, ddof=1)) if len(xs) > 1 else 0.0


def main(args: Args) -> None:
    cpu = next(
        (line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
        platform.processor(),
    )
    print(f"machine: {cpu}, {os.cpu_count()} cores, Python {platform.python_version()}; reps {args.reps}")
    figures: dict[str, tuple[float, float]] = {}
    for backend, frames in (("retro", args.retro_frames), ("nes-py", args.nespy_frames)):
        figures[f"raw_fps/{backend}"] = mean_sd([raw_fps(backend, frames) for _ in range(args.reps)])
        figures[f"raw_fps_2proc/{backend}"] = mean_sd([raw_fps_concurrent(backend, frames) for _ in range(args.reps)])
    for backend, episodes in (("retro", args.retro_episodes), ("nes-py", args.nespy_episodes)):
        for workers in (1, 2):
            runs = [end_to_end(backend, workers, episodes, seed, args.frame_skip) for seed in range(args.reps)]
            figures[f"e2e_steps_per_s/{backend}/w{workers}"] = mean_sd(runs)

    print(f"\n{'measurement':<34}{'mean':>10}{'sd':>9}")
    for k, (m, s) in figures.items():
        print(f"{k:<34}{m:>10.1f}{s:>9.1f}")
    ratios = {}
    for w in (1, 2):
        ratios[f"retro/nes-py e2e, {w} worker(s)"] = (
            figures[f"e2e_steps_per_s/retro/w{w}"][0] / figures[f"e2e_steps_per_s/nes-py/w{w}"][0]
        )
    ideal = figures["raw_fps/retro"][0] / args.frame_skip
    ratios["retro e2e per worker / (raw fps / skip), 1 worker"] = figures["e2e_steps_per_s/retro/w1"][0] / ideal
    ratios["retro e2e per worker / (raw fps / skip), 2 workers"] = figures["e2e_steps_per_s/retro/w2"][0] / 2 / ideal
    ideal2 = figures["raw_fps_2proc/retro"][0] / args.frame_skip
    ratios["retro e2e per worker / (2-process raw fps / skip), 2 workers"] = (
        figures["e2e_steps_per_s/retro/w2"][0] / 2 / ideal2
    )
    ratios["nes-py e2e per worker / (raw fps / skip), 1 worker"] = figures["e2e_steps_per_s/nes-py/w1"][0] / (
        figures["raw_fps/nes-py"][0] / args.frame_skip
    )
    print("\nratios (targets: retro/nes-py >= 4; retro e2e per worker >= 0.75 of raw/skip)")
    for k, v in ratios.items():
        print(f"  {k:<64}{v:>6.2f}")
    if args.json_out:
        args.json_out.write_text(json.dumps({"figures": figures, "ratios": ratios, "cpu": cpu}, indent=2))


if __name__ == "__main__":
    main(tyro.cli(Args))
