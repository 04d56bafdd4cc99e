"""World-model training throughput for each encoder x predictor combination: optimizer steps/s and frames
encoded/s (a step encodes batch x (K+1) frame stacks), on this machine's CPU and on CUDA when present.

    .venv/bin/python benchmarks/train_wm.py                 # ~5 minutes on 2 cores
    .venv/bin/python benchmarks/train_wm.py --device cuda   # on a GPU machine
    .venv/bin/python benchmarks/train_wm.py --preset push   # the push game's model only (RGB, thrusts, state head)

Batches are random frames of the training shape (throughput does not depend on the pixels). Each figure is
the mean +- sd over `reps` timed blocks after a warm-up.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass, replace

import numpy as np
import torch
import tyro

from lemario.core.device import machine
from lemario.model.loss import world_model_loss
from lemario.model.train import PRESETS
from lemario.model.world_model import WorldModel


@dataclass(frozen=True)
class Args:
    preset: str = "cpu"
    """Model and batch sizes of this training preset."""
    device: str = "cpu"
    reps: int = 3
    steps: int = 4
    """Timed steps per repetition."""
    warmup: int = 2


COMBOS = [
    ("cnn", "nature", "mlp"),
    ("cnn", "nature", "transformer"),
    ("cnn", "drqv2", "mlp"),
    ("vit", "nature", "mlp"),
    ("vit", "nature", "transformer"),
]


def synthetic_batch(model_cfg, B: int, K: int, g: torch.Generator) -> dict[str, torch.Tensor]:
    """A training batch of random content in the shapes the model takes."""
    frame = (model_cfg.frame_stack, model_cfg.image_size, model_cfg.image_size)
    if model_cfg.channels > 1:
        frame = (*frame, model_cfg.channels)
    batch = {"obs": torch.randint(0, 256, (B, K + 1, *frame), dtype=torch.uint8, generator=g)}
    if model_cfg.continuous_actions:
        batch["actions"] = torch.rand(B, K, model_cfg.n_actions, generator=g) * 2 - 1
        batch["prev"] = torch.zeros(B, model_cfg.n_actions)
    else:
        batch["actions"] = torch.randint(0, model_cfg.n_actions, (B, K), generator=g)
        batch["prev"] = torch.zeros(B, dtype=torch.int64)
    if model_cfg.reward_head:
        batch["rewards"] = torch.zeros(B, K, 4)  # progress, score, death, flag (reward spec v3)
    if model_cfg.state_head:
        batch["state"] = torch.rand(B, K + 1, model_cfg.state_head, generator=g)
    return batch


def combo_model(model_cfg, encoder: str, cnn: str, predictor: str):
    """The preset's model with another encoder and predictor (a ViT's patch: the nearest that tiles the frame)."""
    size, patch = model_cfg.image_size, model_cfg.vit_patch
    patch = min((p for p in range(4, size + 1) if size % p == 0), key=lambda p: abs(p - patch))
    return replace(model_cfg, encoder=encoder, cnn=cnn, predictor=predictor, vit_patch=patch)


def training_step(cfg, model_cfg, device: torch.device):
    """step(): one optimizer step of a world model `model_cfg` on a fixed random batch of the training config `cfg`'s
    shape (bf16 autocast on CUDA)."""
    torch.manual_seed(0)
    model = WorldModel(model_cfg).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(0)
    batch = {k: v.to(device) for k, v in synthetic_batch(model_cfg, cfg.batch_size, cfg.k, g).items()}
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()

    def step():
        with autocast:
            loss, _ = world_model_loss(model, batch, cfg.loss, torch.Generator(device=device).manual_seed(0))
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step


def measure(encoder: str, cnn: str, predictor: str, args: Args) -> list[float]:
    cfg = PRESETS[args.preset]
    device = torch.device(args.device)
    step = training_step(cfg, combo_model(cfg.model, encoder, cnn, predictor), device)
    for _ in range(args.warmup):
        step()
    rates = []
    for _ in range(args.reps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(args.steps):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        rates.append(args.steps / (time.perf_counter() - t0))
    return rates


def main(args: Args) -> None:
    cfg = PRESETS[args.preset]
    frames_per_step = cfg.batch_size * (cfg.k + 1)
    gpu = f", GPU {torch.cuda.get_device_name()}" if args.device.startswith("cuda") else ""
    print(f"device {args.device}{gpu}; {machine()}")
    print(
        f"preset {args.preset}: batch {cfg.batch_size} windows x (K+1={cfg.k + 1}) = {frames_per_step} frame "
        "stacks per step, "
        f"latent {cfg.model.latent_dim}, free-running {cfg.loss.free_running}"
    )
    print(f"{'encoder':<14}{'predictor':<13}{'params':>9}{'steps/s':>10}{'sd':>7}{'frames/s':>10}{'sd':>7}")
    combos = COMBOS if cfg.model.channels == 1 else [(cfg.model.encoder, cfg.model.cnn, cfg.model.predictor)]
    for encoder, cnn, predictor in combos:
        rates = measure(encoder, cnn, predictor, args)
        model_cfg = combo_model(cfg.model, encoder, cnn, predictor)
        params = sum(p.numel() for p in WorldModel(model_cfg).parameters())
        label = f"{encoder}-{cnn}" if encoder == "cnn" else f"vit/{model_cfg.vit_patch}"
        m, s = float(np.mean(rates)), float(np.std(rates, ddof=1))
        rates_fps = f"{m * frames_per_step:>10.0f}{s * frames_per_step:>7.0f}"
        print(f"{label:<14}{predictor:<13}{params / 1e6:>8.2f}M{m:>10.2f}{s:>7.2f}{rates_fps}", flush=True)


if __name__ == "__main__":
    main(tyro.cli(Args))
