"""Latent CEM planning latency for several budgets (samples x iterations x horizon), on this machine's CPU.

    .venv/bin/python benchmarks/planner.py                        # the cpu preset's model (random weights)
    .venv/bin/python benchmarks/planner.py --checkpoint runs/wm-cpu-s0/model.safetensors

Latency does not depend on the weights, only on the architecture; a checkpoint just fixes it. Target from
the control issue: 256 samples x 3 iterations x horizon 15 under 100 ms. Each figure is the median over
`reps` plans, with the 10th-90th percentile range.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import tyro

from lemario.actions import action_set
from lemario.planner import LatentPlanner, PlannerConfig, cpu_has_native_bf16
from lemario.train import PRESETS, load_world_model
from lemario.world_model import WorldModel


@dataclass(frozen=True)
class Args:
    checkpoint: Path | None = None
    """A world model whose architecture to time (default: the cpu preset's)."""
    reps: int = 10
    threads: int = 0
    """torch threads (0: torch's default)."""
    precisions: tuple[str, ...] = ("fp32", "bf16")
    """Rollout arithmetic to time (PlannerConfig.precision); bf16 is fast only on CPUs with AMX (or on CUDA)."""


BUDGETS = [(64, 2, 5), (128, 3, 10), (256, 3, 15), (256, 5, 15), (512, 3, 15), (1024, 3, 15)]


def small_predictor(model_cfg):
    """A predictor sized for the 100 ms planning budget on 2 cores."""
    return replace(model_cfg, pred_hidden=192, pred_depth=2, projector_hidden=256, reward_hidden=128)


def time_plans(model: WorldModel, samples: int, iters: int, horizon: int, precision: str, reps: int) -> tuple[float, float, float]:
    cfg = PlannerConfig(samples=samples, iterations=iters, horizon=horizon, elites=max(4, samples // 8), precision=precision)
    planner = LatentPlanner(model.eval(), cfg, action_set("complex"))
    context = torch.randn(1, model.history if model.history > 1 else 1, model.cfg.latent_dim)
    past = torch.zeros(1, context.shape[1] - 1, dtype=torch.int64)
    g = torch.Generator().manual_seed(0)
    planner.plan(context, past, g)  # warm-up
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        planner.plan(context, past, g)
        times.append((time.perf_counter() - t0) * 1000)
    return float(np.median(times)), float(np.percentile(times, 10)), float(np.percentile(times, 90))


def main(args: Args) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.checkpoint:
        model, _ = load_world_model(args.checkpoint)
        models = {str(args.checkpoint): model}
    else:
        cfg = PRESETS["cpu"].model
        models = {"cpu preset": WorldModel(cfg), "cpu preset, small predictor": WorldModel(small_predictor(cfg))}
    print(f"{os.cpu_count()} cores, torch threads {torch.get_num_threads()}, AMX bf16 {cpu_has_native_bf16()}; "
          f"median [p10, p90] ms per plan over {args.reps} plans")
    for name, model in models.items():
        pred_params = sum(p.numel() for m in (model.predictor, model.pred_proj, model.reward_head) for p in m.parameters())
        print(f"\n{name}: predictor + projector + reward head {pred_params / 1e6:.2f} M parameters")
        print(f"{'precision':>10}{'samples':>8}{'iters':>7}{'horizon':>9}{'ms':>9}{'p10':>8}{'p90':>8}")
        for precision in args.precisions:
            for samples, iters, horizon in BUDGETS:
                med, lo, hi = time_plans(model, samples, iters, horizon, precision, args.reps)
                mark = "  <- target (< 100 ms)" if (samples, iters, horizon) == (256, 3, 15) else ""
                print(f"{precision:>10}{samples:>8}{iters:>7}{horizon:>9}{med:>9.1f}{lo:>8.1f}{hi:>8.1f}{mark}", flush=True)


if __name__ == "__main__":
    main(tyro.cli(Args))
