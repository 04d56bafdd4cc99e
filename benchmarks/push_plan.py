"""Planning time per turn of the push game's world-model player (the issue's target: <= 0.3 s on this 2-core CPU;
the seed system: ~2 s per turn on CPU), and of the simulator planner for comparison.

    .venv/bin/python benchmarks/push_plan.py                                  # the push preset's architecture
    .venv/bin/python benchmarks/push_plan.py --model runs/push-wm/model.safetensors

A turn's plan is CEM over its 5 thrusts (samples x iterations, the defaults: 96 x 6) from a 3-frame context, every
sample rolled through the predictor in one batch per step and read by the state head. Time does not depend on
the weights, so without --model a randomly initialised model of the preset is timed. Each figure is over `turns`
plans from the positions of a real match (median and 90th percentile).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import tyro

from lemario.control.gaussian_cem import GaussianCEMConfig
from lemario.control.push_players import LatentPlanner, SimulatorPlanner
from lemario.games.push.env import PushGame
from lemario.games.push.opponents import chase_t
from lemario.model.train import PRESETS
from lemario.model.world_model import WorldModel, load_world_model


@dataclass(frozen=True)
class Args:
    model: Path | None = None
    """A push world model; default: a random one of the push preset."""
    turns: int = 20
    threads: int = 0
    """torch threads (0: torch's default)."""
    cem: GaussianCEMConfig = field(default_factory=GaussianCEMConfig)


def positions(turns: int) -> list:
    """What a player sees at the start of `turns` turns of a chase_t self-play match."""
    env, seen = PushGame(), []
    env.reset(seed=7)
    while len(seen) < turns:
        if env.steps >= env.config.match_steps:
            env.reset(seed=7 + len(seen))
        view = env.seen()
        if view.step_in_turn == 0:
            seen.append(view)
        env.step(chase_t(view.state, view.me))
    return seen


def timed(planner, seen: list) -> np.ndarray:
    out = []
    for view in seen:
        t0 = time.perf_counter()
        planner.plan(view) if isinstance(planner, LatentPlanner) else planner.plan(view.state, view.me)
        out.append(time.perf_counter() - t0)
    return np.array(out)


def main(args: Args) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_world_model(args.model)[0] if args.model else WorldModel(PRESETS["push"].model).eval()
    params = sum(p.numel() for p in model.parameters())
    seen = positions(args.turns)
    threads = torch.get_num_threads()
    print(f"{os.cpu_count()} cores, torch {torch.__version__}, threads {threads}; model {params / 1e6:.2f}M")
    print(f"CEM {args.cem.samples} samples x {args.cem.iterations} iterations, horizon 5, {args.turns} turns")
    for name, planner in (
        ("world model", LatentPlanner(model, cfg=args.cem)),
        ("simulator", SimulatorPlanner(cfg=args.cem)),
    ):
        timed(planner, seen[:2])  # warm-up
        t = timed(planner, seen)
        print(
            f"{name:<12} median {np.median(t):.3f} s   p90 {np.quantile(t, 0.9):.3f} s   mean {t.mean():.3f} s per turn"
        )


if __name__ == "__main__":
    main(tyro.cli(Args))
