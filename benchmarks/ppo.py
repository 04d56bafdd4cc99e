"""PPO baseline throughput on this machine: environment steps per second of whole training (rollouts and
updates), and how the time splits between collecting a rollout and the PPO update that follows it.

    .venv/bin/python benchmarks/ppo.py        # the cpu preset's recipe: 3 rollouts of 8 x 512 steps, 2 timed
    .venv/bin/python benchmarks/ppo.py --n-envs 4 --threads 1

The recipe is `lemario baseline ppo`'s (`lemario.baselines.ppo.make_vec_env`: the shaped, RND-rewarded,
normalized vector env; `new_model`, PPO's CnnPolicy with the jump bias), minus harness evaluations and checkpoints.
Each rollout is timed separately after one warm-up rollout, and the script prints mean +- sd over the timed ones.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import numpy as np
import torch
import tyro
from stable_baselines3.common.callbacks import BaseCallback

from lemario.baselines.ppo import PRESETS, make_vec_env, new_model
from lemario.core.device import machine


@dataclass(frozen=True)
class Args:
    n_envs: int = 8
    rollouts: int = 3
    """Rollouts of n_envs x n_steps env steps; the first is a warm-up."""
    threads: int = 0
    """torch threads of the learner (0: torch's default)."""
    device: str = "cpu"


class Timer(BaseCallback):
    """Times of each rollout's start and end, and of training's end (where the last update ends)."""

    def __init__(self):
        super().__init__()
        self.marks: list[float] = []

    def _on_rollout_start(self) -> None:
        self.marks.append(time.perf_counter())

    def _on_rollout_end(self) -> None:
        self.marks.append(time.perf_counter())

    def _on_training_end(self) -> None:
        self.marks.append(time.perf_counter())

    def _on_step(self) -> bool:
        return True


def main(args: Args) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)
    where = machine()
    cfg = replace(PRESETS["cpu"], n_envs=args.n_envs, progress=False)
    venv, _ = make_vec_env(cfg)
    try:
        model = new_model(cfg, venv, args.device)
        timer = Timer()
        steps = cfg.n_envs * cfg.n_steps
        model.learn(steps * args.rollouts, callback=timer)
    finally:
        venv.close()
    t = timer.marks  # start, end, start, end, ..., end of the last update
    rollout = np.array([t[i + 1] - t[i] for i in range(0, len(t) - 1, 2)])[1:]  # warm-up dropped
    update = np.array([t[i + 1] - t[i] for i in range(1, len(t) - 1, 2)])[1:]
    total = steps / (rollout + update)
    print(f"{where}\n{cfg.n_envs} envs ({cfg.backend}), {steps} env steps per rollout, {len(rollout)} timed rollouts")
    print(
        f"rollout: {rollout.mean():.1f} +- {rollout.std():.1f} s ({steps / rollout.mean():.0f} env steps/s while "
        "collecting)"
    )
    print(
        f"update:  {update.mean():.1f} +- {update.std():.1f} s ({cfg.n_epochs} epochs of "
        f"{steps // cfg.batch_size} minibatches)"
    )
    print(f"training throughput: {total.mean():.0f} +- {total.std():.0f} env steps/s")


if __name__ == "__main__":
    main(tyro.cli(Args))
