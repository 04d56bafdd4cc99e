"""Collection throughput: each backend's raw emulator frames/s, and the collector's end-to-end agent steps/s
(emulation + preprocessing + HDF5 storage) with 1 and 2 workers, then the ratios the foundation and 1-1 issues
target:

- fast backend end to end >= 4x the nes-py backend end to end;
- fast backend end to end per worker >= 75% of its raw frames/s / frame skip.

Two raw rates. `raw_fps`: a fixed button pattern (run right, jump every other frame) from the level start; after
Mario's third death (~1,300 frames) the game shows its game-over and title screens and plays its demo, so ~80% of
those 8,000 frames are not the level. `gameplay_fps`: the frames the collector plays, i.e. the button logs of
biased-random episodes from the level start, replayed with nothing but the emulator's step timed. The ratios are given
against both; the gameplay rate is the one the collector's frames cost.

Each repetition brackets every collection by the raw rates measured just before and just after it (with as many
emulators running at once as the collection has workers), and divides by their mean: the host's speed drifts by
several percent over minutes (session 50 measured the same replay at 5,184 and 4,635 frames/s a few minutes apart),
so a ratio of rates taken at different moments carries that drift. Figures are mean +- sd over the repetitions
(different policy seeds), ratios taken repetition by repetition.

    .venv/bin/python benchmarks/collect.py            # ~7 minutes on 2 idle cores (measured 2026-12-05)
    .venv/bin/python benchmarks/collect.py --reps 1 --retro-episodes 8 --nespy-episodes 2   # quick look
"""

from __future__ import annotations

import json
import multiprocessing as mp
import platform
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tyro

from lemario.control.agents import make_agent
from lemario.core.device import cpu_name, machine
from lemario.games.mario.emulator import boot, make_emulator
from lemario.games.mario.env import EnvConfig, SuperMarioBros
from lemario.play.collect import CollectConfig, collect
from lemario.play.episodes import play


@dataclass(frozen=True)
class Args:
    reps: int = 3
    """Repetitions of every measurement (mean +- sd)."""
    retro_frames: int = 8000
    """Frames per raw-emulator measurement on stable-retro."""
    nespy_frames: int = 2000
    """Frames per raw-emulator measurement on nes-py."""
    retro_gameplay_episodes: int = 40
    """Biased episodes whose frames (~370 each) one gameplay raw measurement replays on stable-retro."""
    nespy_gameplay_episodes: int = 6
    """The same on nes-py."""
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


def gameplay_fps(backend: str, episodes: int, seed: int = 0) -> float:
    """Raw frames/s on the collector's own frames: `episodes` biased-random episodes are played (untimed), then
    each one's button log is replayed from the level start with only the emulator's step timed."""
    env = SuperMarioBros(EnvConfig(backend=backend))
    agent = make_agent("biased", env.config)
    logs = []
    for i in range(episodes):
        play(env, agent, seed + i)
        logs.append(env.save_state().buttons)
    frames, seconds = 0, 0.0
    for log in logs:
        env.reset()  # back at the level start, untimed
        t0 = time.perf_counter()
        for b in log:
            env.emu.step(b)
        seconds += time.perf_counter() - t0
        frames += len(log)
    env.close()
    return frames / seconds


def raw_fps_concurrent(measure, *args, processes: int = 2) -> float:
    """Per-process raw frames/s of `measure(*args)` while `processes` emulators run at once (the per-core rate
    workers get)."""
    with mp.get_context("spawn").Pool(processes) as pool:
        return float(np.mean(pool.starmap(measure, [args] * processes)))


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


def warm_up(frame_skip: int) -> float:
    """A 2-episode collection with 2 workers, untimed in the figures: it starts the fork server the worker pools
    fork from (once per command: it imports torch and lemario), so the 2-worker figures time collection, not that
    start. Returns its seconds."""
    t0 = time.perf_counter()
    end_to_end("retro", 2, 2, 10**6, frame_skip)
    return time.perf_counter() - t0


def mean_sd(xs: list[float]) -> tuple[float, float]:
    return float(np.mean(xs)), float(np.std(xs, ddof=1)) if len(xs) > 1 else 0.0


def raw_rates(backend: str, args: Args, rep: int, processes: int) -> dict[str, float]:
    """Both raw rates, per process with `processes` emulators running at once."""
    frames = args.retro_frames if backend == "retro" else args.nespy_frames
    episodes = args.retro_gameplay_episodes if backend == "retro" else args.nespy_gameplay_episodes
    if processes == 1:
        return {"raw_fps": raw_fps(backend, frames), "gameplay_fps": gameplay_fps(backend, episodes, rep)}
    return {
        "raw_fps": raw_fps_concurrent(raw_fps, backend, frames, processes=processes),
        "gameplay_fps": raw_fps_concurrent(gameplay_fps, backend, episodes, rep, processes=processes),
    }


def bracketed(backend: str, workers: int, args: Args, rep: int) -> dict[str, float]:
    """One repetition: the raw rates (as many emulators at once as workers), the collection, the raw rates again.
    The host's speed drifts by several percent over minutes, so each ratio divides the collection's rate by the
    mean of the raw rates measured just before and just after it, never by rates of another moment."""
    before = raw_rates(backend, args, rep, workers)
    episodes = args.retro_episodes if backend == "retro" else args.nespy_episodes
    e2e = end_to_end(backend, workers, episodes, rep, args.frame_skip)
    after = raw_rates(backend, args, rep, workers)
    row = {"e2e_steps_per_s": e2e}
    for raw in before:
        row[raw] = (before[raw] + after[raw]) / 2
        row[f"ratio/{raw}"] = e2e / workers / (row[raw] / args.frame_skip)
    return row


def main(args: Args) -> None:
    print(f"machine: {machine()}; Python {platform.python_version()}; reps {args.reps}")
    first = warm_up(args.frame_skip)
    print(f"first 2-worker collection (2 episodes; starts the fork server, once per command): {first:.2f} s")
    rows: dict[str, list[dict[str, float]]] = {}
    for rep in range(args.reps):
        for backend in ("retro", "nes-py"):
            for workers in (1, 2):
                rows.setdefault(f"{backend}/w{workers}", []).append(bracketed(backend, workers, args, rep))
    figures = {f"{name}/{key}": mean_sd([row[key] for row in reps]) for name, reps in rows.items() for key in reps[0]}
    for raw in ("gameplay_fps", "raw_fps"):  # 2 workers against the rate one emulator alone gets, same repetition
        figures[f"retro/w2/ratio/{raw} of 1 process"] = mean_sd(
            [
                two["e2e_steps_per_s"] / 2 / (one[raw] / args.frame_skip)
                for one, two in zip(rows["retro/w1"], rows["retro/w2"])
            ]
        )
    for w in (1, 2):  # the backends' end-to-end rates, repetition by repetition
        speedups = [
            r["e2e_steps_per_s"] / n["e2e_steps_per_s"] for r, n in zip(rows[f"retro/w{w}"], rows[f"nes-py/w{w}"])
        ]
        figures[f"retro/nes-py e2e/w{w}"] = mean_sd(speedups)
    print(f"\n{'measurement (raw rates per process, with as many at once as workers)':<72}{'mean':>10}{'sd':>9}")
    for k, (m, s) in figures.items():
        print(f"{k:<72}{m:>10.2f}{s:>9.2f}")
    print(
        "\ntargets: retro/nes-py e2e >= 4; retro e2e per worker >= 0.75 of raw/skip (ratio/gameplay_fps: the "
        "collector's own frames; ratio/raw_fps: the fixed pattern, mostly title screen)"
    )
    if args.json_out:
        args.json_out.write_text(
            json.dumps({"figures": figures, "rows": rows, "cpu": cpu_name(), "args": str(args)}, indent=2)
        )


if __name__ == "__main__":
    main(tyro.cli(Args))
