"""Planning time per turn of the push game's world-model player (the issue's target: <= 0.3 s on this 2-core CPU;
the seed system: ~2 s per turn on CPU), and of the simulator planner for comparison.

    .venv/bin/python benchmarks/push_plan.py                                  # the push preset's architecture
    .venv/bin/python benchmarks/push_plan.py --model runs/push-wm/model.safetensors

A turn's plan is CEM over its 5 thrusts (samples x iterations, the defaults: 96 x 6) from a 3-frame context, every
sample rolled through the predictor in one batch per step and read by the state head; with --warm the rule's turn
played in the model first, with --replan a plan of the turn's rest before each later step. Time does not depend on
the weights, so without --model a randomly initialised model of the preset is timed. Each figure is a whole turn's
planning (the player called on each of its 5 steps) over `turns` turns of a real match (median and 90th percentile).

    .venv/bin/python benchmarks/push_plan.py --warm chase_t --cem.init-std 0.1 --replan
    .venv/bin/python benchmarks/push_plan.py --model pretrained/push/world_model.safetensors --warm adversarial \
        --replan --cem.samples 32 --cem.iterations 2 --cem.init-std 0.1 --front 30 --threads 1   # what push serve plays

With --front the planner searches only where its disc (where chase_t drove it) is near its pushing point: the turns
that search all their steps take as long as without it, the others less (the p90 is the searching turns').
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import tyro

from lemario.control.gaussian_cem import GaussianCEMConfig
from lemario.control.push_players import LatentPlanner, SimulatorPlanner
from lemario.core.device import machine
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
    warm: str = ""
    """The players' warm-start rule (`lemario push match --warm`)."""
    replan: bool = False
    """Plan the turn's rest again before each step (`lemario push match --replan`)."""
    front: float = 0.0
    """Search only within this distance of the pushing point (`lemario push match --front`; needs --warm)."""
    cem: GaussianCEMConfig = field(default_factory=GaussianCEMConfig)


def positions(turns: int) -> list[list]:
    """What a player sees at each step of `turns` turns of chase_t self-play matches."""
    env, seen = PushGame(), []
    env.reset(seed=7)
    while len(seen) < turns or seen[-1] and len(seen[-1]) < env.config.steps_per_turn:
        if env.steps >= env.config.match_steps:
            env.reset(seed=7 + len(seen))
        view = env.seen()
        if view.step_in_turn == 0:
            seen.append([])
        seen[-1].append(view)
        env.step(chase_t(view.state, view.me))
    return seen[:turns]


def timed(player, turns: list[list]) -> np.ndarray:
    """Seconds per turn: the player called on each step's view (its moves are not played; the views are chase_t's)."""
    out = []
    for views in turns:
        t0 = time.perf_counter()
        for view in views:
            player(view)
        out.append(time.perf_counter() - t0)
    return np.array(out)


def main(args: Args) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)
    where = machine()
    model = load_world_model(args.model)[0] if args.model else WorldModel(PRESETS["push"].model).eval()
    params = sum(p.numel() for p in model.parameters())
    seen = positions(args.turns)
    print(f"{where}; model {params / 1e6:.2f}M")
    print(
        f"CEM {args.cem.samples} samples x {args.cem.iterations} iterations, init std {args.cem.init_std}, horizon 5, "
        f"warm {args.warm or 'none'}, replan {args.replan}, front {args.front}, {args.turns} turns"
    )
    plans = dict(cfg=args.cem, warm=args.warm, replan=args.replan, front=args.front)
    for name, planner in (("world model", LatentPlanner(model, **plans)), ("simulator", SimulatorPlanner(**plans))):
        timed(planner, seen[:2])  # warm-up
        t = timed(planner, seen)
        searched = (
            f"   {planner.guarded[1] - planner.guarded[0]} of {planner.guarded[1]} plans searched" if args.front else ""
        )
        print(
            f"{name:<12} median {np.median(t):.3f} s   p90 {np.quantile(t, 0.9):.3f} s   mean {t.mean():.3f} s per turn"
            + searched
        )


if __name__ == "__main__":
    main(tyro.cli(Args))
