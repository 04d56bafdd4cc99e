"""Latent CEM planning latency for several budgets (samples x iterations x horizon), on this machine's CPU.

    .venv/bin/python benchmarks/planner.py                        # the cpu preset's model (random weights)
    .venv/bin/python benchmarks/planner.py --checkpoint runs/wm-cpu-s0/model.safetensors --corpus runs/corpus-1-1-probe

A plan's cost is set by the architecture and by how many distinct action prefixes CEM samples (each is
predicted once), which depends on how the scores concentrate its distribution: so time a trained model from
real encoded frames (`--checkpoint` and `--corpus`) for figures an agent sees. Without a corpus the contexts
are Gaussian latents. Target from the control issue: 256 samples x 3 iterations x horizon 15 under 100 ms.
Each figure is the median over `reps` plans (each from another context), with the 10th-90th percentile range.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import tyro

from lemario.control.planner import LatentPlanner, PlannerConfig
from lemario.core.device import machine
from lemario.data.buffer import EpisodeBuffer
from lemario.games.mario.actions import action_set
from lemario.model.train import PRESETS
from lemario.model.world_model import WorldModel, load_world_model


@dataclass(frozen=True)
class Args:
    checkpoint: Path | None = None
    """A world model to time (default: the cpu preset's architecture, random weights)."""
    corpus: Path | None = None
    """Plan from the encoded frames of this corpus's first episodes (default: Gaussian latents)."""
    reps: int = 20
    threads: int = 0
    """torch threads (0: torch's default)."""
    precisions: tuple[str, ...] = ("fp32", "bf16")
    """Rollout arithmetic to time (PlannerConfig.precision); bf16 is fast only on CPUs with AMX (or on CUDA)."""


BUDGETS = [(64, 2, 5), (128, 3, 10), (256, 3, 15), (256, 5, 15), (512, 3, 15), (1024, 3, 15)]


def small_predictor(model_cfg):
    """A predictor sized for the 100 ms planning budget on 2 cores."""
    return replace(model_cfg, pred_hidden=192, pred_depth=2, projector_hidden=256, reward_hidden=128)


def contexts(model: WorldModel, corpus: Path | None, n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """n planning contexts: (1, c, D) latents and the (1, c-1) actions between them."""
    c, g = model.history, torch.Generator().manual_seed(0)
    if corpus is None:
        return [
            (torch.randn(1, c, model.cfg.latent_dim, generator=g), torch.zeros(1, c, dtype=torch.int64))
            for _ in range(n)
        ]
    buf = EpisodeBuffer.load(corpus, max_episodes=20)
    batch = buf.sample(n, c - 1, model.cfg.frame_stack, np.random.default_rng(0))  # obs (n, c, S, H, W)
    with torch.no_grad():
        z = model.encode(torch.from_numpy(batch["obs"]))  # (n, c, D)
    return [(z[i : i + 1], torch.from_numpy(batch["actions"][i : i + 1])) for i in range(n)]


def time_plans(
    model: WorldModel, ctxs: list, samples: int, iters: int, horizon: int, precision: str
) -> tuple[float, float, float]:
    cfg = PlannerConfig(
        samples=samples, iterations=iters, horizon=horizon, elites=max(4, samples // 8), precision=precision
    )
    planner = LatentPlanner(model.eval(), cfg, action_set("complex"))
    g = torch.Generator().manual_seed(0)
    planner.plan(*ctxs[0], g)  # warm-up
    times = []
    for context, past in ctxs:
        t0 = time.perf_counter()
        planner.plan(context, past, g)
        times.append((time.perf_counter() - t0) * 1000)
    return float(np.median(times)), float(np.percentile(times, 10)), float(np.percentile(times, 90))


def main(args: Args) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)
    where = machine()
    if args.checkpoint:
        model, _ = load_world_model(args.checkpoint)
        models = {str(args.checkpoint): model}
    else:
        cfg = PRESETS["cpu"].model
        models = {"cpu preset": WorldModel(cfg), "cpu preset, small predictor": WorldModel(small_predictor(cfg))}
    print(f"{where}\nmedian [p10, p90] ms per plan over {args.reps} plans from {args.corpus or 'Gaussian latents'}")
    for name, model in models.items():
        ctxs = contexts(model.eval(), args.corpus, args.reps)
        pred_params = sum(
            p.numel() for m in (model.predictor, model.pred_proj, model.reward_head) for p in m.parameters()
        )
        print(f"\n{name}: predictor + projector + reward head {pred_params / 1e6:.2f} M parameters")
        print(f"{'precision':>10}{'samples':>8}{'iters':>7}{'horizon':>9}{'ms':>9}{'p10':>8}{'p90':>8}")
        for precision in args.precisions:
            for samples, iters, horizon in BUDGETS:
                med, lo, hi = time_plans(model, ctxs, samples, iters, horizon, precision)
                mark = "  <- target (< 100 ms)" if (samples, iters, horizon) == (256, 3, 15) else ""
                print(
                    f"{precision:>10}{samples:>8}{iters:>7}{horizon:>9}{med:>9.1f}{lo:>8.1f}{hi:>8.1f}{mark}",
                    flush=True,
                )


if __name__ == "__main__":
    main(tyro.cli(Args))
